"""Atomic writes: a file or folder is either the old one or the complete new one, never half."""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from sidestep.errors import SidestepError
from sidestep.faults import fault_point

_FULL = (errno.ENOSPC, errno.EDQUOT)

# A temp name is ".<name>.<8 random>.tmp": for a name near the 255-byte limit that is too long. Longer names are
# cut (on a character boundary) and marked with a hash of the whole name, so temp names stay unique per target.
_TEMP_NAME_BYTES = 120


def temp_prefix(name: str) -> str:
    """The temp-file prefix for a target called `name`, at most ~140 bytes whatever the name's length."""
    raw = os.fsencode(name)
    if len(raw) <= _TEMP_NAME_BYTES:
        return f".{name}."
    import hashlib

    short = raw[:_TEMP_NAME_BYTES].decode("utf-8", "ignore") or "x"
    return f".{short}~{hashlib.sha256(raw).hexdigest()[:12]}."


class WriteError(SidestepError, OSError):
    """A write that failed (disk full, read-only, no permission): one line naming the path, why and the fix.

    It is an OSError too (with `errno`/`strerror`), so callers that wrap OSError keep working.
    """

    def __init__(self, message: str, code: int | None = None):
        super().__init__(message)
        self.errno = code
        self.strerror = os.strerror(code) if code else None

    def __str__(self) -> str:
        return self.args[0]


def write_problem(err: OSError) -> tuple[str, str]:
    """(what went wrong, how to fix it) for an OSError raised while writing."""
    if err.errno in _FULL:
        return ("the disk is full", "free some space there (or choose another folder) and run again; "
                "files written before are intact")
    if err.errno == errno.EROFS:
        return "the file system is read-only", "choose a folder on a writable drive"
    if err.errno in (errno.EACCES, errno.EPERM):
        return "permission denied", "choose a folder you can write to, or fix its permissions"
    return err.strerror or str(err), "check the folder and the free space there"


def write_error(path: str | Path, err: OSError, what: str = "", fix: str | None = None) -> WriteError:
    """The WriteError for `err` while writing `path` (`what`: "the checkpoint", ...; `fix` overrides the hint)."""
    if isinstance(err, WriteError) and not what and fix is None:
        return err
    problem, hint = write_problem(err)
    detail = f" ({err.strerror})" if err.strerror and err.strerror.lower() != problem.lower() else ""
    target = f" {what}" if what else ""
    return WriteError(f"{path}: cannot write{target}: {problem}{detail}; {fix or hint}", err.errno)


def current_umask() -> int:
    """The process umask (read without changing it where /proc tells it; else set and restored at once)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _follow_umask(path: str | Path, folder: bool = False) -> None:
    """Give a temp file (0600 from mkstemp) or folder (0700 from mkdtemp) the mode a plain open() or mkdir()
    would have given it, so the renamed result follows the umask like any Unix tool's output."""
    try:
        os.chmod(path, (0o777 if folder else 0o666) & ~current_umask())
    except OSError:  # a file system without modes (FAT, some network shares): nothing to follow
        pass


def _refuse_special(path: Path) -> None:
    """A rename would replace a FIFO or a device node with a regular file: refuse (one line, nothing written)."""
    from sidestep.guards import special_kind

    kind = special_kind(path)
    if kind:
        raise WriteError(f"{path}: is {kind}, not a regular file; Side-Step replaces its output atomically, so give "
                         "the path of a new or regular file")


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path beside `path`; on success it is fsynced and renamed onto `path`."""
    path = Path(path)
    _refuse_special(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path.name), suffix=".tmp", dir=path.parent)
        os.close(fd)
        _follow_umask(tmp)
    except OSError as err:
        raise write_error(path, err) from None
    tmp = Path(tmp)
    try:
        try:
            yield tmp
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
        except OSError as err:  # ENOSPC and friends: the target is untouched, say why in one line
            raise write_error(path, err) from None
        fault_point(path.name)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_many(folder: str | Path, files: dict[str, bytes]) -> None:
    """Write several files into `folder` as one set: every temp file is written and synced before the
    first rename, so a full disk (or any write error) leaves all the previous files, never a mix."""
    folder = Path(folder)
    temps: dict[str, Path] = {}
    try:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            for name, data in files.items():
                _refuse_special(folder / name)
                fd, tmp = tempfile.mkstemp(prefix=temp_prefix(name), suffix=".tmp", dir=folder)
                temps[name] = Path(tmp)
                _follow_umask(tmp)
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
        except OSError as err:
            raise write_error(folder / name if temps else folder, err) from None
        for name, tmp in temps.items():
            fault_point(name)
            os.replace(tmp, folder / name)
        _fsync_dir(folder)
    finally:
        for tmp in temps.values():
            tmp.unlink(missing_ok=True)


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_save_tensors(path: str | Path, data: Any) -> None:
    """torch.save, atomically. Saved into memory first: saved to a path, the archive's inner folder is
    named after the (random) temp file, and identical tensors would not give identical files."""
    import io

    import torch  # here, not at import time: this module is the ground floor

    buffer = io.BytesIO()
    torch.save(data, buffer)
    atomic_write_bytes(path, buffer.getvalue())


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temp folder beside `path`; on success it replaces `path` as a whole.

    A crash at any point leaves either the previous folder or the new complete one.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise WriteError(f"{path}: exists and is not a folder; move it away or choose another folder")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(path.name), suffix=".tmp", dir=path.parent))
        _follow_umask(tmp, folder=True)
    except OSError as err:
        raise write_error(path, err) from None
    old = path.parent / f".{path.name}.old"
    try:
        try:
            yield tmp
            for f in tmp.rglob("*"):
                if f.is_file():
                    with open(f, "rb+") as fh:
                        os.fsync(fh.fileno())
        except OSError as err:
            raise write_error(path, err) from None
        fault_point(path.name)
        if path.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def recover_dir(path: str | Path) -> None:
    """Finish an `atomic_dir` swap a crash interrupted between its two renames."""
    path = Path(path)
    old = path.parent / f".{path.name}.old"
    if not path.exists() and old.is_dir():
        os.replace(old, path)


def json_text(data: Any, indent: int | None = 2) -> str:
    """JSON with non-ASCII text as is, except lone surrogates (a file name that is not UTF-8, as Python reads it):
    those are written as \\udcXX escapes, so the text encodes as UTF-8 and json.loads gives back the same name
    (os.fsencode of it: the original bytes)."""
    import json
    import re

    text = json.dumps(data, indent=indent, ensure_ascii=False)
    return re.sub("[\ud800-\udfff]", lambda m: f"\\u{ord(m.group()):04x}", text)


def read_json_object(path: Path, what: str, not_an_object: str, fix: str = "") -> dict:
    """A small JSON file that must hold an object (a preset, the settings); anything else is one line naming
    the file. `what` names the file's kind, `not_an_object` says what it should hold, `fix` ends each message."""
    import json

    suffix = f"; {fix}" if fix else ""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SidestepError(f"{path}: {what} file not found{suffix}") from None
    except json.JSONDecodeError as err:
        raise SidestepError(f"{path}: not valid JSON (line {err.lineno}: {err.msg}){suffix}") from None
    except RecursionError:
        raise SidestepError(f"{path}: not valid JSON (nested too deeply){suffix}") from None
    except (OSError, ValueError) as err:  # not UTF-8, a number too long to read, ...
        detail = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
        raise SidestepError(f"{path}: cannot read the {what} ({detail}){suffix}") from None
    if not isinstance(data, dict):
        raise SidestepError(f"{path}: {not_an_object}{suffix}")
    return data
