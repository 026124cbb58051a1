"""The question engine: typed prompts, `b` to go back, `?` for help, `[Step 3/8] Title` indicators.

Questions are plain data; `Form` walks them in order, skips those whose `when` is false for the
answers so far, and on `b` returns to the previous question with the earlier answer as default.
Ctrl-C is not handled here: KeyboardInterrupt reaches the session loop, which returns to the menu.
"""

from __future__ import annotations

import dataclasses
import os
import textwrap
from dataclasses import dataclass, field
from typing import Any, Callable

from rich.console import Console
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from sidestep.config import field_problem

BACK, HELP, CLEAR = "b", "?", "-"
_TRUE, _FALSE = ("y", "yes", "true", "on", "1"), ("n", "no", "false", "off", "0")


class GoBack(Exception):
    """The user typed `b`: go back one question (or out of the flow at its first question)."""


@dataclass
class Question:
    key: str
    text: str
    kind: type = str  # str, int, float, bool or list (space-separated words)
    choices: tuple[str, ...] = ()
    labels: dict[str, str] | None = None  # shown as a numbered list when given
    help: str = ""
    optional: bool = False  # an empty answer (or "-") means None
    path: bool = False  # expand ~ in the answer
    config_field: dataclasses.Field | None = None  # for its bounds
    when: Callable[[dict], bool] | None = None
    check: Callable[[Any, dict], str | None] | None = None  # None when fine, else what is wrong
    asker: Callable[["Prompter", "Question", Any, dict], Any] | None = None  # a custom prompt (model picker)
    after: Callable[["Prompter", Any], None] | None = None  # says what an accepted answer found ("12 songs")
    warn: Callable[[Any, dict], str | None] | None = None  # valid but implausible: said, then confirmed
    auto: Callable[[dict], bool] | None = None  # answered without asking (one model): `b` passes over it

    def active(self, answers: dict) -> bool:
        return self.when is None or bool(self.when(answers))


@dataclass
class Step:
    title: str | Callable[[dict], str]  # a function of the answers so far when it depends on them
    questions: list[Question] = field(default_factory=list)


def _show(value: Any) -> str:
    if isinstance(value, list):
        return " ".join(map(str, value))
    return str(value)


