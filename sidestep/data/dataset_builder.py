"""A folder of songs -> the dataset JSON that `preprocess` reads (sidestep/data/metadata.py). No printing.

Each field of an entry is filled from the best source there is, and `<field>_source` records
which one gave it:

    user        already in the JSON (written by hand, or set with --set / the wizard)
    sidecar     song.caption.txt / song.txt (caption), song.lyrics.txt / song.lrc (lyrics)
    tag         the file's embedded tags (title, artist, genre, BPM, key, lyrics; read with mutagen)
    detected    measured from the audio (duration, BPM, key/scale, time signature, and sung or
                instrumental when no lyrics were found; sidestep/data/analysis.py)
    transcribed a speech-recognition model's transcript (--transcribe MODEL), and its language

A field that holds a value is never replaced unless it is named with --overwrite. The JSON
is the single source: the review, --set and --show-prompt read and write only it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Callable

from sidestep.data.analysis import (BPM_DOUBTFUL, KEY_DOUBTFUL, analyse, detect_vocals, load_mono, normalise_key,
                                    parse_bpm)
from sidestep.data.audio import AudioError
from sidestep.data.metadata import BUILT_FIELDS, DatasetMeta, match_entries, read_dataset_json
from sidestep.errors import SidestepError
from sidestep.io import atomic_write_text

FIELDS = BUILT_FIELDS
SOURCES = ("user", "sidecar", "tag", "detected", "transcribed")
_DETECTED = ("bpm", "keyscale", "timesignature", "duration")
_CONFIDENCE = {"bpm": "bpm_confidence", "keyscale": "keyscale_confidence", "timesignature": "timesignature_confidence",
               "is_instrumental": "vocal_score"}
SIDECAR_SUFFIXES = (".txt", ".lrc")
DEFAULT_NAME = "dataset.json"


@dataclass
class BuildReport:
    path: Path
    songs: list[str] = field(default_factory=list)  # every song with an entry, JSON order
    added: list[str] = field(default_factory=list)  # songs given a new entry
    filled: dict[str, list[str]] = field(default_factory=dict)  # song -> fields filled in this run
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (file, reason): no entry written
    missing: list[str] = field(default_factory=list)  # entries whose audio file is not in the folder (kept)


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


# -- sources ----------------------------------------------------------------------------------

_LRC_META = re.compile(r"^\s*\[(ar|ti|al|au|by|offset|re|ve|length|#)\s*:[^\]]*\]\s*$", re.IGNORECASE)
_LRC_TIME = re.compile(r"\[\d{1,3}:\d{1,2}(?:[.:]\d{1,3})?\]|<\d{1,3}:\d{1,2}(?:[.:]\d{1,3})?>")


def strip_lrc(text: str) -> str:
    """LRC lyrics -> plain lines: timestamps ([mm:ss.xx], enhanced <mm:ss.xx>) and header tags
    ([ar:...], [ti:...], ...) removed; section labels such as [Chorus] kept."""
    lines = []
    for line in text.splitlines():
        if _LRC_META.match(line):
            continue
        lines.append(_LRC_TIME.sub("", line).strip())
    return "\n".join(lines).strip()


def _read_text(path: Path) -> str | None:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        text = path.read_text(encoding="latin-1")
    except OSError:
        return None
    return text.strip() or None


def read_sidecars(audio: Path) -> dict[str, str]:
    """{caption?, lyrics?} from the text files beside `audio` (same stem)."""
    out: dict[str, str] = {}
    stem = audio.with_suffix("")
    for name, key, convert in ((".caption.txt", "caption", None), (".txt", "caption", None),
                               (".lyrics.txt", "lyrics", None), (".lrc", "lyrics", strip_lrc)):
        candidate = Path(f"{stem}{name}")
        if key in out or not candidate.is_file():
            continue
        text = _read_text(candidate)
        if text and convert:
            text = convert(text) or None
        if text:
            out[key] = text
    return out


_ID3 = {"title": "TIT2", "artist": "TPE1", "genre": "TCON", "bpm": "TBPM", "key": "TKEY"}
_MP4 = {"title": "\xa9nam", "artist": "\xa9ART", "genre": "\xa9gen", "bpm": "tmpo", "lyrics": "\xa9lyr"}
_VORBIS = {"title": ("title",), "artist": ("artist",), "genre": ("genre",), "bpm": ("bpm", "tempo"),
           "key": ("key", "initialkey"), "lyrics": ("lyrics", "unsyncedlyrics", "unsynced lyrics")}


def read_tags(audio: Path) -> dict[str, str]:
    """{title, artist, genre, bpm, key, lyrics} found in the file's embedded tags (ID3 in mp3/wav/aiff,
    Vorbis comments in flac/ogg/opus, MP4 atoms); a file mutagen cannot parse has none."""
    import mutagen
    from mutagen.id3 import ID3

    try:
        handle = mutagen.File(str(audio))
    except Exception:  # mutagen raises many types for files it cannot parse; the audio check reports those
        return {}
    tags = getattr(handle, "tags", None)
    if not tags:
        return {}
    raw: dict[str, Any] = {}
    if isinstance(tags, ID3):
        for key, frame_id in _ID3.items():
            frames = tags.getall(frame_id)
            if frames and frames[0].text:
                raw[key] = str(frames[0].text[0])
        lyrics = [f.text for f in tags.getall("USLT") if f.text]
        if lyrics:
            raw["lyrics"] = lyrics[0]
    elif hasattr(tags, "keys") and any(k.startswith("\xa9") or k == "tmpo" for k in tags.keys()):
        for key, atom in _MP4.items():
            if atom in tags and tags[atom]:
                raw[key] = str(tags[atom][0])
    else:
        lower = {str(k).lower(): v for k, v in (tags.items() if hasattr(tags, "items") else [])}
        for key, names in _VORBIS.items():
            for name in names:
                value = lower.get(name)
                if isinstance(value, list):
                    value = value[0] if value else None
                if value:
                    raw[key] = str(value)
                    break
    return {k: v.strip() for k, v in raw.items() if isinstance(v, str) and v.strip()}


@dataclass
class Candidates:
    """The values each source offers for one song: field -> (value, source, confidence or None)."""

    values: dict[str, tuple[Any, str, float | None]] = field(default_factory=dict)

    def offer(self, name: str, value: Any, source: str, confidence: float | None = None) -> None:
        if not _empty(value) and name not in self.values:  # first offer = best source
            self.values[name] = (value, source, confidence)


def _static_candidates(audio: Path) -> Candidates:
    """Sidecar files first, then tags (their BPM and key normalised to the prompt's vocabulary)."""
    found = Candidates()
    for name, value in read_sidecars(audio).items():
        found.offer(name, value, "sidecar")
    tags = read_tags(audio)
    for name in ("lyrics", "genre", "title", "artist"):
        found.offer(name, tags.get(name), "tag")
    found.offer("bpm", parse_bpm(tags.get("bpm")), "tag")
    found.offer("keyscale", normalise_key(tags.get("key")), "tag")
    return found


# -- transcription ------------------------------------------------------------------------------

Transcriber = Callable[[Path], tuple[str, str | None]]  # audio -> (text, language)


# -- the JSON -----------------------------------------------------------------------------------


def _load_existing(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]], DatasetMeta]:
    """(metadata, raw sample dicts, parsed) of an existing dataset JSON (validated by read_dataset_json)."""
    parsed = read_dataset_json(path)
    data = json.loads(path.read_text(encoding="utf-8-sig"))
    if isinstance(data, list):
        return {}, list(data), parsed
    return dict(data.get("metadata") or {}), list(data["samples"]), parsed


