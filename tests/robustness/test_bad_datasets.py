"""Tensor folders given to --dataset-dir that are not what preprocessing leaves: no manifest, a manifest
naming files that are gone, a damaged sample (also when a loader worker finds it)."""

import json

import pytest
import torch

from helpers import write_tensor_dataset

from .support import error_line, run_cli, snapshot


def _train(root, dataset, out, *extra):
    return run_cli("fixed", "--checkpoint-dir", root, "--dataset-dir", dataset, "--output-dir", out, "--epochs", "1",
                   "--num-workers", "0", "--rank", "4", "--alpha", "8", "--gradient-accumulation", "1", *extra)



def _earlier_untouched(before, out):
    now = snapshot(out)
    assert {k: now.get(k) for k in before} == before


def test_no_manifest_trains_on_every_sample_file(tiny_root_readonly, tmp_path):
    dataset = write_tensor_dataset(tmp_path / "ds", n=3)
    (dataset / "manifest.json").unlink()
    code, text = _train(tiny_root_readonly, dataset, tmp_path / "out")
    assert code == 0, text
    assert "Training complete: 1 epoch, 3 optimizer steps" in text


def test_no_manifest_and_no_samples_fails_with_exit_3(tiny_root_readonly, tmp_path, out):
    (tmp_path / "empty").mkdir()
    before = snapshot(out)
    code, text = _train(tiny_root_readonly, tmp_path / "empty", out)
    assert code == 3
    assert error_line(text) == f"[FAIL] {tmp_path / 'empty'}: the dataset holds no samples, so no training step " \
                               "can run; preprocess some audio into it first"
    _earlier_untouched(before, out)


@pytest.mark.parametrize("gone,listed", [(["song1.pt"], "song1.pt"),
                                         (["song0.pt", "song1.pt", "song2.pt", "song3.pt"],
                                          "song0.pt, song1.pt, song2.pt, ...")])
def test_manifest_naming_missing_files(tiny_root_readonly, tmp_path, out, gone, listed):
    dataset = write_tensor_dataset(tmp_path / "ds", n=4)
    for name in gone:
        (dataset / name).unlink()
    before = snapshot(out)
    code, text = _train(tiny_root_readonly, dataset, out)
    assert code == 2
    assert error_line(text) == f"{dataset / 'manifest.json'}: names {len(gone)} missing file(s) ({listed}); rerun " \
                               "train.py preprocess on this folder"
    _earlier_untouched(before, out)


@pytest.mark.parametrize("content", ['{"samples": "song0.pt"}', "{broken", '{"num_samples": 2}'])
def test_unreadable_manifest(tiny_root_readonly, tmp_path, out, content):
    dataset = write_tensor_dataset(tmp_path / "ds", n=2)
    (dataset / "manifest.json").write_text(content)
    code, text = _train(tiny_root_readonly, dataset, out)
    assert code == 2
    assert error_line(text) == f"{dataset / 'manifest.json'}: unreadable or has no 'samples' list; rerun train.py " \
                               "preprocess or delete it to use every *.pt in the folder"


def test_dataset_folder_that_does_not_exist(tiny_root_readonly, tmp_path, out):
    code, text = _train(tiny_root_readonly, tmp_path / "nope", out)
    assert code == 2
    assert error_line(text) == f"{tmp_path / 'nope'}: dataset folder not found; pass --dataset-dir pointing at " \
                               "preprocessed tensors (train.py preprocess writes them)"


@pytest.mark.parametrize("workers", ["0", "2"])
@pytest.mark.parametrize("damage,kind", [(b"not a pickle", "not a readable preprocessed sample (UnpicklingError)"),
                                         (None, "not a usable preprocessed sample ('attention_mask' is missing, "
                                                "not a tensor)")])
def test_damaged_sample_is_named_in_one_line(tiny_root_readonly, tmp_path, out, workers, damage, kind):
    """Found by a DataLoader worker the error crosses a process boundary: still one line, no traceback."""
    dataset = write_tensor_dataset(tmp_path / "ds", n=2)
    manifest = json.loads((dataset / "manifest.json").read_text())
    manifest["sample_info"] = [{"file": f"song{i}.pt", "latent_frames": 24} for i in range(2)]
    (dataset / "manifest.json").write_text(json.dumps(manifest))  # lengths known: only the loader opens samples
    if damage is None:
        torch.save({"target_latents": torch.zeros(24, 64)}, dataset / "song1.pt")
    else:
        (dataset / "song1.pt").write_bytes(damage)
    before = snapshot(out)
    code, text = _train(tiny_root_readonly, dataset, out, "--num-workers", workers, "--no-persistent-workers")
    assert code == 2
    assert error_line(text) == f"{dataset / 'song1.pt'}: {kind}; rerun train.py preprocess"
    assert "DataLoader worker" not in text
    _earlier_untouched(before, out)
