"""Scanning a checkpoints root: official vs custom, variants, timestep parameters, missing parts."""

import json
import shutil

import pytest

from sidestep.cli.main import main
from sidestep.config import Config
from sidestep.errors import SidestepError
from sidestep.model import discovery
from sidestep.model.loader import CheckpointError


def _fine_tune(root, name, drop=(), **changes):
    src = root / "acestep-v15-base"
    dst = root / name
    shutil.copytree(src, dst)
    config = json.loads((dst / "config.json").read_text())
    for key in drop:
        config.pop(key)
    config.update(changes)
    (dst / "config.json").write_text(json.dumps(config))
    return dst


def test_official_and_custom_labels(tiny_root):
    _fine_tune(tiny_root, "my-lofi-tune")
    (tiny_root / "not-a-model").mkdir()
    models = discovery.scan_models(tiny_root)
    assert [(m.name, m.label) for m in models] == [
        ("acestep-v15-base", "official"), ("acestep-v15-turbo", "official"), ("my-lofi-tune", "custom")]
    turbo = discovery.find_model(tiny_root, "turbo")
    assert turbo.is_turbo and turbo.base_variant == "turbo"
    base = discovery.find_model(tiny_root, "base")
    assert not base.is_turbo and base.base_variant == "base"
    assert (base.timestep_mu, base.timestep_sigma) == (-0.4, 1.0)


def test_fuzzy_search(tiny_root):
    _fine_tune(tiny_root, "my-lofi-tune")
    models = discovery.scan_models(tiny_root)
    assert [m.name for m in discovery.fuzzy_find(models, "LOFI")] == ["my-lofi-tune"]
    assert [m.name for m in discovery.fuzzy_find(models, "acestep-v15-trubo")][0] == "acestep-v15-turbo"
    with pytest.raises(CheckpointError, match="did you mean acestep-v15-turbo"):
        discovery.find_model(tiny_root, "acestep-v15-trubo")


def test_fine_tune_without_timestep_params_needs_base_model(tiny_root):
    _fine_tune(tiny_root, "mystery", drop=("timestep_mu", "timestep_sigma", "model_version"), is_turbo=False)
    entry = discovery.find_model(tiny_root, "mystery")
    assert entry.base_variant is None and entry.timestep_mu is None
    with pytest.raises(CheckpointError, match="pass --base-model"):
        discovery.resolve_training_model(entry)
    resolved = discovery.resolve_training_model(entry, base_model="sft")
    assert (resolved.base_variant, resolved.timestep_mu, resolved.timestep_sigma) == ("sft", -0.4, 1.0)


def test_config_values_win_and_base_model_overrides_variant(tiny_root):
    _fine_tune(tiny_root, "shifted", timestep_mu=-0.8, timestep_sigma=0.5)
    entry = discovery.find_model(tiny_root, "shifted")
    resolved = discovery.resolve_training_model(entry, base_model="sft")
    assert (resolved.base_variant, resolved.timestep_mu, resolved.timestep_sigma) == ("sft", -0.8, 0.5)
    with pytest.raises(SidestepError, match="--base-model must be one of turbo, base, sft, got 'xl'"):
        Config(checkpoint_dir=str(tiny_root), model_variant="shifted", base_model="xl")  # checked where declared


def test_missing_parts_are_named(tiny_root):
    shutil.rmtree(tiny_root / "vae")
    with pytest.raises(CheckpointError, match=r"vae: VAE folder not found"):
        discovery.locate_parts(tiny_root, "turbo")
    assert discovery.locate_parts(tiny_root, "turbo", need=("text_encoder",)).model.name == "acestep-v15-turbo"
    shutil.rmtree(tiny_root / "Qwen3-Embedding-0.6B")
    with pytest.raises(CheckpointError, match=r"Qwen3-Embedding-0\.6B: text encoder folder not found"):
        discovery.locate_parts(tiny_root, "turbo", need=("text_encoder",))


def test_silence_latent_root_first_then_model_folder(tiny_root):
    entry = discovery.find_model(tiny_root, "turbo")
    assert discovery.find_silence_latent(tiny_root, entry) == entry.path / "silence_latent.pt"
    shutil.copy(entry.path / "silence_latent.pt", tiny_root / "silence_latent.pt")
    assert discovery.find_silence_latent(tiny_root, entry) == tiny_root / "silence_latent.pt"
    (tiny_root / "silence_latent.pt").unlink()
    (entry.path / "silence_latent.pt").unlink()
    with pytest.raises(CheckpointError, match="silence latent not found"):
        discovery.find_silence_latent(tiny_root, entry)


def test_models_command_prints_table(tiny_root, capsys):
    _fine_tune(tiny_root, "my-lofi-tune")
    assert main(["--plain", "models", "--checkpoint-dir", str(tiny_root)]) == 0
    out = capsys.readouterr().out
    assert "acestep-v15-turbo" in out and "my-lofi-tune" in out and "custom" in out
    assert f"VAE: {tiny_root / 'vae'}" in out


def test_models_command_on_empty_folder(tmp_path, capsys):
    assert main(["--plain", "models", "--checkpoint-dir", str(tmp_path)]) == 2
    assert "no ACE-Step model folders found" in capsys.readouterr().out
