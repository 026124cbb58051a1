"""`--fit-memory GIB`: the batch size, checkpointing ratio and base quantization that train the most
samples per second within a memory budget, chosen from the forecast (sidestep/train/forecast.py).

Speed model (relative, per sample; what the forecast cannot measure is stated here): a training
step costs a fixed overhead worth half a sample (optimizer step, launches, the loss: a GPU guess, on
the CPU it measured ~0) plus, per sample, one forward and 1.4 forwards' worth of backward (a frozen
base needs no weight gradients), plus the recomputed forward of the checkpointed blocks: their share
of the blocks (the last block is never checkpointed, sidestep/model/checkpointing.py) x 1 for the
full policy, x 0.4 for selective (the elementwise work and its dispatch). The 1.4 and 0.4 are
bench/train_step.py's medium config at 60 s on one CPU thread (bench/RESULTS.md); a 4-bit base is
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


def candidates(config: Config, model_config: dict[str, Any], device: torch.device, precision: str,
               frames: int) -> list[Candidate]:
    """Every (batch, ratio, quantization) setting with its forecast and speed, fastest first."""
    quantizations = ("none", "nf4") if device.type == "cuda" else ("none",)  # bitsandbytes 4-bit is CUDA only
    found, baseline = [], None
    layers = model_config["num_hidden_layers"]
    for quantize in quantizations:
        for batch in BATCHES:
            for ratio in RATIOS:
                trial = config.replace(batch_size=batch, gradient_checkpointing=ratio > 0,
                                       gradient_checkpointing_ratio=ratio or 1.0, quantize_base=quantize)
                f = forecast(trial, model_config, device, precision, frames, baseline=baseline)
                baseline = f.parts["baseline"]  # measured once: the same process for every trial
                share = checkpointed_blocks(layers, ratio) / layers
                found.append(Candidate(batch, ratio, quantize, f.total / GIB,
                                       relative_speed(batch, share, config.checkpointing_policy, quantize)))
    return sorted(found, key=lambda c: (-c.speed, c.gib))


def choose(options: list[Candidate], budget: float) -> Candidate:
    fitting = [c for c in options if c.fits(budget)]
    if not fitting:
        smallest = min(options, key=lambda c: c.gib)
        raise SidestepError(f"--fit-memory {budget:g}: no setting fits (the smallest, batch 1 with every block "
                            f"checkpointed{' and nf4' if smallest.quantize == 'nf4' else ''}, needs "
                            f"{smallest.gib:.2f} GiB); use --chunk-duration to train on shorter crops, or a "
                            "smaller --rank")
    return fitting[0]


def apply(config: Config, choice: Candidate) -> Config:
    return config.replace(batch_size=choice.batch_size, gradient_checkpointing=choice.ratio > 0,
                          gradient_checkpointing_ratio=choice.ratio or 1.0, quantize_base=choice.quantize)