def _ordered(entry: dict[str, Any]) -> dict[str, Any]:
    """filename, audio_path, then each field beside its source and confidence, then anything else."""
    out: dict[str, Any] = {}
    for key in ("filename", "audio_path"):
        if key in entry:
            out[key] = entry[key]
    for name in FIELDS:
        for key in (name, f"{name}_source", _CONFIDENCE.get(name)):
            if key and key in entry:
                out[key] = entry[key]
    out.update({k: v for k, v in entry.items() if k not in out})
    return out


def _write(path: Path, metadata: dict[str, Any], samples: list[dict[str, Any]]) -> None:
    metadata = dict(metadata, num_samples=len(samples))
    text = json.dumps({"metadata": metadata, "samples": [_ordered(s) for s in samples]}, indent=2,
                      ensure_ascii=False)
    atomic_write_text(path, text + "\n")


def _settings(metadata: dict[str, Any], name: str | None, custom_tag: str | None, tag_position: str | None,
              genre_ratio: float | None) -> dict[str, Any]:
    """Dataset-level settings, as the seed's layout has them: given values replace, others are kept."""
    out = dict(metadata)
    for key, value in (("name", name), ("custom_tag", custom_tag), ("tag_position", tag_position),
                       ("genre_ratio", genre_ratio)):
        if value is not None:
            out[key] = value
    out.setdefault("custom_tag", "")
    out.setdefault("tag_position", "prepend")
    out.setdefault("genre_ratio", 0)
    return out


