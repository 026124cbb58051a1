"""Partial and selective activation checkpointing: the first round(R x blocks) blocks recompute in backward,
and outputs and gradients equal those without checkpointing whatever R and the policy."""

import pytest
import torch
from safetensors.torch import load_file

from conftest import golden_cases
from sidestep.config import Config
from sidestep.errors import SidestepError
from sidestep.model.checkpointing import checkpointed_blocks, checkpointing_plan, enable_checkpointing
from sidestep.model.loader import load_dit

CASE = golden_cases()[0].values[0]  # a tiny decoder with its reference inputs (4 blocks)


def _inputs():
    raw = load_file(CASE / "inputs.safetensors")
    return {k[len("decoder."):]: v for k, v in raw.items() if k.startswith("decoder.")}


def _run(decoder, dec, calls):
    """Forward + backward; returns (output, parameter grads, input grad) and counts each block's forward calls."""
    decoder.zero_grad()
    calls.clear()
    x = dec["hidden_states"].clone().requires_grad_(True)
    out = decoder(hidden_states=x, timestep=dec["timestep"], timestep_r=dec["timestep_r"],
                  encoder_hidden_states=dec["encoder_hidden_states"], context_latents=dec["context_latents"]).sample
    out.square().mean().backward()
    return out.detach(), {n: p.grad.clone() for n, p in decoder.named_parameters()}, x.grad.clone()


@pytest.fixture(scope="module")
def decoder():
    decoder = load_dit(CASE).transformer.requires_grad_(True).train()
    return decoder


def test_the_first_blocks_recompute_and_nothing_changes(decoder):
    dec, calls = _inputs(), []
    for i, layer in enumerate(decoder.layers):
        layer.register_forward_pre_hook(lambda module, args, i=i: calls.append(i))
    blocks = len(decoder.layers)
    assert blocks == 4
    out0, grads0, x0 = _run(decoder, dec, calls)
    assert calls == list(range(blocks))  # no checkpointing: each block runs once
    for ratio in (0.25, 0.5, 0.75, 1.0):
        for policy in ("full", "selective"):
            count = enable_checkpointing(decoder, ratio, policy)
            assert count == checkpointed_blocks(blocks, ratio) == min(round(ratio * blocks), blocks - 1)
            assert checkpointing_plan(decoder) == (count, policy)
            out, grads, x = _run(decoder, dec, calls)
            # forward once each, then backward re-runs the checkpointed ones (last first)
            assert sorted(calls) == sorted(list(range(blocks)) + list(range(count))), (ratio, policy, calls)
            assert torch.equal(out, out0), (ratio, policy)
            assert torch.allclose(x, x0, atol=1e-7), (ratio, policy)
            for name in grads0:
                assert torch.allclose(grads[name], grads0[name], atol=1e-6, rtol=1e-5), (ratio, policy, name)
    assert enable_checkpointing(decoder, 0.0) == 0 and not decoder.gradient_checkpointing
    _run(decoder, dec, calls)
    assert calls == list(range(blocks))


def test_ratio_bounds_are_the_configs():
    assert Config(gradient_checkpointing_ratio=0.5).gradient_checkpointing_ratio == 0.5
    with pytest.raises(SidestepError, match=r"--gradient-checkpointing-ratio must be in \[0, 1\], got 1.5"):
        Config(gradient_checkpointing_ratio=1.5)
    assert [checkpointed_blocks(24, r) for r in (0, 0.25, 0.5, 0.75, 1)] == [0, 6, 12, 18, 23]
    assert checkpointed_blocks(1, 1.0) == 0  # a lone block is also the last one


class _CountMatmuls(torch.utils._python_dispatch.TorchDispatchMode):
    OPS = {torch.ops.aten.mm.default, torch.ops.aten.addmm.default, torch.ops.aten.bmm.default}

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += func in self.OPS
        return func(*args, **(kwargs or {}))


def test_selective_policy_does_not_redo_the_matmuls(decoder):
    """Full checkpointing runs every matmul of a checkpointed block again in backward; selective keeps
    their outputs, so it runs exactly as many matmuls as no checkpointing at all."""
    dec, counts = _inputs(), {}
    for name, ratio, policy in (("none", 0.0, "full"), ("full", 1.0, "full"), ("selective", 1.0, "selective")):
        enable_checkpointing(decoder, ratio, policy)
        with _CountMatmuls() as mode:
            _run(decoder, dec, [])
        counts[name] = mode.count
    assert counts["selective"] == counts["none"] < counts["full"], counts


class _RecordMatmuls(_CountMatmuls):
    def __init__(self):
        super().__init__()
        self.shapes = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in self.OPS:
            a, b = (args[1], args[2]) if func is torch.ops.aten.addmm.default else (args[0], args[1])
            self.shapes.append((tuple(a.shape), tuple(b.shape)))
        return func(*args, **(kwargs or {}))


def test_selective_policy_redoes_only_the_adapters_low_rank_products():
    """With a LoRA, selective checkpointing keeps the base layers' matmul outputs but recomputes the
    [T, r] x [r, d] up-projections (cheap per element, as large as the layer's output); gradients are
    still those without checkpointing."""
    from collections import Counter

    from sidestep.adapters import select_target_modules
    from sidestep.adapters.lora import Lora

    rank = 4
    decoder = load_dit(CASE).transformer.requires_grad_(False).train()
    adapter = Lora(decoder, select_target_modules(decoder), rank=rank, alpha=8, dropout=0.0)
    params = adapter.parameters()
    for p in params:  # a trained adapter, so that the up-projections are not zero
        p.data.normal_(0, 0.1, generator=torch.Generator().manual_seed(p.numel()))
    dec, shapes, grads = _inputs(), {}, {}
    for name, policy, ratio in (("none", "full", 0.0), ("selective", "selective", 1.0)):
        enable_checkpointing(decoder, ratio, policy)
        for p in params:
            p.grad = None
        with _RecordMatmuls() as mode:
            out = decoder(hidden_states=dec["hidden_states"], timestep=dec["timestep"], timestep_r=dec["timestep_r"],
                          encoder_hidden_states=dec["encoder_hidden_states"],
                          context_latents=dec["context_latents"]).sample
            out.square().mean().backward()
        shapes[name], grads[name] = Counter(mode.shapes), [p.grad.clone() for p in params]
    redone = shapes["selective"] - shapes["none"]
    assert sum(redone.values()) > 0 and not shapes["none"] - shapes["selective"], redone
    assert all(a[-1] == rank and b[0] == rank for a, b in redone), redone  # only [*, r] x [r, d] products
    for g0, g in zip(grads["none"], grads["selective"]):
        assert torch.allclose(g, g0, atol=1e-6, rtol=1e-5)
