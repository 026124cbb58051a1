"""Runs that survive interruption: bit-identical resume, Ctrl-C, SIGKILL mid-write, bad resume input."""

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from helpers import write_tensor_dataset
from sidestep.cli.main import main
from sidestep.config import Config
from sidestep.errors import SidestepError
from sidestep.train.recipe import train

REPO = Path(__file__).resolve().parents[1]


def _config(root, dataset, out, **changes):
    # dropout > 0 and accumulation over a partial group exercise the RNG and step bookkeeping; batches of 2
    # songs of different lengths are cropped at offsets that change from epoch to epoch
    base = dict(checkpoint_dir=str(root), dataset_dir=str(dataset), output_dir=str(out), epochs=4, save_every=1,
                rank=4, alpha=8, lokr_linear_dim=4, lokr_linear_alpha=8, learning_rate=5e-3, warmup_steps=2,
                gradient_accumulation=2, batch_size=2, num_workers=0, dropout=0.1)
    base.update(changes)
    return Config(**base)


def _weights(folder):
    name = next(p.name for p in folder.glob("*.safetensors"))  # the kind's one weights file
    return load_file(folder / name)


def _assert_identical(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    # 5 songs of 5 lengths (24 30 36 27 33): batches [24 27] [30 33] [36] of 24, 30 and 36 frames
    return write_tensor_dataset(tmp_path_factory.mktemp("resume") / "ds", n=5)


@pytest.mark.parametrize("adapter,extra", [("lora", {}), ("lokr", {"lokr_use_scalar": True}), ("dora", {}),
                                           ("loha", {"loha_use_scalar": True}),
                                           ("oft", {"oft_constraint": 0.05, "oft_rescaled": True})])
def test_resume_after_any_epoch_is_bit_identical(tiny_root_readonly, dataset, tmp_path, adapter, extra):
    full = train(_config(tiny_root_readonly, dataset, tmp_path / "full", adapter_type=adapter, **extra), "fixed",
                 quiet=True)
    steps_per_epoch = len(full.losses) // 4
    for epoch in (1, 3):
        ckpt = tmp_path / "full" / "checkpoints" / f"epoch_{epoch}"
        resumed = train(_config(tiny_root_readonly, dataset, tmp_path / f"resumed{epoch}", adapter_type=adapter,
                                resume_from=str(ckpt), **extra), "fixed", quiet=True)
        _assert_identical(_weights(tmp_path / f"resumed{epoch}"), _weights(tmp_path / "full"))
        # the curve continues where it stopped: the same losses as the uninterrupted run
        assert resumed.losses == full.losses[epoch * steps_per_epoch:]


def test_restored_weights_equal_the_saved_ones(tiny_root_readonly, dataset, tmp_path):
    train(_config(tiny_root_readonly, dataset, tmp_path / "a", epochs=2), "fixed", quiet=True)
    ckpt = tmp_path / "a" / "checkpoints" / "epoch_2"
    state = torch.load(ckpt / "training_state.pt", weights_only=True)
    resumed = train(_config(tiny_root_readonly, dataset, tmp_path / "b", epochs=2, resume_from=str(ckpt)), "fixed",
                    quiet=True)
    restored = resumed.adapter.training_state()
    _assert_identical(restored, state["adapter"])
    assert any(v.abs().sum() > 0 for k, v in restored.items() if "lora_B" in k)  # not fresh weights


def _run(args, env=None, **kw):
    return subprocess.Popen([sys.executable, str(REPO / "train.py"), "--plain", "-y", *args], cwd=kw.get("cwd"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=dict(os.environ, **(env or {})))


def _cli(root, dataset, out, *extra):
    return ["fixed", "--checkpoint-dir", str(root), "--dataset-dir", str(dataset), "--output-dir", str(out),
            "--rank", "4", "--alpha", "8", "--lr", "0.005", "--warmup-steps", "2", "--gradient-accumulation", "1",
            "--num-workers", "0", "--save-every", "100", "--scheduler-type", "constant_with_warmup",
            "--batch-size", "2", *extra]


def test_ctrl_c_saves_prints_resume_command_and_exits_130(tiny_root_readonly, dataset, tmp_path):
    out = tmp_path / "out"
    proc = _run(_cli(tiny_root_readonly, dataset, out, "--epochs", "300"), cwd=tmp_path)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("epoch 2/"):
            proc.send_signal(signal.SIGINT)
            break
    rest, _ = proc.communicate(timeout=120)
    text = "".join(lines) + rest
    assert proc.returncode == 130, text
    command = next(l.strip() for l in text.splitlines() if l.strip().startswith("python train.py fixed"))
    assert "--resume-from" in command
    ckpt = Path(command.split("--resume-from ")[1].split()[0])
    assert (ckpt / "training_state.pt").is_file() and (ckpt / "adapter_model.safetensors").is_file()
    state = torch.load(ckpt / "training_state.pt", weights_only=True)
    # resuming with the printed command (fewer epochs to finish quickly) ends where a straight run ends
    stop_epochs = str(state["epoch"] + 2)
    argv = command.split()[2:] + ["--epochs", stop_epochs]
    resumed = _run(argv, cwd=tmp_path)
    assert resumed.wait(timeout=300) == 0, resumed.stdout.read()
    straight = train(_config(tiny_root_readonly, dataset, tmp_path / "straight", epochs=int(stop_epochs),
                             save_every=100, gradient_accumulation=1, scheduler_type="constant_with_warmup"),
                     "fixed", quiet=True)
    _assert_identical(_weights(out), _weights(tmp_path / "straight"))
    assert straight.optimizer_steps == state["global_step"] + (int(stop_epochs) - state["epoch"]) * 3 - \
        state["samples_in_epoch"] // 2


def test_sigkill_during_checkpoint_write_keeps_the_previous_one(tiny_root_readonly, dataset, tmp_path):
    out = tmp_path / "out"
    args = _cli(tiny_root_readonly, dataset, out, "--epochs", "3", "--save-every", "1")
    proc = _run(args, env={"SIDESTEP_KILL_AT": "epoch_2:1"})
    text, _ = proc.communicate(timeout=300)
    assert proc.returncode == -signal.SIGKILL, text
    ckpts = out / "checkpoints"
    assert (ckpts / "epoch_1" / "training_state.pt").is_file()
    assert not (ckpts / "epoch_2").exists()
    torch.load(ckpts / "epoch_1" / "training_state.pt", weights_only=True)
    # the half-written folder is a hidden temp dir, and resuming from epoch_1 completes the run
    resumed = _run(args + ["--resume-from", str(ckpts / "epoch_1")])
    assert resumed.wait(timeout=300) == 0, resumed.stdout.read()
    straight = train(_config(tiny_root_readonly, dataset, tmp_path / "straight", epochs=3, gradient_accumulation=1,
                             scheduler_type="constant_with_warmup"), "fixed", quiet=True)
    _assert_identical(_weights(out), _weights(tmp_path / "straight"))


@pytest.fixture(scope="module")
def checkpoint(tiny_root_readonly, dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("ckpt") / "out"
    train(_config(tiny_root_readonly, dataset, out, epochs=1), "fixed", quiet=True)
    return out / "checkpoints" / "epoch_1"


@pytest.mark.parametrize("change,message", [
    ({"adapter_type": "lokr"}, "checkpoint has adapter-type 'lora', this run asks for 'lokr'"),
    ({"rank": 8}, "checkpoint has rank 4, this run asks for 8"),
    ({"model_variant": "base"}, "trained on model 'acestep-v15-turbo', this run uses 'acestep-v15-base'"),
])
def test_resume_mismatch_is_named_and_touches_nothing(tiny_root_readonly, dataset, checkpoint, tmp_path, change,
                                                      message):
    out = tmp_path / "out"
    with pytest.raises(SidestepError, match=message):
        train(_config(tiny_root_readonly, dataset, out, resume_from=str(checkpoint), **change), "fixed", quiet=True)
    assert not out.exists()


def test_resume_from_a_non_checkpoint_or_truncated_state(tiny_root_readonly, dataset, checkpoint, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    args = _cli(tiny_root_readonly, dataset, out, "--epochs", "2")
    assert main(["--plain", "-y", *args[0:], "--resume-from", str(tmp_path)]) == 2
    assert "training_state.pt: not found" in capsys.readouterr().out
    broken = tmp_path / "broken"
    shutil.copytree(checkpoint, broken)
    data = (broken / "training_state.pt").read_bytes()
    (broken / "training_state.pt").write_bytes(data[: len(data) // 3])
    assert main(["--plain", "-y", *args, "--resume-from", str(broken)]) == 2
    assert "training_state.pt: unreadable" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]


def test_stale_temp_files_of_a_killed_run_are_removed(tiny_root_readonly, dataset, tmp_path):
    out = tmp_path / "out"
    (out / "checkpoints" / ".epoch_3.abcd.tmp").mkdir(parents=True)
    (out / ".adapter_model.safetensors.x.tmp").write_bytes(b"half")
    train(_config(tiny_root_readonly, dataset, out, epochs=1), "fixed", quiet=True)
    assert not list(out.glob(".*.tmp")) and not list((out / "checkpoints").glob(".*.tmp"))
    assert (out / "checkpoints" / "epoch_1").is_dir()
