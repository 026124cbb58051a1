"""Concurrent and stopped runs: one run per output folder at a time (an advisory lock naming the other run's
PID and start time; a killed run's stale lock is taken over), and SIGTERM (docker stop, SLURM pre-emption)
behaves like Ctrl-C: a checkpoint at the next step, the resume command, exit 143."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from helpers import write_tensor_dataset
from sidestep.lock import LOCK_NAME, holder_is_running, run_lock

from .support import error_line, run_cli, snapshot, write_song

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_tensor_dataset(tmp_path_factory.mktemp("lock_ds") / "ds", n=3)


def _train(root, dataset, out, *extra):
    return run_cli("fixed", "--checkpoint-dir", root, "--dataset-dir", dataset, "--output-dir", out, "--epochs", "1",
                   "--num-workers", "0", "--rank", "4", "--alpha", "8", *extra)


def _holder(folder: Path):
    """Another process holding `folder`'s lock (through the same code a run uses) until it is stopped."""
    code = ("import sys, time\nfrom sidestep.lock import run_lock\n"
            f"with run_lock({str(folder)!r}, 'training'):\n    print('held', flush=True)\n    time.sleep(120)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=REPO)
    assert proc.stdout.readline().strip() == "held"
    return proc


@pytest.mark.parametrize("command", ["fixed", "preprocess"])
def test_a_second_run_into_a_held_folder_is_refused_naming_the_other(tiny_root_readonly, dataset, tmp_path,
                                                                     command):
    out = tmp_path / "out"
    out.mkdir()
    (out / "adapter_model.safetensors").write_bytes(b"the first run's adapter")
    holder = _holder(out)
    try:
        before = snapshot(out)
        if command == "fixed":
            code, text = _train(tiny_root_readonly, dataset, out)
        else:
            write_song(tmp_path / "songs" / "a.wav")
            code, text = run_cli("preprocess", "--checkpoint-dir", tiny_root_readonly, "--audio-dir",
                                 tmp_path / "songs", "--tensor-output", out)
        assert code == 2, text
        line = error_line(text)
        assert f"PID {holder.pid}" in line and "started 20" in line, line
        assert snapshot(out) == before
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize("how", ["killed holder", "garbage", "empty", "reused pid", "not a pid"])
def test_a_stale_lock_is_taken_over(tiny_root_readonly, dataset, tmp_path, how):
    out = tmp_path / "out"
    out.mkdir()
    lock = out / LOCK_NAME
    if how == "killed holder":
        holder = _holder(out)
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        assert lock.is_file()
    elif how == "reused pid":  # a live process with the PID, but not the one that took the lock
        lock.write_text(json.dumps(dict(pid=os.getppid() if os.getppid() > 1 else 1, host=socket.gethostname(),
                                        process_start="1", started="2020-01-01T00:00:00+00:00")))
    else:
        lock.write_text({"garbage": "{{{ not json", "empty": "", "not a pid": '{"pid": "12", "host": "x"}'}[how])
        old = time.time() - 60
        os.utime(lock, (old, old))
    code, text = _train(tiny_root_readonly, dataset, out)
    assert code == 0, text
    assert not lock.exists()
    assert (out / "adapter_model.safetensors").is_file()


def test_a_lock_from_another_host_is_respected(tiny_root_readonly, dataset, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / LOCK_NAME).write_text(json.dumps(dict(pid=1234, host="elsewhere.invalid", started="2026-01-01T00:00:00")))
    code, text = _train(tiny_root_readonly, dataset, out)
    assert code == 2, text
    line = error_line(text)
    assert "PID 1234 on elsewhere.invalid" in line and LOCK_NAME in line


def test_the_lock_is_released_after_success_and_failure(tiny_root_readonly, dataset, tmp_path):
    out = tmp_path / "out"
    code, text = _train(tiny_root_readonly, dataset, out)
    assert code == 0, text
    assert not (out / LOCK_NAME).exists()
    code, text = _train(tiny_root_readonly, tmp_path / "missing", out)
    assert code == 2, text
    assert not (out / LOCK_NAME).exists()
    code, text = _train(tiny_root_readonly, tmp_path / "missing", tmp_path / "new")
    assert code == 2, text
    assert not (tmp_path / "new").exists()  # a failed run leaves no empty folder


def test_lock_helpers_on_odd_contents():
    here = socket.gethostname()
    for info in (None, {}, {"pid": True}, {"pid": -5, "host": here}, {"pid": 2**40, "host": here},
                 {"pid": os.getpid(), "host": socket.gethostname(), "process_start": "not it"}):
        assert holder_is_running(info) is False, info
    assert holder_is_running({"pid": os.getpid(), "host": socket.gethostname()})


def test_one_process_at_a_time_even_when_racing(tmp_path):
    """Eight processes try to take one fresh folder's lock at once: exactly one gets it."""
    code = ("import sys, time\nfrom sidestep.errors import SidestepError\nfrom sidestep.lock import run_lock\n"
            "try:\n"
            f"    with run_lock({str(tmp_path / 'out')!r}):\n        print('got', flush=True)\n        time.sleep(3)\n"
            "except SidestepError:\n    print('refused', flush=True)\n")
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=REPO)
             for _ in range(8)]
    results = sorted(p.communicate(timeout=120)[0].strip() for p in procs)
    assert results.count("got") == 1, results


# ------------------------------------------------------------------------------------------
# SIGTERM


def _popen(args):
    return subprocess.Popen([sys.executable, str(REPO / "train.py"), "--plain", "-y", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO)


@pytest.mark.parametrize("signals", [1, 2])
def test_sigterm_checkpoints_prints_the_resume_command_and_exits_143(tiny_root_readonly, dataset, tmp_path,
                                                                      signals):
    out = tmp_path / "out"
    proc = _popen(["fixed", "--checkpoint-dir", tiny_root_readonly, "--dataset-dir", dataset, "--output-dir", out,
                   "--epochs", "300", "--save-every", "1000", "--num-workers", "0", "--rank", "4", "--alpha", "8",
                   "--gradient-accumulation", "1"])
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("epoch 2/"):
            for _ in range(signals):
                proc.send_signal(signal.SIGTERM)
            break
    rest, _ = proc.communicate(timeout=120)
    text = "".join(lines) + rest
    if signals == 2:  # a second SIGTERM ends it at once (as a second Ctrl-C does), unless the first finished
        assert proc.returncode in (-signal.SIGTERM, 143), text
        assert not (out / LOCK_NAME).exists() or proc.returncode == -signal.SIGTERM
        return
    assert proc.returncode == 143, text
    assert "(terminated by SIGTERM)" in text
    command = next(l.strip() for l in text.splitlines() if l.strip().startswith("python train.py fixed"))
    ckpt = Path(command.split("--resume-from ")[1].split()[0])
    assert (ckpt / "training_state.pt").is_file()
    state = torch.load(ckpt / "training_state.pt", weights_only=True)
    assert state["global_step"] >= 1
    assert not (out / LOCK_NAME).exists()
    resumed = _popen(command.split()[2:] + ["--epochs", str(state["epoch"] + 1)])
    assert resumed.wait(timeout=300) == 0, resumed.stdout.read()
