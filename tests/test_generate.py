"""Generation on the tiny checkpoint: the staged path equals diffusers' pipeline, adapter strength, the CLI."""

import re

import numpy as np
import pytest
import soundfile as sf
import torch

from helpers import train_tiny_lora
from sidestep.cli.main import main
from sidestep.generate import (BASE_SETTINGS, TURBO_SETTINGS, adapter_strength, build_pipeline, decode_latents,
                               encode_condition, encode_text, generate_audio, latent_length, sample_latents,
                               sampler_settings, set_adapter_strength, write_wav)
from sidestep.model.discovery import find_model, locate_parts, resolve_training_model
from sidestep.model.loader import load_model_dit, load_text_encoder, load_vae
from sidestep.adapters import KINDS, select_target_modules
from sidestep.config import Config

DURATION = 1.5


def _parts(root, variant):
    parts = locate_parts(root, variant)
    dit = load_model_dit(parts.model, silence_latent=parts.silence_latent)
    tokenizer, text_encoder = load_text_encoder(parts.text_encoder)
    return parts, dit, load_vae(parts.vae), tokenizer, text_encoder


@pytest.mark.parametrize("variant,settings", [("turbo", {}), ("base", dict(steps=3))])
def test_staged_sampling_equals_the_diffusers_pipeline(tiny_root_readonly, variant, settings):
    _, dit, vae, tokenizer, text_encoder = _parts(tiny_root_readonly, variant)
    pipeline = build_pipeline(dit, vae, tokenizer, text_encoder)
    assert pipeline.is_turbo == (variant == "turbo") and pipeline.transformer is dit.transformer
    audio, rate = generate_audio(pipeline, "calm piano", "[Verse] la la", DURATION, seed=3, **settings)
    frames = latent_length(DURATION)
    assert rate == 48000 and audio.shape == (2, frames * 1920) and audio.dtype == torch.float32
    assert abs(audio.shape[1] - DURATION * 48000) < 1920

    text = encode_text(tokenizer, text_encoder, "calm piano", "[Verse] la la", DURATION)
    cond = encode_condition(dit.condition_encoder, text, frames, torch.float32)
    staged = decode_latents(vae, sample_latents(dit.transformer, cond, seed=3, **settings))[0]
    assert torch.equal(staged, audio)
    # base/sft run APG guidance: switching it off changes the result (turbo ignores guidance)
    unguided = decode_latents(vae, sample_latents(dit.transformer, cond, seed=3, guidance=1.0, **settings))[0]
    assert torch.equal(unguided, audio) == (variant == "turbo")


def test_windowed_decode_matches_a_whole_decode(tiny_root_readonly):
    vae = load_vae(locate_parts(tiny_root_readonly, "turbo").vae)
    latents = torch.randn(1, 70, 64, generator=torch.Generator().manual_seed(0))
    whole = decode_latents(vae, latents)
    windowed = decode_latents(vae, latents, window=24, overlap=8)
    assert windowed.shape == whole.shape == (1, 2, 70 * 1920) and not vae.use_tiling
    assert not torch.equal(windowed, whole)  # it did decode in pieces ...
    torch.testing.assert_close(windowed, whole, rtol=0, atol=1e-5)  # ... seamlessly
    assert torch.equal(decode_latents(vae, latents, window=80), whole)  # longer than the clip: one piece
    with pytest.raises(ValueError, match="twice the overlap"):
        decode_latents(vae, latents, window=16, overlap=8)


def test_seed_decides_the_audio(tiny_root_readonly):
    pipeline = build_pipeline(*_parts(tiny_root_readonly, "turbo")[1:])
    a = generate_audio(pipeline, "rock", None, 1.0, seed=1)[0]
    assert torch.equal(a, generate_audio(pipeline, "rock", None, 1.0, seed=1)[0])
    assert not torch.equal(a, generate_audio(pipeline, "rock", None, 1.0, seed=2)[0])
    assert not torch.equal(a, generate_audio(pipeline, "jazz", None, 1.0, seed=1)[0])


def test_sampler_settings_per_variant(tiny_root_readonly):
    turbo, base = find_model(tiny_root_readonly, "turbo"), find_model(tiny_root_readonly, "base")
    assert sampler_settings(turbo) == TURBO_SETTINGS == sampler_settings(True)
    assert (TURBO_SETTINGS.steps, TURBO_SETTINGS.shift, TURBO_SETTINGS.guidance) == (8, 3.0, 1.0)
    assert sampler_settings(base) == BASE_SETTINGS == sampler_settings(False) == sampler_settings(turbo, "sft")
    assert (BASE_SETTINGS.steps, BASE_SETTINGS.shift, BASE_SETTINGS.guidance) == (50, 1.0, 7.0)
    assert sampler_settings(resolve_training_model(base)) == BASE_SETTINGS


def _randomize(params, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in params:
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)


def _forward(decoder, seed=0):
    g = torch.Generator().manual_seed(seed)
    x, ctx = torch.randn(1, 12, 64, generator=g), torch.randn(1, 12, 128, generator=g)
    enc, t = torch.randn(1, 7, 64, generator=g), torch.tensor([0.6])
    with torch.no_grad():
        return decoder(hidden_states=x, timestep=t, timestep_r=t, encoder_hidden_states=enc, context_latents=ctx).sample


