"""XL fidelity: the loader + diffusers reproduce upstream's XL outputs (golden-xl), same tolerances as 2B.

Cases: every folder under reference/golden-xl/, plus ../shared/acestep15/golden-xl/ when that exists.
Each holds an XL-shaped tiny checkpoint in the official layout (config.json with the four
`encoder_*` fields), inputs, and the outputs upstream's XL code produced (fp32, CPU).
"""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from helpers import golden_decoder, split_prefix
from sidestep.model.configs import RELEASED_XL_CONFIG
from sidestep.model.keys import diffusers_to_official, official_to_diffusers
from sidestep.model.loader import build_modules, expected_official_shapes, has_timbre_token, load_dit
from sidestep.model.tiny import write_shards

from conftest import REFERENCE, golden_cases

DATA_XL = REFERENCE / "xl"
TOL = 1e-5  # as the 2B golden test


CASES = golden_cases("golden-xl")


def _check_outputs(dit, folder):
    inputs = load_file(folder / "inputs.safetensors")
    ref = load_file(folder / "outputs.safetensors")
    enc, dec = split_prefix(inputs, "encoder."), split_prefix(inputs, "decoder.")
    T = dec["hidden_states"].shape[1]
    with torch.no_grad():
        hidden, mask = dit.condition_encoder(**enc)
        timbre, timbre_mask = dit.condition_encoder.timbre_encoder(
            enc["refer_audio_acoustic_hidden_states_packed"], enc["refer_audio_order_mask"])
        out = golden_decoder(dit, dec, dec["encoder_hidden_states"], dec["timestep_r"])
        out_enc = golden_decoder(dit, dec, hidden, dec["timestep"])
    # condition encoder, timbre rows included
    assert hidden.shape == ref["encoder.encoder_hidden_states"].shape
    assert (hidden - ref["encoder.encoder_hidden_states"]).abs().max() <= TOL
    assert torch.equal(mask.bool(), ref["encoder.encoder_attention_mask"])
    if "encoder.timbre_embs_unpack" in ref:
        assert timbre.shape == ref["encoder.timbre_embs_unpack"].shape
        assert (timbre - ref["encoder.timbre_embs_unpack"]).abs().max() <= TOL
        assert torch.equal(timbre_mask.long(), ref["encoder.timbre_embs_mask"].long())
    # decoder alone: upstream's XL code returns exactly T frames
    assert out.shape == ref["decoder.output"][:, :T].shape and out.shape[1] == T
    assert (out - ref["decoder.output"][:, :T]).abs().max() <= TOL
    # end to end: decoder on the encoder's output, r = t
    assert (out_enc - ref["decoder_with_encoder.output"][:, :T]).abs().max() <= TOL


def test_there_is_golden_xl_data():
    assert any(p.values[0].is_relative_to(REFERENCE) for p in CASES), "no golden folders under reference/golden-xl"


@pytest.mark.parametrize("folder", CASES)
def test_outputs_match_reference(folder):
    dit = load_dit(folder)
    assert has_timbre_token(dit.condition_encoder)
    assert dit.transformer.config.encoder_hidden_size == dit.config["encoder_hidden_size"]
    _check_outputs(dit, folder)


@pytest.mark.parametrize("folder", CASES)
def test_sharded_copy_gives_the_same_outputs(folder, tmp_path):
    """The same weights in the released XL layout (shards + index) load to the same outputs."""
    dst = tmp_path / "acestep-v15-xl-turbo"
    dst.mkdir()
    shutil.copy(folder / "config.json", dst / "config.json")
    write_shards(dst, load_file(folder / "model.safetensors"), 3)
    assert not (dst / "model.safetensors").exists() and len(list(dst.glob("model-*-of-00003.safetensors"))) == 3
    _check_outputs(load_dit(dst), folder)


@pytest.mark.parametrize("folder", CASES)
def test_without_the_timbre_token_the_timbre_rows_differ(folder):
    """The hook is what makes the XL encoder match; diffusers' class alone does not (docs/design.md §2.4)."""
    dit = load_dit(folder)
    dit.condition_encoder.timbre_encoder._sidestep_timbre_token.remove()
    enc = split_prefix(load_file(folder / "inputs.safetensors"), "encoder.")
    ref = load_file(folder / "outputs.safetensors")
    with torch.no_grad():
        timbre, _ = dit.condition_encoder.timbre_encoder(enc["refer_audio_acoustic_hidden_states_packed"],
                                                          enc["refer_audio_order_mask"])
    assert (timbre - ref["encoder.timbre_embs_unpack"]).abs().max() > 0.1


def test_2b_checkpoints_get_no_timbre_token(tiny_root_readonly):
    """2B code has the prepend disabled (docs/design.md §8 Q4): the 2B golden test holds only without the hook."""
    dit = load_dit(tiny_root_readonly / "acestep-v15-turbo")
    assert not has_timbre_token(dit.condition_encoder)
    with torch.no_grad():
        assert dit.condition_encoder.timbre_encoder.embed_tokens(torch.randn(2, 5, 64)).shape[1] == 5


@pytest.mark.parametrize("name", ["xl-turbo", "xl-base", "xl-sft"])
def test_released_xl_key_set_maps_one_to_one(name):
    config = json.loads((DATA_XL / f"{name}-config.json").read_text())
    ref = {k: tuple(v) for k, v in json.loads((DATA_XL / "keys-v15-xl.json").read_text()).items()}
    assert len(ref) == 829 and sum(torch.Size(s).numel() for s in ref.values()) == 4_987_310_726
    assert expected_official_shapes(config) == ref
    modules = build_modules(config)
    names = [(m, n) for m, mod in modules.items() for n in mod.state_dict() if n != "silence_latent"]
    assert len(names) == len(ref)
    assert {official_to_diffusers(k) for k in ref} == set(names)
    assert {diffusers_to_official(m, n) for m, n in names} == set(ref)


def test_built_in_xl_config_equals_the_rebuilt_file():
    file = json.loads((DATA_XL / "xl-turbo-config.json").read_text())
    assert {k: v for k, v in file.items() if k in RELEASED_XL_CONFIG} == {
        k: v for k, v in RELEASED_XL_CONFIG.items() if k in file}
    assert expected_official_shapes(RELEASED_XL_CONFIG) == expected_official_shapes(file)
