"""`train.py fixed | vanilla`: optional preprocessing, then training, then where the files are."""

from __future__ import annotations

import argparse
import sys
from contextlib import nullcontext
from typing import Callable

from rich.table import Table

from sidestep.adapters import written_files
from sidestep.config import Config
from sidestep.console import get_console
from sidestep.errors import SidestepError
from sidestep.lock import run_lock
from sidestep.train.checkpoints import RUN_FILE

SUMMARY_FIELDS = ("checkpoint_dir", "model_variant", "dataset_dir", "output_dir", "adapter_type",
                  "attention_type", "learning_rate", "batch_size", "gradient_accumulation", "epochs",
                  "optimizer_type", "scheduler_type", "gradient_checkpointing", "device", "precision")


def summary_table(config: Config, mode: str) -> Table:
    table = Table(title=f"Side-Step {mode} training", show_header=False)
    from sidestep.adapters import kind

    for name in SUMMARY_FIELDS:
        table.add_row(name.replace("_", "-"), str(getattr(config, name)))
        if name == "adapter_type":
            table.add_row("adapter", kind(config.adapter_type).summary(config))
    if mode == "fixed":
        table.add_row("cfg-ratio", str(config.cfg_ratio))
    default = Config()
    for f in Config.fields():  # the advanced options a run turned on
        if f.metadata["group"] == "Advanced training" and getattr(config, f.name) != getattr(default, f.name):
            table.add_row(f.name.replace("_", "-"), str(getattr(config, f.name)))
    return table


def confirm(config: Config, mode: str, args: argparse.Namespace) -> None:
    """Config summary and a confirmation before long work; --yes skips both."""
    if getattr(args, "yes", False):
        return
    console = get_console()
    console.print(summary_table(config, mode))
    if sys.stdin is not None and sys.stdin.isatty():
        answer = console.input("Start training? [Y/n] ").strip().lower()
        if answer not in ("", "y", "yes"):
            raise SidestepError("training cancelled at the confirmation prompt")


TRAIN_WRITES = written_files() + (RUN_FILE, "loss.png", ".sidestep.lock")


def _model_folders(root: str | None) -> list:
    """The model folders under the checkpoints root (config.json or model_index.json inside)."""
    from pathlib import Path

    if not root or not Path(root).expanduser().is_dir():
        return []
    try:
        return [p for p in Path(root).expanduser().iterdir()
                if (p / "config.json").is_file() or (p / "model_index.json").is_file()]
    except OSError:
        return []


def check_train_outputs(config: Config) -> None:
    """--output-dir and --log-dir are folders, none of the inputs, and hold no input file training writes over."""
    from sidestep.guards import check_output_folder

    inputs = [("--dataset-dir", config.dataset_dir), ("--val-dataset-dir", config.val_dataset_dir),
              ("--checkpoint-dir", config.checkpoint_dir), ("--resume-from", config.resume_from),
              ("--audio-dir", config.audio_dir if config.preprocess else None),
              ("--tensor-output", config.tensor_output if config.preprocess else None)]
    inputs += [("--checkpoint-dir", folder) for folder in _model_folders(config.checkpoint_dir)]
    files = [("--module-config", config.module_config), ("--dataset-json", config.dataset_json)]
    if config.output_dir:
        check_output_folder(config.output_dir, "--output-dir", inputs, files, TRAIN_WRITES)
    if config.log_dir:
        check_output_folder(config.log_dir, "--log-dir", inputs)


def maybe_preprocess(config: Config) -> Config:
    """`--preprocess`: turn --audio-dir into --tensor-output first, then train on it."""
    if not config.preprocess:
        return config
    from sidestep.data.preprocess import preprocess_dataset

    if not config.tensor_output:
        raise SidestepError("--preprocess needs --tensor-output (where the tensors go)")
    with run_lock(config.tensor_output, "preprocessing", "--tensor-output"):
        report = preprocess_dataset(config)
    return config.replace(dataset_dir=str(report.output_dir))


def print_result(result, config: Config) -> None:
    """The closing summary: what ran, how well, and where every file is."""
    console = get_console()
    from sidestep.adapters import kind

    files = kind(config.adapter_type).file_names()
    console.print(f"Training complete: {result.epochs} epoch{'s' if result.epochs != 1 else ''}, "
                  f"{result.optimizer_steps} optimizer steps in "
                  f"{result.seconds:.1f} s, last loss {result.final_loss:.4f}", highlight=False)
    table = Table(title="Summary", show_header=False)
    table.add_row("epochs", str(result.epochs))
    table.add_row("optimizer steps", f"{result.optimizer_steps}" + (f" ({result.skipped_steps} skipped: NaN/inf)"
                                                                   if result.skipped_steps else ""))
    if result.effective_batch:
        per_process = config.batch_size * config.gradient_accumulation
        table.add_row("effective batch", f"{result.effective_batch} (batch {config.batch_size} x accumulation "
                                         f"{config.gradient_accumulation} x {result.effective_batch // per_process} "
                                         "processes)")
        table.add_row("audio frames per epoch", f"{100 * result.frame_share:.1f}% trained")
    table.add_row("time", f"{result.seconds:.1f} s")
    table.add_row("last loss", f"{result.final_loss:.4f}")
    if result.best_val_loss is not None:
        table.add_row("best validation loss", f"{result.best_val_loss:.4f}")
    for row in learning_rows(result):
        table.add_row(*row)
    table.add_row("adapter", f"{result.output_dir} ({files})")
    for folder in result.checkpoints:
        table.add_row("checkpoint", str(folder))
    for name, path in (("best adapter", result.output_dir / "best"), ("EMA adapter", result.output_dir / "ema"),
                       ("loss plot", result.output_dir / "loss.png"),
                       ("learning report", result.output_dir / "learning.json"),
                       ("previews", result.output_dir / "samples")):
        if path.exists():
            table.add_row(name, str(path))
    for column in table.columns:  # a narrow terminal folds a long path instead of cutting it to "…"
        column.overflow = "fold"
    console.print(table)
    console.print(f"Adapter: {result.output_dir} ({files})", highlight=False)
    console.print(f"Use it: point ACE-Step's LoRA loader (or ComfyUI, after train.py export) at {result.output_dir}; "
                  f"hear it with train.py generate --adapter {result.output_dir}; resume with --resume-from "
                  "<checkpoint folder>", highlight=False)


