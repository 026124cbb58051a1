"""Entry point of `python train.py` and the `sidestep` console script."""

from __future__ import annotations

import logging
import sys
import traceback

from sidestep.console import get_console
from sidestep.cli.commands import commands as all_commands
from sidestep.cli.parser import build_parser, config_from_args
from sidestep.errors import SidestepError
from sidestep.logs import quiet_libraries, setup_logging

log = logging.getLogger("sidestep")

WIZARD_FLAGS = ("--plain", "-y", "--yes", "--debug")


def _wants_wizard(argv: list[str]) -> bool:
    """No subcommand, only global flags, and someone to answer (a terminal, or --plain over a pipe)."""
    interactive = sys.stdin is not None and sys.stdin.isatty()
    return all(a in WIZARD_FLAGS for a in argv) and (interactive or "--plain" in argv)


def _run_wizard(argv: list[str]) -> int:
    # Checked before building the parser: the wizard must not wait for every command's imports (torch).
    from sidestep.wizard import run_wizard

    console = get_console(plain="--plain" in argv)
    setup_logging()
    log.info("wizard started")  # its actions call quiet_libraries(): importing transformers here delays the menu
    return _guarded(console, "--debug" in argv, lambda: run_wizard(plain="--plain" in argv))


def _guarded(console, debug: bool, run) -> int:
    """The one-line contract around a front end: SidestepError -> `error: ...` and its exit code; Ctrl-C -> 130;
    anything else -> one line pointing at the log (the traceback with --debug)."""
    try:
        return int(run() or 0)
    except SidestepError as err:
        log.error("%s", err, exc_info=True)
        if debug:
            traceback.print_exc()
        calm = err.exit_code in (130, 143)  # a stop the user (or the scheduler) asked for: not an error
        # soft_wrap: a resume command is never broken into lines, so copying it works at any width
        console.print(str(err) if calm else f"error: {err}", markup=False, highlight=False,
                      soft_wrap=True if calm else None)
        return err.exit_code
    except KeyboardInterrupt:
        console.print("Interrupted.")
        return 130
    except Exception as err:  # anything else is our bug: keep the trace in the log
        log.exception("unexpected error")
        if debug:
            raise
        console.print(f"error: unexpected {type(err).__name__}: {err} (full traceback in sidestep.log; "
                      "rerun with --debug to print it)", markup=False, highlight=False)
        return 1


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if _wants_wizard(argv):
        return _run_wizard(argv)
    commands = all_commands()
    parser = build_parser(commands)
    args = parser.parse_args(argv)
    console = get_console(plain=args.plain)
    setup_logging()
    quiet_libraries()
    if args.command is None:
        parser.print_help()
        return 0
    command = next(c for c in commands if c.name == args.command)
    log.info("command: %s", " ".join(argv))
    return _guarded(console, args.debug, lambda: command.run(config_from_args(args), args))


if __name__ == "__main__":
    sys.exit(main())
