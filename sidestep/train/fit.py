"""`--fit-memory GIB`: the batch size, checkpointing ratio and base quantization that train the most
samples per second within a memory budget, chosen from the forecast (sidestep/train/forecast.py).

Speed model (relative, per sample; what the forecast cannot measure is stated here): a training
step costs a fixed overhead worth half a sample (optimizer step, launches, the loss: a GPU guess, on
the CPU it measured ~0) plus, per sample, one forward and 1.4 forwards' worth of backward (a frozen
base needs no weight gradients), plus the recomputed forward of the checkpointed blocks: their share
of the blocks (the last block is never checkpointed, sidestep/model/checkpointing.py) x 1 for the
full policy, x 0.4 for selective (the elementwise work and its dispatch). The 1.4 and 0.4 are
bench/train_step.py's medium config at 60 s on one CPU thread (bench/RESULTS.md, morning host; the
evening host's interleaved runs gave 1.3 and 0.3-0.5, within their noise); a 4-bit base is
assumed to cost 15% more per sample (dequantization; not measured here).
samples/s ~ B / (0.5 + B * (2.4 + recompute) / 2.4 * q): larger batches and fewer checkpointed
blocks win until memory runs out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from sidestep.config import Config
from sidestep.errors import SidestepError
from sidestep.model.checkpointing import checkpointed_blocks
from sidestep.train.forecast import GIB, forecast

BATCHES = (1, 2, 4, 8)
RATIOS = (0.0, 0.25, 0.5, 0.75, 1.0)
STEP_OVERHEAD = 0.5  # in samples' worth of work
PASSES = 2.4  # forward + backward of one sample, in forwards
NF4_COST = 1.15
SELECTIVE_SHARE = 0.4  # the share of a block's forward that selective checkpointing still costs


@dataclass(frozen=True)
class Candidate:
    batch_size: int
    ratio: float
    quantize: str
    gib: float  # forecast peak
    speed: float  # relative samples per second

    def fits(self, budget: float) -> bool:
        return self.gib <= budget


def relative_speed(batch_size: int, share: float, policy: str, quantize: str) -> float:
    """Relative samples per second; `share` = the checkpointed share of the decoder blocks."""
    recompute = share * (SELECTIVE_SHARE if policy == "selective" else 1.0)
    per_sample = (PASSES + recompute) / PASSES * (NF4_COST if quantize == "nf4" else 1.0)
    return batch_size / (STEP_OVERHEAD + batch_size * per_sample)


def _settings(config: Config, model_config: dict[str, Any], device: torch.device) -> list[tuple[int, float, str, float]]:
    """Every (batch, ratio, quantization) setting with its relative speed, fastest first (no forecast needed)."""
    quantizations = ("none", "nf4") if device.type == "cuda" else ("none",)  # bitsandbytes 4-bit is CUDA only
    layers = model_config["num_hidden_layers"]
    found = [(batch, ratio, quantize, relative_speed(batch, checkpointed_blocks(layers, ratio) / layers,
                                                     config.checkpointing_policy, quantize))
             for quantize in quantizations for batch in BATCHES for ratio in RATIOS]
    return sorted(found, key=lambda s: -s[3])


class _Forecaster:
    """Forecasts of one run's settings; the process's baseline memory is measured once for all of them."""

    def __init__(self, config: Config, model_config: dict[str, Any], device: torch.device, precision: str,
                 frames: int):
        self.config, self.model_config, self.device, self.precision, self.frames = \
            config, model_config, device, precision, frames
        self.baseline: float | None = None

    def __call__(self, batch: int, ratio: float, quantize: str, speed: float) -> Candidate:
        trial = apply(self.config, Candidate(batch, ratio, quantize, 0.0, speed))
        f = forecast(trial, self.model_config, self.device, self.precision, self.frames, baseline=self.baseline)
        self.baseline = f.parts["baseline"]
        return Candidate(batch, ratio, quantize, f.total / GIB, speed)


def candidates(config: Config, model_config: dict[str, Any], device: torch.device, precision: str,
               frames: int) -> list[Candidate]:
    """Every setting with its forecast and speed, fastest first (the --dry-run table)."""
    forecaster = _Forecaster(config, model_config, device, precision, frames)
    return sorted((forecaster(*s) for s in _settings(config, model_config, device)), key=lambda c: (-c.speed, c.gib))


def choose(options: list[Candidate], budget: float) -> Candidate:
    fitting = [c for c in options if c.fits(budget)]
    if not fitting:
        raise _nothing_fits(budget, min(options, key=lambda c: c.gib))
    return fitting[0]


def fastest_fitting(config: Config, model_config: dict[str, Any], device: torch.device, precision: str,
                    frames: int, budget: float) -> Candidate:
    """`choose(candidates(...), budget)` forecasting only as far as needed: settings in speed order until one
    fits (a forecast simulates a whole micro-batch, about 2 s for the 2B decoder)."""
    forecaster = _Forecaster(config, model_config, device, precision, frames)
    settings = _settings(config, model_config, device)
    tried = []
    for i, setting in enumerate(settings):
        tried.append(forecaster(*setting))
        if tried[-1].fits(budget):
            # settings of equal speed: the one that needs less memory, as `choose` orders them
            ties = [forecaster(*s) for s in settings[i + 1:] if s[3] == setting[3]]
            return min([tried[-1], *[c for c in ties if c.fits(budget)]], key=lambda c: c.gib)
    raise _nothing_fits(budget, min(tried, key=lambda c: c.gib))


def _nothing_fits(budget: float, smallest: Candidate) -> SidestepError:
    return SidestepError(f"--fit-memory {budget:g}: no setting fits (the smallest, batch 1 with every block "
                         f"checkpointed{' and nf4' if smallest.quantize == 'nf4' else ''}, needs "
                         f"{smallest.gib:.2f} GiB); use --chunk-duration to train on shorter crops, or a "
                         "smaller --rank")


def apply(config: Config, choice: Candidate) -> Config:
    return config.replace(batch_size=choice.batch_size, gradient_checkpointing=choice.ratio > 0,
                          gradient_checkpointing_ratio=choice.ratio or 1.0, quantize_base=choice.quantize)