class Prompter:
    """Reads answers from the console; `plain` means no styles (a dumb terminal or a pipe)."""

    def __init__(self, console: Console, plain: bool = False):
        self.console, self.plain = console, plain

    def _wrap(self, text: str) -> str:
        """Wrap an indented line so continuation lines stay indented (Rich would wrap them to column 0)."""
        if "\n" in text or len(text) < self.console.width:
            return text
        indent = " " * (len(text) - len(text.lstrip()) + 2)
        return textwrap.fill(text, self.console.width - 1, subsequent_indent=indent, break_on_hyphens=False)

    def say(self, text: str = "", style: str | None = None) -> None:
        self.console.print(Text(self._wrap(text), style=None if self.plain else style), highlight=False)

    def raw(self, prompt: str) -> str:
        """One line of input; raises GoBack on `b`. EOFError and KeyboardInterrupt pass through."""
        prompt = self._wrap(prompt.rstrip()) + " "  # the trailing space separates prompt and answer
        answer = self.console.input(Text(prompt, style=None if self.plain else "bold")).strip()
        if answer.lower() == BACK:
            raise GoBack
        return answer

    def header(self, text: str) -> None:
        self.console.print()
        self.say(text, "bold cyan")

    def rows(self, rows: list[tuple[str, ...]], indent: int = 4) -> None:
        """Aligned columns; a long last column wraps under itself, not under the numbers."""
        if self.plain:  # no padding to the terminal width: a pipe gets clean lines
            widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))] if rows else []
            for row in rows:
                cells = [c.rjust(w) if i == 0 else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))]
                self.say((" " * indent + " ".join(cells)).rstrip())
            return
        grid = Table.grid(padding=(0, 1))
        for i in range(len(rows[0]) if rows else 0):
            grid.add_column(justify="right" if i == 0 else "left", no_wrap=i < len(rows[0]) - 1)
        for row in rows:
            grid.add_row(*row)
        self.console.print(Padding(grid, (0, 0, 0, indent), expand=False), highlight=False)

    # -- typed questions -------------------------------------------------------------------------------------

    def _prompt_text(self, q: Question, default: Any) -> str:
        text = f"  {q.text}"
        if q.choices and not q.labels and not all(c in q.text for c in q.choices):
            text += f" ({'/'.join(q.choices)})"
        if q.kind is bool:
            return text + (" [Y/n]: " if default else " [y/N]: ")
        if q.labels:
            number = q.choices.index(default) + 1 if default in q.choices else None
            return f"  Choose 1-{len(q.choices)}" + (f" [{number}]: " if number else ": ")
        if default is None or default == "":
            return text + (" [none]: " if q.optional and default is None else ": ")
        return text + f" [{_show(default)}]: "

    def _print_labels(self, q: Question) -> None:
        self.say(f"  {q.text}" + ("" if q.text.endswith(("?", ":")) else ":"))
        self.rows([(f"{i}.", q.labels.get(choice, choice)) for i, choice in enumerate(q.choices, 1)])

    def _help(self, q: Question) -> None:
        lines = [q.help or q.text]
        if q.config_field is not None:
            flag = (q.config_field.metadata["flags"] or ("--" + q.key.replace("_", "-"),))[-1]
            lines.append(f"CLI flag: {flag}")
            if q.config_field.metadata.get("bounds"):
                lines.append(f"Valid range: {q.config_field.metadata['bounds']}")
        if q.optional:
            lines.append("Enter '-' to leave it unset.")
        lines.append("Type b to go back, Ctrl-C to return to the main menu.")
        for line in lines:
            self.say(f"    {line}", "dim")

    def parse(self, q: Question, answer: str, default: Any) -> Any:
        """The typed value of `answer`; raises ValueError with the reason when it is not valid."""
        if answer == "":
            if default is None and not q.optional:
                raise ValueError("an answer is needed here")
            return default
        if q.optional and answer == CLEAR:
            return None
        if q.kind is bool:
            if answer.lower() in _TRUE + _FALSE:
                return answer.lower() in _TRUE
            raise ValueError("answer y or n")
        if q.choices:
            return self._choice(q, answer)
        if q.kind is list:
            return answer.replace(",", " ").split()
        if q.kind in (int, float):
            return self._number(q, answer)
        return os.path.expanduser(answer) if q.path else answer

    def _choice(self, q: Question, answer: str) -> str:
        if answer.isdigit() and 1 <= int(answer) <= len(q.choices):
            return q.choices[int(answer) - 1]
        matches = [c for c in q.choices if c.lower() == answer.lower()] or \
            [c for c in q.choices if c.lower().startswith(answer.lower())]
        if len(matches) == 1:
            return matches[0]
        raise ValueError(f"type a number from 1 to {len(q.choices)}" if q.labels else
                         f"choose one of {', '.join(q.choices)}")

    def _number(self, q: Question, answer: str) -> int | float:
        try:
            value = q.kind(answer)
        except ValueError:
            raise ValueError(f"expected {'a whole number' if q.kind is int else 'a number'}, got '{answer}'") from None
        return value

    @staticmethod
    def problem(q: Question, value: Any, answers: dict) -> str | None:
        """The CLI's own rule for the field (choices, bounds, `check` in its metadata), then the question's check."""
        if value is None:
            return None
        if q.config_field is not None:
            problem = field_problem(q.config_field, value)
            if problem:
                return problem
        return q.check(value, answers) if q.check is not None else None

    def ask(self, q: Question, default: Any, answers: dict) -> Any:
        """Ask until the answer is valid; `b` raises GoBack."""
        if q.asker is not None:
            return q.asker(self, q, default, answers)
        if q.labels:
            self._print_labels(q)
        while True:
            answer = self.raw(self._prompt_text(q, default))
            if answer == HELP:
                self._help(q)
                continue
            try:
                value = self.parse(q, answer, default)
                problem = self.problem(q, value, answers)
            except ValueError as err:
                problem = str(err)
            if problem is None and q.warn is not None and value is not None and value != default:
                warning = q.warn(value, answers)
                if warning:
                    self.say(f"    {warning}", "yellow")
                    if not self.confirm("Keep it?", default=False):
                        continue
            if problem is None:
                if q.after is not None and value is not None:
                    q.after(self, value)
                return value
            self.say(f"    {problem}", "red")

    def choose(self, title: str, options: list[tuple[str, str]], default: str | None = None) -> str:
        """A numbered menu; returns the chosen key. `b` raises GoBack."""
        q = Question("_menu", title, choices=tuple(k for k, _ in options), labels=dict(options))
        return self.ask(q, default, {})

    def confirm(self, text: str, default: bool = True) -> bool:
        return self.ask(Question("_confirm", text, kind=bool), default, {})


