"""`train.py estimate | selective | compare-configs`."""

from __future__ import annotations

import argparse

from rich.table import Table

from sidestep.console import get_console
from sidestep.config import Config
from sidestep.errors import SidestepError


def run_estimate(config: Config, args: argparse.Namespace) -> int:
    from sidestep.estimate.sensitivity import estimate
    from sidestep.guards import check_output_file

    check_output_file(config.output, "--output", input_folders=[("--dataset-dir", config.dataset_dir),
                                                              ("--checkpoint-dir", config.checkpoint_dir)])
    get_console().print(f"Loading the model ({config.model_variant} from {config.checkpoint_dir}) and the dataset "
                        "...", highlight=False, soft_wrap=True)
    result = estimate(config)
    table = Table(title=f"Top {len(result.top_k)} of {len(result.scores)} modules by gradient sensitivity")
    for col in ("rank", "module", "score"):
        table.add_column(col)
    for i, name in enumerate(result.top_k, 1):
        table.add_row(str(i), name, f"{result.scores[name]:.4e}")
    console = get_console()
    console.print(table)
    console.print(f"Module config written to {config.output}; train on it with "
                  f"train.py selective --module-config {config.output} ...", highlight=False)
    return 0


def run_selective(config: Config, args: argparse.Namespace) -> int:
    from sidestep.cli.train_cmd import train_command
    from sidestep.estimate.sensitivity import read_module_config

    if not config.module_config:
        raise SidestepError("selective: pass --module-config (the JSON train.py estimate wrote)")
    return train_command(config, args, "fixed", shown_as="selective",
                         modules=lambda: read_module_config(config.module_config)[0])


def compare_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("configs", nargs="+", metavar="CONFIG.json", help="Module config JSON files (two or more)")


def run_compare(config: Config, args: argparse.Namespace) -> int:
    from sidestep.estimate.compare import compare, per_layer_counts
    from sidestep.estimate.sensitivity import read_module_config

    if len(args.configs) < 2:
        raise SidestepError("compare-configs: give at least two module config JSON files")
    configs = {path: read_module_config(path) for path in args.configs}
    console = get_console()
    pairs = Table(title="Agreement between module configs")
    for col in ("A", "B", "top-k overlap", "Jaccard", "Spearman (scores)"):
        pairs.add_column(col)
    for c in compare(configs):
        rho = "n/a" if c.spearman is None else f"{c.spearman:.3f}"
        pairs.add_row(c.a, c.b, str(c.overlap), f"{c.jaccard:.3f}", rho)
    console.print(pairs)
    layers = Table(title="Top-k modules per layer")
    layers.add_column("layer")
    counts = {path: per_layer_counts(top) for path, (top, _) in configs.items()}
    for path in configs:
        layers.add_column(path)
    for layer in sorted({l for c in counts.values() for l in c}):
        layers.add_row(str(layer), *(str(counts[p].get(layer, 0)) for p in configs))
    console.print(layers)
    return 0
