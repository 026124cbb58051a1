"""The one exception type users see: a one-line message saying what, where and how to fix."""


class SidestepError(Exception):
    """A user-facing failure. The CLI prints `str(err)` on one line (no traceback unless --debug)."""

    exit_code = 2
