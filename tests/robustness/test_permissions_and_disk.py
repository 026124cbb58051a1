"""Where the machine says no: a song the user may not read, an output folder on a read-only drive, and a
disk that fills up mid-run. Each gives one line saying so, and nothing written before is lost."""

import json
import os
import shutil

import pytest
import torch
from safetensors.torch import load_file

from helpers import write_tensor_dataset
from sidestep.config import Config
from sidestep.train.recipe import train

from .support import error_line, mounted_tmpfs, run_cli, snapshot, unprivileged, write_song

FULL = "the disk is full (No space left on device)"


def _temp_files(folder):
    return [p for p in folder.rglob("*") if p.name.endswith(".tmp")]


def _fill(folder, leave: int):
    """Fill the file system holding `folder` until `leave` bytes are free."""
    st = os.statvfs(folder)
    free = st.f_bavail * st.f_frsize
    with open(folder / "filler.bin", "wb") as fh:
        fh.write(b"\0" * max(free - leave, 0))
    return folder / "filler.bin"


# ------------------------------------------------------------------------------------------
# A song the user may not read


def test_unreadable_song_is_skipped_and_the_rest_processed(open_root, open_area):
    audio = open_area / "audio"
    write_song(audio / "fine.wav")
    write_song(audio / "locked.wav", freq=500).chmod(0)
    audio.chmod(0o755)
    out = open_area / "tensors"
    out.mkdir(mode=0o777)
    out.chmod(0o777)
    with unprivileged():  # root reads anything: drop to an ordinary user for the kernel to refuse
        code, text = run_cli("preprocess", "--checkpoint-dir", open_root, "--audio-dir", audio, "--tensor-output", out)
    assert code == 0, text
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["samples"] == ["fine.pt"]
    assert manifest["skipped"] == [{"file": "locked.wav", "reason": "unreadable: permission denied; make the file "
                                    "readable (chmod a+r) or copy it somewhere you own"}]


# ------------------------------------------------------------------------------------------
# An output folder on a read-only drive


@pytest.fixture
def readonly(tmp_path):
    """A folder nobody may write to: a read-only tmpfs for root (who ignores permissions), else mode 555."""
    where = tmp_path / "readonly"
    if os.geteuid() == 0:
        with mounted_tmpfs(where, "1m", read_only=True):
            yield where, "the file system is read-only (Read-only file system)"
        return
    where.mkdir()
    where.chmod(0o555)
    yield where, "permission denied"
    where.chmod(0o755)


@pytest.mark.parametrize("sub", ["tensors", ""])
def test_preprocess_into_a_read_only_folder(tiny_root_readonly, tmp_path, readonly, sub):
    where, problem = readonly
    write_song(tmp_path / "audio" / "song.wav")
    out = where / sub if sub else where
    code, text = run_cli("preprocess", "--checkpoint-dir", tiny_root_readonly, "--audio-dir", tmp_path / "audio",
                         "--tensor-output", out)
    assert code == 2
    assert error_line(text) == f"{out}: cannot write the tensors: {problem}; choose a --tensor-output folder you " \
                               "can write to"
    assert "Pass 1/2" not in text  # refused before any model was loaded


def test_train_into_a_read_only_folder(tiny_root_readonly, tmp_path, readonly):
    where, problem = readonly
    dataset = write_tensor_dataset(tmp_path / "ds", n=2)
    args = ["fixed", "--checkpoint-dir", tiny_root_readonly, "--dataset-dir", dataset, "--epochs", "1",
            "--num-workers", "0", "--rank", "4", "--alpha", "8"]
    code, text = run_cli(*args, "--output-dir", where / "out")
    assert code == 2
    strerror = "Read-only file system" if "read-only" in problem else "Permission denied"
    assert error_line(text) == f"{where / 'out'}: cannot create the output folder ({strerror}); choose a writable " \
                               "--output-dir"
    code, text = run_cli(*args, "--output-dir", where)  # the folder exists: refused before the model loads
    assert code == 2
    assert error_line(text) == f"{where}: cannot write the adapter: {problem}; choose a writable --output-dir"


# ------------------------------------------------------------------------------------------
# The disk fills up


