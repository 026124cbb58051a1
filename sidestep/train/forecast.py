"""Predict a training run's peak memory without loading weights or data.

Weights, adapter and optimizer state are counted from the shapes. Activations are measured,
not guessed: one decoder block (with the run's adapter, attention and dtype) runs forward on
the meta device at the run's batch shape while a saved-tensor hook adds up what autograd keeps
for backward. Meta tensors have shapes but no storage, so this costs nothing. On the CPU the
forecast adds this process's current resident memory (the libraries a training run also loads).
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass, field
from typing import Any

import torch

from sidestep.config import Config
from sidestep.data.batching import LATENT_RATE
from sidestep.memory import current_rss

GIB = 2**30
# Optimizer state per trainable element, in units of the fp32 parameter.
OPTIMIZER_STATES = {"adamw": 2.0, "adamw8bit": 0.5, "adafactor": 0.05, "prodigy": 4.0}


@dataclass
class Forecast:
    parts: dict[str, float] = field(default_factory=dict)  # bytes
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def total(self) -> float:
        return sum(self.parts.values())

    def gib(self) -> dict[str, float]:
        return {k: round(v / GIB, 3) for k, v in self.parts.items()} | {"total": round(self.total / GIB, 3)}


def _saved_bytes(block: torch.nn.Module, args: dict[str, Any]) -> tuple[float, float]:
    """(bytes autograd saves for one block's backward, bytes of the block's output) on meta."""
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor):
        seen[id(t)] = t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = block(**args)
    return float(sum(seen.values())), float(out.numel() * out.element_size())


def forecast(config: Config, model_config: dict[str, Any], device: torch.device, precision: str,
             frames: int, cond_tokens: int = 769, only_modules: list[str] | None = None,
             baseline: float | None = None) -> Forecast:
    """Peak memory of `train(config)` on `device` for batches of `frames` latent frames."""
    from sidestep.model.attention import use_fast_attention
    from sidestep.model.loader import build_modules
    from sidestep.adapters import build_adapter
    from sidestep.model.checkpointing import checkpointed_blocks
    from sidestep.runtime import TORCH_DTYPE

    dtype = TORCH_DTYPE[precision]
    if config.chunk_duration > 0:
        frames = min(frames, round(config.chunk_duration * LATENT_RATE))
    decoder = build_modules(model_config)["transformer"].to(dtype=dtype)  # meta: shapes only
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
    weight_bytes = torch.finfo(dtype).bits // 8
    if config.quantize_base == "nf4":  # 4 bits per weight + one fp32 absmax per 64-weight block
        f.parts["weights"] = (base_params - block_linear) * weight_bytes + block_linear * (0.5 + 4 / 64)
    else:
        f.parts["weights"] = base_params * weight_bytes
    state = OPTIMIZER_STATES.get(config.optimizer_type, 2.0)
    f.parts["adapter+grads+optimizer"] = trainable * 4 * (2 + state)

    # Activations of one block at the run's shape, measured on meta.
    B, D = config.batch_size, model_config["hidden_size"]
    Tp = math.ceil(frames / model_config["patch_size"])
    block = decoder.layers[0]
    block.train()
    x = torch.empty(B, Tp, D, device="meta", dtype=dtype, requires_grad=True)
    rope = (torch.empty(Tp, model_config["head_dim"], device="meta", dtype=dtype),) * 2
    args = dict(hidden_states=x, position_embeddings=rope, temb=torch.empty(B, 6, D, device="meta", dtype=dtype),
                attention_mask=None, encoder_hidden_states=torch.empty(B, cond_tokens, D, device="meta", dtype=dtype))
    per_block, block_io = _saved_bytes(block, args)
    layers = model_config["num_hidden_layers"]
    count = checkpointed_blocks(layers, config.gradient_checkpointing_ratio) if config.gradient_checkpointing else 0
    # A checkpointed block keeps its input (selective: also its matmul outputs, counted here as the whole
    # block: an upper bound); the others keep everything; one block at a time is recomputed in full.
    kept = block_io if config.checkpointing_policy == "full" else per_block
    f.parts["activations"] = count * kept + (layers - count) * per_block + (per_block if count else 0)
    # backward of one block: gradients of its intermediates, of the running activation, and the
    # loss's fp32 tensors (prediction, noise, target)
    f.parts["backward transient"] = per_block + 2 * block_io + 6 * B * frames * 64 * 4
    f.notes.update(trainable_params=trainable, base_params=base_params, frames=frames, batch=B, precision=precision,
                   per_block_saved_gib=round(per_block / GIB, 4))
    return f
