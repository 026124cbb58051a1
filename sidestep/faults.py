"""Fault injection for tests: a real SIGKILL at a named write, chosen by an environment variable.

`SIDESTEP_KILL_AT="<name>:<n>"` kills the process (SIGKILL, no cleanup) the n-th time a write
whose target is called `<name>` is about to be committed; `*` matches every write. Unset, this
costs one dict lookup per file written.
"""

from __future__ import annotations

import os
import signal

_hits: dict[str, int] = {}


def fault_point(name: str) -> None:
    spec = os.environ.get("SIDESTEP_KILL_AT")
    if not spec:
        return
    target, _, count = spec.rpartition(":")
    if target not in (name, "*"):
        return
    _hits[target] = _hits.get(target, 0) + 1
    if _hits[target] == int(count):
        os.kill(os.getpid(), signal.SIGKILL)
