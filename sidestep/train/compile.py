"""`--compile`: torch.compile the decoder blocks, and say in one line when inductor fails."""

from __future__ import annotations

import contextlib

import torch

from sidestep.errors import SidestepError


def compile_blocks(decoder: torch.nn.Module, device: torch.device, static_shapes: bool) -> None:
    """torch.compile each decoder block's forward in place (module names, and so adapter keys, stay).

    With gradient checkpointing the checkpoint call is compiled together with the block (dynamo
    traces it as one region); compiling only the block inside an eager checkpoint makes the
    recomputation disagree with the forward. On CUDA with static shapes (fixed-length crops)
    the blocks also get CUDA graphs."""
    from sidestep.model.checkpointing import checkpointed, checkpointing_plan

    mode = "reduce-overhead" if device.type == "cuda" and static_shapes else "default"
    count, policy = checkpointing_plan(decoder)
    decoder.gradient_checkpointing = False  # the compiled forward checkpoints itself
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 4 * len(decoder.layers))
    for i, layer in enumerate(decoder.layers):
        forward = layer.forward
        if i < count:
            forward = checkpointed(forward, policy)
        layer.forward = torch.compile(forward, mode=mode, dynamic=False if static_shapes else None)


@contextlib.contextmanager
def compile_errors(enabled: bool):
    """torch.compile fails at the first call, deep inside inductor: say so in one line."""
    if not enabled:
        yield
        return
    try:
        yield
    except Exception as err:
        if "torch._dynamo" not in type(err).__module__ and "torch._inductor" not in type(err).__module__:
            raise
        first = str(err).strip().splitlines()[-1][:200] if str(err).strip() else type(err).__name__
        raise SidestepError(f"--compile: torch.compile failed on this device ({first}); run without --compile") \
            from None
