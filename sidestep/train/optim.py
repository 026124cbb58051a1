"""Optimizers (AdamW, 8-bit AdamW, Adafactor, Prodigy) and LR schedules with linear warm-up."""

from __future__ import annotations

import math

import torch

from sidestep.errors import SidestepError

WARMUP_START = 0.1  # warm-up ramps the LR from 10% to 100% (upstream LinearLR start_factor)
SCHEDULES = ("cosine", "cosine_restarts", "linear", "constant", "constant_with_warmup")
COSINE_FLOOR = 0.01  # cosine / linear decay end at 1% of the peak LR
RESTART_CYCLES = 4   # cosine_restarts: the post-warm-up steps split into this many cycles


def build_optimizer(name: str, params: list[torch.nn.Parameter], lr: float, weight_decay: float,
                    device: torch.device) -> torch.optim.Optimizer:
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw8bit":
        if device.type != "cuda":
            raise SidestepError(f"--optimizer-type adamw8bit needs a CUDA GPU (bitsandbytes); this run is on "
                                f"{device.type}: use adamw or adafactor")
        try:
            import bitsandbytes as bnb
        except Exception as err:  # import can fail with OSError/RuntimeError on broken CUDA setups
            raise SidestepError(f"--optimizer-type adamw8bit: bitsandbytes cannot load ({err}); use adamw or "
                                "adafactor") from None
        return bnb.optim.AdamW8bit(params, lr=lr, weight_decay=weight_decay)
    if name == "adafactor":
        from transformers.optimization import Adafactor

        return Adafactor(params, lr=lr, weight_decay=weight_decay, scale_parameter=False, relative_step=False,
                         warmup_init=False)
    if name == "prodigy":
        from prodigyopt import Prodigy

        return Prodigy(params, lr=lr, weight_decay=weight_decay)
    raise SidestepError(f"--optimizer-type '{name}': use adamw, adamw8bit, adafactor or prodigy")


def lr_groups(named_params: list[tuple[str, torch.nn.Parameter]], lr: float, lr_self: float = 1.0,
              lr_cross: float = 1.0) -> list[torch.nn.Parameter] | list[dict]:
    """The optimizer's parameters: self-attention adapter weights at lr * lr_self, cross-attention ones at
    lr * lr_cross, the rest at lr. Both factors 1: the plain parameter list (exactly today's optimizer)."""
    params = [p for _, p in named_params]
    if lr_self == 1.0 and lr_cross == 1.0:
        return params
    groups = {"self": [], "cross": [], "other": []}
    for name, param in named_params:
        groups["self" if "self_attn" in name else "cross" if "cross_attn" in name else "other"].append(param)
    factors = {"self": lr_self, "cross": lr_cross, "other": 1.0}
    return [{"params": ps, "lr": lr * factors[kind]} for kind, ps in groups.items() if ps]


def effective_schedule(optimizer_type: str, scheduler_type: str) -> str:
    # Prodigy estimates the step size itself; a decaying schedule on top fights it.
    return "constant" if optimizer_type == "prodigy" else scheduler_type


def lr_factor(step: int, schedule: str, warmup_steps: int, total_steps: int) -> float:
    """Multiplier of the peak LR at optimizer step `step` (0-based)."""
    if schedule not in SCHEDULES:
        raise SidestepError(f"--scheduler-type '{schedule}': use {', '.join(SCHEDULES)}")
    if schedule == "constant":
        return 1.0
    warmup = min(warmup_steps, max(total_steps - 1, 0))
    if step < warmup:
        return WARMUP_START + (1.0 - WARMUP_START) * step / warmup
    if schedule == "constant_with_warmup":
        return 1.0
    span = max(total_steps - warmup, 1)
    progress = min((step - warmup) / span, 1.0)
    if schedule == "linear":
        return 1.0 - (1.0 - COSINE_FLOOR) * progress
    if schedule == "cosine_restarts":
        cycle = max(span // RESTART_CYCLES, 1)
        progress = ((step - warmup) % cycle) / cycle
    return COSINE_FLOOR + (1.0 - COSINE_FLOOR) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(optimizer: torch.optim.Optimizer, schedule: str, warmup_steps: int,
                    total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    lr_factor(0, schedule, warmup_steps, total_steps)  # validates the name up front
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, schedule, warmup_steps, total_steps))
