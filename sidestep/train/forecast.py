"""Predict a training run's peak memory without loading weights or data.

Weights, adapter and optimizer state are counted from the shapes. Everything else one training
micro-batch allocates is measured, not guessed: the batch, the noise, the decoder's forward (with
the run's adapter, attention, dtype and checkpointing), the fp32 loss and the backward (recomputed
blocks, gradients) run on the meta device at the run's shape while `LiveBytes` follows every
storage's allocation and release and keeps the peak. Meta tensors have shapes but no storage, so
this costs little. On the CPU the forecast adds this process's resident memory (the libraries a
training run also loads) and what a first training step adds for good (`FIRST_STEP_CPU`).

`Forecast.increment` is what the training steps add above the loaded, adapter-wrapped model;
bench/memory_forecast.py and tests/test_forecast_accuracy.py compare it with a real run's.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import weakref
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from sidestep.config import Config
from sidestep.data.batching import LATENT_RATE
from sidestep.memory import current_rss

GIB = 2**30
# Optimizer state per trainable element, in units of the fp32 parameter.
LOADED = ("baseline", "weights", "adapter")  # present before the first step: the rest is the increment
OPTIMIZER_STATES = {"adamw": 2.0, "adamw8bit": 0.5, "adafactor": 0.05, "prodigy": 4.0}


@dataclass
class Forecast:
    parts: dict[str, float] = field(default_factory=dict)  # bytes
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def total(self) -> float:
        return sum(self.parts.values())

    @property
    def increment(self) -> float:
        """What the training steps add above the loaded, adapter-wrapped model."""
        return sum(v for k, v in self.parts.items() if k not in LOADED)

    def gib(self) -> dict[str, float]:
        return {k: round(v / GIB, 3) for k, v in self.parts.items()} | {
            "increment (above the loaded model)": round(self.increment / GIB, 3), "total": round(self.total / GIB, 3)}


class LiveBytes(TorchDispatchMode):
    """The bytes of tensor storages created under this mode that are still alive, and their peak.

    Every op's outputs are looked at; a storage seen for the first time is counted until it is freed
    (a weak reference to it; torch keeps one Python object per storage). Views and in-place results
    share a counted storage, and so do views of tensors made before (the weights). On meta this is exactly the allocator's live bytes of the same code on
    a real device, without the allocator's rounding."""

    def __init__(self):
        super().__init__()
        self.live: dict[int, int] = {}
        self.now = self.peak = 0

    def _free(self, key: int) -> None:
        self.now -= self.live.pop(key, 0)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        # an output sharing an input's storage (a view: the weights' transposes, in-place ops) allocates nothing
        inputs = {t.untyped_storage()._cdata for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)}
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                storage = t.untyped_storage()
                key = storage._cdata
                if key not in self.live and key not in inputs:
                    self.live[key] = storage.nbytes()
                    self.now += self.live[key]
                    weakref.finalize(storage, self._free, key)
                    self.peak = max(self.peak, self.now)
        return out


@contextlib.contextmanager
def _fused_attention_on_meta():
    """SDPA on meta as the CPU runs it. On the meta device SDPA picks its unfused math path, which keeps
    [L, S] attention weights; the CPU (and CUDA) run a fused kernel that keeps only the output and a
    [B, H, L] logsumexp, natively for grouped KV heads, and turns a bool mask into a float one first."""
    original = F.scaled_dot_product_attention

    def fused(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
        q, k, v = query, key, value
        if q.device.type != "meta":
            return original(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal, scale=scale,
                            enable_gqa=enable_gqa)
        if attn_mask is not None and attn_mask.dtype == torch.bool:
            attn_mask = torch.where(attn_mask, torch.zeros((), dtype=q.dtype, device=q.device),
                                    torch.full((), float("-inf"), dtype=q.dtype, device=q.device))
        out, _ = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
            q, k, v, dropout_p, is_causal, attn_mask=attn_mask, scale=scale)
        return out

    F.scaled_dot_product_attention = fused
    try:
        yield
    finally:
        F.scaled_dot_product_attention = original


