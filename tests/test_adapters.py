"""Adapter selection and injection: which modules, which parameters train, LoKR options."""

import pytest
import torch

from sidestep.errors import SidestepError
from sidestep.model.configs import RELEASED_2B_CONFIG
from sidestep.model.loader import build_modules, load_dit
from sidestep.adapters import select_target_modules
from sidestep.adapters.lora import Lora as LoraAdapter
from helpers import LokrAdapter


@pytest.fixture(scope="module")
def decoder_2b_meta():
    return build_modules(RELEASED_2B_CONFIG)["transformer"]


@pytest.mark.parametrize("attention,count", [("both", 192), ("self", 96), ("cross", 96)])
def test_2b_module_counts(decoder_2b_meta, attention, count):
    modules = select_target_modules(decoder_2b_meta, attention)
    assert len(modules) == count
    kinds = {"both": ("self_attn", "cross_attn"), "self": ("self_attn",), "cross": ("cross_attn",)}[attention]
    assert all(m.split(".")[2] in kinds for m in modules)


def test_target_module_subset_uses_official_names(decoder_2b_meta):
    modules = select_target_modules(decoder_2b_meta, "self", ["q_proj", "o_proj"])
    assert len(modules) == 48
    assert {m.split(".", 3)[3] for m in modules} == {"to_q", "to_out.0"}
    with pytest.raises(SidestepError, match="unknown projection 'gate_proj'"):
        select_target_modules(decoder_2b_meta, "both", ["gate_proj"])


@pytest.fixture
def decoder(tiny_root_readonly):
    return load_dit(tiny_root_readonly / "acestep-v15-turbo").transformer


def _trainable(decoder):
    return {n for n, p in decoder.named_parameters() if p.requires_grad}


def test_lora_trains_only_adapter_weights(decoder):
    modules = select_target_modules(decoder, "cross", ["q_proj", "v_proj"])
    adapter = LoraAdapter(decoder, modules, rank=4, alpha=8, dropout=0.1)
    trainable = _trainable(decoder)
    assert len(trainable) == 2 * len(modules) == 16
    assert all(".lora_" in n and "cross_attn" in n for n in trainable)
    assert all(p.dtype == torch.float32 for p in adapter.parameters())
    config = adapter.export_config()
    assert config["target_modules"] == ["cross_attn.q_proj", "cross_attn.v_proj"]
    assert (config["r"], config["lora_alpha"], config["lora_dropout"]) == (4, 8, 0.1)


def test_lora_bias_modes(decoder):
    LoraAdapter(decoder, select_target_modules(decoder, "both"), rank=2, alpha=2, dropout=0.0, bias="all")
    biases = {n for n in _trainable(decoder) if n.endswith(".bias")}
    assert "proj_in_conv.bias" in biases and "condition_embedder.bias" in biases


def test_lokr_options_reach_lycoris(decoder):
    modules = select_target_modules(decoder, "self", ["q_proj"])
    adapter = LokrAdapter(decoder, modules, linear_dim=1, linear_alpha=4, factor=8, decompose_both=True,
                          use_tucker=True, use_scalar=True, weight_decompose=True)
    state = adapter.state_dict()
    first = "lycoris_layers_0_self_attn_to_q"
    assert {f"{first}.lokr_w1_a", f"{first}.lokr_w1_b", f"{first}.lokr_w2_a", f"{first}.dora_scale"} <= set(state)
    assert state[f"{first}.lokr_w1_a"].shape == (8, 1)        # factor 8, rank 1 on the 64-wide tiny layer
    lora_module = adapter.network.loras[0]
    assert isinstance(lora_module.scalar, torch.nn.Parameter) and lora_module.wd and not lora_module.use_w1
    assert lora_module.tucker is False  # Tucker applies to conv kernels only; linear layers ignore it
    assert state[f"{first}.alpha"].item() == 4
    assert len(adapter.network.loras) == len(modules) == 4
    assert all(n.startswith("lycoris.") for n in _trainable(decoder))
    exported = adapter.export_tensors()
    assert f"lycoris_layers_0_self_attn_q_proj.lokr_w1_a" in exported


def test_lokr_defaults_touch_only_targets(decoder):
    modules = select_target_modules(decoder, "both")
    adapter = LokrAdapter(decoder, modules, linear_dim=4, linear_alpha=8)
    assert len(adapter.network.loras) == len(modules) == 32
    assert {l.lora_name for l in adapter.network.loras} == {"lycoris_" + m.replace(".", "_") for m in modules}
