"""The memory forecast (`--dry-run`) against the measured peak of a real training run.

    uv run python bench/memory_forecast.py

For the tiny and the medium config (random weights in the official layout) and checkpointing
on/off, a fresh process computes the forecast, then trains two optimizer steps with
`sidestep.train.recipe.train` and reads its peak RSS (CPU) or max_memory_allocated (CUDA).
One JSON line per setting with forecast, measured and their ratio.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import tempfile
from pathlib import Path

import torch

from _common import MEDIUM_CONFIG, emit, peak_rss_gib, pick_device


def _dataset(folder: Path, n: int, frames: int, cond: int, hidden: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(0)
    for i in range(n):
        torch.save({"target_latents": torch.randn(frames, 64, generator=g), "attention_mask": torch.ones(frames),
                    "encoder_hidden_states": torch.randn(cond, hidden, generator=g),
                    "encoder_attention_mask": torch.ones(cond, dtype=torch.bool),
                    "context_latents": torch.randn(frames, 128, generator=g), "metadata": {}}, folder / f"s{i}.pt")
    return folder


def _child(settings: dict, queue) -> None:
    import sys

    from _common import ROOT
    sys.path.insert(0, str(ROOT))
    from sidestep.config import Config
    from sidestep.model.configs import load_config_file
    from sidestep.train.forecast import forecast
    from sidestep.train.recipe import train
    from sidestep.runtime import resolve_runtime

    config = Config(**settings["config"])
    runtime = resolve_runtime(config.device, config.precision)
    model_config = load_config_file(Path(config.checkpoint_dir) / "acestep-v15-turbo" / "config.json")
    predicted = forecast(config, model_config, runtime.device, runtime.precision, settings["frames"], settings["cond"])
    if runtime.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    train(config, "fixed", quiet=True)
    measured = torch.cuda.max_memory_allocated() / 2**30 if runtime.device.type == "cuda" else peak_rss_gib()
    queue.put({"forecast": predicted.gib(), "measured_gib": measured})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto")
    p.add_argument("--frames", type=int, default=750)
    p.add_argument("--cond", type=int, default=300)
    args = p.parse_args()
    from sidestep.model.configs import TINY_DIT_CONFIG, load_config_file
    from sidestep.model.tiny import write_dit_folder

    device = pick_device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        for name, model_config in (("tiny", TINY_DIT_CONFIG), ("medium", load_config_file(MEDIUM_CONFIG))):
            root = Path(tmp) / name
            write_dit_folder(root / "acestep-v15-turbo", model_config)
            data = _dataset(root / "data", 2, args.frames, args.cond, model_config["hidden_size"])
            for checkpointing in (True, False):
                settings = dict(frames=args.frames, cond=args.cond, config=dict(
                    checkpoint_dir=str(root), dataset_dir=str(data), output_dir=str(root / "out"), epochs=1,
                    batch_size=1, gradient_accumulation=1, num_workers=0, gradient_checkpointing=checkpointing,
                    device=str(device), log_every=1000, log_heavy_every=1000))
                ctx = mp.get_context("spawn")
                queue = ctx.Queue()
                proc = ctx.Process(target=_child, args=(settings, queue))
                proc.start()
                result = queue.get()
                proc.join()
                total = result["forecast"]["total"]
                emit(dict(bench="memory_forecast", config=name, checkpointing=checkpointing, frames=args.frames,
                          cond=args.cond, device=str(device), forecast_gib=total,
                          measured_gib=round(result["measured_gib"], 3),
                          ratio_forecast_measured=round(total / result["measured_gib"], 3),
                          parts=result["forecast"]))


if __name__ == "__main__":
    main()
