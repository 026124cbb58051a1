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
