"""Strict loading: the tiny official-layout root loads fully; broken folders give one-line errors."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from sidestep.cli.main import main
from sidestep.model import discovery
from sidestep.model.loader import CheckpointError, load_dit, load_model_dit, load_text_encoder, load_vae


def test_loads_every_part_of_the_tiny_root(tiny_root_readonly):
    parts = discovery.locate_parts(tiny_root_readonly, "turbo")
    dit = load_model_dit(parts.model, silence_latent=parts.silence_latent)
    assert dit.silence_latent().shape == (1, 15000, 64)
    assert not any(p.requires_grad for p in dit.transformer.parameters())
    assert not any(t.is_meta for t in list(dit.transformer.state_dict().values())
                   + list(dit.condition_encoder.state_dict().values()))
    raw = load_file(parts.model.path / "model.safetensors")
    assert torch.equal(dit.transformer.layers[1].cross_attn.to_out[0].weight,
                       raw["decoder.layers.1.cross_attn.o_proj.weight"])
    assert torch.equal(dit.condition_encoder.null_condition_emb, raw["null_condition_emb"])
    vae = load_vae(parts.vae)
    assert vae.config.decoder_input_channels == 64
    tokenizer, text = load_text_encoder(parts.text_encoder)
    ids = tokenizer("hello<|endoftext|>")["input_ids"]
    assert ids[-1] == tokenizer.eos_token_id
    assert text.config.hidden_size == dit.config["text_hidden_dim"]


def test_loads_in_bf16(tiny_root_readonly):
    dit = load_dit(tiny_root_readonly / "acestep-v15-turbo", dtype=torch.bfloat16)
    assert {p.dtype for p in dit.transformer.parameters()} == {torch.bfloat16}


def test_audio_tokenizer_kept_only_on_request(tiny_root_readonly):
    folder = tiny_root_readonly / "acestep-v15-turbo"
    assert load_dit(folder).audio_tokenizer is None
    dit = load_dit(folder, with_audio_tokenizer=True)
    raw = load_file(folder / "model.safetensors")
    assert torch.equal(dit.audio_tokenizer.quantizer.project_in.weight, raw["tokenizer.quantizer.project_in.weight"])


def _rewrite(folder, change):
    path = folder / "model.safetensors"
    tensors = load_file(path)
    change(tensors)
    save_file(tensors, str(path))


def test_missing_key_is_named(tiny_root):
    folder = tiny_root / "acestep-v15-turbo"
    _rewrite(folder, lambda t: t.pop("decoder.layers.2.self_attn.k_norm.weight"))
    with pytest.raises(CheckpointError, match=r"missing key 'decoder\.layers\.2\.self_attn\.k_norm\.weight'"):
        load_dit(folder)


def test_unexpected_key_is_named(tiny_root):
    folder = tiny_root / "acestep-v15-turbo"
    _rewrite(folder, lambda t: t.__setitem__("decoder.layers.9.mlp.up_proj.weight", torch.zeros(2, 2)))
    with pytest.raises(CheckpointError, match=r"unexpected key 'decoder\.layers\.9\.mlp\.up_proj\.weight'"):
        load_dit(folder)


def test_config_of_other_sizes_is_a_shape_error(tiny_root):
    folder = tiny_root / "acestep-v15-turbo"
    config = json.loads((folder / "config.json").read_text())
    config["intermediate_size"] = 128
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"has shape \[64, 96\] but config\.json implies \[64, 128\]"):
        load_dit(folder)


def test_truncated_safetensors(tiny_root):
    path = tiny_root / "acestep-v15-turbo" / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_dit(path.parent)


def test_not_a_checkpoint_folder(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    with pytest.raises(CheckpointError, match="not an ACE-Step 1.5 DiT config"):
        load_dit(tmp_path)


def test_diffusers_pipeline_folder_is_accepted(tiny_root):
    dit = load_dit(tiny_root / "acestep-v15-turbo")
    pipe = tiny_root / "my-diffusers-export"
    dit.transformer.save_pretrained(pipe / "transformer")
    dit.condition_encoder.save_pretrained(pipe / "condition_encoder")
    shutil.copytree(tiny_root / "vae", pipe / "vae")
    (pipe / "model_index.json").write_text(json.dumps({"_class_name": "AceStepPipeline"}))
    entry = discovery.find_model(tiny_root, "my-diffusers-export")
    assert entry.layout == "diffusers" and not entry.official
    loaded = load_model_dit(entry)
    for a, b in zip(dit.transformer.state_dict().values(), loaded.transformer.state_dict().values()):
        assert torch.equal(a, b)
    assert torch.equal(loaded.silence_latent(), dit.silence_latent())


def test_cli_error_is_one_line_without_traceback(tiny_root, capsys):
    path = tiny_root / "acestep-v15-turbo" / "model.safetensors"
    path.write_bytes(path.read_bytes()[:100])
    code = main(["--plain", "models", "--checkpoint-dir", str(tiny_root / "nowhere")])
    out = capsys.readouterr().out
    assert code == 2
    assert out.count("\n") == 1 and out.startswith("error: ") and "Traceback" not in out
