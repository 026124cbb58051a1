"""Fault injection: preprocessing and training are SIGKILLed at 20 seeded points (mid-commit of pass-1
intermediates, sample tensors, their state, the manifest, checkpoints and the final adapter), then rerun /
resumed from the newest complete checkpoint. Every run finishes, and the tensors and the adapter are
bit-identical to an uninterrupted run.

The points are drawn from the commits an uninterrupted run really makes (recorded at `sidestep.io`'s fault
points, the place `SIDESTEP_KILL_AT` acts), so new files get covered without touching this test. Each kill
is a real SIGKILL of a forked child process running the same code as `train.py` (a fork skips the ~8 s of
imports a fresh interpreter pays; `tests/test_resume.py` and `tests/test_preprocess.py` kill the CLI itself).
"""

import io
import json
import os
import random
import signal
import time
import traceback
from pathlib import Path
from types import SimpleNamespace

import pytest
from rich.console import Console

import sidestep.io
from sidestep import faults
from sidestep.config import Config
from sidestep.data.preprocess import preprocess_dataset
from sidestep.train.recipe import train

from .support import write_song

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="the kills run in forked children (POSIX)")

SEED = 20251126
POINTS = 20  # kill points in all: up to 10 in training (one per commit it makes), the rest in preprocessing
EPOCHS = 6


def quiet() -> Console:
    return Console(file=io.StringIO(), force_terminal=False, width=150)


def record_commits(run) -> list[str]:
    """Run `run()` and return the name of every atomic commit it made, in order."""
    names = []
    real = sidestep.io.fault_point

    def record(name):
        names.append(name)
        real(name)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sidestep.io, "fault_point", record)
        run()
    return names


def moments(names: list[str]) -> list[tuple[int, str, int]]:
    """(i, name, n) for every commit: the i-th write of any kind, and the n-th of a file called `name`."""
    seen: dict[str, int] = {}
    out = []
    for i, name in enumerate(names, 1):
        seen[name] = seen.get(name, 0) + 1
        out.append((i, name, seen[name]))
    return out


def choose(commits: list[tuple[int, str, int]], k: int, rng: random.Random, must: dict) -> list[tuple[str, int]]:
    """`k` different moments, one of each category in `must` (name -> predicate on the file name) and the
    rest at random, each addressed as `SIDESTEP_KILL_AT` allows: by file name, or as the i-th write (`*:i`)."""
    chosen = []
    for test in must.values():
        chosen.append(rng.choice([c for c in commits if test(c[1]) and c not in chosen]))
    chosen += rng.sample([c for c in commits if c not in chosen], k - len(chosen))
    specs = [("*", i) if rng.random() < 0.3 else (name, n) for i, name, n in chosen]
    if not any(name == "*" for name, _ in specs):
        specs[-1] = ("*", chosen[-1][0])
    return specs


def killed_child(run, spec: str, timeout: float = 120.0) -> None:
    """Run `run()` in a forked child with SIDESTEP_KILL_AT=spec; assert it died of SIGKILL there."""
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 3
        try:
            os.environ["SIDESTEP_KILL_AT"] = spec
            faults._hits.clear()
            run()
            code = 0  # finished: the kill point was never reached
        except BaseException:
            traceback.print_exc()
            code = 1
        finally:
            os._exit(code)
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:  # a hung child must not hang the suite
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail(f"{spec}: the child neither finished nor reached the kill point in {timeout:.0f} s")
        time.sleep(0.01)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, \
        f"{spec}: the child was not killed (exit status {os.waitstatus_to_exitcode(status)})"


def files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def temp_files(folder: Path) -> list[str]:
    return [p.name for p in folder.rglob("*") if p.name.endswith(".tmp")]


# ------------------------------------------------------------------------------------------
# Preprocessing


@pytest.fixture(scope="module")
def songs(tmp_path_factory):
    base = tmp_path_factory.mktemp("fi_songs")
    songs = [("one.wav", 48000, 2), ("two.flac", 44100, 1), ("three.wav", 22050, 2), ("four.flac", 96000, 6)]
    for i, (name, rate, channels) in enumerate(songs):
        write_song(base / "audio" / name, rate, channels, seconds=0.15, freq=300 + 120 * i)
    (base / "dataset.json").write_text(json.dumps({"metadata": {"custom_tag": "fi"}, "samples": [
        {"filename": "one.wav", "caption": "first", "lyrics": "[Verse]\nla la"},
        {"filename": "two.flac", "caption": "second", "bpm": 90}]}))
    return base


def _pre_config(root, songs, out) -> Config:
    return Config(checkpoint_dir=str(root), audio_dir=str(songs / "audio"), dataset_json=str(songs / "dataset.json"),
                  tensor_output=str(out))


@pytest.fixture(scope="module")
def pre_reference(tiny_root_readonly, songs, tmp_path_factory):
    out = tmp_path_factory.mktemp("fi_pre") / "reference"
    names = record_commits(lambda: preprocess_dataset(_pre_config(tiny_root_readonly, songs, out), console=quiet()))
    return SimpleNamespace(out=out, names=names, files=files(out))


def _manifest(data: bytes) -> dict:
    manifest = json.loads(data)
    for key in ("created_at", "name"):  # when, and the output folder's name
        manifest["metadata"].pop(key)
    return manifest


def _train_moments(names: list[str]) -> int:
    return min(10, len(names))


