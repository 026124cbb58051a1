"""`loss.png`: train loss (raw and smoothed) and validation loss against optimizer steps, lr on a second axis;
with a learning report, a second panel: the relative loss change (adapter on vs off) of training and held-out songs.

matplotlib's object API on the Agg canvas: no pyplot, no global backend switch, no display.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

from sidestep.io import atomic_path

LOSS_PLOT = "loss.png"


def ema(values: Sequence[float], weight: float = 0.9) -> list[float]:
    """Debiased exponential moving average (as TensorBoard's smoothing); non-finite values are skipped."""
    out, avg, norm = [], 0.0, 0.0
    for value in values:
        if value is not None and math.isfinite(value):
            avg = weight * avg + (1.0 - weight) * value
            norm = weight * norm + (1.0 - weight)
        out.append(avg / norm if norm > 0 else float("nan"))
    return out


def _finite(values: Sequence[float]) -> list[float]:
    return [float(v) if v is not None and math.isfinite(v) else float("nan") for v in values]


def plot_losses(path: str | Path, steps: Sequence[int], train_losses: Sequence[float],
                val_points: Sequence[tuple[int, float]] = (), lrs: Sequence[float] | None = None,
                smoothing: float = 0.9, title: str = "Side-Step training",
                learning: Sequence[tuple[int, float, float | None]] = ()) -> Path:
    """Write the plot atomically to `path` (a folder gets `loss.png` inside); returns the file.

    steps/train_losses/lrs: one entry per optimizer step; val_points: (step, validation loss).
    learning: (step, training-song change, held-out change or None) per learning-report evaluation,
    as fractions (-0.1 = the loss fell 10%); drawn in a second panel below.
    Empty inputs still give a (labelled, empty) plot, e.g. on a Ctrl-C before the first step.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    if path.is_dir():
        path = path / LOSS_PLOT
    if len(steps) != len(train_losses) or (lrs and len(lrs) != len(steps)):
        raise ValueError("plot_losses: steps, train_losses and lrs need one entry per step")
    fig = Figure(figsize=(10, 8.5 if learning else 5.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(2, 1, 1) if learning else fig.add_subplot(1, 1, 1)
    handles = []
    if len(steps):
        raw = _finite(train_losses)
        handles += ax.plot(steps, raw, color="tab:blue", alpha=0.3, linewidth=0.8, label="train loss")
        handles += ax.plot(steps, ema(raw, smoothing), color="tab:blue", linewidth=1.8,
                           label=f"train loss (EMA {smoothing:g})")
    if val_points:
        vs, vl = zip(*sorted(val_points))
        best = min(range(len(vl)), key=lambda i: vl[i] if math.isfinite(vl[i]) else math.inf)
        handles += ax.plot(vs, _finite(vl), color="tab:orange", marker="o", markersize=4, linewidth=1.5,
                           label=f"validation loss (best {vl[best]:.4g} at step {vs[best]})")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.grid(True, alpha=0.3)
    if lrs and len(steps):
        ax_lr = ax.twinx()
        handles += ax_lr.plot(steps, _finite(lrs), color="tab:gray", linestyle="--", linewidth=1.0,
                              label="learning rate")
        ax_lr.set_ylabel("learning rate")
        ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
    if handles:
        ax.legend(handles=handles, loc="upper right", fontsize="small")
    else:
        ax.text(0.5, 0.5, "no optimizer step yet", transform=ax.transAxes, ha="center", va="center")
    ax.set_title(title)
    if learning:
        _plot_learning(fig.add_subplot(2, 1, 2, sharex=ax), learning)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path


def _plot_learning(ax, learning: Sequence[tuple[int, float, float | None]]) -> None:
    steps = [point[0] for point in learning]
    ax.plot(steps, [100 * point[1] for point in learning], color="tab:green", marker="o", markersize=4,
            label="training songs")
    if any(point[2] is not None for point in learning):
        ax.plot(steps, [100 * point[2] if point[2] is not None else float("nan") for point in learning],
                color="tab:red", marker="s", markersize=4, label="held-out songs")
    ax.axhline(0.0, color="gray", linewidth=0.8)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss change vs base (%)")
    ax.set_title("learning report: loss with the adapter on vs off, fixed timesteps and noise", fontsize="medium")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower left", fontsize="small")


__all__ = ["plot_losses", "ema", "LOSS_PLOT"]
