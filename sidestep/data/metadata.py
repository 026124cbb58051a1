"""The dataset JSON (captions, lyrics, musical metadata) and its matching to audio files.

Layout (ACE-Step's dataset builder, as the Side-Step seed reads it):

    {"metadata": {"name": ..., "custom_tag": ..., "tag_position": "prepend", "genre_ratio": 0, ...},
     "samples": [{"filename": "song.wav", "audio_path": "...", "caption": ..., "genre": ...,
                  "lyrics": ..., "bpm": 120, "keyscale": ..., "timesignature": ..., "duration": ...,
                  "language": ..., "is_instrumental": ..., "custom_tag": ..., "prompt_override": ...}]}

A bare list of samples is accepted too. A sample is keyed by `filename`, else by the base
name of `audio_path`. Unknown fields are ignored (builders add their own); wrong types are
an error naming the entry and the field.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePath
from typing import Any

from sidestep.data.prompts import TAG_POSITIONS
from sidestep.errors import SidestepError

_TEXT = (str,)
_SCALAR = (str, int, float)
# field -> accepted JSON types (None is always accepted and means "not given").
_SAMPLE_FIELDS: dict[str, tuple[type, ...]] = {
    "filename": _TEXT, "audio_path": _TEXT, "caption": _TEXT, "genre": _TEXT, "lyrics": _TEXT,
    "bpm": _SCALAR, "keyscale": _TEXT, "timesignature": _SCALAR, "duration": (int, float), "language": _TEXT,
    "is_instrumental": (bool,), "custom_tag": _TEXT, "prompt_override": _TEXT,
}
# The fields `train.py dataset` fills (sidestep/data/dataset_builder.py), in the order it writes them; title and
# artist are kept for the reader and do not reach the prompt.
BUILT_FIELDS = ("caption", "genre", "lyrics", "bpm", "keyscale", "timesignature", "duration", "language",
                "is_instrumental", "title", "artist")
_TYPE_WORDS = {_TEXT: "text", _SCALAR: "a number or text", (int, float): "a number", (bool,): "true or false"}


@dataclass(frozen=True)
class SampleMeta:
    """One `samples[]` entry, fields as stored (None when absent)."""

    key: str
    filename: str | None = None
    audio_path: str | None = None
    caption: str | None = None
    genre: str | None = None
    lyrics: str | None = None
    bpm: int | float | str | None = None
    keyscale: str | None = None
    timesignature: int | float | str | None = None
    duration: int | float | None = None
    language: str | None = None
    is_instrumental: bool | None = None
    custom_tag: str | None = None
    prompt_override: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class DatasetMeta:
    """The dataset-level settings and the sample entries."""

    source: Path | None = None
    name: str | None = None
    custom_tag: str = ""
    tag_position: str = "prepend"
    genre_ratio: float = 0.0
    samples: tuple[SampleMeta, ...] = field(default_factory=tuple)


def _type_ok(value: Any, kinds: tuple[type, ...]) -> bool:
    return value is None or (isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds))


def _bad(path: Path, where: str, what: str) -> SidestepError:
    return SidestepError(f"{path}: {where} {what}; fix the dataset JSON")


def _sample(path: Path, index: int, raw: Any) -> SampleMeta:
    where = f"samples[{index}]"
    if not isinstance(raw, dict):
        raise _bad(path, where, f"must be an object with a filename, got {type(raw).__name__}")
    values = {}
    for name, kinds in _SAMPLE_FIELDS.items():
        value = raw.get(name)
        if not _type_ok(value, kinds):
            raise _bad(path, f"{where}.{name}", f"must be {_TYPE_WORDS[kinds]}, got {value!r}")
        values[name] = value
    key = values["filename"] or (PurePath(values["audio_path"].replace("\\", "/")).name if values["audio_path"]
                                 else None)
    if not key:
        raise _bad(path, where, "has neither 'filename' nor 'audio_path', so it names no audio file")
    return SampleMeta(key=key, **values)


def _dataset_settings(path: Path, meta: Any) -> dict[str, Any]:
    if meta is None:
        return {}
    if not isinstance(meta, dict):
        raise _bad(path, "'metadata'", f"must be an object, got {type(meta).__name__}")
    out: dict[str, Any] = {}
    tag, position, ratio, name = (meta.get(k) for k in ("custom_tag", "tag_position", "genre_ratio", "name"))
    if not _type_ok(tag, _TEXT) or not _type_ok(name, _TEXT):
        raise _bad(path, "metadata.custom_tag/name", "must be text")
    if position is not None and position not in TAG_POSITIONS:
        raise _bad(path, "metadata.tag_position", f"must be one of {', '.join(TAG_POSITIONS)}, got {position!r}")
    if ratio is not None and (not _type_ok(ratio, (int, float)) or not 0 <= ratio <= 100):
        raise _bad(path, "metadata.genre_ratio", f"must be a percentage from 0 to 100, got {ratio!r}")
    for key, value in (("custom_tag", tag), ("tag_position", position), ("name", name)):
        if value is not None:
            out[key] = value
    if ratio is not None:
        out["genre_ratio"] = float(ratio)
    return out


class _DuplicateKey(ValueError):
    def __init__(self, key: str):
        super().__init__(key)
        self.key = key


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """json.loads keeps the last of two equal keys without a word; a dataset JSON must not be ambiguous."""
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise _DuplicateKey(key)
        seen[key] = value
    return seen


def read_dataset_json(path: str | Path) -> DatasetMeta:
    """Read and validate a dataset JSON; every problem is a one-line SidestepError."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise SidestepError(f"{path}: dataset JSON not found; check --dataset-json")
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"), object_pairs_hook=_no_duplicate_keys)
    except _DuplicateKey as dup:
        raise SidestepError(f"{path}: key '{dup.key}' appears twice in one object, so it is unclear which value "
                            "counts; keep one and fix the dataset JSON") from None
    except UnicodeDecodeError:
        raise SidestepError(f"{path}: not UTF-8 text; save the dataset JSON as UTF-8") from None
    except json.JSONDecodeError as err:
        raise SidestepError(f"{path}: invalid JSON at line {err.lineno}, column {err.colno} ({err.msg}); "
                            "fix the dataset JSON") from None
    except OSError as err:
        raise SidestepError(f"{path}: cannot be read ({err.strerror}); check its permissions") from None
    except RecursionError:
        raise SidestepError(f"{path}: nested too deeply to be a dataset JSON; fix the dataset JSON") from None
    except ValueError as err:  # a number too long to read
        raise SidestepError(f"{path}: unreadable JSON ({str(err).splitlines()[0][:200]}); fix the dataset "
                            "JSON") from None
    if isinstance(data, list):
        settings, raw_samples = {}, data
    elif isinstance(data, dict):
        settings, raw_samples = _dataset_settings(path, data.get("metadata")), data.get("samples")
        if not isinstance(raw_samples, list):
            raise _bad(path, "'samples'", "must be a list of sample objects (or the file a bare list of them)")
    else:
        raise _bad(path, "the top level", "must be an object with 'samples' or a list of samples")
    samples = tuple(_sample(path, i, raw) for i, raw in enumerate(raw_samples))
    return DatasetMeta(source=path, samples=samples, **settings)