def _step_on_meta(decoder: torch.nn.Module, config: Config, model_config: dict[str, Any], batch: int, frames: int,
                  cond_tokens: int, dtype: torch.dtype) -> float:
    """Peak live bytes of one micro-batch on meta: the collated batch, the noise draws, then the training loss
    itself (`loss_from_draws`: the forward, checkpointed as configured, and the fp32 loss) and its backward,
    which allocates the adapter's gradients. Only the draws are made here: the meta device has no generators."""
    from sidestep.train.objective import Draws, configured_objective, loss_from_draws

    # the condition comes at the condition encoder's width (XL: 2048 into a 2560-wide decoder)
    D = model_config.get("encoder_hidden_size") or model_config["hidden_size"]
    objective = configured_objective(config, "fixed")  # the timestep distribution does not matter on meta
    tracker = LiveBytes()
    with _fused_attention_on_meta(), tracker:
        empty = functools.partial(torch.empty, device="meta", dtype=dtype)
        # pad_collate's batch (data/dataset.py): latents, masks, condition, per-sample loss weights
        collated = {"target_latents": empty(batch, frames, 64), "context_latents": empty(batch, frames, 128),
                    "attention_mask": empty(batch, frames), "encoder_hidden_states": empty(batch, cond_tokens, D),
                    "encoder_attention_mask": torch.empty(batch, cond_tokens, dtype=torch.bool, device="meta"),
                    "weight_num": torch.empty(batch, dtype=torch.long, device="meta"),
                    "weight_den": torch.empty(batch, dtype=torch.long, device="meta")}
        draws = Draws(keep=torch.empty(batch, dtype=torch.bool, device="meta"), noise=empty(batch, frames, 64),
                      t=empty(batch))
        loss = loss_from_draws(decoder, collated, objective, draws, empty(1, 1, D),
                               input_requires_grad=config.gradient_checkpointing)
        loss.backward()
    return float(tracker.peak)


# What a process's first training step adds to its private memory for good, on the CPU: first-use state
# (allocator arenas, kernel caches, the optimizer's lazily made buffers). It does not scale with the model
# or the batch. Measured with sidestep/train/memory_probe.py (x86_64 Linux, torch 2.11, tiny decoder, LoRA +
# AdamW): 1-3 MB. The pages of torch's code the first step runs (another ~25-35 MB of RSS) are not counted:
# they are shared and reclaimable, and how many of them RSS shows depends on the page cache (the probe
# leaves them out too). tests/test_forecast_accuracy.py fails if this drifts.
FIRST_STEP_CPU = 3e6


def forecast(config: Config, model_config: dict[str, Any], device: torch.device, precision: str,
             frames: int, cond_tokens: int = 769, only_modules: list[str] | None = None,
             baseline: float | None = None) -> Forecast:
    """Peak memory of `train(config)` on `device` for batches of `frames` latent frames."""
    from sidestep.model.attention import use_fast_attention
    from sidestep.model.loader import build_modules
    from sidestep.adapters import build_adapter
    from sidestep.runtime import TORCH_DTYPE

    dtype = TORCH_DTYPE[precision]
    if config.chunk_duration > 0:
        frames = min(frames, round(config.chunk_duration * LATENT_RATE))
    # meta: shapes only; frozen, as the loader leaves it (the adapter unfreezes its own weights)
    decoder = build_modules(model_config)["transformer"].to(dtype=dtype).requires_grad_(False)
    base_params = sum(p.numel() for p in decoder.parameters())
    block_linear = sum(m.weight.numel() for layer in decoder.layers for m in layer.modules()
                       if type(m) is torch.nn.Linear)  # what --quantize-base nf4 turns into 4-bit
    use_fast_attention(decoder, device)
    adapter = build_adapter(config, decoder, only=only_modules)
    trainable = sum(p.numel() for p in adapter.parameters())

    f = Forecast()
    if baseline is None and device.type == "cpu":
        for module in ("lightning.fabric", "torch.utils.tensorboard"):  # a training run loads these too
            importlib.import_module(module)
        baseline = current_rss()
    f.parts["baseline"] = baseline or 0.0
    if device.type == "cpu":  # what a first training step adds for good (FIRST_STEP_CPU)
        f.parts["first step, one-off"] = FIRST_STEP_CPU
    weight_bytes = torch.finfo(dtype).bits // 8
    if config.quantize_base == "nf4":  # 4 bits per weight + one fp32 absmax per 64-weight block
        f.parts["weights"] = (base_params - block_linear) * weight_bytes + block_linear * (0.5 + 4 / 64)
    else:
        f.parts["weights"] = base_params * weight_bytes
    state = OPTIMIZER_STATES.get(config.optimizer_type, 2.0)
    f.parts["adapter"] = trainable * 4

    # Everything one micro-batch allocates, run on meta through the real decoder with its adapter,
    # attention and checkpointing; the adapter's gradients are among it.
    from sidestep.model.checkpointing import enable_checkpointing

    B = config.batch_size
    if config.gradient_checkpointing:
        enable_checkpointing(decoder, config.gradient_checkpointing_ratio, config.checkpointing_policy)
    decoder.train()
    step = _step_on_meta(decoder, config, model_config, B, frames, cond_tokens, dtype)
    f.parts["optimizer state"] = trainable * 4 * state
    f.parts["micro-batch"] = step
    f.notes.update(trainable_params=trainable, base_params=base_params, frames=frames, batch=B, precision=precision)
    return f