class Form:
    """Walks steps of questions with `[Step i/N]` headers; `b` goes back to the previous answered question."""

    def __init__(self, prompter: Prompter, steps: list[Step], default_for: Callable[[str, dict], Any],
                 validate: Callable[[Question, Any, dict], str | None] | None = None):
        self.prompter, self.steps, self.default_for = prompter, steps, default_for
        self.validate = validate  # answers together (a combination of options): a problem re-asks the question
        self.flat = [(step, q) for step in steps for q in step.questions]
        self.history: list[int] = []
        self.index = 0
        self.only: int | None = None  # revisit: ask this question again, keep every other answer
        self.forced: set[str] = set()  # revisited questions basic mode would skip: asked and kept all the same
        self.given: set[str] = set()  # known from the flow before (chained flows): not asked unless revisited
        self.fill_until = -1  # filling questions a later answer made needed: answered ones up to here are kept
        self.answers: dict = {}

    def questions(self) -> list[Question]:
        return [q for _, q in self.flat]

    def _header(self, step: Step, answers: dict) -> None:
        active = [s for s in self.steps if any(self._active(q, answers) for q in s.questions)]
        number = active.index(step) + 1 if step in active else len(active)
        title = step.title(answers) if callable(step.title) else step.title
        self.prompter.header(f"[Step {number}/{len(active)}] {title}")

    def run(self, answers: dict) -> dict:
        """Ask every active question not yet asked; the answers dict is filled in place and returned."""
        self.answers = answers
        shown: Step | None = None
        while self.index < len(self.flat):
            step, q = self.flat[self.index]
            kept = (self.only is not None and self.index != self.only and q.key in answers) or \
                (q.key in self.given and q.key in answers and self.index != self.only) or \
                (self.index <= self.fill_until and q.key in answers)
            if not self._active(q, answers) or kept:
                if kept and self._active(q, answers):
                    self.history.append(self.index)
                self.index += 1
                continue
            if step is not shown:
                self._header(step, answers)
                shown = step
            default = answers[q.key] if q.key in answers else self.default_for(q.key, answers)
            try:
                value = self.prompter.ask(q, default, answers)
            except GoBack:
                self.only = None
                self.back()
                continue
            problem = self.validate(q, value, answers) if self.validate is not None else None
            if problem:
                self.prompter.say(f"    {problem}", "red")
                continue
            answers[q.key] = value
            self.history.append(self.index)
            self.index += 1
            gaps = [i for i in range(self.index - 1) if self._active(self.flat[i][1], answers)
                    and self.flat[i][1].key not in answers]
            if gaps:  # this answer needs earlier questions (songs given as tensors: preprocess first)
                self.fill_until = max(self.fill_until, self.index - 1)
                self.history = [i for i in self.history if i < gaps[0]]
                self.index = gaps[0]
        self.only = None
        return answers

    def revisit(self, key: str) -> bool:
        """Ask question `key` again on the next run, keeping every other answer; False when no such question."""
        found = [i for i, (_, q) in enumerate(self.flat) if q.key == key]
        if not found:
            return False
        self.index = self.only = found[0]
        self.history = [i for i in self.history if i < found[0]]
        self.forced.add(key)
        return True

    def _active(self, q: Question, answers: dict) -> bool:
        return q.active(answers) or q.key in self.forced

    def back(self) -> None:
        """Step back to the last answered question; at the first one the GoBack leaves the form."""
        while True:
            if not self.history:
                raise GoBack
            self.index = self.history.pop()
            q = self.flat[self.index][1]
            # an answer nobody typed (the only model), or a question no longer asked, is passed over
            if self._active(q, self.answers) and (q.auto is None or not q.auto(self.answers)):
                break
        self.fill_until = -1

    def answered(self, answers: dict) -> dict:
        """The answers of the questions that apply to the final answers (a switched-off branch is dropped)."""
        return {q.key: answers[q.key] for q in self.questions() if q.key in answers and self._active(q, answers)}
