"""`train.py export --format FORMAT ADAPTER_DIR OUT.safetensors` (formats: `sidestep.train.export.FORMATS`)."""

from __future__ import annotations

import argparse

from sidestep.console import get_console
from sidestep.config import Config
from sidestep.train.export import FORMATS, export_adapter, export_format

DEFAULT_FORMAT = "comfyui"


def export_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", dest="export_format", choices=tuple(FORMATS), default=DEFAULT_FORMAT,
                        help=f"Target layout (default: {DEFAULT_FORMAT})")
    parser.add_argument("adapter_dir", help="A Side-Step adapter folder (output dir or checkpoints/epoch_N)")
    parser.add_argument("out_file", help="The .safetensors file to write")


def run_export(config: Config, args: argparse.Namespace) -> int:
    target = export_format(args.export_format)
    out = export_adapter(args.export_format, args.adapter_dir, args.out_file)
    get_console().print(f"Wrote {out} ({target.client}): {target.how_to_use}", highlight=False)
    return 0
