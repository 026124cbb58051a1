"""XL checkpoints: sharded loading, the encoder_* fields, discovery and variants, XL vs 2B adapters.

Everything runs on a tiny XL-shaped root written by `sidestep.model.tiny` in the released XL layout
(`model-0000X-of-0000N.safetensors` + `model.safetensors.index.json`) next to tiny 2B folders.
"""

import json
import re
import shutil

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from sidestep.cli.main import main
from sidestep.errors import SidestepError
from sidestep.model import discovery
from sidestep.model.loader import CheckpointError, has_timbre_token, load_dit, load_model_dit
from sidestep.adapters import load_adapter, select_target_modules
from sidestep.adapters.lora import Lora as LoraAdapter
from helpers import LokrAdapter
from sidestep.train.checkpoints import save_adapter

XL = "acestep-v15-xl-turbo"
INDEX = "model.safetensors.index.json"


@pytest.fixture(scope="module")
def xl_root_readonly(tmp_path_factory):
    """turbo (2B) + xl-turbo + xl-sft, tiny, official layout. Do not modify it."""
    from sidestep.model.tiny import write_tiny_checkpoint_root

    return write_tiny_checkpoint_root(tmp_path_factory.mktemp("xl") / "checkpoints",
                                      variants=("turbo", "xl-turbo", "xl-sft"))


@pytest.fixture
def xl_root(xl_root_readonly, tmp_path):
    dst = tmp_path / "checkpoints"
    shutil.copytree(xl_root_readonly, dst)
    return dst


def _shards(folder):
    return sorted(folder.glob("model-*-of-*.safetensors"))


def _index(folder):
    return json.loads((folder / INDEX).read_text())


# -- 1. loading ---------------------------------------------------------------------------------------------------

def test_sharded_xl_folder_loads_strictly(xl_root_readonly):
    folder = xl_root_readonly / XL
    assert not (folder / "model.safetensors").exists() and len(_shards(folder)) == 2
    dit = load_dit(folder)
    raw = {k: v for p in _shards(folder) for k, v in load_file(p).items()}
    assert set(_index(folder)["weight_map"]) == set(raw)
    assert dit.transformer.config.hidden_size == 96 and dit.transformer.config.encoder_hidden_size == 64
    assert dit.transformer.condition_embedder.weight.shape == (96, 64)
    assert dit.transformer.layers[0].self_attn.to_q.weight.shape == (8 * 16, 96)  # heads x head_dim != hidden
    assert dit.condition_encoder.lyric_encoder.embed_tokens.weight.shape == (64, 48)
    assert torch.equal(dit.transformer.layers[3].cross_attn.to_out[0].weight,
                       raw["decoder.layers.3.cross_attn.o_proj.weight"])
    assert torch.equal(dit.condition_encoder.timbre_encoder.special_token, raw["encoder.timbre_encoder.special_token"])
    assert torch.equal(dit.null_condition_emb, raw["null_condition_emb"])
    assert has_timbre_token(dit.condition_encoder)
    assert not any(t.is_meta for t in list(dit.transformer.state_dict().values())
                   + list(dit.condition_encoder.state_dict().values()))
    with torch.no_grad():  # the token is prepended: 1 + Tr rows, and row 0 depends on it
        timbre, mask = dit.condition_encoder.timbre_encoder(torch.randn(2, 5, 64), torch.tensor([0, 1]))
    assert timbre.shape == (2, 1, 64) and mask.tolist() == [[1], [1]]


def test_sharded_xl_loads_in_bf16_and_without_parts(xl_root_readonly):
    folder = xl_root_readonly / XL
    dit = load_dit(folder, dtype=torch.bfloat16, with_condition_encoder=False)
    assert {p.dtype for p in dit.transformer.parameters()} == {torch.bfloat16}
    assert dit.condition_encoder is None and dit.null_condition_emb.shape == (1, 1, 64)
    enc_only = load_dit(folder, with_transformer=False)
    assert enc_only.transformer is None and has_timbre_token(enc_only.condition_encoder)
    with_tok = load_dit(folder, with_audio_tokenizer=True)
    assert with_tok.audio_tokenizer.quantizer.project_in.weight.shape == (6, 64)


def test_missing_shard_is_named(xl_root):
    folder = xl_root / XL
    _shards(folder)[1].unlink()
    with pytest.raises(CheckpointError, match=r"model-00002-of-00002\.safetensors: not found, but "
                                              r"model\.safetensors\.index\.json puts \d+ keys in it"):
        load_dit(folder)


def test_key_in_index_but_not_in_its_shard_is_named(xl_root):
    folder = xl_root / XL
    index = _index(folder)
    key, shard = next((k, s) for k, s in index["weight_map"].items() if s.startswith("model-00002"))
    tensors = load_file(folder / shard)
    tensors.pop(key)
    save_file(tensors, str(folder / shard))
    with pytest.raises(CheckpointError, match=rf"{shard}: lacks key '{key}' that model\.safetensors\.index\.json "
                                              "puts in this file"):
        load_dit(folder)