def test_preprocessing_commits_what_the_points_are_drawn_from(pre_reference):
    names = pre_reference.names
    assert names[-1] == "manifest.json" and names.count("manifest.json") == 1
    assert sum(n.count(".") == 2 for n in names) == 4  # one pass-1 intermediate per song
    assert {"one.pt", "four.pt", "one.json", "four.json"} <= set(names)


def test_preprocessing_killed_anywhere_finishes_bit_identical(tiny_root_readonly, songs, pre_reference,
                                                              train_reference, tmp_path):
    points = choose(moments(pre_reference.names), POINTS - _train_moments(train_reference.names),
                    random.Random(SEED), {
                        "pass-1 intermediate": lambda n: n.count(".") == 2 and n.endswith(".pt"),
                        "sample tensors": lambda n: n.count(".") == 1 and n.endswith(".pt"),
                        "sample state": lambda n: n.endswith(".json") and n != "manifest.json",
                        "manifest": lambda n: n == "manifest.json"})
    print("preprocessing kill points:", ", ".join(f"{name}:{n}" for name, n in points))
    for name, n in points:
        out = tmp_path / f"{name.replace('*', 'any')}-{n}"
        config = _pre_config(tiny_root_readonly, songs, out)
        killed_child(lambda: preprocess_dataset(config, console=quiet()), f"{name}:{n}")
        if (out / "manifest.json").exists():  # a manifest is only ever the complete, final one
            assert name in ("*", "manifest.json") or name.endswith(".json"), (name, n)
        report = preprocess_dataset(config, console=quiet())  # the same command again
        assert report.num_samples == 4 and not report.skipped, (name, n)
        got, want = files(out), pre_reference.files
        assert sorted(got) == sorted(want), (name, n)
        for rel in want:
            if rel == "manifest.json":
                assert _manifest(got[rel]) == _manifest(want[rel]), (name, n)
            else:
                assert got[rel] == want[rel], (name, n, rel)  # tensors and state: byte for byte
        assert not temp_files(out), (name, n)


# ------------------------------------------------------------------------------------------
# Training (on the preprocessed reference tensors)


def _train_config(root, dataset, out, **changes) -> Config:
    # dropout and accumulation over a partial group exercise the RNG and step bookkeeping on resume
    base = dict(checkpoint_dir=str(root), dataset_dir=str(dataset), output_dir=str(out), epochs=EPOCHS, save_every=1,
                rank=4, alpha=8, learning_rate=5e-3, warmup_steps=2, gradient_accumulation=2, dropout=0.1,
                num_workers=0)
    base.update(changes)
    return Config(**base)


@pytest.fixture(scope="module")
def train_reference(tiny_root_readonly, pre_reference, tmp_path_factory):
    out = tmp_path_factory.mktemp("fi_train") / "reference"
    config = _train_config(tiny_root_readonly, pre_reference.out, out)
    names = record_commits(lambda: train(config, "fixed", quiet=True))
    return SimpleNamespace(out=out, names=names, files=files(out))


def _adapter_files(folder: Path) -> dict[str, bytes]:
    """The adapter as a user loads it: weights and config byte for byte, the run record but for its paths."""
    got = {name: (folder / name).read_bytes() for name in ("adapter_model.safetensors", "adapter_config.json")}
    run = json.loads((folder / "sidestep_run.json").read_text())
    for key in ("resume_from", "output_dir"):  # where it was resumed from and where it went
        run["config"].pop(key)
    got["sidestep_run.json"] = json.dumps(run, sort_keys=True).encode()
    return got


def newest_checkpoint(out: Path) -> Path | None:
    epochs = sorted((p for p in (out / "checkpoints").glob("epoch_*") if p.is_dir()),
                    key=lambda p: int(p.name.split("_")[1])) if (out / "checkpoints").is_dir() else []
    return epochs[-1] if epochs else None


def test_training_commits_what_the_points_are_drawn_from(train_reference):
    names = train_reference.names
    assert [n for n in names if n.startswith("epoch_")] == [f"epoch_{i}" for i in range(1, EPOCHS + 1)]
    assert {"adapter_model.safetensors", "adapter_config.json", "sidestep_run.json"} <= set(names[EPOCHS:])


def test_training_killed_anywhere_resumes_bit_identical(tiny_root_readonly, pre_reference, train_reference, tmp_path):
    points = choose(moments(train_reference.names), _train_moments(train_reference.names), random.Random(SEED + 1), {
        "checkpoint": lambda n: n.startswith("epoch_"),
        "final adapter": lambda n: n == "adapter_model.safetensors"})
    print("training kill points:", ", ".join(f"{name}:{n}" for name, n in points))
    want = _adapter_files(train_reference.out)
    for name, n in points:
        out = tmp_path / f"{name.replace('*', 'any')}-{n}"
        config = _train_config(tiny_root_readonly, pre_reference.out, out)
        killed_child(lambda: train(config, "fixed", quiet=True), f"{name}:{n}")
        newest = newest_checkpoint(out)
        train(config.replace(resume_from=str(newest)) if newest else config, "fixed", quiet=True)
        assert _adapter_files(out) == want, (name, n, newest)
        # every checkpoint on disk, from the killed run or the resumed one, is the uninterrupted run's
        for folder in (out / "checkpoints").glob("epoch_*"):
            rel = f"checkpoints/{folder.name}/adapter_model.safetensors"
            assert (folder / "adapter_model.safetensors").read_bytes() == train_reference.files[rel], (name, n, rel)
        assert sorted(p.name for p in (out / "checkpoints").iterdir() if not p.name.startswith(".")) == \
            sorted(f"epoch_{i}" for i in range(1, EPOCHS + 1)), (name, n)
