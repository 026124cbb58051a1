"""Where messages go: library chatter is silenced, everything is kept in sidestep.log."""

from __future__ import annotations

import logging
import os

log = logging.getLogger("sidestep")


def quiet_libraries() -> None:
    """Library deprecation chatter and per-file progress bars are noise to a musician."""
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    # Other libraries' log records and warnings (bitsandbytes' "pip install kernels" on every CPU run, ...)
    # go to sidestep.log, not the screen: a root handler stops logging's last-resort print to stderr.
    logging.captureWarnings(True)
    root = logging.getLogger()
    if not any(isinstance(h, _IntoSidestepLog) for h in root.handlers):
        root.addHandler(_IntoSidestepLog())
    # LyCORIS prints INFO lines (its module list, ...) to stdout through its own handler and sets its level
    # to INFO when imported, after this runs: a filter outlasts that, and sends them to sidestep.log instead.
    lycoris = logging.getLogger("LyCORIS")
    if not any(isinstance(f, _InfoIntoSidestepLog) for f in lycoris.filters):
        lycoris.addFilter(_InfoIntoSidestepLog())
    try:
        from diffusers.utils import logging as diffusers_logging

        diffusers_logging.set_verbosity_error()
    except ImportError:
        pass
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except ImportError:
        pass


class _IntoSidestepLog(logging.Handler):
    """Hands library records to sidestep.log's handler (none yet: they are dropped, never printed)."""

    def emit(self, record: logging.LogRecord) -> None:
        if record.name == "sidestep" or record.name.startswith("sidestep."):
            return  # already written by the sidestep logger's own handler
        for handler in log.handlers:
            if record.levelno >= handler.level:
                handler.handle(record)


class _InfoIntoSidestepLog(logging.Filter):
    """Below WARNING: into sidestep.log only, never on the screen."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            return True
        _IntoSidestepLog().emit(record)
        return False


def setup_logging() -> None:
    """Everything (tracebacks included) goes to sidestep.log in the working directory."""
    path = os.path.abspath("sidestep.log")
    if any(getattr(h, "baseFilename", None) == path for h in log.handlers):
        return  # main() called again in this process: one handler (one open file) is enough
    try:
        handler = logging.FileHandler(path, encoding="utf-8")
    except OSError:
        return
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
