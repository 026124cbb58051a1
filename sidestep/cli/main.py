"""Entry point of `python train.py` and the `sidestep` console script."""

from __future__ import annotations

import logging
import os
import sys
import traceback

from sidestep.cli.console import get_console
from sidestep.cli.parser import Command, build_parser, config_from_args
from sidestep.errors import SidestepError

log = logging.getLogger("sidestep")


def _commands() -> list[Command]:
    from sidestep.cli.demo import run_demo
    from sidestep.cli.estimate_cmd import compare_arguments, run_compare, run_estimate, run_selective
    from sidestep.cli.export_cmd import export_arguments, run_export
    from sidestep.cli.generate_cmd import generate_arguments, run_generate
    from sidestep.cli.models_cmd import run_models
    from sidestep.cli.preprocess_cmd import run_preprocess
    from sidestep.cli.train_cmd import run_training

    return [
        Command("demo", "End to end on a tiny built-in checkpoint (no downloads)", run_demo),
        Command("models", "List the models found under --checkpoint-dir", run_models),
        Command("preprocess", "Turn a folder of songs (+ optional dataset JSON) into training tensors",
                run_preprocess),
        Command("fixed", "Corrected training: CFG dropout + the model's own timestep sampling (recommended)",
                run_training("fixed")),
        Command("vanilla", "Upstream ACE-Step trainer behaviour: discrete turbo timesteps, no CFG dropout",
                run_training("vanilla")),
        Command("estimate", "Rank the decoder's attention modules by gradient sensitivity on your data", run_estimate),
        Command("selective", "Corrected training on the top-k modules of a module config (from estimate)",
                run_selective),
        Command("compare-configs", "Compare module configs: overlap, Jaccard, rank correlation, per layer",
                run_compare, compare_arguments),
        Command("export", "Convert an adapter folder for another client (ComfyUI)", run_export, export_arguments),
        Command("generate", "Make a song from a prompt, with or without an adapter", run_generate,
                generate_arguments),
    ]


def _quiet_libraries() -> None:
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


def _setup_logging() -> None:
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


WIZARD_FLAGS = ("--plain", "-y", "--yes", "--debug")


def _wants_wizard(argv: list[str]) -> bool:
    """No subcommand, only global flags, and someone to answer (a terminal, or --plain over a pipe)."""
    interactive = sys.stdin is not None and sys.stdin.isatty()
    return all(a in WIZARD_FLAGS for a in argv) and (interactive or "--plain" in argv)


def _run_wizard(argv: list[str]) -> int:
    # Checked before building the parser: the wizard must not wait for every command's imports (torch).
    from sidestep.wizard import run_wizard

    get_console(plain="--plain" in argv)
    _setup_logging()
    log.info("wizard started")  # its actions call _quiet_libraries(): importing transformers here delays the menu
    return run_wizard(plain="--plain" in argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if _wants_wizard(argv):
        return _run_wizard(argv)
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
