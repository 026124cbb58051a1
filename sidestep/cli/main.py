"""Entry point of `python train.py` and the `sidestep` console script."""

from __future__ import annotations

import logging
import sys
import traceback

from sidestep.cli.console import get_console
from sidestep.cli.parser import Command, build_parser, config_from_args
from sidestep.errors import SidestepError

log = logging.getLogger("sidestep")


def _commands() -> list[Command]:
    from sidestep.cli.demo import run_demo
    from sidestep.cli.models_cmd import run_models

    return [
        Command("demo", "End to end on a tiny built-in checkpoint (no downloads)", run_demo),
        Command("models", "List the models found under --checkpoint-dir", run_models),
    ]


def _quiet_libraries() -> None:
    """Library deprecation chatter and per-file progress bars are noise to a musician."""
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except ImportError:
        pass


def _setup_logging() -> None:
    """Everything (tracebacks included) goes to sidestep.log in the working directory."""
    try:
        handler = logging.FileHandler("sidestep.log", encoding="utf-8")
    except OSError:
        return
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    commands = _commands()
    parser = build_parser(commands)
    args = parser.parse_args(argv)
    console = get_console(plain=args.plain)
    _setup_logging()
    _quiet_libraries()
    if args.command is None:
        parser.print_help()
        return 0
    command = next(c for c in commands if c.name == args.command)
    log.info("command: %s", " ".join(argv))
    try:
        config = config_from_args(args)
        return int(command.run(config, args) or 0)
    except SidestepError as err:
        log.error("%s", err, exc_info=True)
        if args.debug:
            traceback.print_exc()
        console.print(f"error: {err}", markup=False, highlight=False)
        return err.exit_code
    except KeyboardInterrupt:
        console.print("Interrupted.")
        return 130
    except Exception as err:  # anything else is our bug: keep the trace in the log
        log.exception("unexpected error")
        if args.debug:
            raise
        console.print(f"error: unexpected {type(err).__name__}: {err} (full traceback in sidestep.log; "
                      "rerun with --debug to print it)", markup=False, highlight=False)
        return 1


if __name__ == "__main__":
    sys.exit(main())
