"""argparse generated from `Config`: every flag is declared once, in the dataclass."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any, Callable

from sidestep import __version__
from sidestep.config import TRAIN, Config, field_flags, field_kind


@dataclasses.dataclass(frozen=True)
class Command:
    name: str
    help: str
    run: Callable[[Config, argparse.Namespace], int | None]
    extra_args: Callable[[argparse.ArgumentParser], None] | None = None


def _add_field(group: argparse._ArgumentGroup, f: dataclasses.Field) -> None:
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    kwargs: dict[str, Any] = dict(dest=f.name, help=f.metadata["help"].replace("%", "%%"), default=argparse.SUPPRESS)
    if isinstance(default, bool):
        # --no-X exists for off-by-default switches too: a preset may turn one on and a flag must undo it.
        kwargs["action"] = argparse.BooleanOptionalAction
        kwargs["help"] += " (default: on)" if default else ""
    else:
        kwargs["metavar"] = f.metadata.get("metavar") or (f.name.split("_")[-1].upper() if not f.metadata["choices"]
                                                          else None)
        if f.metadata["choices"]:
            kwargs["choices"] = f.metadata["choices"]
        if f.metadata["nargs"] == "append":  # repeatable flag: --x a --x b
            kwargs["action"] = "append"
        elif f.metadata["nargs"]:
            kwargs["nargs"] = f.metadata["nargs"]
        if field_kind(f) in (int, float):
            kwargs["type"] = field_kind(f)
        if default is not None and default != []:
            shown = " ".join(default) if isinstance(default, list) else default
            kwargs["help"] += f" (default: {shown})"
    group.add_argument(*field_flags(f), **kwargs)


def add_config_arguments(parser: argparse.ArgumentParser, command: str) -> None:
    groups: dict[str, argparse._ArgumentGroup] = {}
    for f in Config.fields():
        if command not in f.metadata["commands"]:
            continue
        name = f.metadata["group"]
        if name not in groups:
            groups[name] = parser.add_argument_group(name)
        _add_field(groups[name], f)


def build_parser(commands: list[Command]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="train.py", description="Side-Step: LoRA, DoRA, LoKR, LoHA and OFT fine-tuning for ACE-Step 1.5. "
        "Run without arguments for the guided wizard.")
    parser.add_argument("--version", action="version", version=f"Side-Step {__version__}")
    parser.add_argument("--plain", action="store_true", help="Plain text output (automatic when piped)")
    parser.add_argument("-y", "--yes", action="store_true", help="Skip confirmation prompts")
    parser.add_argument("--debug", action="store_true", help="Show full tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for cmd in commands:
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help)
        add_config_arguments(p, cmd.name)
        if cmd.name in TRAIN:
            p.add_argument("--preset", metavar="NAME", default=argparse.SUPPRESS,
                           help="Start from a preset (built-in, ./presets/ or ~/.config/sidestep/presets/, or a "
                           "JSON file); flags given explicitly override it")
        if cmd.extra_args:
            cmd.extra_args(p)
    return parser


def config_from_args(args: argparse.Namespace) -> Config:
    """The explicitly given flags over the preset (`--preset`, validated on load) over the Config defaults."""
    fields = {f.name for f in Config.fields()}
    explicit = {k: v for k, v in vars(args).items() if k in fields}  # Config checks every bound
    if getattr(args, "preset", None):
        from sidestep.presets import find_preset

        return find_preset(args.preset).config().replace(**explicit)
    return Config(**explicit)
