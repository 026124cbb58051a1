"""The loader + diffusers reproduce the reference outputs of every golden folder."""

import json

import pytest
import torch
from safetensors.torch import load_file

from conftest import GOLDEN, KEYS_2B, golden_cases
from helpers import golden_decoder, split_prefix
from sidestep.model.configs import RELEASED_2B_CONFIG
from sidestep.model.keys import diffusers_to_official, official_to_diffusers
from sidestep.model.loader import build_modules, expected_official_shapes, load_dit

GOLDEN_CASES = golden_cases()
TOL = 1e-5


def test_the_repository_holds_golden_data():
    """The repository's own cases always run, whether or not extra cases sit beside the clone."""
    assert (GOLDEN / "tiny-turbo" / "outputs.safetensors").is_file()
    assert [c.id for c in GOLDEN_CASES if not c.id.startswith("shared-")]


@pytest.mark.parametrize("folder", GOLDEN_CASES)
def test_outputs_match_reference(folder):
    dit = load_dit(folder)
    inputs = load_file(folder / "inputs.safetensors")
    ref = load_file(folder / "outputs.safetensors")
    enc, dec = split_prefix(inputs, "encoder."), split_prefix(inputs, "decoder.")
    T = dec["hidden_states"].shape[1]
    with torch.no_grad():
        hidden, mask = dit.condition_encoder(**enc)
        out = golden_decoder(dit, dec, dec["encoder_hidden_states"], dec["timestep_r"])
        out_enc = golden_decoder(dit, dec, hidden, dec["timestep"])
    assert hidden.shape == ref["encoder.encoder_hidden_states"].shape
    assert (hidden - ref["encoder.encoder_hidden_states"]).abs().max() <= TOL
    assert torch.equal(mask.bool(), ref["encoder.encoder_attention_mask"])
    assert out.shape[1] == T
    assert (out - ref["decoder.output"][:, :T]).abs().max() <= TOL
    assert (out_enc - ref["decoder_with_encoder.output"][:, :T]).abs().max() <= TOL


@pytest.mark.parametrize("folder", GOLDEN_CASES + golden_cases("golden-xl")[:1])  # 2B and one XL case
def test_gradient_checkpointing_same_outputs_and_grads(folder):
    dit = load_dit(folder)
    dec = split_prefix(load_file(folder / "inputs.safetensors"), "decoder.")
    dit.transformer.requires_grad_(True).train()
    results = []
    for checkpointing in (False, True):
        if checkpointing:
            dit.transformer.enable_gradient_checkpointing()
        dit.transformer.zero_grad()
        x = dec["hidden_states"].clone().requires_grad_(True)
        out = dit.transformer(hidden_states=x, timestep=dec["timestep"], timestep_r=dec["timestep_r"],
                              encoder_hidden_states=dec["encoder_hidden_states"],
                              context_latents=dec["context_latents"]).sample
        out.square().mean().backward()
        grads = {n: p.grad.clone() for n, p in dit.transformer.named_parameters()}
        results.append((out.detach(), grads, x.grad.clone()))
    (o0, g0, x0), (o1, g1, x1) = results
    assert dit.transformer.gradient_checkpointing
    assert torch.equal(o0, o1)
    assert torch.allclose(x0, x1, atol=1e-7)
    assert g0.keys() == g1.keys() and len(g0) > 50
    for name in g0:
        assert torch.allclose(g0[name], g1[name], atol=1e-6, rtol=1e-5), name


def test_released_2b_key_set_maps_one_to_one():
    ref = {k: tuple(v) for k, v in json.loads(KEYS_2B.read_text()).items()}
    assert expected_official_shapes(RELEASED_2B_CONFIG) == ref
    # and back: every diffusers parameter of the meta-built modules has exactly one official key
    modules = build_modules(RELEASED_2B_CONFIG)
    names = [(m, n) for m, mod in modules.items() for n in mod.state_dict() if n != "silence_latent"]
    assert len(names) == len(ref)
    assert {official_to_diffusers(k) for k in ref} == set(names)
    assert {diffusers_to_official(m, n) for m, n in names} == set(ref)