def learning_rows(result) -> list[tuple[str, str]]:
    """The learning report's last evaluation against the base model, and its verdicts."""
    from sidestep.train.report import percent

    if len(result.learning) < 2:
        return []
    last = result.learning[-1]
    bands = ", ".join(f"t {name} {percent(value)}" for name, value in last["train_bands"].items())
    rows = [("loss change, training songs", f"{percent(last['train_change'])} vs the base model ({bands})")]
    if "val" in last:
        rows.append(("loss change, held-out songs", f"{percent(last['val_change'])} (gap "
                                                     f"{last['gap_points']:+.1f} points)"))
    rows += [("verdict", text) for text in result.verdicts]
    return rows


def _forecast_inputs(config: Config):
    """(model config.json, the longest batch's frames, runtime): all a forecast needs, no weights loaded."""
    from sidestep.data.dataset import PreprocessedDataset
    from sidestep.data.manifest import check_made_for
    from sidestep.model import discovery
    from sidestep.model.loader import read_dit_config
    from sidestep.runtime import resolve_runtime

    if not config.checkpoint_dir:
        raise SidestepError("--dry-run / --fit-memory: pass --checkpoint-dir")
    entry = discovery.model_to_train(config).entry
    model_config = read_dit_config(entry.path if entry.layout == "official" else entry.path / "transformer")
    dataset = PreprocessedDataset(config.dataset_dir) if config.dataset_dir else None
    if dataset is not None:
        check_made_for(dataset.manifest, entry)  # as training would
    frames = max(dataset.lengths, default=750) if dataset is not None else 750
    return model_config, frames, resolve_runtime(config.device, config.precision)


def fit_memory(config: Config, show_table: bool = False) -> Config:
    """`--fit-memory GIB`: the fastest forecast setting within the budget, printed (with --dry-run, the table)."""
    from sidestep.train import fit

    model_config, frames, runtime = _forecast_inputs(config)
    console = get_console()
    if show_table:
        options = fit.candidates(config, model_config, runtime.device, runtime.precision, frames)
        choice = fit.choose(options, config.fit_memory)
        table = Table(title=f"Settings forecast for --fit-memory {config.fit_memory:g} GiB on {runtime.device}, "
                            f"{frames} frames (fastest first)")
        for column in ("batch", "checkpointed", "base", "GiB", "speed", ""):
            table.add_column(column, justify="right" if column in ("GiB", "speed") else "left")
        for c in options:
            mark = "chosen" if c == choice else ("fits" if c.fits(config.fit_memory) else "too big")
            table.add_row(str(c.batch_size), f"{c.ratio:.0%}", c.quantize, f"{c.gib:.2f}", f"{c.speed:.3f}", mark)
        console.print(table)
    else:
        choice = fit.fastest_fitting(config, model_config, runtime.device, runtime.precision, frames,
                                     config.fit_memory)
    console.print(f"--fit-memory {config.fit_memory:g} GiB: batch {choice.batch_size}, {choice.ratio:.0%} of the "
                  f"blocks checkpointed, base {choice.quantize}; forecast {choice.gib:.2f} GiB", highlight=False)
    return fit.apply(config, choice)


def print_forecast(config: Config, only_modules: list[str] | None = None) -> None:
    """`--dry-run`: the predicted peak memory, from config.json and the dataset's lengths only."""
    from sidestep.train.forecast import forecast

    model_config, frames, runtime = _forecast_inputs(config)
    result = forecast(config, model_config, runtime.device, runtime.precision, frames, only_modules=only_modules)
    table = Table(title=f"Predicted peak memory on {runtime.device} ({runtime.precision}), "
                        f"batch {config.batch_size} x {result.notes['frames']} frames")
    table.add_column("part")
    table.add_column("GiB", justify="right")
    for name, value in result.gib().items():
        table.add_row(name, f"{value:.3f}")
    get_console().print(table)


def train_command(config: Config, args: argparse.Namespace, mode: str, shown_as: str | None = None,
                  modules: Callable[[], list[str]] | None = None) -> int:
    """What `fixed`, `vanilla` and `selective` run: the forecast (--fit-memory, --dry-run), or the output checks,
    the folder's lock, optional preprocessing, the confirmation, training and the summary. `modules` reads
    selective training's module list (after the output checks, which also guard the file it reads)."""
    if config.fit_memory > 0:
        config = fit_memory(config, show_table=config.dry_run)
    if config.dry_run:
        print_forecast(config, modules() if modules else None)
        return 0
    check_train_outputs(config)
    only_modules = modules() if modules else None
    with run_lock(config.output_dir, "training") if config.output_dir else nullcontext():
        config = maybe_preprocess(config)
        confirm(config, shown_as or mode, args)
        # importing torch and loading the model take seconds: say so before the silence
        get_console().print(f"Loading the model ({config.model_variant} from {config.checkpoint_dir}) and "
                            "the dataset ...", highlight=False, soft_wrap=True)
        from sidestep.train.recipe import train

        result = train(config, mode, only_modules=only_modules)
    print_result(result, config)
    return 0


def run_training(mode: str):
    return lambda config, args: train_command(config, args, mode)
