"""Shared helpers for bench scripts: peak memory and timing, printed as one JSON line."""

from __future__ import annotations

import json
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# A mid-sized DiT config (36 M parameters) kept in the repository with the test data (reference/README.md).
MEDIUM_CONFIG = ROOT / "reference" / "medium-config.json"

from sidestep.memory import reset_peak, status_bytes, trim_heap  # noqa: E402  (re-exported for the scripts)


def machine() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"{platform.processor() or platform.machine()} CPU x{torch.get_num_threads()} threads"


def peak_rss_gib() -> float:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def current_rss_gib() -> float:
    return status_bytes("VmRSS") / 2**30


def phase_peak_gib() -> float:
    """Peak RSS since the last `reset_peak()`."""
    return status_bytes("VmHWM") / 2**30


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def timed(fn, warmup: int, repeats: int, device: torch.device) -> float:
    """Median seconds of `fn()` after `warmup` calls."""
    times = []
    for i in range(warmup + repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def emit(record: dict) -> None:
    record.setdefault("machine", machine())
    record.setdefault("torch", torch.__version__)
    print(json.dumps(record), flush=True)
