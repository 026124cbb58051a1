"""The memory forecast (`--dry-run`) against what a real training run adds above its loaded model.

    OMP_NUM_THREADS=1 uv run python bench/memory_forecast.py                  # tiny and medium
    OMP_NUM_THREADS=1 uv run python bench/memory_forecast.py --configs medium

For each config (tiny; medium = reference/medium-config.json, random weights in the official layout),
length (30/60/120 s = 750/1500/3000 latent frames), batch (1, 4) and checkpointing (`--modes`: full,
the default; selective = the selective policy; half = ratio 0.5; off), a fresh process ("spawn")
computes the forecast, then measures with `sidestep.train.memory_probe.measure_increment`: the
Trainer is set up (decoder loaded, adapter attached), the heap trimmed, VmHWM reset, three optimizer
steps run through the Trainer's own forward_backward/optimizer_step, and the increment is VmHWM - the
loaded RSS - the code pages (file-backed RSS) the steps faulted in. The issue's bar
(21.3): forecast increment within 10% of the measured one. One JSON line per setting. CPU, Linux.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

from _common import MEDIUM_CONFIG, emit  # noqa: E402

MIB = 2**20


def measure(settings: dict) -> dict:
    """Forecast and measurement of one setting, each in a fresh process (a process that has run the
    forecast has already paid its first step's one-off memory)."""
    ctx = mp.get_context("spawn")
    results = {}
    for part in ("forecast", "measure"):
        with ctx.Pool(1) as pool:
            results.update(pool.apply(_child, (settings, part)))
    return results


def _child(settings: dict, part: str) -> dict:
    import sys

    import torch

    torch.set_num_threads(1)
    sys.path.insert(0, settings["root"])
    from sidestep.config import Config
    from sidestep.model.loader import read_dit_config
    from sidestep.train.forecast import forecast
    from sidestep.train.memory_probe import measure_increment

    config = Config(**settings["config"])
    model_config = read_dit_config(Path(config.checkpoint_dir) / "acestep-v15-turbo")
    if part == "measure":
        return measure_increment(config, steps=settings.get("steps", 3))
    predicted = forecast(config, model_config, torch.device("cpu"), "fp32", settings["frames"], settings["cond"])
    return {"forecast_increment": predicted.increment, "forecast_total": predicted.total,
            "parts": {k: round(v / MIB, 2) for k, v in predicted.parts.items()}}


# checkpointing modes: (gradient_checkpointing, ratio, policy)
MODES = {"full": (True, 1.0, "full"), "selective": (True, 1.0, "selective"), "half": (True, 0.5, "full"),
         "off": (False, 1.0, "full")}


def settings_for(root: Path, data: Path, frames: int, batch: int, cond: int, mode: str) -> dict:
    from _common import ROOT

    checkpointing, ratio, policy = MODES[mode]
    return dict(root=str(ROOT), frames=frames, cond=cond, config=dict(
        checkpoint_dir=str(root), dataset_dir=str(data), output_dir=str(root / "out"), epochs=1,
        batch_size=batch, gradient_accumulation=1, num_workers=0, gradient_checkpointing=checkpointing,
        gradient_checkpointing_ratio=ratio, checkpointing_policy=policy,
        device="cpu", precision="fp32", log_every=1000, log_heavy_every=1000))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", nargs="+", default=["tiny", "medium"], choices=["tiny", "medium"])
    p.add_argument("--frames", nargs="+", type=int, default=[750, 1500, 3000])
    p.add_argument("--batches", nargs="+", type=int, default=[1, 4])
    p.add_argument("--cond", type=int, default=769, help="condition tokens per sample (docs/design.md §5.5)")
    p.add_argument("--modes", nargs="+", default=["full"], choices=list(MODES),
                   help="checkpointing: full (the default), selective policy, half (ratio 0.5), off")
    args = p.parse_args()
    from sidestep.model.configs import TINY_DIT_CONFIG, load_config_file
    from sidestep.model.tiny import write_dit_folder
    from sidestep.train.memory_probe import write_dataset

    configs = {"tiny": TINY_DIT_CONFIG, "medium": load_config_file(MEDIUM_CONFIG)}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.configs:
            model_config = configs[name]
            root = Path(tmp) / name
            write_dit_folder(root / "acestep-v15-turbo", model_config)
            for frames in args.frames:
                for batch in args.batches:
                    data = write_dataset(root / f"data_{frames}_{batch}", 3 * batch, frames, args.cond,
                                         model_config["hidden_size"])
                    for mode in args.modes:
                        r = measure(settings_for(root, data, frames, batch, args.cond, mode))
                        emit(dict(bench="memory_forecast", config=name, frames=frames, seconds=frames / 25,
                                  batch=batch, checkpointing=mode, cond=args.cond, device="cpu",
                                  forecast_increment_mib=round(r["forecast_increment"] / MIB, 2),
                                  measured_increment_mib=round(r["increment"] / MIB, 2),
                                  ratio=round(r["forecast_increment"] / r["increment"], 3),
                                  forecast_total_gib=round(r["forecast_total"] / 2**30, 3),
                                  measured_peak_gib=round(r["peak"] / 2**30, 3),
                                  ratio_total=round(r["forecast_total"] / r["peak"], 3),
                                  step_s=round(r["seconds_per_step"], 2), parts_mib=r["parts"]))


if __name__ == "__main__":
    main()
