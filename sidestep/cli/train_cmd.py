"""`train.py fixed | vanilla`: optional preprocessing, then training, then where the files are."""

from __future__ import annotations

import argparse
import sys

from rich.table import Table

from sidestep.console import get_console
from sidestep.config import Config
from sidestep.errors import SidestepError

SUMMARY_FIELDS = ("checkpoint_dir", "model_variant", "dataset_dir", "output_dir", "adapter_type", "rank", "alpha",
                  "attention_type", "learning_rate", "batch_size", "gradient_accumulation", "epochs",
                  "optimizer_type", "scheduler_type", "gradient_checkpointing", "device", "precision")
LOKR_SUMMARY = ("lokr_linear_dim", "lokr_linear_alpha", "lokr_factor")


def summary_table(config: Config, mode: str) -> Table:
    table = Table(title=f"Side-Step {mode} training", show_header=False)
    fields = [f for f in SUMMARY_FIELDS if not (config.adapter_type == "lokr" and f in ("rank", "alpha"))]
    if config.adapter_type == "lokr":
        fields += list(LOKR_SUMMARY)
    for name in fields:
        table.add_row(name.replace("_", "-"), str(getattr(config, name)))
    if mode == "fixed":
        table.add_row("cfg-ratio", str(config.cfg_ratio))
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


def maybe_preprocess(config: Config) -> Config:
    """`--preprocess`: turn --audio-dir into --tensor-output first, then train on it."""
    if not config.preprocess:
        return config
    from sidestep.data.preprocess import preprocess_dataset

    if not config.tensor_output:
        raise SidestepError("--preprocess needs --tensor-output (where the tensors go)")
    report = preprocess_dataset(config)
    return config.replace(dataset_dir=str(report.output_dir))


def print_result(result, config: Config) -> None:
    """The closing summary: what ran, how well, and where every file is."""
    console = get_console()
    files = "adapter_config.json + adapter_model.safetensors" if config.adapter_type == "lora" else \
        "lokr_weights.safetensors + lokr_config.json"
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
    table.add_row("adapter", f"{result.output_dir} ({files})")
    for folder in result.checkpoints:
        table.add_row("checkpoint", str(folder))
    for name, path in (("best adapter", result.output_dir / "best"), ("loss plot", result.output_dir / "loss.png"),
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


def print_forecast(config: Config, only_modules: list[str] | None = None) -> None:
    """`--dry-run`: the predicted peak memory, from config.json and the dataset's lengths only."""
    from sidestep.data.dataset import PreprocessedDataset
    from sidestep.model import discovery
    from sidestep.model.loader import read_dit_config
    from sidestep.train.forecast import forecast
    from sidestep.runtime import resolve_runtime

    if not config.checkpoint_dir:
        raise SidestepError("--dry-run: pass --checkpoint-dir")
    entry = discovery.model_to_train(config).entry
    model_config = read_dit_config(entry.path if entry.layout == "official" else entry.path / "transformer")
    frames = max(PreprocessedDataset(config.dataset_dir).lengths, default=750) if config.dataset_dir else 750
    runtime = resolve_runtime(config.device, config.precision)
    result = forecast(config, model_config, runtime.device, runtime.precision, frames, only_modules=only_modules)
    table = Table(title=f"Predicted peak memory on {runtime.device} ({runtime.precision}), "
                        f"batch {config.batch_size} x {result.notes['frames']} frames")
    table.add_column("part")
    table.add_column("GiB", justify="right")
    for name, value in result.gib().items():
        table.add_row(name, f"{value:.3f}")
    get_console().print(table)


def run_training(mode: str):
    def run(config: Config, args: argparse.Namespace) -> int:
        if config.dry_run:
            print_forecast(config)
            return 0
        config = maybe_preprocess(config)
        confirm(config, mode, args)
        # importing torch and loading the model take seconds: say so before the silence
        get_console().print(f"Loading the model ({config.model_variant} from {config.checkpoint_dir}) and the "
                            "dataset ...", highlight=False, soft_wrap=True)
        from sidestep.train.recipe import train

        result = train(config, mode)
        print_result(result, config)
        return 0

    return run