def _path_parts(text: str) -> tuple[str, ...]:
    return PurePath(text.replace("\\", "/")).parts


def match_entries(files: list[str], dataset: DatasetMeta) -> tuple[dict[str, SampleMeta], list[SampleMeta]]:
    """Pair audio files (paths relative to the audio folder, '/'-separated) with entries.

    Each entry describes one file and each file gets at most one entry. An entry whose
    `audio_path` ends with a file's relative path is that file's (so same-named songs in
    different subfolders can be told apart); the rest pair up by base name, in JSON order.
    Returns (file -> entry, entries that matched no file).
    """
    matched: dict[str, SampleMeta] = {}
    used: set[int] = set()
    by_depth = sorted(files, key=lambda f: (-len(_path_parts(f)), f))  # most specific path first
    for rel in by_depth:
        parts = _path_parts(rel)
        for i, entry in enumerate(dataset.samples):
            if i not in used and entry.audio_path and _path_parts(entry.audio_path)[-len(parts):] == parts:
                matched[rel] = entry
                used.add(i)
                break
    for rel in sorted(set(files) - set(matched)):
        name = _path_parts(rel)[-1]
        for i, entry in enumerate(dataset.samples):
            if i not in used and entry.key == name:
                matched[rel] = entry
                used.add(i)
                break
    unmatched = [e for i, e in enumerate(dataset.samples) if i not in used]
    return matched, unmatched
