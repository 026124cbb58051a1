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
    logging.getLogger("LyCORIS").setLevel(logging.WARNING)
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
