"""`train.py export --format FORMAT ADAPTER_DIR OUT.safetensors` (formats: `sidestep.train.export.FORMATS`)."""

from __future__ import annotations

import argparse

from sidestep.adapters import written_files
from sidestep.config import Config
from sidestep.console import get_console
from sidestep.train.checkpoints import RUN_FILE
from sidestep.train.export import FORMATS, export_adapter, export_format

DEFAULT_FORMAT = "comfyui"


def export_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", dest="export_format", choices=tuple(FORMATS), default=DEFAULT_FORMAT,
                        help=f"Target layout (default: {DEFAULT_FORMAT})")
    parser.add_argument("adapter_dir", help="A Side-Step adapter folder (output dir or checkpoints/epoch_N)")
    parser.add_argument("out_file", help="The .safetensors file to write")




def _export(args: argparse.Namespace):
    """The export, with a damaged adapter folder said in one line."""
    from safetensors import SafetensorError

    from sidestep.errors import SidestepError

    try:
        return export_adapter(args.export_format, args.adapter_dir, args.out_file)
    except SidestepError:
        raise
    except (OSError, ValueError, RecursionError, KeyError, TypeError, AttributeError, SafetensorError) as err:
        detail = f"{type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else 'no detail'}"
        raise SidestepError(f"{args.adapter_dir}: cannot read the adapter ({detail}); it is damaged or not a "
                            "Side-Step adapter folder") from None


def run_export(config: Config, args: argparse.Namespace) -> int:
    from pathlib import Path

    from sidestep.guards import check_output_file

    target = export_format(args.export_format)
    folder = Path(args.adapter_dir).expanduser()
    check_output_file(args.out_file, "export OUT_FILE", [("ADAPTER_DIR", folder / name) for name in
                                                                  written_files() + (RUN_FILE,)])
    out = _export(args)
    get_console().print(f"Wrote {out} ({target.client}): {target.how_to_use}", highlight=False)
    return 0
