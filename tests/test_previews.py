"""Audio previews from the training decoder on the tiny checkpoint."""

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from helpers import train_tiny_lora
from sidestep.errors import SidestepError
from sidestep.generate import build_pipeline, generate_audio
from sidestep.model.discovery import locate_parts
from sidestep.model.loader import load_model_dit, load_text_encoder, load_vae
from sidestep.train.previews import PreviewPrompt, PreviewSampler, dataset_prompts, log_previews, make_prompts

DURATION = 1.3  # 33 latent frames


@pytest.fixture(scope="module")
def trained(tiny_root_readonly, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("previews")
    result, out = train_tiny_lora(tiny_root_readonly, tmp)
    return result.adapter.decoder, tmp / "ds", out


def test_previews_with_and_without_the_adapter(tiny_root_readonly, trained, tmp_path):
    decoder, dataset, _ = trained
    parts = locate_parts(tiny_root_readonly, "turbo")
    decoder.train()
    grads = {n: p.requires_grad for n, p in decoder.named_parameters()}
    rng = torch.get_rng_state()
    sampler = PreviewSampler(parts, decoder, tmp_path, dataset_dir=dataset, seed=4, duration=DURATION)

    base = sampler.render("base", adapter_on=False)
    epoch = sampler.render("epoch_2")
    again = sampler.render("epoch_2_again")

    assert [p.path.name for p in base] == ["base_1.wav", "base_2.wav"]
    assert [p.path.name for p in epoch] == ["epoch_2_1.wav", "epoch_2_2.wav"]
    for preview in base + epoch:
        data, rate = sf.read(preview.path, dtype="float32", always_2d=True)
        assert rate == preview.sample_rate == 48000 and data.shape[1] == 2
        assert abs(data.shape[0] - DURATION * 48000) < 1920  # one latent frame
        assert np.array_equal(data.T, preview.waveform.numpy())
    for off, on, on2 in zip(base, epoch, again):
        assert not torch.equal(off.waveform, on.waveform)  # the adapter is audible
        assert torch.equal(on.waveform, on2.waveform)  # fixed seed, adapter restored after the base render
    assert not torch.equal(epoch[0].waveform, epoch[1].waveform)  # two different prompts

    # the decoder is handed back as it came: train mode, trainable adapter, global RNG untouched
    assert decoder.training and all(m.training for m in decoder.modules())
    assert {n: p.requires_grad for n, p in decoder.named_parameters()} == grads
    assert torch.equal(torch.get_rng_state(), rng)
    assert sampler._vae is None  # offload: freed after each render

    prompts = json.loads((tmp_path / "samples" / "prompts.json").read_text())
    assert [p["caption"] for p in prompts["prompts"]] == ["song 0", "song 1"]
    assert prompts["sampler"] == {"steps": 8, "shift": 3.0, "guidance": 1.0} and prompts["seed"] == 4

    # the adapter-off preview is the base model through diffusers' pipeline (training may install a faster
    # exact attention kernel, so equal up to float rounding rather than bit for bit)
    dit = load_model_dit(parts.model, silence_latent=parts.silence_latent)
    pipeline = build_pipeline(dit, load_vae(parts.vae), *load_text_encoder(parts.text_encoder))
    reference, _ = generate_audio(pipeline, "song 0", None, DURATION, seed=4)
    rounding = (base[0].waveform - reference).abs().max()
    assert rounding < 1e-5
    assert (epoch[0].waveform - reference).abs().max() > max(100 * rounding, 1e-4)


def test_prepare_before_the_decoder_exists_and_keep_the_vae(tiny_root_readonly, trained, tmp_path):
    decoder, _, _ = trained
    parts = locate_parts(tiny_root_readonly, "turbo")
    sampler = PreviewSampler(parts, None, tmp_path, ["calm piano"], lyrics=["[Verse] la"], seed=1,
                             duration=1.0, offload=False, device="cpu", dtype=torch.float32)
    sampler.prepare()
    with pytest.raises(ValueError, match="set sampler.decoder"):
        sampler.render("x")
    sampler.decoder = decoder
    first = sampler.render("a")
    assert sampler._vae is not None  # kept for the next render
    assert torch.equal(first[0].waveform, sampler.render("b")[0].waveform)
    assert first[0].prompt == PreviewPrompt("calm piano", "[Verse] la")
    sampler.release()
    assert sampler._vae is None


def test_prompts_from_dataset_and_flags(tmp_path):
    from helpers import write_tensor_dataset

    dataset = write_tensor_dataset(tmp_path / "ds", n=3)
    manifest = json.loads((dataset / "manifest.json").read_text())
    manifest["metadata"].update(tag_position="append")
    (dataset / "manifest.json").write_text(json.dumps(manifest))
    sample = torch.load(dataset / "song1.pt", weights_only=True)
    sample["metadata"].update(custom_tag="zzz", lyrics="[Chorus] oh", bpm=120, keyscale="C major")
    torch.save(sample, dataset / "song1.pt")

    prompts = dataset_prompts(dataset, count=2)
    assert prompts == [PreviewPrompt("song 0", "[Instrumental]"),
                       PreviewPrompt("song 1, zzz", "[Chorus] oh", 120, "C major")]
    assert [p.caption for p in make_prompts(None, None, dataset, count=5)] == ["song 0", "song 1, zzz", "song 2"]
    assert [p.lyrics for p in make_prompts(["a", "b"], ["[Verse] x"])] == ["[Verse] x", "[Verse] x"]
    assert [p.lyrics for p in make_prompts(["a", "b"], ["x", "y"])] == ["x", "y"]
    with pytest.raises(SidestepError, match="--sample-lyrics given 2 times for 3 prompts"):
        make_prompts(["a", "b", "c"], ["x", "y"])
    with pytest.raises(SidestepError, match="--sample-prompt"):
        make_prompts(None, None, None)


def test_previews_reach_tensorboard(tmp_path):
    from sidestep.train.previews import Preview

    calls = []

    class Writer:
        def add_audio(self, tag, audio, step, sample_rate):
            calls.append((tag, tuple(audio.shape), step, sample_rate))

    wave = torch.zeros(2, 960)
    log_previews(Writer(), [Preview(tmp_path / "a.wav", wave, 48000, PreviewPrompt("x"))] * 2, 7, "preview")
    assert calls == [("preview/1", (960,), 7, 48000), ("preview/2", (960,), 7, 48000)]
