"""XL datasets, training, adapter formats and inference defaults (issue 15, points 4, 5 and 7).

Everything runs on a tiny XL-shaped root written by `sidestep.model.tiny` in the released XL layout
(sharded weights + `model.safetensors.index.json`) next to a tiny 2B folder.
"""

import json
import shutil

import pytest
import soundfile
import torch

from sidestep.config import Config
from sidestep.data.manifest import check_made_for, read_manifest
from sidestep.errors import SidestepError
from sidestep.estimate.sensitivity import estimate
from sidestep.model import discovery
from sidestep.model.configs import TINY_XL_DIT_CONFIG
from sidestep.model.tiny import write_tiny_checkpoint_root
from sidestep.train.recipe import train
from tests.helpers import write_tensor_dataset

XL = "acestep-v15-xl-turbo"


@pytest.fixture(scope="module")
def xl_root_readonly(tmp_path_factory):
    """turbo (2B) + xl-turbo + xl-sft, tiny, official layout. Do not modify it."""
    return write_tiny_checkpoint_root(tmp_path_factory.mktemp("xl") / "checkpoints",
                                      variants=("turbo", "xl-turbo", "xl-sft"))


@pytest.fixture(scope="module")
def xl_tensors(xl_root_readonly, tmp_path_factory):
    """Two songs preprocessed with xl-turbo. Do not modify it."""
    from sidestep.cli.demo import write_songs
    from sidestep.data.preprocess import preprocess_dataset

    tmp = tmp_path_factory.mktemp("xl-data")
    songs = write_songs(tmp / "songs")
    data = json.loads(songs.read_text())
    data["samples"] = data["samples"][:2]  # two songs of different lengths are enough
    songs.write_text(json.dumps(data))
    for extra in (tmp / "songs").glob("*.wav"):
        if extra.name not in {s["filename"] for s in data["samples"]}:
            extra.unlink()
    wave, rate = soundfile.read(tmp / "songs" / data["samples"][1]["filename"])
    soundfile.write(tmp / "songs" / data["samples"][1]["filename"], wave[:int(rate * 2.2)], rate)  # lengths differ
    config = Config(checkpoint_dir=str(xl_root_readonly), model_variant="xl-turbo", num_workers=0, seed=0,
                    audio_dir=str(tmp / "songs"), dataset_json=str(songs), tensor_output=str(tmp / "tensors"))
    return preprocess_dataset(config).output_dir


def _train_config(root, dataset, out, **changes):
    settings = dict(checkpoint_dir=str(root), dataset_dir=str(dataset), output_dir=str(out), epochs=1,
                    save_every=1, rank=4, alpha=8, learning_rate=1e-3, warmup_steps=0, num_workers=0, seed=0,
                    model_variant="xl-turbo")
    settings.update(changes)
    return Config(**settings)


def _copy(folder, dst, **model_changes):
    """A copy of a dataset folder whose manifest's model record is changed (None values removed)."""
    shutil.copytree(folder, dst)
    manifest = json.loads((dst / "manifest.json").read_text())
    manifest["model"].update(model_changes)
    manifest["model"] = {k: v for k, v in manifest["model"].items() if v is not None}
    (dst / "manifest.json").write_text(json.dumps(manifest))
    return dst


# -- 4. datasets record the model they were made for ---------------------------------------------------------------

def test_xl_preprocessing_writes_the_encoder_width_and_records_the_model(xl_tensors):
    manifest = read_manifest(xl_tensors)
    assert (manifest.family, manifest.encoder_width) == ("XL", TINY_XL_DIT_CONFIG["encoder_hidden_size"])
    assert manifest.model["name"] == XL and manifest.model["is_turbo"] is True
    widths = {torch.load(p, weights_only=True)["encoder_hidden_states"].shape[-1] for p in manifest.files()}
    # the condition encoder's width (64), not the XL decoder's (96)
    assert widths == {TINY_XL_DIT_CONFIG["encoder_hidden_size"]} != {TINY_XL_DIT_CONFIG["hidden_size"]}
    assert len(set(manifest.lengths.values())) == 2


def test_xl_tensors_train_xl_and_are_refused_by_2b(xl_root_readonly, xl_tensors, tmp_path):
    result = train(_train_config(xl_root_readonly, xl_tensors, tmp_path / "xl"), "fixed", quiet=True)
    assert result.optimizer_steps > 0
    with pytest.raises(SidestepError) as err:
        train(_train_config(xl_root_readonly, xl_tensors, tmp_path / "2b", model_variant="turbo"), "fixed",
              quiet=True)
    message = str(err.value)
    assert "\n" not in message
    assert (f"{xl_tensors}: preprocessed with {XL} (ACE-Step XL), cannot train acestep-v15-turbo (ACE-Step 2B); "
            "rerun train.py preprocess with --model-variant acestep-v15-turbo") in message
    assert not (tmp_path / "2b").exists()  # refused before any output or model


def test_2b_tensors_are_refused_by_xl_in_training_estimate_and_validation(xl_root_readonly, xl_tensors, tmp_path):
    b2 = _copy(xl_tensors, tmp_path / "b2", name="acestep-v15-turbo", family="2B", variant="turbo")
    match = r"b2: preprocessed with acestep-v15-turbo \(ACE-Step 2B\), cannot train acestep-v15-xl-turbo \(ACE-Step XL\)"
    with pytest.raises(SidestepError, match=match):
        train(_train_config(xl_root_readonly, b2, tmp_path / "out"), "fixed", quiet=True)
    with pytest.raises(SidestepError, match=match):
        train(_train_config(xl_root_readonly, xl_tensors, tmp_path / "out", val_dataset_dir=str(b2)), "fixed",
              quiet=True)
    with pytest.raises(SidestepError, match=match):
        estimate(Config(checkpoint_dir=str(xl_root_readonly), model_variant="xl-turbo", dataset_dir=str(b2),
                        output=str(tmp_path / "m.json"), estimate_batches=1))
    assert not (tmp_path / "m.json").exists()


