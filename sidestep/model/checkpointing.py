"""Activation checkpointing of the decoder: how many blocks recompute in backward, and what they keep.

`--gradient-checkpointing-ratio R` checkpoints the first round(R x blocks) decoder blocks (1 = all but
the last, whose recompute would save nothing: the default; 0 = none): each block spared keeps its
activations, trading memory for the time of one recomputed forward. `--checkpointing-policy selective`
keeps the base matmul and attention outputs of the checkpointed blocks (torch's selective activation
checkpointing) and recomputes only the elementwise work between them (norms, activations, residual
adds, modulation) and the adapter's low-rank products, which are cheap to redo but whose outputs are
as large as the matmuls'.

The plan is hooked into diffusers' own mechanism (`enable_gradient_checkpointing` with a custom
function), so the decoder's forward is untouched.
"""

from __future__ import annotations

import functools
from typing import Callable

import torch

POLICIES = ("full", "selective")


def checkpointed_blocks(num_blocks: int, ratio: float) -> int:
    """How many of the first blocks are checkpointed for a ratio (half rounds up), never the last block.

    The last block's activations are needed the moment the forward ends: checkpointing it would free
    them and rebuild them at once in backward, at the cost of one block's forward and no lower peak
    (its rebuilt activations are alive at the same point of the step as the kept ones would be;
    measured on the medium config: the same live-memory peak, 1/8 less recompute)."""
    return max(0, min(num_blocks - 1, int(ratio * num_blocks + 0.5)))


def _low_rank(op, args) -> bool:
    """A product whose inner dimension is at most a quarter of both outer ones, such as a LoRA up-projection
    ([T, r] x [r, d]): each output element costs only 2r FLOPs to redo, yet the output is as large as the
    layer's own. The base layers' products (inner dimension = a model width) never qualify."""
    aten = torch.ops.aten
    a, b = (args[1], args[2]) if op in (aten.addmm.default, aten.baddbmm.default) else (args[0], args[1])
    return 4 * a.shape[-1] <= min(a.shape[-2], b.shape[-1])


def _keep_matmuls():
    """Selective checkpointing's policy: save what the base matmuls and attention produce, recompute the rest
    (elementwise work and low-rank adapter products: cheap to redo, large to keep)."""
    from torch.utils.checkpoint import CheckpointPolicy, create_selective_checkpoint_contexts

    aten = torch.ops.aten
    matmuls = {aten.mm.default, aten.addmm.default, aten.bmm.default, aten.baddbmm.default}
    attention = {aten._scaled_dot_product_efficient_attention.default,
                 aten._scaled_dot_product_flash_attention.default,
                 aten._scaled_dot_product_flash_attention_for_cpu.default}

    def policy(ctx, op, *args, **kwargs):
        if op in attention or (op in matmuls and not _low_rank(op, args)):
            return CheckpointPolicy.MUST_SAVE
        return CheckpointPolicy.PREFER_RECOMPUTE

    return create_selective_checkpoint_contexts(policy)


def checkpointed(forward: Callable, policy: str) -> Callable:
    """`forward` run under a (non-reentrant) checkpoint with the given policy."""
    from torch.utils.checkpoint import checkpoint

    kwargs = {"context_fn": _keep_matmuls} if policy == "selective" else {}
    return functools.partial(checkpoint, forward, use_reentrant=False, **kwargs)


def enable_checkpointing(decoder: torch.nn.Module, ratio: float = 1.0, policy: str = "full") -> int:
    """Checkpoint the first round(ratio x blocks) decoder blocks; returns how many."""
    count = checkpointed_blocks(len(decoder.layers), ratio)
    decoder._sidestep_checkpointing = (count, policy)
    if count == 0:
        decoder.disable_gradient_checkpointing()
        return 0
    chosen = {id(layer) for layer in decoder.layers[:count]}

    def run_block(block, *args):
        if id(block) not in chosen:
            return block(*args)
        return checkpointed(block.__call__, policy)(*args)

    decoder.enable_gradient_checkpointing(run_block)
    return count


def checkpointing_plan(decoder: torch.nn.Module) -> tuple[int, str]:
    """(checkpointed blocks, policy) as `enable_checkpointing` set them; (0, "full") when it never ran."""
    if not getattr(decoder, "gradient_checkpointing", False):
        return 0, "full"
    return getattr(decoder, "_sidestep_checkpointing", (len(decoder.layers), "full"))
