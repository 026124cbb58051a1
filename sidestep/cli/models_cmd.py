"""`train.py models`: what discovery finds under a checkpoints root."""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table

from sidestep.console import get_console
from sidestep.config import Config
from sidestep.errors import SidestepError
from sidestep.model import discovery


def models_table(root: str) -> Table:
    models = discovery.scan_models(root)
    table = Table(title=f"Models in {root}")
    width = max((len(m.name) for m in models), default=5)
    for col in ("#", "model", "label", "layout", "size", "base", "turbo", "t mu / sigma"):
        # names and sizes never wrap (a pipe or a test reads them whole); the other columns give way
        table.add_column(col, no_wrap=col in ("model", "size"), min_width=width if col == "model" else None)
    for i, m in enumerate(models, 1):
        ts = f"{m.timestep_mu} / {m.timestep_sigma}" if m.timestep_mu is not None else "(not in config)"
        table.add_row(str(i), m.name, m.label, m.layout, m.size, m.variant_label or "?",
                      "yes" if m.is_turbo else "no", ts)
    return table


def parts_lines(root: str) -> list[str]:
    lines = []
    for what, finder in (("VAE", discovery.find_vae), ("text encoder", discovery.find_text_encoder)):
        try:
            lines.append(f"{what}: {finder(root)}")
        except SidestepError as err:
            lines.append(f"{what}: MISSING ({err})")
    return lines


def run_models(config: Config, args: argparse.Namespace) -> int:
    if not config.checkpoint_dir:
        raise SidestepError("models: pass --checkpoint-dir DIR (the folder holding the model folders)")
    console = get_console()
    table = models_table(config.checkpoint_dir)
    if not table.row_count:
        raise SidestepError(f"{config.checkpoint_dir}: no ACE-Step model folders found (a model folder holds a "
                            "config.json with model_type 'acestep'); check --checkpoint-dir")
    if console.is_terminal:
        console.print(table)
    else:  # a pipe (or --plain) has no width to fit: print the rows whole rather than squeezed to 80 columns
        Console(file=console.file, width=max(console.width, 132), no_color=True, highlight=False,
                emoji=False).print(table)
    for line in parts_lines(config.checkpoint_dir):
        console.print(line)
    return 0