def song_files(audio_dir: Path, exclude: tuple[Path, ...] = ()) -> tuple[list[str], list[tuple[str, str]]]:
    """(audio files, [(other file, reason)]) as preprocess scans them; sidecars and JSON files are not songs
    and are not reported."""
    from sidestep.data.preprocess import scan_audio_dir

    if not audio_dir.is_dir():
        raise SidestepError(f"{audio_dir}: audio folder not found; check --audio-dir")
    files, other = scan_audio_dir(audio_dir, exclude)
    other = [(rel, why) for rel, why in other if not rel.lower().endswith(SIDECAR_SUFFIXES + (".json",))]
    return files, other


def build_dataset(audio_dir: str | Path, out: str | Path | None = None, overwrite: tuple[str, ...] = (),
                  transcriber: Transcriber | None = None, name: str | None = None, custom_tag: str | None = None,
                  tag_position: str | None = None, genre_ratio: float | None = None,
                  on_song: Callable[[str], None] | None = None) -> BuildReport:
    """Create or complete the dataset JSON for the songs under `audio_dir` (see the module docstring)."""
    audio_dir = Path(audio_dir).expanduser()
    path = Path(out).expanduser() if out else audio_dir / DEFAULT_NAME
    files, other = song_files(audio_dir, (path,))
    if not files and not other:
        raise SidestepError(f"{audio_dir}: no audio files found (wav, flac, mp3, ogg); check --audio-dir")
    metadata, samples, parsed = _load_existing(path) if path.is_file() else ({}, [], DatasetMeta())
    metadata = _settings(metadata, name if name is not None else metadata.get("name") or audio_dir.name,
                         custom_tag, tag_position, genre_ratio)
    report = BuildReport(path=path, unreadable=list(other))
    matched, unmatched = match_entries(files, parsed)
    index = {id(entry): i for i, entry in enumerate(parsed.samples)}
    report.missing = [e.key for e in unmatched]
    for rel in files:
        if on_song:
            on_song(rel)
        entry_meta = matched.get(rel)
        entry = dict(samples[index[id(entry_meta)]]) if entry_meta is not None else \
            {"filename": PurePosixPath(rel).name, "audio_path": rel}
        try:
            filled = fill_entry(entry, audio_dir / rel, set(overwrite), transcriber)
        except AudioError as err:
            report.unreadable.append((rel, str(err)))
            continue
        if entry_meta is None:
            samples.append(entry)
            report.added.append(rel)
        else:
            samples[index[id(entry_meta)]] = entry
        if filled:
            report.filled[rel] = filled
    report.songs = [s.get("filename") or s.get("audio_path", "") for s in samples]
    _write(path, metadata, samples)
    return report