def test_key_in_a_shard_the_index_does_not_give_it_is_named(xl_root):
    folder = xl_root / XL
    index = _index(folder)
    key = next(k for k, s in index["weight_map"].items() if s.startswith("model-00001"))
    index["weight_map"][key] = "model-00002-of-00002.safetensors"
    (folder / INDEX).write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match=rf"model-00001-of-00002\.safetensors: holds key '{key}' that "
                                              r"model\.safetensors\.index\.json does not put in this file"):
        load_dit(folder)


def test_shard_not_in_the_index_is_named(xl_root):
    folder = xl_root / XL
    shutil.copy(_shards(folder)[0], folder / "model-00003-of-00003.safetensors")
    with pytest.raises(CheckpointError, match=r"model-00003-of-00003\.safetensors: a weight shard that "
                                              r"model\.safetensors\.index\.json does not list"):
        load_dit(folder)


def test_key_left_out_of_index_and_shards_is_missing(xl_root):
    folder = xl_root / XL
    index = _index(folder)
    key = "decoder.layers.3.mlp.down_proj.weight"
    shard = index["weight_map"].pop(key)
    (folder / INDEX).write_text(json.dumps(index))
    tensors = load_file(folder / shard)
    tensors.pop(key)
    save_file(tensors, str(folder / shard))
    with pytest.raises(CheckpointError, match=rf"{INDEX}: missing key '{key}'"):
        load_dit(folder)


@pytest.mark.parametrize("text, message", [
    ("{", "not valid JSON"), ('{"weight_map": {}}', "no usable weight_map"),
    ('{"weight_map": {"decoder.norm_out.weight": "../elsewhere.safetensors"}}', "no usable weight_map"),
])
def test_broken_index_is_one_line(xl_root, text, message):
    folder = xl_root / XL
    (folder / INDEX).write_text(text)
    with pytest.raises(CheckpointError, match=rf"{INDEX}: {message}"):
        load_dit(folder)


def test_no_weights_at_all(xl_root):
    folder = xl_root / XL
    (folder / INDEX).unlink()
    message = r"acestep-v15-xl-turbo/model\.safetensors: not found; the model folder is incomplete"
    with pytest.raises(CheckpointError, match=message):
        load_dit(folder)
    with pytest.raises(CheckpointError, match=message):
        discovery.locate_parts(xl_root, "xl-turbo")


def test_encoder_fields_come_as_four(xl_root):
    folder = xl_root / XL
    config = json.loads((folder / "config.json").read_text())
    config.pop("encoder_num_key_value_heads")
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="but not encoder_num_key_value_heads; an XL config carries all four"):
        load_dit(folder)
    config["encoder_num_key_value_heads"] = "2"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="encoder_num_key_value_heads must be a positive whole number"):
        load_dit(folder)


def test_encoder_width_must_match_the_weights(xl_root):
    folder = xl_root / XL
    config = json.loads((folder / "config.json").read_text())
    config["encoder_hidden_size"] = 96  # as if it were a 2B-style config with XL weights
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"has shape \[96, 64\] but config\.json implies \[96, 96\]"):
        load_dit(folder)


# -- 3. discovery and variants -----------------------------------------------------------------------------------

def test_xl_variants_are_found_with_family_and_size(xl_root_readonly):
    models = {m.name: m for m in discovery.scan_models(xl_root_readonly)}
    xl, sft, two_b = models[XL], models["acestep-v15-xl-sft"], models["acestep-v15-turbo"]
    assert (xl.family, xl.official, xl.base_variant, xl.variant_label, xl.is_turbo) == ("XL", True, "turbo",
                                                                                        "xl-turbo", True)
    assert (sft.family, sft.base_variant, sft.variant_label) == ("XL", "sft", "xl-sft")
    assert (two_b.family, two_b.variant_label) == ("2B", "turbo")
    params = sum(p.numel() for m in (load_dit(xl.path, with_audio_tokenizer=True),)
                 for part in (m.transformer, m.condition_encoder, m.audio_tokenizer, m.audio_token_detokenizer)
                 for p in part.parameters())
    assert xl.params == params  # headers of both shards
    assert xl.size == f"XL {params / 1e6:.1f}M" and two_b.size.startswith("2B ")
    assert discovery.find_model(xl_root_readonly, "xl-turbo").path == xl_root_readonly / XL
    assert discovery.find_model(xl_root_readonly, "xl-sft").name == "acestep-v15-xl-sft"
    parts = discovery.locate_parts(xl_root_readonly, "xl-turbo")
    dit = load_model_dit(parts.model, silence_latent=parts.silence_latent)
    assert dit.silence_latent().shape == (1, 15000, 64)


