"""Drive `python train.py` (the wizard) through a real pseudo-terminal with scripted keystrokes."""

from __future__ import annotations

import fcntl
import json
import os
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

TRAIN_PY = Path(__file__).resolve().parents[1] / "train.py"
ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07]*\x07|\x1b[()][0-9A-Za-z]|\x1b[=>]|\r")
# A field prompt: "  flag-name: help text [default]: " at the end of the output (wrapped lines are indented).
FIELD_PROMPT = re.compile(r"\n  ([a-z0-9-]+): [^\n]*(?:\n    [^\n]*)*: $")
# Any text of one wrapped prompt or message: a line break only before an indented continuation.
WRAPPED = r"(?:[^\n]|\n )*?"


def wizard_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("XDG_CONFIG_HOME", "COLUMNS", "LINES")}
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / "xdg"), OMP_NUM_THREADS="1", TERM="xterm-256color",
               PYTHONUNBUFFERED="1", **extra)
    return env


def settings_file(home: Path) -> Path:
    return home / "xdg" / "sidestep" / "settings.json"


def write_settings(home: Path, checkpoint_dir: Path, mode: str = "basic") -> None:
    path = settings_file(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"checkpoint_dir": str(checkpoint_dir), "output_root": "./output", "mode": mode}))


class Wizard:
    """One wizard process on a pty of `cols` x `rows`; `text` is everything it printed, ANSI codes stripped."""

    def __init__(self, cwd: Path, env: dict[str, str], args: tuple[str, ...] = (), cols: int = 200, rows: int = 50):
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        # The pty becomes the child's controlling terminal, so a written ^C is a real SIGINT.
        self.proc = subprocess.Popen([sys.executable, str(TRAIN_PY), *args], stdin=slave, stdout=slave,
                                     stderr=slave, cwd=cwd, env=env, start_new_session=True,
                                     preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0))
        os.close(slave)
        self.master, self.raw, self.pos, self.closed = master, b"", 0, False

    @property
    def text(self) -> str:
        return ANSI.sub("", self.raw.decode("utf-8", "replace"))

    def _read(self, timeout: float) -> bool:
        """Read what is there within `timeout`; False when nothing came (or the child closed the pty)."""
        if self.closed:
            return False
        ready, _, _ = select.select([self.master], [], [], timeout)
        if not ready:
            return False
        try:
            chunk = os.read(self.master, 65536)
        except OSError:  # EIO: the child closed the pty
            chunk = b""
        self.closed = not chunk
        self.raw += chunk
        return bool(chunk)

    def expect(self, pattern: str, timeout: float = 30.0) -> re.Match:
        """Wait until `pattern` (a regex) appears after the last match and the output has settled."""
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern)
        while True:
            match = regex.search(self.text, self.pos)
            if match and not self._read(0.05):
                self.pos = match.end()
                return match
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {pattern!r}; last output:\n{self.text[-3000:]}")
            if self.closed:
                raise AssertionError(f"wizard exited before {pattern!r}; output:\n{self.text[-3000:]}")
            self._read(0.1)

    def send(self, line: str) -> None:
        os.write(self.master, line.encode() + b"\r")

    def answer(self, prompt: str, line: str) -> None:
        self.expect(prompt)
        self.send(line)

    def ctrl_c(self) -> None:
        os.write(self.master, b"\x03")

    def fill(self, answers: dict[str, str | list[str]], until: str, model: str = "") -> list[str]:
        """Answer field prompts by flag name ('' = Enter) until `until` shows; returns the flags asked.
        A list answers the same question again after a refusal: first answer first."""
        asked, lists = [], {k: list(v) for k, v in answers.items() if isinstance(v, list)}
        while True:
            match = self.expect(rf"{FIELD_PROMPT.pattern}|\n  Model: number[^\n]*: $|{until}")
            if match.group(1):
                flag = match.group(1)
                if flag in asked and flag not in lists:
                    raise AssertionError(f"{flag} asked again; last output:\n{self.text[-2000:]}")
                asked.append(flag)
                self.send(lists[flag].pop(0) if flag in lists else answers.get(flag, ""))
            elif "Model: number" in match.group(0):
                self.send(model)
            else:
                return asked

    def wait(self, timeout: float = 30.0) -> int:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline and not self.closed:
            self._read(0.1)
        return self.proc.wait(max(deadline - time.monotonic(), 0.1))

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        os.close(self.master)


def main_menu(wizard: Wizard, choice: str) -> None:
    wizard.answer(r"Main menu\n(?:.*\n)*?  Choose 1-\d+ \[1\]: $", choice)


def pick_kind(wizard: Wizard, number: str) -> None:
    """After main menu item 2: the kind (1 DoRA, 2 LoKR, 3 LoHA, 4 OFT)."""
    wizard.answer(r"Adapter kind:\n(?:.*\n)*?  Choose 1-4 \[1\]: $", number)


def quit_wizard(wizard: Wizard) -> None:
    main_menu(wizard, "quit")
    wizard.expect("Bye.")
    assert wizard.wait() == 0
