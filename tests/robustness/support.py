"""Builders and helpers shared by the robustness tests: synthesized songs (good and broken), the CLI run
in-process with its exact output, folder snapshots, privilege drops and small mounts."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from sidestep.cli.main import main

SECONDS = 0.3  # every synthesized song: short, so a preprocessing run over a dozen costs a few seconds


def tone(rate: int, channels: int, seconds: float = SECONDS, freq: float = 330.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return np.stack([0.4 * np.sin(2 * np.pi * freq * (1 + c / 10) * t) for c in range(channels)], 1).astype(np.float32)


def write_song(path: Path, rate: int = 48000, channels: int = 2, seconds: float = SECONDS, freq: float = 330.0,
               **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, tone(rate, channels, seconds, freq), rate, **kw)
    return path


def cut(path: Path, fraction: float) -> Path:
    """Keep the first `fraction` of the file's bytes (an interrupted copy or download)."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


def write_long_wav(path: Path, hours: float = 2.0, rate: int = 16000, real_seconds: float = 3.0) -> Path:
    """A WAV whose header (truthfully) holds `hours` of 16-bit mono audio, written lazily: the first
    `real_seconds` are a tone, the rest is a hole in a sparse file (no disk space, nothing in the repo)."""
    frames = int(hours * 3600 * rate)
    data_bytes = frames * 2
    header = b"RIFF" + struct.pack("<I", 36 + data_bytes) + b"WAVE" + b"fmt " + struct.pack(
        "<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16) + b"data" + struct.pack("<I", data_bytes)
    pcm = (tone(rate, 1, real_seconds)[:, 0] * 32767).astype("<i2").tobytes()
    with open(path, "wb") as fh:
        fh.write(header + pcm)
        fh.truncate(len(header) + data_bytes)
    return path


def run_cli(*argv) -> tuple[int, str]:
    """`train.py --plain -y ARGV` in this process: (exit code, everything it printed)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = main(["--plain", "-y", *map(str, argv)])
    return code, out.getvalue()


def error_line(text: str) -> str:
    """The one `error: ...` line a failed command printed (and there must be exactly one)."""
    lines = [line for line in text.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, text
    assert "Traceback" not in text, text
    return lines[0][len("error: "):]


def snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    """relative path -> (sha256, mtime_ns) of every file under `folder` (hidden ones too)."""
    return {p.relative_to(folder).as_posix(): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


@contextlib.contextmanager
def unprivileged():
    """Run the block as an ordinary user. Root reads and writes anything, so a permission test must drop
    the effective uid (the real uid stays root so it can be restored); as a normal user nothing changes."""
    if os.geteuid() != 0:
        yield
        return
    os.setegid(65534)
    os.seteuid(65534)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)


def world_readable_copy(src: Path, dst: Path) -> Path:
    """Copy a tree so that an unprivileged user can read it (pytest's temp folders are private to root)."""
    shutil.copytree(src, dst)
    for p in [dst, *dst.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    return dst


@contextlib.contextmanager
def mounted_tmpfs(where: Path, size: str, read_only: bool = False):
    """A small tmpfs at `where` (root only), always unmounted afterwards; skips where mounting is not allowed."""
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a tmpfs needs root")
    where.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "sidestep-test", str(where)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"this machine does not allow a tmpfs mount ({done.stderr.strip()})")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)
        assert not os.path.ismount(where), f"{where} is still mounted"
