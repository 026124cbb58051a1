"""The learning report: did the adapter change what the model does on your songs, and does it over-fit?

The training loss of a flow-matching model is dominated by which t each step drew, so it says
little. The report measures the same thing every time instead: the flow-matching loss of a fixed
set of training songs (and of every held-out song) at the fixed timesteps of `VAL_GRID`, with the
fixed noise of `validation.grid_losses`, no condition dropout, in eval mode, once with the adapter
off (the base model: measured once, at the start, as the base never changes) and at every
evaluation with it on. Two evaluations of the same weights give the same numbers, so epochs compare.

Derived: the relative change of the loss, (on - off) / off, of the grid mean and per timestep band,
on the training songs (did it learn the songs?) and on the held-out songs (did it learn the style?),
and their gap in percentage points (is it memorising?). `verdicts` turns the series into plain
sentences with the thresholds below.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch
from torch.utils.data import Subset

from sidestep.train.validation import VAL_GRID, grid_losses

REPORT_FILE = "learning.json"
REPORT_FRAMES = 750  # each training song is evaluated on its first 30 s (25 latent frames a second)
BANDS: dict[str, tuple[float, ...]] = {"low": (0.1, 0.3), "mid": (0.5,), "high": (0.7, 0.9)}  # t ranges of the grid

# Verdict thresholds (README "Train": the learning report).
MEASURABLE = 0.02    # a relative loss change under 2% is "no measurable change"
GAP_POINTS = 10.0    # training songs improved 10 percentage points more than held-out ones: memorising
RISING_RUN = 3       # the held-out loss rose this many evaluations in a row: memorising
BUDGET = 0.10        # --report-every 0 (auto): the report's forward passes stay under 10% of the training work


def pick_songs(count: int, wanted: int) -> list[int]:
    """`wanted` positions spread evenly over `count` songs (all of them when there are fewer)."""
    if count <= wanted:
        return list(range(count))
    if wanted == 1:
        return [0]
    return sorted({round(i * (count - 1) / (wanted - 1)) for i in range(wanted)})


def auto_every(report_frames: int, epoch_frames: float, budget: float = BUDGET) -> int:
    """Epochs between evaluations so that one evaluation's forward passes (frames x timesteps, no gradients)
    cost at most `budget` of the training work since the last one (an epoch ~ 3 forward passes per trained frame:
    forward, backward, the checkpointed recompute counted loosely)."""
    work = len(VAL_GRID) * report_frames
    return max(1, math.ceil(work / (budget * 3.0 * max(epoch_frames, 1.0))))


def relative_change(on: list[float], off: list[float], band: tuple[float, ...] | None = None) -> float:
    """(on - off) / off of the mean over the grid (or over one band of it); negative = the loss fell."""
    keep = [i for i, t in enumerate(VAL_GRID) if band is None or t in band]
    before, after = sum(off[i] for i in keep), sum(on[i] for i in keep)
    return (after - before) / before if before > 0 else 0.0


def _derive(entry: dict[str, Any]) -> dict[str, Any]:
    """The changes of one evaluation (per split, overall and per band) and the train/held-out gap."""
    for split in ("train", "val"):
        if split in entry:
            on, off = entry[split]["on"], entry[split]["off"]
            entry[f"{split}_change"] = relative_change(on, off)
            entry[f"{split}_bands"] = {name: relative_change(on, off, band) for name, band in BANDS.items()}
    if "val" in entry:
        entry["gap_points"] = 100.0 * (entry["val_change"] - entry["train_change"])
    return entry


class LearningReport:
    """Evaluations of one run; `state()` goes into the checkpoint so a resumed run continues the series."""

    def __init__(self, train_data, val_data, *, seed: int, songs: int, device: torch.device, dtype: torch.dtype,
                 max_frames: int = REPORT_FRAMES):
        self.train = Subset(train_data, pick_songs(len(train_data), songs))
        self.val = val_data  # every held-out song, whole: its adapter-on loss is the validation loss
        self.seed, self.max_frames, self.device, self.dtype = seed, max_frames, device, dtype
        self.base: dict[str, list[float]] | None = None
        self.evaluations: list[dict[str, Any]] = []

    def frames(self) -> int:
        """Latent frames one evaluation runs through the decoder per timestep (adapter on)."""
        lengths = [min(self.train.dataset.lengths[i], self.max_frames) for i in self.train.indices]
        return sum(lengths) + (sum(self.val.lengths) if self.val is not None else 0)

    def state(self) -> dict[str, Any]:
        return {"base": self.base, "evaluations": self.evaluations}

    def load_state(self, state: dict[str, Any] | None) -> None:
        if state:
            self.base, self.evaluations = state["base"], list(state["evaluations"])

    def _losses(self, decoder: torch.nn.Module) -> dict[str, list[float]]:
        args = dict(seed=self.seed, device=self.device, dtype=self.dtype)
        losses = {"train": grid_losses(decoder, self.train, max_frames=self.max_frames, **args)}
        if self.val is not None:
            losses["val"] = grid_losses(decoder, self.val, **args)
        return losses

    def measure_base(self, decoder: torch.nn.Module, epoch: int, step: int) -> dict[str, Any]:
        """The base model (adapter off): the reference of every later evaluation, recorded as the first one."""
        from sidestep.generate import adapter_strength, unwrap_decoder

        started = time.perf_counter()
        with adapter_strength(unwrap_decoder(decoder), 0.0):
            self.base = self._losses(decoder)
        entry = {"epoch": epoch, "step": step, "seconds": time.perf_counter() - started}
        entry.update({split: {"off": off, "on": list(off)} for split, off in self.base.items()})
        self.evaluations.append(_derive(entry))
        return entry

    def evaluate(self, decoder: torch.nn.Module, epoch: int, step: int) -> dict[str, Any]:
        """The adapter on, against the base; appended to the series and returned."""
        if self.base is None:
            raise ValueError("LearningReport.evaluate: measure_base first")
        started = time.perf_counter()
        now = self._losses(decoder)
        entry = {"epoch": epoch, "step": step, "seconds": time.perf_counter() - started}
        entry.update({split: {"off": self.base[split], "on": on} for split, on in now.items()})
        self.evaluations.append(_derive(entry))
        return entry

    def document(self, keep_best: bool = False) -> dict[str, Any]:
        """What `learning.json` holds."""
        return {"grid": list(VAL_GRID), "bands": {k: list(v) for k, v in BANDS.items()},
                "training_songs": len(self.train), "held_out_songs": len(self.val) if self.val is not None else 0,
                "max_frames_per_training_song": self.max_frames, "seed": self.seed,
                "thresholds": {"measurable_change": MEASURABLE, "gap_points": GAP_POINTS, "rising_run": RISING_RUN},
                "evaluations": self.evaluations, "verdicts": verdicts(self.evaluations, keep_best)}


def percent(change: float) -> str:
    return f"{100 * change:+.1f}%"


def describe(entry: dict[str, Any]) -> str:
    """One progress line per evaluation."""
    bands = " ".join(f"{name} {percent(value)}" for name, value in entry["train_bands"].items())
    text = f"learning  epoch {entry['epoch']}: training songs {percent(entry['train_change'])} (t {bands})"
    if "val" in entry:
        text += f" | held-out {percent(entry['val_change'])} | gap {entry['gap_points']:+.1f} pts"
    return text + f"  [{entry['seconds']:.1f} s]"


def held_out_rises(evaluations: list[dict[str, Any]]) -> int:
    """How many evaluations in a row, up to the last, the held-out loss (adapter on) rose."""
    losses = [sum(e["val"]["on"]) for e in evaluations if "val" in e]
    run = 0
    for before, after in zip(losses[::-1][1:], losses[::-1]):
        if after <= before:
            break
        run += 1
    return run


def verdicts(evaluations: list[dict[str, Any]], keep_best: bool = False) -> list[str]:
    """Plain-language conclusions from the series (thresholds: MEASURABLE, GAP_POINTS, RISING_RUN)."""
    if len(evaluations) < 2:
        return []
    last = evaluations[-1]
    train, val = last["train_change"], last.get("val_change")
    held = f", {percent(val)} on held-out songs" if val is not None else ""
    if train <= -MEASURABLE:
        out = [f"learned your songs: loss {percent(train)} on training songs{held}"]
    elif train >= MEASURABLE:
        out = [f"worse on your songs: loss {percent(train)} on training songs{held}; lower the learning rate"]
    else:
        out = [f"no measurable change: loss {percent(train)} on training songs{held} (under "
               f"{MEASURABLE:.0%}); raise the learning rate or the epochs"]
    if val is None:
        return out
    rises = held_out_rises(evaluations)
    if rises >= RISING_RUN:
        where = "the best adapter is in best/" if keep_best else "pass --keep-best to keep the best adapter"
        out.append(f"memorising: the held-out loss rose for {rises} evaluations; {where}")
    elif train <= -MEASURABLE and last["gap_points"] >= GAP_POINTS:
        out.append(f"memorising: training songs improved {last['gap_points']:.1f} points more than held-out "
                   "ones; add songs or train fewer epochs")
    elif val <= -MEASURABLE:
        out.append(f"learned the style: held-out songs improved too ({percent(val)})")
    return out


__all__ = ["BANDS", "LearningReport", "REPORT_FILE", "describe", "held_out_rises", "pick_songs", "relative_change",
           "verdicts"]