@pytest.mark.parametrize("kind", ["lora", "lokr", "dora", "loha", "oft"])
def test_strength_zero_is_exactly_the_base_model(tiny_root_readonly, kind):
    parts = locate_parts(tiny_root_readonly, "turbo")
    decoder = load_model_dit(parts.model).transformer.eval()
    base = _forward(decoder)
    modules = select_target_modules(decoder)
    config = Config(adapter_type=kind, rank=4, alpha=8, dropout=0.0, lokr_linear_dim=4, lokr_linear_alpha=8)
    adapter = KINDS[kind].build(config, decoder, modules)
    _randomize(adapter.parameters())
    decoder.eval()
    trained = _forward(decoder)
    assert not torch.equal(trained, base)
    grads = [p.requires_grad for p in decoder.parameters()]

    with adapter_strength(decoder, 0.0):
        assert torch.equal(_forward(decoder), base)
    assert torch.equal(_forward(decoder), trained)  # restored
    assert [p.requires_grad for p in decoder.parameters()] == grads

    set_adapter_strength(adapter, 0.0)
    assert torch.equal(_forward(decoder), base)
    set_adapter_strength(adapter, 1.0)
    assert torch.equal(_forward(decoder), trained)
    set_adapter_strength(adapter, 0.5)
    half = _forward(decoder)
    assert not torch.equal(half, trained) and not torch.equal(half, base)
    if kind in ("lora", "dora"):  # PEFT scale: strength x alpha / r
        from peft.tuners.lora import LoraLayer

        assert {v for layer in adapter.decoder.modules() if isinstance(layer, LoraLayer)
                for v in layer.scaling.values()} == {0.5 * 8 / 4}
    else:
        assert adapter.network.multiplier == 0.5


def test_write_wav_roundtrip_and_errors(tmp_path):
    wave = torch.linspace(-0.5, 0.5, 2 * 4800).reshape(2, 4800)
    path = write_wav(tmp_path / "a" / "x.wav", wave, 48000)
    data, rate = sf.read(path, dtype="float32")
    assert rate == 48000 and data.shape == (4800, 2) and np.array_equal(data.T, wave.numpy())
    assert sorted(p.name for p in path.parent.iterdir()) == ["x.wav"]  # no temp file left
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(Exception, match="cannot write"):
        write_wav(blocker / "x.wav", wave, 48000)


@pytest.fixture(scope="module")
def trained_adapter(tiny_root_readonly, tmp_path_factory):
    return train_tiny_lora(tiny_root_readonly, tmp_path_factory.mktemp("lora"))[1]


def _generate(root, out, *extra):
    argv = ["--plain", "generate", "--checkpoint-dir", str(root), "--model-variant", "turbo", "--prompt",
            "song 0", "--duration", "1", "--seed", "5", "--device", "cpu", "--out", str(out), *extra]
    assert main(argv) == 0
    data, rate = sf.read(out, dtype="float32", always_2d=True)
    assert rate == 48000 and data.shape == (25 * 1920, 2)
    return data


def test_generate_strength_zero_equals_no_adapter(tiny_root_readonly, trained_adapter, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # sidestep.log
    plain = _generate(tiny_root_readonly, tmp_path / "plain.wav")
    assert str(tmp_path / "plain.wav") in capsys.readouterr().out
    off = _generate(tiny_root_readonly, tmp_path / "off.wav", "--adapter", str(trained_adapter), "--strength", "0")
    on = _generate(tiny_root_readonly, tmp_path / "on.wav", "--adapter", str(trained_adapter))
    assert np.array_equal(plain, off)
    assert not np.array_equal(plain, on)


@pytest.mark.parametrize("case,pattern", [
    ("missing_adapter", "--adapter .*folder not found"),
    ("empty_adapter", "--adapter .*no adapter here"),
    ("negative_duration", "--duration -3: must be more than 0"),
    ("out_under_file", "--out .*cannot write there"),
    ("out_is_dir", "--out .*is a folder"),
    ("no_prompt", "pass --prompt"),
    ("no_out", "pass --out"),
    ("strength_without_adapter", "--strength 0.5 needs --adapter"),
])
def test_generate_one_line_errors(tiny_root_readonly, tmp_path, capsys, monkeypatch, case, pattern):
    monkeypatch.chdir(tmp_path)  # sidestep.log
    blocker = tmp_path / "file.txt"
    blocker.write_text("")
    (tmp_path / "empty").mkdir()
    extra = {"missing_adapter": ["--adapter", str(tmp_path / "nope")],
             "empty_adapter": ["--adapter", str(tmp_path / "empty")],
             "negative_duration": ["--duration", "-3"],
             "out_under_file": ["--out", str(blocker / "song.wav")],
             "out_is_dir": ["--out", str(tmp_path)],
             "no_prompt": ["--prompt", " "],
             "no_out": ["--out", ""],
             "strength_without_adapter": ["--strength", "0.5"]}[case]
    argv = ["--plain", "generate", "--checkpoint-dir", str(tiny_root_readonly), "--prompt", "x",
            "--out", str(tmp_path / "song.wav"), *extra]
    assert main(argv) == 2
    out = capsys.readouterr().out.strip()
    assert len(out.splitlines()) == 1 and out.startswith("error: ")
    assert re.search(pattern, out), out
    assert not (tmp_path / "song.wav").exists()
