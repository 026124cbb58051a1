"""The learning report's cost: seconds per evaluation against seconds per epoch, on the demo's data.

    uv run python train.py demo                      # writes ./demo (checkpoint root and tensors)
    uv run python bench/learning_report.py [--demo-dir ./demo] [--epochs 4] [--report-songs 4]

Trains the demo's LoRA (same settings) with the report on and prints one JSON line: the mean
seconds of an evaluation after the start (adapter on; training songs cropped to 30 s, plus every
held-out song), the base measurement at the start (adapter off, once), and the mean seconds of an
epoch without the evaluations.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from _common import emit, machine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo-dir", default="./demo")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--report-songs", type=int, default=4)
    parser.add_argument("--val-split", type=float, default=0.0)
    args = parser.parse_args()

    from sidestep.config import Config
    from sidestep.train.recipe import train

    demo = Path(args.demo_dir)
    if not (demo / "tensors" / "manifest.json").is_file():
        raise SystemExit(f"{demo}: run `train.py demo --demo-dir {demo}` first")
    out = Path(tempfile.mkdtemp()) / "lora"
    config = Config(checkpoint_dir=str(demo / "checkpoints"), model_variant="turbo", num_workers=0,
                    dataset_dir=str(demo / "tensors"), output_dir=str(out), epochs=args.epochs, save_every=100,
                    rank=8, alpha=16, learning_rate=1e-3, warmup_steps=2, gradient_accumulation=2,
                    report_songs=args.report_songs, val_split=args.val_split, report_every=1)
    result = train(config, "fixed", quiet=True)
    evaluations = result.learning
    later = [e["seconds"] for e in evaluations[1:]]
    epoch_s = (result.seconds - sum(later)) / result.epochs  # the start's base measurement precedes the clock
    mean_eval = sum(later) / len(later)
    emit({"bench": "learning_report", "machine": machine(), "epochs": result.epochs,
          "report_songs": args.report_songs, "val_split": args.val_split,
          "base_s": round(evaluations[0]["seconds"], 3), "evaluation_s": round(mean_eval, 3),
          "epoch_s": round(epoch_s, 3), "evaluation_share_of_epoch": round(mean_eval / epoch_s, 3)})


if __name__ == "__main__":
    main()
