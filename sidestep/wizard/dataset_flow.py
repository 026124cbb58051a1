"""Wizard: build the dataset JSON (the `train.py dataset` questions, generated from Config), then review
it: the table of every song and field with its source, edits of single fields, a song's exact prompt.
The JSON stays the single source: every edit is written to it at once (sidestep/data/dataset_builder.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sidestep.errors import SidestepError
from sidestep.wizard import flows
from sidestep.wizard.prompts import Form, GoBack, Question

# The review, --set and --show-prompt are the loop after the build, not questions before it.
_SKIP = ("review", "set_values", "show_prompt")
REVIEW_MENU = [("edit", "Edit a field of a song"), ("prompt", "Show a song's prompt"), ("done", "Done")]


def dataset_flow(session: flows.Session) -> None:
    command_of = lambda a: "dataset"  # noqa: E731
    tweaks: dict[str, dict[str, Any]] = {"audio_dir": {"check": flows._check_dir}, "custom_tag": {"basic": True}}
    steps = [flows._setup_questions(session, []), *flows.config_steps(command_of, skip=_SKIP, tweaks=tweaks)]
    defaults = flows._Defaults(session)
    form = Form(session.prompter, steps, defaults)
    answers: dict[str, Any] = {}
    session.prompter.say("Type b to go back, ? for help, Ctrl-C to return to the main menu.", "dim")
    config = flows.review(session, form, answers, flows._build(form, defaults, {}), command_of,
                          "building the dataset JSON")
    if config is None:
        return
    flows.execute(session, "dataset", config)
    from sidestep.cli.dataset_cmd import json_path

    path = json_path(config)
    if path.is_file():
        review_loop(session, path, config.audio_dir)
        session.prompter.say(f"Preprocess with --dataset-json {path} (main menu: Preprocess audio).", "green")


def review_loop(session: flows.Session, path: Path, audio_dir: str | None) -> None:
    """Show the table; edit fields or show prompts until Done (or `b`)."""
    from sidestep.cli.dataset_cmd import LEGEND, review_table
    from sidestep.data import dataset_builder as builder

    prompter = session.prompter
    while True:
        table, flagged = review_table(path, prompter.console)
        prompter.console.print(table)
        prompter.say(LEGEND, "dim")
        prompter.say(f"{flagged} song(s) to check (marked ?).", "yellow" if flagged else "green")
        try:
            choice = prompter.choose("Review", REVIEW_MENU, "done")
            if choice == "done":
                return
            songs = tuple(row.song for row in builder.review_rows(path))
            song = prompter.ask(Question("_song", "Song", choices=songs), songs[0] if songs else None, {})
            if choice == "prompt":
                prompt, lyrics = builder.show_prompt(path, song, audio_dir)
                prompter.console.print(prompt + "\n# Lyrics (encoded separately)\n" + lyrics, markup=False,
                                       highlight=False)
                continue
            name = prompter.ask(Question("_field", "Field", choices=builder.FIELDS), "caption", {})
            value = prompter.ask(Question("_value", f"New {name} (- clears it)", optional=True), None, {})
            entry = builder.set_field(path, song, name, value or "")
            prompter.say(f"{song}: {name} = {entry.get(name)!r} (user)", "green")
        except GoBack:
            return
        except SidestepError as err:  # a value the prompt could not use: say why, stay in the review
            prompter.say(f"    {err}", "red")