def fill_entry(entry: dict[str, Any], audio: Path, overwrite: set[str], transcriber: Transcriber | None) -> list[str]:
    """Fill the empty (or --overwrite) fields of `entry` in place; returns the fields filled.
    Raises AudioError when the audio has to be analysed and cannot be read."""
    for name in FIELDS:  # values present without a recorded source were written by the user
        if not _empty(entry.get(name)) and name not in overwrite:
            entry.setdefault(f"{name}_source", "user")
    wanted = [n for n in FIELDS if n in overwrite or _empty(entry.get(n))]
    if not wanted:
        return []
    found = _static_candidates(audio)
    if "timesignature" in overwrite or any(n in wanted and n not in found.values
                                           for n in ("bpm", "keyscale", "duration")):
        result = analyse(audio)
        found.offer("duration", result.duration, "detected")
        found.offer("bpm", result.bpm, "detected", result.bpm_confidence)
        found.offer("keyscale", result.keyscale, "detected", result.key_confidence)
        found.offer("timesignature", result.timesignature, "detected", result.timesignature_confidence)
    lyrics_known = not _empty(entry.get("lyrics")) and "lyrics" not in overwrite
    if lyrics_known:  # the entry's own lyrics say it is sung
        found.offer("is_instrumental", False, entry.get("lyrics_source") or "user")
    said_instrumental = entry.get("is_instrumental") is True and "is_instrumental" not in overwrite
    if transcriber and "lyrics" in wanted and "lyrics" not in found.values and not said_instrumental:
        text, language = transcriber(audio)
        found.offer("lyrics", text, "transcribed")
        found.offer("language", language, "transcribed")
        if _empty(text):
            found.offer("is_instrumental", True, "transcribed")
    if "lyrics" in found.values:
        found.offer("is_instrumental", False, found.values["lyrics"][1])
    tried = "vocal_score" in entry and "is_instrumental" not in overwrite  # an earlier run could not tell
    if "is_instrumental" in wanted and "is_instrumental" not in found.values and not transcriber and not tried:
        sung, score = detect_vocals(load_mono(audio)[0])
        entry["vocal_score"] = score
        if sung is not None:
            found.offer("is_instrumental", not sung, "detected", score)
    filled = []
    for name in wanted:
        if name not in found.values:
            continue
        value, source, confidence = found.values[name]
        entry[name], entry[f"{name}_source"] = value, source
        conf_key = _CONFIDENCE.get(name)
        if conf_key:
            if confidence is None:
                entry.pop(conf_key, None)
            else:
                entry[conf_key] = confidence
        filled.append(name)
    return filled


# -- review and edits --------------------------------------------------------------------------


@dataclass(frozen=True)
class ReviewRow:
    song: str
    cells: dict[str, tuple[Any, str | None]]  # field -> (value, source)
    doubts: dict[str, str]  # field -> why the value should be checked


def doubts(entry: dict[str, Any]) -> dict[str, str]:
    """Fields worth a second look: detected values of low confidence, keys outside the prompt's
    vocabulary, a vocal song without lyrics, a song without lyrics not known to be instrumental,
    missing tempo or key."""
    out: dict[str, str] = {}
    for name, floor in (("bpm", BPM_DOUBTFUL), ("keyscale", KEY_DOUBTFUL)):
        value, conf = entry.get(name), entry.get(_CONFIDENCE[name])
        if _empty(value):
            out[name] = "missing"
        elif entry.get(f"{name}_source") == "detected" and isinstance(conf, (int, float)) and conf < floor:
            out[name] = f"low confidence ({conf:.2f} < {floor})"
    key = entry.get("keyscale")
    if not _empty(key) and normalise_key(str(key)) != key:
        out["keyscale"] = "not in the prompt's key vocabulary (e.g. 'F# minor')"
    if _empty(entry.get("lyrics")) and entry.get("is_instrumental") is False:
        out["lyrics"] = "vocal song without lyrics" + (
            " (sung voice detected: add lyrics or --transcribe; set is_instrumental yes if it is not sung)"
            if entry.get("is_instrumental_source") == "detected" else "")
    elif not _empty(entry.get("lyrics")) and entry.get("is_instrumental") is True:
        out["is_instrumental"] = "has lyrics but is marked instrumental; clear one of them"
    elif _empty(entry.get("lyrics")) and entry.get("is_instrumental") is None:
        out["is_instrumental"] = ("unknown whether sung (no lyrics found); it trains as [Instrumental]: add lyrics, "
                                  "--transcribe, or set is_instrumental")
    return out


def review_rows(path: str | Path) -> list[ReviewRow]:
    _, samples, parsed = _load_existing(Path(path).expanduser())
    rows = []
    for raw, meta in zip(samples, parsed.samples):
        cells = {n: (raw.get(n), raw.get(f"{n}_source")) for n in FIELDS}
        rows.append(ReviewRow(song=meta.key, cells=cells, doubts=doubts(raw)))
    return rows


def _find(samples: list[dict[str, Any]], parsed: DatasetMeta, song: str) -> int:
    """Index of the entry named `song` (file name, audio_path or stem)."""
    for i, meta in enumerate(parsed.samples):
        names = {meta.key, meta.audio_path, PurePosixPath(meta.key).stem}
        if song in names:
            return i
    known = ", ".join(m.key for m in parsed.samples[:5]) + (", ..." if len(parsed.samples) > 5 else "")
    raise SidestepError(f"{parsed.source}: no entry for song {song!r}; use a file name from the JSON ({known})")


