"""`train.py dataset`: build, review, edit the dataset JSON and show a song's prompt (logic in
sidestep/data/dataset_builder.py; this module only renders)."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich import box
from rich.console import Console
from rich.table import Table

from sidestep.config import Config
from sidestep.console import get_console
from sidestep.data import dataset_builder as builder
from sidestep.errors import SidestepError

_SHORT = {"caption": 28, "genre": 14, "lyrics": 18, "title": 16, "artist": 14}
LEGEND = ("Sources: user (yours: never replaced), sidecar (song.txt, song.lyrics.txt, song.lrc), tag (embedded), "
          "detected (from the audio), transcribed (--transcribe).")


def json_path(config: Config) -> Path:
    if config.dataset_out:
        return Path(config.dataset_out).expanduser()
    if config.audio_dir:
        return Path(config.audio_dir).expanduser() / builder.DEFAULT_NAME
    raise SidestepError("no dataset JSON named; give --out PATH (or --audio-dir, whose dataset.json is used)")


def _cell(value, source, limit: int = 20) -> str:
    if value is None or value == "":
        return "-"
    text = " ".join(str(value).split())
    text = text if len(text) <= limit else text[:limit - 1] + "…"
    return f"{text} [{source}]" if source else text


def review_table(path: Path, console: Console) -> tuple[Table, int]:
    """One row per song and field (long form, readable at any width); doubtful values marked `?`."""
    rows = builder.review_rows(path)
    table = Table(title=f"{path}: {len(rows)} song(s)", box=box.SIMPLE if console.is_terminal else box.ASCII)
    for column in ("song", "field", "value", "source", "check"):
        table.add_column(column, overflow="fold")
    flagged = 0
    for row in rows:
        first = True
        for name in builder.FIELDS:
            value, source = row.cells[name]
            doubt = row.doubts.get(name)
            if value in (None, "") and not doubt:
                continue
            table.add_row(row.song if first else "", name, _cell(value, None, _SHORT.get(name, 24)),
                          source or "", f"? {doubt}" if doubt else "")
            first = False
        flagged += bool(row.doubts)
        table.add_section()
    return table, flagged


def _print(console: Console, text: str) -> None:
    console.print(text, markup=False, highlight=False)


def run_dataset(config: Config, args: argparse.Namespace) -> int:
    console = get_console()
    path = json_path(config)
    if not path.is_file() and not config.audio_dir:
        raise SidestepError(f"{path}: dataset JSON not found; build it first with "
                            f"`train.py dataset --audio-dir SONGS --out {path}`")
    for item in config.set_values:
        left, sep, value = item.partition("=")
        song, colon, name = left.rpartition(":")
        if not sep or not colon:
            raise SidestepError(f"--set {item!r}: write it as SONG:FIELD=VALUE, e.g. song.wav:bpm=120")
        entry = builder.set_field(path, song, name, value)
        _print(console, f"{song}: {name} = {entry.get(name)!r} (user)")
    if config.show_prompt:
        prompt, lyrics = builder.show_prompt(path, config.show_prompt, config.audio_dir, config.max_duration)
        _print(console, prompt + "\n# Lyrics (encoded separately; not part of the prompt)\n" + lyrics)
        return 0
    building = config.audio_dir is not None and not config.review and not config.set_values
    settings = (config.custom_tag, config.tag_position, config.genre_ratio)
    if not config.audio_dir and any(v is not None for v in settings):  # the settings alone: no need for the songs
        metadata = builder.update_settings(path, *settings)
        _print(console, f"{path}: custom_tag {metadata['custom_tag']!r}, tag_position {metadata['tag_position']}, "
                        f"genre_ratio {metadata['genre_ratio']}")
        building = False
    elif building or any(v is not None for v in settings):
        transcriber = None
        if config.transcribe:
            from sidestep.data.transcribe import whisper_transcriber

            transcriber = whisper_transcriber(config.transcribe, config.device)
        report = builder.build_dataset(config.audio_dir, path, tuple(config.overwrite), transcriber,
                                       custom_tag=config.custom_tag, tag_position=config.tag_position,
                                       genre_ratio=config.genre_ratio,
                                       on_song=lambda rel: _print(console, f"reading {rel}"))
        for rel, why in report.unreadable:
            _print(console, f"skipped {rel}: {why}")
        for key in report.missing:
            _print(console, f"kept entry {key}: its audio file is not in {config.audio_dir}")
        filled = sum(len(v) for v in report.filled.values())
        _print(console, f"Wrote {report.path}: {len(report.songs)} song(s), {len(report.added)} new, {filled} "
                        f"field(s) filled, {len(report.unreadable)} unreadable. Check it with "
                        f"`train.py dataset --out {report.path} --review`")
    if config.review or not (building or config.set_values or any(v is not None for v in settings)):
        table, flagged = review_table(path, console)
        console.print(table)
        _print(console, LEGEND)
        _print(console, f"{flagged} song(s) to check (marked ?). Fix a value with --set SONG:FIELD=VALUE.")
    return 0