def test_without_a_record_the_tensor_width_is_compared(xl_root_readonly, xl_tensors, tmp_path):
    xl = discovery.find_model(xl_root_readonly, "xl-turbo")
    narrow = write_tensor_dataset(tmp_path / "narrow", n=2, hidden=48)  # no model record at all
    with pytest.raises(SidestepError, match=r"narrow: song0\.pt holds condition tensors 48 wide, "
                                            r"acestep-v15-xl-turbo expects 64 \(made for another model\); rerun"):
        check_made_for(read_manifest(narrow), xl)
    with pytest.raises(SidestepError, match="song0.pt holds condition tensors 48 wide"):
        train(_train_config(xl_root_readonly, narrow, tmp_path / "out"), "fixed", quiet=True)
    # a recorded width is trusted over opening files
    recorded = _copy(xl_tensors, tmp_path / "recorded", family=None, encoder_width=2048)
    with pytest.raises(SidestepError, match="its manifest records condition tensors 2048 wide, acestep-v15-xl-turbo "
                                            "expects 64"):
        check_made_for(read_manifest(recorded), xl)
    # the right width without any record is accepted (datasets made before the record existed)
    check_made_for(read_manifest(write_tensor_dataset(tmp_path / "old", n=2, hidden=64)), xl)
    check_made_for(read_manifest(_copy(xl_tensors, tmp_path / "bare", family=None, encoder_width=None)), xl)


# -- 7. previews and generate use the model's own inference defaults -----------------------------------------------

def test_xl_inference_defaults_come_from_the_model_not_its_name(xl_root_readonly, tmp_path):
    from sidestep.generate import BASE_SETTINGS, TURBO_SETTINGS, sampler_settings
    from sidestep.model.tiny import write_dit_folder
    from sidestep.train.previews import PreviewSampler

    root = tmp_path / "checkpoints"
    shutil.copytree(xl_root_readonly, root)
    # names that say the opposite of what their config.json says
    write_dit_folder(root / "xl-sft-turbo-lookalike", dict(TINY_XL_DIT_CONFIG, is_turbo=True, model_version="turbo"),
                     shards=2)
    write_dit_folder(root / "my-xl-turbo-tune", dict(TINY_XL_DIT_CONFIG, is_turbo=False, model_version="sft"),
                     shards=2)
    cases = {"xl-turbo": TURBO_SETTINGS, "xl-sft": BASE_SETTINGS, "xl-sft-turbo-lookalike": TURBO_SETTINGS,
             "my-xl-turbo-tune": BASE_SETTINGS}
    assert (TURBO_SETTINGS.steps, TURBO_SETTINGS.shift, TURBO_SETTINGS.guidance) == (8, 3.0, 1.0)
    assert (BASE_SETTINGS.steps, BASE_SETTINGS.shift, BASE_SETTINGS.guidance) == (50, 1.0, 7.0)
    for variant, expected in cases.items():
        model = discovery.resolve_training_model(discovery.find_model(root, variant), root=root)
        assert model.entry.family == "XL"
        assert sampler_settings(model.entry) == sampler_settings(model) == expected, variant
        previews = PreviewSampler(model.parts(), None, tmp_path / variant, prompts=["calm"], device="cpu",
                                  dtype=torch.float32, base_variant=model.base_variant)
        assert previews.settings == expected, variant
    # --base-model in its XL spelling
    assert sampler_settings(discovery.find_model(root, "xl-sft"), "xl-turbo") == TURBO_SETTINGS


@pytest.mark.parametrize("variant,expected", [("xl-turbo", "8 steps, shift 3, guidance 1"),
                                              ("xl-sft", "50 steps, shift 1, guidance 7")])
def test_generate_on_xl_uses_its_defaults_and_equals_the_staged_previews(xl_root_readonly, tmp_path, capsys,
                                                                        monkeypatch, variant, expected):
    import soundfile

    from sidestep.cli.main import main
    from sidestep.generate import (build_pipeline, decode_latents, encode_condition, encode_text, latent_length,
                                   sample_latents, sampler_settings)
    from sidestep.model.loader import load_model_dit, load_text_encoder, load_vae

    monkeypatch.chdir(tmp_path)  # sidestep.log
    out = tmp_path / "song.wav"
    assert main(["--plain", "generate", "--checkpoint-dir", str(xl_root_readonly), "--model-variant", variant,
                 "--prompt", "calm piano", "--duration", "1", "--seed", "3", "--out", str(out)]) == 0
    assert expected in capsys.readouterr().out
    parts = discovery.locate_parts(xl_root_readonly, variant)
    dit = load_model_dit(parts.model, silence_latent=parts.silence_latent)
    tokenizer, text_encoder = load_text_encoder(parts.text_encoder)
    vae = load_vae(parts.vae)
    assert build_pipeline(dit, vae, tokenizer, text_encoder).is_turbo == (variant == "xl-turbo")
    settings = sampler_settings(parts.model)
    text = encode_text(tokenizer, text_encoder, "calm piano", None, 1.0)
    cond = encode_condition(dit.condition_encoder, text, latent_length(1.0), torch.float32)
    staged = decode_latents(vae, sample_latents(dit.transformer, cond, seed=3, steps=settings.steps,
                                                shift=settings.shift, guidance=settings.guidance))[0]
    written, rate = soundfile.read(out, dtype="float32", always_2d=True)
    assert rate == 48000 and written.shape[0] == staged.shape[1]
    assert torch.allclose(torch.from_numpy(written.T.copy()), staged.clamp(-1, 1), atol=1e-4)