def parse_value(name: str, text: str) -> Any:
    """A user's text for field `name` as it is stored; a value the prompt could not use is an error."""
    text = text.strip()
    if text == "":
        return None
    if name == "bpm":
        value = parse_bpm(text)
        if value is None:
            raise SidestepError(f"bpm {text!r}: not a tempo between 20 and 400; give a number such as 120")
        return value
    if name == "keyscale":
        value = normalise_key(text)
        if value is None:
            raise SidestepError(f"keyscale {text!r}: not a key; write it like 'C major' or 'F# minor'")
        return value
    if name == "timesignature":
        if not re.fullmatch(r"\d{1,2}(/\d{1,2})?", text):
            raise SidestepError(f"timesignature {text!r}: give the beats per bar, such as 4 or 3")
        return text.split("/")[0]
    if name == "duration":
        try:
            return float(text)
        except ValueError:
            raise SidestepError(f"duration {text!r}: give seconds, such as 183.5") from None
    if name == "is_instrumental":
        if text.lower() not in ("yes", "no", "true", "false", "y", "n"):
            raise SidestepError(f"is_instrumental {text!r}: answer yes or no")
        return text.lower() in ("yes", "true", "y")
    return text


def update_settings(path: str | Path, custom_tag: str | None = None, tag_position: str | None = None,
                    genre_ratio: float | None = None) -> dict[str, Any]:
    """Change the dataset-level settings (trigger word, its position, genre ratio) without reading the songs."""
    path = Path(path).expanduser()
    metadata, samples, _ = _load_existing(path)
    metadata = _settings(metadata, None, custom_tag, tag_position, genre_ratio)
    _write(path, metadata, samples)
    return metadata


def set_field(path: str | Path, song: str, name: str, text: str) -> dict[str, Any]:
    """Set one field of one entry from the user's text (source "user"); returns the updated entry."""
    path = Path(path).expanduser()
    if name not in FIELDS:
        raise SidestepError(f"field {name!r} cannot be set here; use one of {', '.join(FIELDS)}")
    metadata, samples, parsed = _load_existing(path)
    i = _find(samples, parsed, song)
    entry = dict(samples[i])
    value = parse_value(name, text)
    entry[name] = value
    if value is None:
        entry.pop(f"{name}_source", None)
    else:
        entry[f"{name}_source"] = "user"
    if _CONFIDENCE.get(name):
        entry.pop(_CONFIDENCE[name], None)
    samples[i] = entry
    _write(path, metadata, samples)
    return entry


def show_prompt(path: str | Path, song: str, audio_dir: str | Path | None = None,
                max_duration: float = 240.0) -> tuple[str, str]:
    """(prompt, lyrics) exactly as `preprocess` would build them for `song` with this JSON and folder."""
    from sidestep.data.audio import load_audio
    from sidestep.data.preprocess import sample_text
    from sidestep.data.prompts import genre_subset

    path = Path(path).expanduser()
    dataset = read_dataset_json(path)
    audio_dir = Path(audio_dir).expanduser() if audio_dir else path.parent
    files, _ = song_files(audio_dir, (path,))
    matched, _ = match_entries(files, dataset)
    wanted = [rel for rel in files if song in (rel, PurePosixPath(rel).name, PurePosixPath(rel).stem)]
    if not wanted:
        raise SidestepError(f"{audio_dir}: no song {song!r} in the folder; give a file name from --audio-dir")
    rel = wanted[0]
    subset = genre_subset(len(files), dataset.genre_ratio)
    try:  # at the file's own rate: the duration is the same and nothing is resampled
        import soundfile as sf

        rate = int(sf.info(str(audio_dir / rel)).samplerate)
    except Exception:  # load_audio below says why the file cannot be read
        rate = 48_000
    try:
        clip = load_audio(audio_dir / rel, target_rate=rate, max_duration=max_duration)
    except AudioError as err:
        raise SidestepError(f"{audio_dir / rel}: {err}") from None
    _, _, prompt, lyrics = sample_text(rel, audio_dir / rel, matched.get(rel), dataset, files.index(rel) in subset,
                                       clip.original_duration)
    return prompt, lyrics
