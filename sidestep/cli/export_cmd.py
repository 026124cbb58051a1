"""`train.py export --format comfyui ADAPTER_DIR OUT.safetensors`."""

from __future__ import annotations

import argparse

from sidestep.console import get_console
from sidestep.config import Config
from sidestep.train.export import export_comfyui


def export_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", dest="export_format", choices=("comfyui",), default="comfyui",
                        help="Target layout (default: comfyui)")
    parser.add_argument("adapter_dir", help="A Side-Step adapter folder (output dir or checkpoints/epoch_N)")
    parser.add_argument("out_file", help="The .safetensors file to write")


def run_export(config: Config, args: argparse.Namespace) -> int:
    out = export_comfyui(args.adapter_dir, args.out_file)
    get_console().print(f"Wrote {out} (ComfyUI, ACE-Step 1.5): load it with a LoRA loader node at strength 1.0",
                        highlight=False)
    return 0