def test_preprocessing_on_a_full_disk_keeps_what_was_done(tiny_root_readonly, tmp_path):
    audio = tmp_path / "audio"
    write_song(audio / "a.wav")
    write_song(audio / "b.wav", freq=440)
    with mounted_tmpfs(tmp_path / "small", "3m") as disk:
        out = disk / "tensors"
        args = ("preprocess", "--checkpoint-dir", tiny_root_readonly, "--audio-dir", audio, "--tensor-output", out)
        code, text = run_cli(*args)
        assert code == 0, text
        before = snapshot(out)
        write_song(audio / "c.wav", freq=550)
        write_song(audio / "d.wav", freq=660)
        filler = _fill(disk, leave=100_000)  # less than one sample's tensors
        code, text = run_cli(*args)
        assert code == 2
        line = error_line(text)
        assert line.startswith(f"{out}/") and line.endswith(
            f": cannot write: {FULL}; free some space there (or choose another folder) and run again; files "
            "written before are intact"), line
        assert {k: snapshot(out)[k] for k in before} == before  # the earlier samples and manifest are intact
        assert not _temp_files(out)  # the half-written file is gone, not left to eat the space
        filler.unlink()
        code, text = run_cli(*args)  # space freed: the same command finishes the job
        assert code == 0, text
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["samples"] == ["a.pt", "b.pt", "c.pt", "d.pt"]
        assert {k: snapshot(out)[k] for k in before if k.endswith(".pt")} == \
            {k: v for k, v in before.items() if k.endswith(".pt")}


@pytest.fixture(scope="module")
def straight(tiny_root_readonly, tmp_path_factory):
    """3 epochs without trouble: what a run interrupted by a full disk must still end with."""
    base = tmp_path_factory.mktemp("straight")
    dataset = write_tensor_dataset(base / "ds", n=2)
    settings = dict(checkpoint_dir=str(tiny_root_readonly), dataset_dir=str(dataset), epochs=3, save_every=1, rank=4,
                    alpha=8, num_workers=0, gradient_accumulation=1, log_dir=str(base / "logs"),
                    scheduler_type="constant", warmup_steps=0)  # the schedule does not depend on --epochs
    train(Config(output_dir=str(base / "out"), **settings), "fixed", quiet=True)
    return dataset, load_file(base / "out" / "adapter_model.safetensors")


# room left: none for the adapter weights (65 kB), or for them but not for the training state (250 kB)
@pytest.mark.parametrize("room", [20_000, 150_000], ids=["adapter does not fit", "training state does not fit"])
def test_training_on_a_full_disk_keeps_the_last_checkpoint(tiny_root_readonly, straight, tmp_path, room):
    dataset, expected = straight
    with mounted_tmpfs(tmp_path / "small", "2m") as disk:
        out = disk / "out"
        args = ["fixed", "--checkpoint-dir", tiny_root_readonly, "--dataset-dir", dataset, "--output-dir", out,
                "--save-every", "1", "--rank", "4", "--alpha", "8", "--num-workers", "0",
                "--gradient-accumulation", "1", "--log-dir", tmp_path / "logs", "--scheduler-type", "constant",
                "--warmup-steps", "0"]
        code, text = run_cli(*args, "--epochs", "1")
        assert code == 0, text
        epoch_1 = snapshot(out / "checkpoints" / "epoch_1")
        filler = _fill(disk, leave=room)
        code, text = run_cli(*args, "--epochs", "3", "--resume-from", out / "checkpoints" / "epoch_1")
        assert code == 2
        assert error_line(text) == f"{out / 'checkpoints' / 'epoch_2'}: cannot write the checkpoint: {FULL}; free " \
                                   "some space on that drive (or pass another --output-dir) and resume from the " \
                                   "last checkpoint; earlier checkpoints are intact"
        assert snapshot(out / "checkpoints" / "epoch_1") == epoch_1
        assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["epoch_1"]  # no half checkpoint
        filler.unlink()
        code, text = run_cli(*args, "--epochs", "3", "--resume-from", out / "checkpoints" / "epoch_1")
        assert code == 0, text
        final = load_file(out / "adapter_model.safetensors")
    assert final.keys() == expected.keys() and all(torch.equal(final[k], expected[k]) for k in final)


def test_final_adapter_on_a_full_disk(tiny_root_readonly, tmp_path):
    dataset = write_tensor_dataset(tmp_path / "ds", n=2)
    with mounted_tmpfs(tmp_path / "small", "2m") as disk:
        out = disk / "out"
        args = ["fixed", "--checkpoint-dir", tiny_root_readonly, "--dataset-dir", dataset, "--output-dir", out,
                "--save-every", "1", "--rank", "4", "--alpha", "8", "--num-workers", "0", "--epochs", "1",
                "--log-dir", tmp_path / "logs"]
        code, text = run_cli(*args)
        assert code == 0, text
        adapter = snapshot(out)
        adapter = {k: v for k, v in adapter.items() if "/" not in k}
        shutil.rmtree(out / "checkpoints")
        filler = _fill(disk, leave=20_000)
        code, text = run_cli(*args, "--save-every", "100", "--lr", "0.01")
        assert code == 2
        line = error_line(text)
        assert line.startswith(f"{out}: cannot write the adapter: {FULL}; "), line
        assert {k: snapshot(out).get(k) for k in adapter} == adapter  # the earlier adapter is still whole
        assert not _temp_files(out)
        filler.unlink()
