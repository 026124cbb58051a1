"""One run per output folder: an advisory lock file (`.sidestep.lock`, created with O_EXCL) holding the PID, host
and start time of the run that owns the folder.

A second run into the same folder stops at once with one line naming the other run. A lock left by a run that
was killed (its PID is gone, or now belongs to another process) is detected and taken over. Only portable calls
are used (no fcntl), so this imports on Windows too.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from sidestep.errors import SidestepError
from sidestep.io import current_umask

LOCK_NAME = ".sidestep.lock"
_RANK_VARIABLES = ("RANK", "LOCAL_RANK", "NODE_RANK")


def _process_start(pid: int) -> str | None:
    """The kernel's start time of `pid` (Linux: /proc/PID/stat field 22), so a reused PID is not taken for the
    run that held it; None where it cannot be known."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return fields[19]
    except (OSError, IndexError):
        return None


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    if sys.platform == "win32":  # os.kill(pid, 0) would terminate the process on Windows
        import ctypes

        handle = ctypes.windll.kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return False
        ctypes.windll.kernel32.CloseHandle(handle)
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    except (OSError, OverflowError):
        return False
    return True


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def holder_is_running(info: dict[str, Any] | None) -> bool:
    """Whether the run a lock file names still runs (a lock from another host is assumed to)."""
    if info is None:
        return False  # unreadable: a run killed while writing it
    pid = info.get("pid")
    if not isinstance(pid, int) or isinstance(pid, bool):
        return False
    if info.get("host") != socket.gethostname():
        return True
    if not _alive(pid):
        return False
    started = info.get("process_start")
    return started is None or _process_start(pid) in (None, started)


def _describe(info: dict[str, Any]) -> str:
    host = info.get("host")
    where = f" on {host}" if host and host != socket.gethostname() else ""
    return f"PID {info.get('pid')}{where}, started {info.get('started', 'at an unknown time')}"


def _create(path: Path, info: dict[str, Any]) -> bool:
    """Create the lock file with `info` unless it exists (O_EXCL: exactly one process wins)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666 & ~current_umask())
    except FileExistsError:
        return False
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(json.dumps(info))
    return True


def is_secondary_rank() -> bool:
    """A data-parallel worker (not rank 0): the launching process holds the lock for all of them."""
    return any(os.environ.get(name, "0") not in ("", "0") for name in _RANK_VARIABLES)


@contextmanager
def run_lock(folder: str | Path, what: str = "run", flag: str = "--output-dir") -> Iterator[Path | None]:
    """Hold `folder`'s lock for the block; refuse (one line, exit 2) while another live run holds it."""
    folder = Path(folder).expanduser()
    if is_secondary_rank():
        yield None
        return
    created = not folder.exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        yield None  # the command's own checks say why the folder cannot be written
        return
    try:
        with _held(folder, what, flag) as path:
            yield path
    finally:
        if created:  # a run that failed before writing anything leaves no empty folder behind
            try:
                folder.rmdir()
            except OSError:
                pass


@contextmanager
def _held(folder: Path, what: str, flag: str) -> Iterator[Path | None]:
    path = folder / LOCK_NAME
    info = dict(pid=os.getpid(), host=socket.gethostname(), process_start=_process_start(os.getpid()),
                started=datetime.now(timezone.utc).isoformat(timespec="seconds"), what=what,
                command=" ".join(sys.argv[:1] + sys.argv[1:])[:500])
    for _ in range(5):
        try:
            if _create(path, info):
                break
        except OSError:
            yield None  # a read-only folder: the command's write checks report it in their own words
            return
        held = _read(path)
        if held is None and time.time() - _mtime(path) < 2:
            time.sleep(0.2)  # another run is writing it this instant
            continue
        if holder_is_running(held):
            raise SidestepError(f"{flag} {folder}: another Side-Step {held.get('what', 'run')} is writing there "
                                f"({_describe(held)}); wait for it to finish or choose another folder (if that run "
                                f"is gone, delete {path})")
        _take_over(path, held)
    else:
        raise SidestepError(f"{flag} {folder}: could not take the folder's lock {path}; delete it if no other run "
                            "uses the folder")
    try:
        yield path
    finally:
        if _read(path) == info:
            path.unlink(missing_ok=True)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _take_over(path: Path, held: dict[str, Any] | None) -> None:
    """Move a stale lock out of the way. If what was moved is not the stale lock (another run took it over and
    made a fresh one in between), the fresh one is put back."""
    stale = path.with_name(f"{LOCK_NAME}.stale.{os.getpid()}")
    try:
        os.replace(path, stale)
    except OSError:
        return
    if held is not None and _read(stale) != held:
        try:
            os.link(stale, path)
        except OSError:
            pass
    stale.unlink(missing_ok=True)
