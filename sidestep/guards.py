"""Output checks every command makes before any work: an output is never one of the command's inputs (nor a
file inside an input folder that the command reads), and never a special file (a FIFO, a device, a socket).

Each check raises a one-line SidestepError naming the flag, the path and the fix.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Iterable

from sidestep.errors import SidestepError

_SPECIAL = ((stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISCHR, "a character device"),
            (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def special_kind(path: str | Path) -> str | None:
    """What `path` is when it exists and is neither a regular file nor a folder ("a character device"), else None.
    A link is followed: writing "through" a link to /dev/null would replace the link, not write to it."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return None
    for test, name in _SPECIAL:
        if test(mode):
            return name
    return None


def _resolved(path: str | Path) -> Path:
    try:
        return Path(path).expanduser().resolve()
    except (OSError, RuntimeError):  # a link loop: compare the path as given
        return Path(os.path.abspath(Path(path).expanduser()))


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_output_file(path: str | Path, flag: str, inputs: Iterable[tuple[str, str | Path | None]] = (),
                      input_folders: Iterable[tuple[str, str | Path | None]] = ()) -> Path:
    """`path` (given as `flag`) may be written: not a folder, not a special file, not one of `inputs` (flag, file)
    and not an existing file inside one of `input_folders` (flag, folder) that the command reads."""
    out = Path(path).expanduser()
    kind = special_kind(out)
    if kind:
        raise SidestepError(f"{flag} {out}: is {kind}, not a regular file; Side-Step replaces its output "
                            "atomically, so give the path of a new or regular file")
    if out.is_dir():
        raise SidestepError(f"{flag} {out}: is a folder; give a file name inside it")
    where = _resolved(out)
    for in_flag, item in inputs:
        if item and where == _resolved(item):
            raise SidestepError(f"{flag} {out}: is the {in_flag} input itself; writing it would destroy the input. "
                                "Choose another output path")
    if out.exists():
        for in_flag, folder in input_folders:
            if folder and _inside(where, _resolved(folder)):
                raise SidestepError(f"{flag} {out}: would replace a file inside the {in_flag} folder {folder} "
                                    "that this command reads; choose an output path outside it")
    return out


def check_output_folder(path: str | Path, flag: str, input_folders: Iterable[tuple[str, str | Path | None]] = (),
                        input_files: Iterable[tuple[str, str | Path | None]] = (), written: Iterable[str] = (),
                        not_above: Iterable[tuple[str, str | Path | None]] = ()) -> Path:
    """`path` (given as `flag`) may be an output folder: not an existing file or special file, not one of the
    `input_folders` (flag, folder), nor a folder above one of `not_above` (flag, folder; the inputs that a
    scan of the output would take for its own files), and none of `input_files` is one of the `written` names
    inside it."""
    out = Path(path).expanduser()
    kind = special_kind(out)
    if kind or (out.exists() and not out.is_dir()):
        raise SidestepError(f"{flag} {out}: exists and is {kind or 'a file'}, not a folder; choose a folder path")
    where = _resolved(out)
    not_above = list(not_above)
    for in_flag, folder in [*input_folders, *not_above]:
        if folder and where == _resolved(folder):
            raise SidestepError(f"{flag} {out}: is the {in_flag} folder itself; writing there would mix the output "
                                "into the input. Choose a new folder")
    for in_flag, folder in not_above:
        if folder and where in _resolved(folder).parents:
            raise SidestepError(f"{flag} {out}: holds the {in_flag} folder {folder}; choose an output folder that "
                                "is not above an input (a new folder beside it, or inside it)")
    for in_flag, item in input_files:
        if item and _resolved(item) in {where / name for name in written}:
            raise SidestepError(f"{flag} {out}: this command writes {_resolved(item).name} there, which is the "
                                f"{in_flag} input; choose another output folder")
    return out
