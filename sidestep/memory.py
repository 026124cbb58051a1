"""This process's memory, portably: `resource` (POSIX) and `/proc` where they exist, psutil elsewhere.

POSIX-only modules are imported inside the functions, never at import time: every module of the
package must import on Windows. A figure no source can give is None; callers show it as unknown.
"""

from __future__ import annotations

import sys


def _psutil_memory():
    try:
        import psutil  # installed with peft/accelerate; optional here all the same
    except ImportError:
        return None
    return psutil.Process().memory_info()


def peak_rss() -> float | None:
    """Peak resident memory of this process so far, in bytes (None when unknown)."""
    try:
        import resource
    except ImportError:  # Windows: the peak working set
        info = _psutil_memory()
        return None if info is None else float(getattr(info, "peak_wset", info.rss))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return float(peak if sys.platform == "darwin" else peak * 1024)  # bytes on macOS, KiB on Linux


def current_rss() -> float | None:
    """Resident memory of this process now, in bytes (Linux /proc, else psutil, else the peak so far)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        import resource

        return float(pages * resource.getpagesize())
    except (OSError, ImportError, ValueError, IndexError):
        pass
    info = _psutil_memory()
    return float(info.rss) if info is not None else peak_rss()


def trim_heap() -> None:
    """Hand freed C-heap memory back to the OS (glibc; nothing to do elsewhere). glibc keeps what a
    process freed for reuse, so without this RSS would not go down after large frees."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (e.g. musl)
        pass


def status_bytes(field: str) -> float:
    """A memory field of /proc/self/status (Linux), e.g. VmRSS or VmHWM, in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return float(int(line.split()[1]) * 1024)
    raise OSError(f"/proc/self/status has no {field}")


def reset_peak() -> bool:
    """Start a new high-water mark (Linux: `5` into /proc/self/clear_refs resets VmHWM); False when it can't."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


# glibc mallopt parameter (malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 1024


def release_freed_tensors() -> bool:
    """Make freed tensors go back to the system at once (glibc; False elsewhere or when it cannot).

    glibc serves blocks of at least M_MMAP_THRESHOLD with their own mmap, which `free` unmaps; but by
    default it raises that threshold to the size of each such block freed (up to 32 MiB), after which
    the activations of a training step (freed in backward, re-allocated in the next forward) come from
    the heap, whose freed middle is never returned: the resident memory grows to several times the
    live tensors and depends on the order of frees. Setting the threshold turns that raising off, so
    resident memory follows the live tensors the forecast counts. 32 KiB, not glibc's initial 128 KiB:
    a batch-1 step of a small model (tiny config: [375, 64] fp32 = 96 KiB) makes most of its tensors
    between the two, and the heap kept ~14 MB of them (measured).
    Only the memory probe (sidestep/train/memory_probe.py) calls it, never training: every such block
    then costs an mmap and its page faults, which made a CPU step 18-37% slower (bench/RESULTS.md)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        return bool(ctypes.CDLL("libc.so.6").mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    except (OSError, AttributeError):
        return False