def test_xl_fine_tune_base_variant_as_for_2b(xl_root):
    for name, changes, variant in (("my-xl-tune", {"is_turbo": False, "model_version": "sft"}, "sft"),
                                   ("lofi-xl-base-v2", {"is_turbo": False}, "base"),
                                   ("mystery-xl", {"is_turbo": False}, None)):
        dst = xl_root / name
        shutil.copytree(xl_root / XL, dst)
        config = json.loads((dst / "config.json").read_text())
        config.pop("model_version")
        config.update(changes)
        (dst / "config.json").write_text(json.dumps(config))
        entry = discovery.find_model(xl_root, name)
        assert (entry.family, entry.official, entry.base_variant) == ("XL", False, variant)
    mystery = discovery.find_model(xl_root, "mystery-xl")
    assert discovery.resolve_training_model(mystery, base_model="sft").base_variant == "sft"
    assert discovery.resolve_training_model(mystery, base_model="base").entry.family == "XL"


def test_models_command_shows_xl_with_size(xl_root_readonly, capsys):
    assert main(["--plain", "models", "--checkpoint-dir", str(xl_root_readonly)]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if XL in line)
    assert re.search(r"official .* XL 0\.\dM .* xl-turbo .* yes", row), row
    row = next(line for line in out.splitlines() if "acestep-v15-xl-sft" in line)
    assert re.search(r"XL 0\.\dM .* xl-sft .* no", row), row
    row = next(line for line in out.splitlines() if "acestep-v15-turbo" in line)
    assert re.search(r"2B 0\.\dM .* turbo ", row), row


def test_wizard_offers_xl_variants(xl_root_readonly):
    from sidestep.model.discovery import fuzzy_find
    from sidestep.wizard.flows import _match_model, variant_name

    models = discovery.scan_models(xl_root_readonly)
    names = [variant_name(m) for m in models]
    assert {"turbo", "xl-turbo", "xl-sft"} <= set(names)
    assert _match_model(models, names, "xl-sft", None, fuzzy_find) == "xl-sft"
    assert _match_model(models, names, "acestep-v15-xl-turbo", None, fuzzy_find) == "xl-turbo"


# -- 3. XL and 2B adapters are never confused ----------------------------------------------------------------------

def _trained_adapter(root, variant, kind, out):
    decoder = load_dit(root / variant, with_condition_encoder=False).transformer
    modules = select_target_modules(decoder)
    adapter = LoraAdapter(decoder, modules, 4, 8, 0.0) if kind == "lora" else LokrAdapter(decoder, modules, 4, 8)
    with torch.no_grad():
        for p in adapter.parameters():
            p.add_(0.01)
    return save_adapter(out, adapter, {"inference": {"model_variant": variant}})


@pytest.mark.parametrize("kind", ["lora", "lokr"])
def test_adapter_records_its_model_and_refuses_the_other_family(xl_root_readonly, tmp_path, kind):
    xl_adapter = _trained_adapter(xl_root_readonly, XL, kind, tmp_path / "xl")
    b2_adapter = _trained_adapter(xl_root_readonly, "acestep-v15-turbo", kind, tmp_path / "2b")
    weights = "adapter_model.safetensors" if kind == "lora" else "lokr_weights.safetensors"
    with safe_open(str(xl_adapter / weights), "pt") as f:
        assert json.loads(f.metadata()["sidestep_model"]) == {"family": "XL", "hidden_size": 96, "num_layers": 4}
    assert json.loads((b2_adapter / "sidestep_run.json").read_text())["model"] == {
        "family": "2B", "hidden_size": 64, "num_layers": 4}

    xl_decoder = load_dit(xl_root_readonly / XL, with_condition_encoder=False).transformer
    b2_decoder = load_dit(xl_root_readonly / "acestep-v15-turbo", with_condition_encoder=False).transformer
    with pytest.raises(SidestepError) as err:
        load_adapter(b2_decoder, xl_adapter)
    message = str(err.value)
    assert "\n" not in message
    assert ("trained on ACE-Step XL (decoder 96 wide, 4 layers) and cannot load onto "
            "ACE-Step 2B (decoder 64 wide, 4 layers)") in message
    with pytest.raises(SidestepError, match=r"trained on ACE-Step 2B \(decoder 64 wide, 4 layers\) and cannot load "
                                            r"onto ACE-Step XL \(decoder 96 wide, 4 layers\)"):
        load_adapter(xl_decoder, b2_adapter)
    # the right family loads
    assert load_adapter(xl_decoder, xl_adapter).name == kind
    assert load_adapter(b2_decoder, b2_adapter).name == kind


