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

