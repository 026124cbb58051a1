"""Terminal output: Rich when attached to a terminal, plain text with --plain or when piped."""

from __future__ import annotations

import sys

from rich.console import Console

_console: Console | None = None


def get_console(plain: bool | None = None) -> Console:
    global _console
    if _console is None or plain is not None:
        plain = bool(plain) or not sys.stdout.isatty()
        _console = Console(no_color=plain, highlight=not plain, soft_wrap=plain,
                           force_terminal=False if plain else None, emoji=False)
    return _console
