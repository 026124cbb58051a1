"""`train.py models`: what discovery finds under a checkpoints root."""

from __future__ import annotations

import argparse

from rich.table import Table

from sidestep.console import get_console
from sidestep.config import Config
from sidestep.errors import SidestepError
from sidestep.model import discovery


def models_table(root: str) -> Table:
    models = discovery.scan_models(root)
    table = Table(title=f"Models in {root}")
    for col in ("#", "model", "label", "layout", "base", "turbo", "t mu / sigma"):
        table.add_column(col)
    for i, m in enumerate(models, 1):
        ts = f"{m.timestep_mu} / {m.timestep_sigma}" if m.timestep_mu is not None else "(not in config)"
        table.add_row(str(i), m.name, m.label, m.layout, m.base_variant or "?", "yes" if m.is_turbo else "no", ts)
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
    console.print(table)
    for line in parts_lines(config.checkpoint_dir):
        console.print(line)
    return 0
