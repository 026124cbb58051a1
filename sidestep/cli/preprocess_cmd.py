"""`train.py preprocess`: a folder of songs (+ optional dataset JSON) -> a training --dataset-dir."""

from __future__ import annotations

import argparse
from contextlib import nullcontext

from sidestep.console import get_console
from sidestep.config import Config
from sidestep.data.preprocess import preprocess_dataset


def run_preprocess(config: Config, args: argparse.Namespace) -> int:
    """Exit 0 when at least one sample was preprocessed; a SidestepError (exit 2) when none was."""
    from sidestep.lock import run_lock

    console = get_console()
    with run_lock(config.tensor_output, "preprocessing", "--tensor-output") if config.tensor_output else \
            nullcontext():
        report = preprocess_dataset(config, console=console)
    console.print(f"Done: {report.num_samples} sample(s) ready in {report.output_dir} "
                  f"({len(report.processed)} processed, {len(report.reused)} unchanged, "
                  f"{len(report.skipped)} skipped). Train with --dataset-dir {report.output_dir}",
                  markup=False, highlight=False)
    return 0