def test_adapter_without_a_record_is_checked_by_its_shapes(xl_root_readonly, tmp_path):
    folder = _trained_adapter(xl_root_readonly, XL, "lora", tmp_path / "xl")
    (folder / "sidestep_run.json").unlink()
    path = folder / "adapter_model.safetensors"
    with safe_open(str(path), "pt") as f:
        metadata = {k: v for k, v in f.metadata().items() if k != "sidestep_model"}
    save_file(load_file(path), str(path), metadata=metadata)
    b2_decoder = load_dit(xl_root_readonly / "acestep-v15-turbo", with_condition_encoder=False).transformer
    with pytest.raises(SidestepError, match=r"trained on an ACE-Step model \(decoder 96 wide, at least 4 layers\) "
                                            r"and cannot load onto ACE-Step 2B \(decoder 64 wide, 4 layers\)"):
        load_adapter(b2_decoder, folder)


def test_diffusers_format_xl_keeps_the_timbre_token(xl_root):
    dit = load_dit(xl_root / XL)
    pipe = xl_root / "my-xl-diffusers"
    dit.transformer.save_pretrained(pipe / "transformer")
    dit.condition_encoder.save_pretrained(pipe / "condition_encoder")
    (pipe / "model_index.json").write_text(json.dumps({"_class_name": "AceStepPipeline"}))
    entry = discovery.find_model(xl_root, "my-xl-diffusers")
    assert (entry.layout, entry.family) == ("diffusers", "XL") and entry.params is not None
    loaded = load_model_dit(entry)
    assert has_timbre_token(loaded.condition_encoder)
    refs, order = torch.randn(3, 6, 64), torch.tensor([0, 0, 1])
    with torch.no_grad():
        assert torch.equal(loaded.condition_encoder.timbre_encoder(refs, order)[0],
                           dit.condition_encoder.timbre_encoder(refs, order)[0])


def test_xl_end_to_end_and_the_cli_refuses_its_adapter_on_2b(xl_root_readonly, tmp_path, capsys, monkeypatch):
    """Preprocess with xl-turbo, train a LoRA on it, generate with it; the 2B model refuses it in one line."""
    from sidestep.cli.demo import write_songs
    from sidestep.config import Config
    from sidestep.data.preprocess import preprocess_dataset
    from sidestep.train.recipe import train

    monkeypatch.chdir(tmp_path)  # sidestep.log
    songs = write_songs(tmp_path / "songs")
    base = Config(checkpoint_dir=str(xl_root_readonly), model_variant="xl-turbo", num_workers=0, seed=0)
    report = preprocess_dataset(base.replace(audio_dir=str(tmp_path / "songs"), dataset_json=str(songs),
                                             tensor_output=str(tmp_path / "tensors")))
    out = tmp_path / "out"
    result = train(base.replace(dataset_dir=str(report.output_dir), output_dir=str(out), epochs=1, save_every=1,
                                rank=4, alpha=8, learning_rate=1e-3, warmup_steps=1), "fixed", quiet=True)
    assert result.optimizer_steps > 0
    assert json.loads((out / "sidestep_run.json").read_text())["model"]["family"] == "XL"
    common = ["--plain", "generate", "--checkpoint-dir", str(xl_root_readonly), "--model-variant", "--prompt", "calm",
              "--duration", "1", "--steps", "2", "--adapter", str(out)]
    capsys.readouterr()
    assert main(common[:5] + ["xl-turbo"] + common[5:] + ["--out", str(tmp_path / "xl.wav")]) == 0
    assert (tmp_path / "xl.wav").is_file()
    capsys.readouterr()
    assert main(common[:5] + ["turbo"] + common[5:] + ["--out", str(tmp_path / "2b.wav")]) == 2
    printed = capsys.readouterr().out
    # the loading notice, then the one-line error
    assert printed.startswith("Loading the model") and printed.count("\n") == 2 and not (tmp_path / "2b.wav").exists()
    assert "trained on ACE-Step XL (decoder 96 wide, 4 layers) and cannot load onto ACE-Step 2B" in printed


def test_released_xl_decoder_has_256_adapter_modules():
    """docs/design.md §2.4: q/k/v/o of self and cross attention in 32 layers; q_proj is [4096, 2560] (heads x head_dim)."""
    from sidestep.model.configs import RELEASED_XL_CONFIG
    from sidestep.model.loader import build_modules

    decoder = build_modules(RELEASED_XL_CONFIG)["transformer"]  # meta: no memory
    modules = select_target_modules(decoder)
    assert len(modules) == 256 and modules[-1] == "layers.31.cross_attn.to_out.0"
    assert decoder.get_submodule("layers.31.self_attn.to_q").weight.shape == (4096, 2560)
    assert decoder.get_submodule("layers.0.cross_attn.to_k").weight.shape == (1024, 2560)
    assert decoder.condition_embedder.weight.shape == (2560, 2048)
