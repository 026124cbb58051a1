"""Two-pass preprocessing: a folder of songs becomes training tensors (docs/design.md §5).

Pass 1 holds only the VAE and the text encoder: audio -> latents (4.2), prompt and lyrics
-> embeddings (4.3, 4.4); the results go to `<out>/.pass1/`. Both models are then freed.
Pass 2 holds only the DiT's condition encoder: embeddings -> encoder hidden states and mask
(4.5), plus context latents (3.2); one `<sample>.pt` per song (4.6) and `manifest.json`.
The two large models are never resident together, so an 8 GB GPU suffices.

Every write is atomic. Each sample's work is keyed by a fingerprint of its source bytes,
metadata, settings and models, and its randomness is seeded from (seed, sample id) alone:
a rerun skips unchanged samples, and a run interrupted anywhere finishes, when rerun, with
tensors bit-identical to an uninterrupted run.
"""

from __future__ import annotations

import errno
import gc
import hashlib
import json
import logging
import math
import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterator

import torch
from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from sidestep.config import Config
from sidestep.data.audio import AudioError, check_readable, is_audio_path, load_audio
from sidestep.data.metadata import DatasetMeta, SampleMeta, match_entries, read_dataset_json
from sidestep.data.prompts import caption_from_filename, genre_subset, sample_prompt, training_lyrics
from sidestep.data.manifest import MANIFEST
from sidestep.errors import SidestepError
from sidestep.memory import trim_heap
from sidestep.guards import check_output_folder
from sidestep.io import WriteError, atomic_save_tensors, atomic_write_text, json_text, write_error
from sidestep.model import discovery
from sidestep.model.loader import load_model_dit, load_text_encoder, load_vae

# Bump when the tensors produced for the same inputs change: it invalidates old outputs.
PIPELINE_VERSION = 1
PASS1_DIR = ".pass1"
STATE_DIR = ".state"
TEXT_MAX_LENGTH = 256  # docs/design.md §5.4
LYRIC_MAX_LENGTH = 512  # docs/design.md §5.4, §8 Q11
# Text is cut to this many characters before it is tokenized (a token covers at least one character, and far
# fewer than 64 in practice, so the kept tokens do not change): a 100 MB caption costs nothing.
CAPTION_MAX_CHARS = 64 * TEXT_MAX_LENGTH  # 16384
LYRICS_MAX_CHARS = 64 * LYRIC_MAX_LENGTH  # 32768
# What a sample's .pt keeps of its caption, lyrics and other text (whole up to 1 MB each; a 100 MB caption is cut).
STORED_MAX_CHARS = 1_000_000


def _cut(text: str | None, limit: int) -> str | None:
    return text[:limit] if isinstance(text, str) else text


# Sample ids (the .pt, state and temp names) longer than this many bytes are cut and get a hash of the path.
SAMPLE_ID_MAX_BYTES = 120
# docs/design.md §5.2: upstream means 30 s windows on >8 GB GPUs, but its memory probe reads a field
# that does not exist and so always uses 15 s. 15 s is therefore what it really does, and
# a fixed value keeps the tensors independent of the GPU they were made on.
CHUNK_SECONDS = 15.0
OVERLAP_SECONDS = 2.0

Event = Callable[[str, dict[str, Any]], None]
log = logging.getLogger("sidestep.preprocess")


@dataclass(frozen=True)
class Settings:
    """Everything besides the inputs that decides the tensors (recorded in the manifest)."""

    max_duration: float
    vae_mode: str
    seed: int
    dtype: str
    chunk_seconds: float = CHUNK_SECONDS
    overlap_seconds: float = OVERLAP_SECONDS
    text_max_length: int = TEXT_MAX_LENGTH
    lyric_max_length: int = LYRIC_MAX_LENGTH
    timbre_reference: str = "zeros[1,1,64]"  # docs/design.md §5.5, §8 Q12 (LoRA mode; same tensors for LoKR)
    pipeline_version: int = PIPELINE_VERSION


@dataclass
class Report:
    """What a run produced; `output_dir` is ready to be passed as --dataset-dir."""

    output_dir: Path
    samples: list[str] = field(default_factory=list)  # .pt paths relative to output_dir, manifest order
    processed: list[str] = field(default_factory=list)  # source files computed in this run
    reused: list[str] = field(default_factory=list)  # source files unchanged since an earlier run
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (source file, reason)
    unmatched_entries: list[str] = field(default_factory=list)  # JSON entries that match no file
    files_without_entry: list[str] = field(default_factory=list)  # audio with no JSON entry
    duplicate_entries: list[str] = field(default_factory=list)  # JSON entries for a file another entry describes
    notes: dict[str, str] = field(default_factory=dict)  # source file -> a warning about a used sample

    @property
    def num_samples(self) -> int:
        return len(self.samples)


@dataclass
class _Job:
    rel: str  # source path relative to the audio folder, '/'-separated
    path: Path
    sample_id: str
    entry: SampleMeta | None
    in_genre_subset: bool
    sha256: str = ""
    fingerprint: str = ""

    @property
    def pt_name(self) -> str:
        return f"{self.sample_id}.pt"


# ---------------------------------------------------------------------------------------
# Files and identities


def scan_audio_dir(audio_dir: Path, exclude: tuple[Path, ...] = ()) -> tuple[list[str], list[tuple[str, str]]]:
    """(audio files, [(other file, reason)]) under `audio_dir`, relative and sorted.

    Hidden files and anything under `exclude` (the output folder, the dataset JSON) are not
    looked at. Broken links with an audio extension count as audio, so they get reported.
    """
    excluded = [p.resolve() for p in exclude]
    audio, other = [], []
    for path in sorted(audio_dir.rglob("*")):
        rel = path.relative_to(audio_dir)
        if any(part.startswith(".") for part in rel.parts):
            continue
        where = path.parent.resolve() / path.name  # the link itself, not what it points to
        if any(where == e or e in where.parents for e in excluded):
            continue
        if path.is_dir():
            if path.is_symlink():  # rglob does not walk into linked folders: say so
                other.append((rel.as_posix(), "link to a folder, not followed; move the songs into --audio-dir"))
            continue
        if is_audio_path(path):
            audio.append(rel.as_posix())
        else:
            other.append((rel.as_posix(), f"unsupported file type ({path.suffix or 'no extension'}); "
                                          "Side-Step reads wav, flac, mp3 and ogg"))
    return audio, other


def assign_sample_ids(files: list[str]) -> dict[str, str]:
    """Output names: the stem, with subfolders joined by "__" ("sub/song.wav" -> "sub__song").

    Names that would still collide ("song.wav" and "song.flac") get their extension, then
    a hash of their path, so no two files ever write the same `.pt`.
    """
    def base(rel: str) -> str:
        p = PurePosixPath(rel)
        name = "__".join((*p.parent.parts, p.stem))
        raw = name.encode("utf-8", "surrogateescape")
        if "\ufffd" in raw.decode("utf-8", "replace") or len(raw) > SAMPLE_ID_MAX_BYTES:
            # Not UTF-8, or too long for a file name once ".<hash>.pt" is added: a readable prefix + a hash.
            short = raw[:SAMPLE_ID_MAX_BYTES].decode("utf-8", "replace").replace("\ufffd", "_")
            return f"{short}~{_path_hash(rel)}"
        return name

    ids = {rel: base(rel) for rel in files}
    for attempt in ("ext", "hash"):
        counts: dict[str, int] = {}
        for value in ids.values():
            counts[value] = counts.get(value, 0) + 1
        for rel, value in ids.items():
            if counts[value] > 1:
                suffix = PurePosixPath(rel).suffix.lstrip(".").lower() if attempt == "ext" else _path_hash(rel)
                ids[rel] = f"{value}_{suffix}"
    return ids


def _path_hash(rel: str) -> str:
    return hashlib.sha256(rel.encode("utf-8", "surrogateescape")).hexdigest()[:8]


def shown(rel: str) -> str:
    """A file name as it can be printed: bytes that are not UTF-8 shown as \\xNN."""
    return rel.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def file_sha256(path: Path) -> str:
    check_readable(path)  # a broken link or a folder gets its own reason
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    except OSError as err:
        raise AudioError(f"unreadable: {err.strerror or err}") from None
    return digest.hexdigest()


def sample_seed(seed: int, sample_id: str) -> int:
    """Per-sample RNG seed from (--seed, sample id) only: independent of processing order."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{sample_id}".encode()).digest()[:8], "little") & (2**63 - 1)


def _folder_stamp(folder: Path | None) -> list:
    """Names, sizes and mtimes of a model folder's files: a re-downloaded model invalidates outputs."""
    if folder is None or not folder.is_dir():
        return []
    return [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.iterdir()) if p.is_file()]


def _fingerprint(job: _Job, settings: Settings, dataset: DatasetMeta, models: dict[str, Any]) -> str:
    record = dict(source=job.rel, audio_path=str(job.path.resolve()), sha256=job.sha256,
                  entry=job.entry.as_dict() if job.entry else None, in_genre_subset=job.in_genre_subset,
                  custom_tag=dataset.custom_tag, tag_position=dataset.tag_position,
                  settings=asdict(settings), models=models)
    return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()


def sample_text(rel: str, path: Path, entry: SampleMeta | None, dataset: DatasetMeta, in_genre_subset: bool,
                duration: float) -> tuple[dict[str, Any], str, str, str]:
    """(.pt metadata, prompt caption, prompt, lyrics) of the song at `rel` (docs/design.md §5.3);
    `train.py dataset --show-prompt` prints the same prompt through this function."""
    e = entry or SampleMeta(key=PurePosixPath(rel).name)
    caption = _cut(e.caption or caption_from_filename(shown(PurePosixPath(rel).stem)), STORED_MAX_CHARS)
    tag = e.custom_tag or dataset.custom_tag
    # The prompt's parts are cut before tokenizing (the tokens kept do not change, see CAPTION_MAX_CHARS).
    text, prompt = sample_prompt(_cut(caption, CAPTION_MAX_CHARS), _cut(e.genre or "", CAPTION_MAX_CHARS),
                                 _cut(e.prompt_override, CAPTION_MAX_CHARS), in_genre_subset,
                                 _cut(tag, CAPTION_MAX_CHARS), dataset.tag_position, e.bpm, e.timesignature,
                                 e.keyscale, duration)
    lyrics = training_lyrics(_cut(e.lyrics, STORED_MAX_CHARS))
    instrumental = e.is_instrumental if e.is_instrumental is not None else lyrics == training_lyrics(None)
    metadata = dict(audio_path=str(path.resolve()), filename=PurePosixPath(rel).name, caption=caption,
                    lyrics=lyrics, duration=float(duration), bpm=e.bpm, keyscale=e.keyscale,
                    timesignature=e.timesignature, genre=_cut(e.genre or "", STORED_MAX_CHARS),
                    custom_tag=_cut(tag or "", STORED_MAX_CHARS),
                    prompt_override=_cut(e.prompt_override, STORED_MAX_CHARS), is_instrumental=bool(instrumental))
    return metadata, text, prompt, lyrics


# ---------------------------------------------------------------------------------------
# The computations (docs/design.md §5.2-§5.5)


def _posterior(vae, audio: torch.Tensor, mode: str, generator: torch.Generator | None) -> torch.Tensor:
    dist = vae.encode(audio).latent_dist
    return dist.mean if mode == "mean" else dist.sample(generator=generator)


@torch.no_grad()
def encode_audio(vae, waveform: torch.Tensor, mode: str = "sample", generator: torch.Generator | None = None,
                 chunk_samples: int | None = None, overlap_samples: int | None = None) -> torch.Tensor:
    """[2, S] audio -> [T, 64] latents, no scaling (docs/design.md §5.2, §8 Q15).

    Audio longer than the chunk is encoded in overlapping windows, each sampled on its own
    (upstream's scheme; diffusers' built-in tiling joins features and samples once, which is
    a different noise draw), with the overlap trimmed off in latent frames.
    """
    rate, hop = vae.config.sampling_rate, vae.hop_length
    chunk = chunk_samples or int(CHUNK_SECONDS * rate)
    overlap = overlap_samples if overlap_samples is not None else int(OVERLAP_SECONDS * rate)
    param = next(vae.parameters())
    audio = waveform[None].to(device=param.device, dtype=param.dtype)
    total = audio.shape[-1]
    if total <= chunk:
        return _posterior(vae, audio, mode, generator)[0].T.contiguous()
    stride = chunk - 2 * overlap
    if stride <= 0:
        raise ValueError(f"chunk ({chunk}) must exceed twice the overlap ({overlap})")
    cores = []
    for i in range(math.ceil(total / stride)):
        core_start, core_end = i * stride, min((i + 1) * stride, total)
        win_start, win_end = max(0, core_start - overlap), min(total, core_end + overlap)
        latent = _posterior(vae, audio[..., win_start:win_end], mode, generator)
        trim_left = round((core_start - win_start) / hop)
        trim_right = round((win_end - core_end) / hop)
        cores.append(latent[..., trim_left:latent.shape[-1] - trim_right])
    return torch.cat(cores, dim=-1)[0].T.contiguous()


@torch.no_grad()
def embed_prompt(tokenizer, text_model, prompt: str) -> tuple[torch.Tensor, torch.Tensor]:
    """[256, D] last hidden state and [256] float mask (docs/design.md §5.4). §8 Q10: the model runs
    without the attention mask (causal only), on max-length-padded input."""
    device = next(text_model.parameters()).device
    tokens = tokenizer(prompt[:CAPTION_MAX_CHARS + 4096], padding="max_length", max_length=TEXT_MAX_LENGTH,
                       truncation=True, return_tensors="pt")
    hidden = text_model(input_ids=tokens.input_ids.to(device), use_cache=False).last_hidden_state
    return hidden[0], tokens.attention_mask[0].to(device=device, dtype=hidden.dtype)


@torch.no_grad()
def embed_lyrics(tokenizer, text_model, lyrics: str) -> tuple[torch.Tensor, torch.Tensor]:
    """[512, D] token-embedding rows only (no transformer) and [512] float mask (docs/design.md §5.4, §8 Q11)."""
    embed = text_model.get_input_embeddings()
    tokens = tokenizer(lyrics[:LYRICS_MAX_CHARS], padding="max_length", max_length=LYRIC_MAX_LENGTH, truncation=True,
                       return_tensors="pt")
    rows = embed(tokens.input_ids.to(embed.weight.device))
    return rows[0], tokens.attention_mask[0].to(device=rows.device, dtype=rows.dtype)


@torch.no_grad()
def encode_conditions(condition_encoder, text: torch.Tensor, text_mask: torch.Tensor, lyrics: torch.Tensor,
                      lyric_mask: torch.Tensor, timbre_dim: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """[L, D] encoder hidden states and [L] bool mask, L = 512 + 1 + 256 (docs/design.md §5.5).

    The timbre reference is `zeros[1, 1, 64]` with order mask [0] (docs/design.md §8 Q12, LoRA mode): the
    tensors are the same whichever adapter is trained on them.
    """
    param = next(condition_encoder.parameters())
    to = dict(device=param.device, dtype=param.dtype)
    hidden, mask = condition_encoder(
        text_hidden_states=text[None].to(**to), text_attention_mask=text_mask[None].to(**to),
        lyric_hidden_states=lyrics[None].to(**to), lyric_attention_mask=lyric_mask[None].to(**to),
        refer_audio_acoustic_hidden_states_packed=torch.zeros(1, 1, timbre_dim, **to),
        refer_audio_order_mask=torch.zeros(1, dtype=torch.long, device=param.device))
    return hidden[0], mask[0].bool()


def context_latents(silence: torch.Tensor, frames: int) -> torch.Tensor:
    """[T, 128] = silence latent frames | ones (docs/design.md §4.2, §8 Q20); `silence` is [1, T_sil, 64]."""
    if silence.shape[1] < frames:
        raise SidestepError(f"silence_latent.pt holds {silence.shape[1]} frames but a sample needs {frames}; "
                            "use the released silence_latent.pt or a lower --max-duration")
    src = silence[0, :frames]
    return torch.cat([src, torch.ones_like(src)], dim=-1)


# ---------------------------------------------------------------------------------------
# Progress and summary


@contextmanager
def _progress(console: Console, title: str, total: int) -> Iterator[Callable[[str], None]]:
    """Rich bar (count, elapsed, ETA) on a terminal; plain lines with --plain or when piped."""
    if console.is_terminal:
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TextColumn("ETA"), TimeRemainingColumn())
        with Progress(*columns, console=console) as bar:
            task = bar.add_task(title, total=total)
            yield lambda name: bar.update(task, advance=1, description=f"{title}: {name}")
        return
    start, done = time.monotonic(), 0
    console.print(f"{title}: {total} file(s)", markup=False, highlight=False)

    def advance(name: str) -> None:
        nonlocal done
        done += 1
        elapsed = time.monotonic() - start
        eta = elapsed / done * (total - done)
        console.print(f"{title} [{done}/{total}] {name} (elapsed {elapsed:.0f}s, ETA {eta:.0f}s)",
                      markup=False, highlight=False)

    yield advance


def summary_table(report: Report, console: Console) -> Table:
    table = Table(title=f"Preprocessing: {report.num_samples} sample(s) in {report.output_dir}",
                  box=box.SIMPLE if console.is_terminal else box.ASCII)
    for column in ("file", "result", "reason"):
        table.add_column(column, overflow="fold")
    for rel in report.processed:
        table.add_row(shown(rel), "processed", report.notes.get(rel, ""))
    for rel in report.reused:
        note = report.notes.get(rel)
        table.add_row(shown(rel), "unchanged", "kept from an earlier run (same audio, metadata and settings)"
                      + (f"; {note}" if note else ""))
    for rel, reason in report.skipped:
        table.add_row(shown(rel), "skipped", reason)
    return table


def _print_summary(report: Report, console: Console) -> None:
    console.print(summary_table(report, console))
    for key in report.unmatched_entries:
        console.print(f"dataset JSON entry '{key}' matches no audio file in --audio-dir; fix its filename or "
                      "audio_path, or remove it", markup=False, highlight=False)
    for key in report.duplicate_entries:
        console.print(f"dataset JSON entry '{key}' is a duplicate: an earlier entry describes that file and is the "
                      "one used; remove one of them", markup=False, highlight=False)
    if report.files_without_entry:
        console.print(f"{len(report.files_without_entry)} file(s) have no dataset JSON entry; their caption is "
                      f"their file name: {', '.join(map(shown, report.files_without_entry))}", markup=False,
                      highlight=False)


# ---------------------------------------------------------------------------------------
# Pipeline


def _resolve_runtime(config: Config) -> tuple[torch.device, torch.dtype, str]:
    """--device / --precision: auto means bf16 on CUDA/XPU, fp16 on MPS, fp32 on the CPU."""
    from sidestep.runtime import TORCH_DTYPE, resolve_device, resolve_precision

    device = resolve_device(config.device)
    precision = resolve_precision(config.precision, device)
    return device, TORCH_DTYPE[precision], precision


def _check_options(config: Config) -> tuple[Path, Path, Path]:
    missing = [flag for flag, value in (("--audio-dir", config.audio_dir), ("--tensor-output", config.tensor_output),
                                        ("--checkpoint-dir", config.checkpoint_dir)) if not value]
    if missing:
        raise SidestepError(f"preprocess: pass {', '.join(missing)} (songs in, tensors out, and the checkpoints "
                            "root holding vae/, Qwen3-Embedding-0.6B/ and the model)")
    audio_dir, out = Path(config.audio_dir).expanduser(), Path(config.tensor_output).expanduser()
    if not audio_dir.is_dir():
        raise SidestepError(f"{audio_dir}: audio folder not found; check --audio-dir")
    # Above the audio folder, the scan would take every song for the output's own files.
    check_output_folder(out, "--tensor-output", [("--checkpoint-dir", config.checkpoint_dir)],
                        [("--dataset-json", config.dataset_json)], (MANIFEST,), [("--audio-dir", audio_dir)])
    return audio_dir, out, Path(config.checkpoint_dir).expanduser()


def _check_writable(out: Path) -> None:
    """Create the output folder and prove a file can be written there, before any model is loaded."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as err:
        raise write_error(out, err, "the tensors", None if err.errno in (errno.ENOSPC, errno.EDQUOT) else
                          "choose a --tensor-output folder you can write to") from None


def _clean_temp_files(out: Path) -> None:
    """Temp files a killed run left behind (atomic writes name them `.<name>.<random>.tmp`)."""
    for folder in (out, out / PASS1_DIR, out / STATE_DIR):
        if folder.is_dir():
            for tmp in folder.glob(".*.tmp"):
                if tmp.is_file():
                    tmp.unlink(missing_ok=True)


def song_failure(job: _Job, err: Exception) -> str:
    """The reason for a song that failed in an unforeseen way (its traceback goes to the log)."""
    log.error("preprocessing %s failed", shown(job.rel), exc_info=err)
    if isinstance(err, SidestepError):  # already one line saying what and how to fix
        return str(err)
    if isinstance(err, (MemoryError, torch.OutOfMemoryError)):
        return ("out of memory while processing it; lower --max-duration, or free memory (close other programs) and "
                "run again")
    detail = " ".join(str(err).split())[:200] or "no detail"
    return (f"could not be processed ({type(err).__name__}: {detail}); run again, and report it with sidestep.log "
            "if the file plays elsewhere")


def _free_models() -> None:
    """Collect the pass's models and hand their memory back (GPU cache; on Linux also the
    C heap, which glibc would otherwise keep for the process: RSS would not go down)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    trim_heap()


def _pass1_path(out: Path, job: _Job) -> Path:
    return out / PASS1_DIR / f"{job.sample_id}.{job.fingerprint[:16]}.pt"


def _state_path(out: Path, sample_id: str) -> Path:
    return out / STATE_DIR / f"{sample_id}.json"


def _read_state(out: Path, job: _Job) -> dict | None:
    """What an earlier run recorded for this sample, if its fingerprint still matches:
    {"info": ...} for a finished sample (whose .pt must still be there) or {"skipped": reason}."""
    path = _state_path(out, job.sample_id)
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(state, dict) or state.get("fingerprint") != job.fingerprint:
        return None
    if not isinstance(state.get("info", {}), dict) or not isinstance(state.get("skipped", ""), str):
        return None  # damaged: the song is processed again
    if "info" in state and not (out / job.pt_name).is_file():
        return None
    return state


def _write_state(out: Path, job: _Job, **record: Any) -> None:
    atomic_write_text(_state_path(out, job.sample_id), json.dumps(dict(fingerprint=job.fingerprint, **record),
                                                                  indent=1))


class _Run:
    """One preprocessing run: plans the jobs, runs the passes, writes the manifest."""

    def __init__(self, config: Config, console: Console, on_event: Event | None, chunk_seconds: float):
        self.audio_dir, self.out, self.root = _check_options(config)
        self.config, self.console, self.on_event = config, console, on_event or (lambda name, info: None)
        self.parts = discovery.locate_parts(self.root, config.model_variant)
        self.device, self.dtype, precision = _resolve_runtime(config)
        self.settings = Settings(max_duration=float(config.max_duration), vae_mode=config.vae_mode,
                                 seed=int(config.seed), dtype=precision, chunk_seconds=float(chunk_seconds))
        self.dataset = read_dataset_json(config.dataset_json) if config.dataset_json else DatasetMeta()
        self.report = Report(output_dir=self.out)
        self.infos: dict[str, dict] = {}  # sample id -> manifest info of finished samples
        self.jobs = self._plan()

    def _plan(self) -> list[_Job]:
        exclude = (self.out,) + ((Path(self.config.dataset_json),) if self.config.dataset_json else ())
        files, unsupported = scan_audio_dir(self.audio_dir, exclude)
        if not files and not unsupported:
            raise SidestepError(f"{self.audio_dir}: no audio files found (wav, flac, mp3, ogg); check --audio-dir")
        self.report.skipped.extend(unsupported)
        matched, unmatched = match_entries(files, self.dataset)
        described = {PurePosixPath(rel).name for rel in matched}  # a second entry for a file is a duplicate
        self.report.unmatched_entries = [e.key for e in unmatched if e.key not in described]
        self.report.duplicate_entries = [e.key for e in unmatched if e.key in described]
        if self.config.dataset_json:
            self.report.files_without_entry = [f for f in files if f not in matched]
        ids, subset = assign_sample_ids(files), genre_subset(len(files), self.dataset.genre_ratio)
        models = dict(dit=str(self.parts.model.path.resolve()), vae=str(self.parts.vae.resolve()),
                      text_encoder=str(self.parts.text_encoder.resolve()),
                      silence=str(self.parts.silence_latent.resolve()) if self.parts.silence_latent else None,
                      stamps=[_folder_stamp(p) for p in (self.parts.model.path, self.parts.vae, self.parts.text_encoder)])
        jobs = []
        for i, rel in enumerate(files):
            job = _Job(rel=rel, path=self.audio_dir / rel, sample_id=ids[rel], entry=matched.get(rel),
                       in_genre_subset=i in subset)
            try:
                job.sha256 = file_sha256(job.path)
            except AudioError as err:
                self.report.skipped.append((rel, str(err)))
                continue
            job.fingerprint = _fingerprint(job, self.settings, self.dataset, models)
            jobs.append(job)
        return jobs

    # -- pass 1 ---------------------------------------------------------------------------

    def _sample_text(self, job: _Job, duration: float) -> tuple[dict[str, Any], str, str, str]:
        return sample_text(job.rel, job.path, job.entry, self.dataset, job.in_genre_subset, duration)

    def _pass1_one(self, job: _Job, vae, tokenizer, text_model) -> None:
        clip = load_audio(job.path, vae.config.sampling_rate, self.settings.max_duration, min_samples=vae.hop_length)
        generator = torch.Generator("cpu").manual_seed(sample_seed(self.settings.seed, job.sample_id))
        chunk = int(self.settings.chunk_seconds * vae.config.sampling_rate)
        overlap = int(self.settings.overlap_seconds * vae.config.sampling_rate)
        latents = encode_audio(vae, clip.waveform, self.settings.vae_mode, generator, chunk, overlap)
        metadata, text, prompt, lyrics = self._sample_text(job, clip.original_duration)
        text_hidden, text_mask = embed_prompt(tokenizer, text_model, prompt)
        lyric_hidden, lyric_mask = embed_lyrics(tokenizer, text_model, lyrics)
        info = dict(source=job.rel, sha256=job.sha256, duration=clip.original_duration,
                    used_seconds=round(clip.duration, 6), truncated=clip.truncated, source_rate=clip.source_rate,
                    source_channels=clip.source_channels, caption=text, has_json_entry=job.entry is not None,
                    is_instrumental=metadata["is_instrumental"], language=job.entry.language if job.entry else None)
        if clip.note:
            info["note"] = clip.note
        atomic_save_tensors(_pass1_path(self.out, job), dict(
            target_latents=latents.cpu(), text_hidden_states=text_hidden.cpu(), text_attention_mask=text_mask.cpu(),
            lyric_hidden_states=lyric_hidden.cpu(), lyric_attention_mask=lyric_mask.cpu(), metadata=metadata,
            info=info))

    def _skip(self, job: _Job, reason: str, advance: Callable[[str], None]) -> None:
        self.report.skipped.append((job.rel, reason))
        advance(f"{shown(job.rel)} (skipped: {reason.split(';')[0]})")  # the fix is in the summary

    def run_pass1(self, jobs: list[_Job]) -> None:
        """VAE + text encoder only. Models are locals: they are gone when this returns."""
        self.on_event("pass_start", {"pass": 1})
        if not jobs:
            return
        vae = load_vae(self.parts.vae, self.device, self.dtype)
        tokenizer, text_model = load_text_encoder(self.parts.text_encoder, self.device, self.dtype)
        self.on_event("loaded", {"pass": 1, "models": {"vae": vae, "text_encoder": text_model}})
        with _progress(self.console, "Pass 1/2 (VAE + text encoder)", len(jobs)) as advance:
            for job in jobs:
                try:
                    self._pass1_one(job, vae, tokenizer, text_model)
                    advance(shown(job.rel))
                except WriteError:  # a full or read-only disk stops the run (what was written is kept)
                    raise
                except AudioError as err:
                    # Recorded so that a rerun skips it without loading any model.
                    _write_state(self.out, job, skipped=str(err))
                    self._skip(job, str(err), advance)
                except Exception as err:  # one song never sinks the run; not recorded, so a rerun tries again
                    self._skip(job, song_failure(job, err), advance)
        del vae, tokenizer, text_model
        self.on_event("pass_end", {"pass": 1})

    # -- pass 2 ---------------------------------------------------------------------------

    def _pass2_one(self, job: _Job, dit, silence: torch.Tensor) -> None:
        data = torch.load(_pass1_path(self.out, job), map_location="cpu", weights_only=True)
        hidden, mask = encode_conditions(dit.condition_encoder, data["text_hidden_states"],
                                         data["text_attention_mask"], data["lyric_hidden_states"],
                                         data["lyric_attention_mask"], dit.config["timbre_hidden_dim"])
        latents = data["target_latents"].to(self.dtype)
        frames = latents.shape[0]
        sample = dict(target_latents=latents.contiguous(), attention_mask=torch.ones(frames, dtype=self.dtype),
                      encoder_hidden_states=hidden.cpu().contiguous(), encoder_attention_mask=mask.cpu().contiguous(),
                      context_latents=context_latents(silence, frames).to(self.dtype).contiguous(),
                      metadata=data["metadata"])
        atomic_save_tensors(self.out / job.pt_name, sample)
        info = dict(data["info"], file=job.pt_name, latent_frames=frames,
                    shapes={k: list(v.shape) for k, v in sample.items() if isinstance(v, torch.Tensor)})
        _write_state(self.out, job, info=info)
        _pass1_path(self.out, job).unlink(missing_ok=True)  # only once the sample is safely on disk
        self.infos[job.sample_id] = info

    def run_pass2(self, jobs: list[_Job]) -> None:
        """DiT condition encoder only (the decoder is never read from disk)."""
        self.on_event("pass_start", {"pass": 2})
        if not jobs:
            return
        dit = load_model_dit(self.parts.model, self.device, self.dtype, silence_latent=self.parts.silence_latent,
                             with_transformer=False)
        self.on_event("loaded", {"pass": 2, "models": {"condition_encoder": dit.condition_encoder,
                                                       "transformer": dit.transformer}})
        silence = dit.silence_latent().detach().cpu()
        with _progress(self.console, "Pass 2/2 (condition encoder)", len(jobs)) as advance:
            for job in jobs:
                try:
                    self._pass2_one(job, dit, silence)
                    advance(shown(job.rel))
                except WriteError:
                    raise
                except Exception as err:  # its pass-1 file is dropped: a rerun redoes the song from the audio
                    _pass1_path(self.out, job).unlink(missing_ok=True)
                    self._skip(job, song_failure(job, err), advance)
        del dit
        self.on_event("pass_end", {"pass": 2})

    # -- the whole run --------------------------------------------------------------------

    def execute(self, passes: tuple[int, ...]) -> Report:
        _check_writable(self.out)
        _clean_temp_files(self.out)
        todo = []
        for job in self.jobs:
            state = _read_state(self.out, job) or {}
            if "info" in state:
                self.infos[job.sample_id] = state["info"]
                self.report.reused.append(job.rel)
            elif "skipped" in state:
                self.report.skipped.append((job.rel, state["skipped"]))
            else:
                todo.append(job)
        if 1 in passes:
            self.run_pass1([j for j in todo if not _pass1_path(self.out, j).is_file()])
            _free_models()
        ready = [j for j in todo if _pass1_path(self.out, j).is_file()]
        if 2 in passes:
            self.run_pass2(ready)
            _free_models()
            self.report.processed = [j.rel for j in ready]
            self._finish()
        return self.report

    def _finish(self) -> None:
        """Drop what no longer belongs to the dataset, write the manifest, print the summary."""
        skipped = {rel for rel, _ in self.report.skipped}
        for job in self.jobs:
            if job.sample_id not in self.infos and job.rel not in skipped:
                self.report.skipped.append((job.rel, "not preprocessed: pass 1 has not run for it"))
        live = {j.sample_id for j in self.jobs if j.sample_id in self.infos}
        bad = {j.sample_id for j in self.jobs if j.rel in skipped}
        for state in sorted((self.out / STATE_DIR).glob("*.json")):
            if state.stem not in live:  # a song removed or now unusable: its old tensors must go
                (self.out / f"{state.stem}.pt").unlink(missing_ok=True)
                if state.stem not in bad:
                    state.unlink(missing_ok=True)
        shutil.rmtree(self.out / PASS1_DIR, ignore_errors=True)
        self.report.samples = [j.pt_name for j in self.jobs if j.sample_id in live]
        self.report.notes = {i["source"]: i["note"] for i in self.infos.values() if i.get("note")}
        self.report.skipped.sort()
        atomic_write_text(self.out / MANIFEST, json_text(self._manifest()))

    def _manifest(self) -> dict[str, Any]:
        infos = [self.infos[j.sample_id] for j in self.jobs if j.sample_id in self.infos]
        instrumental = bool(infos) and all(i.get("is_instrumental") for i in infos)
        entry = self.parts.model
        return {
            "metadata": dict(name=self.out.name, custom_tag=self.dataset.custom_tag,
                             tag_position=self.dataset.tag_position,
                             created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                             num_samples=len(infos), all_instrumental=instrumental,
                             genre_ratio=self.dataset.genre_ratio),
            "samples": [i["file"] for i in infos],
            "num_samples": len(infos),
            "model": dict(variant=self.config.model_variant, name=entry.name, path=str(entry.path),
                          base_variant=entry.base_variant, is_turbo=entry.is_turbo, family=entry.family,
                          encoder_width=entry.encoder_width),
            "settings": asdict(self.settings),
            "sample_info": infos,
            "skipped": [dict(file=f, reason=r) for f, r in self.report.skipped],
            "unmatched_json_entries": self.report.unmatched_entries,
            "duplicate_json_entries": self.report.duplicate_entries,
            "files_without_json_entry": self.report.files_without_entry,
            "audio_dir": str(self.audio_dir.resolve()),
            "dataset_json": str(Path(self.config.dataset_json).resolve()) if self.config.dataset_json else None,
        }


def preprocess_dataset(config: Config, console: Console | None = None, on_event: Event | None = None,
                       passes: tuple[int, ...] = (1, 2), chunk_seconds: float = CHUNK_SECONDS) -> Report:
    """Preprocess `config.audio_dir` into `config.tensor_output` (a ready --dataset-dir).

    Prints progress and a summary table. Raises SidestepError when no sample succeeded.
    `passes` runs one pass alone (pass 2 picks up what an earlier pass 1 left on disk);
    `on_event(name, info)` is told when each pass starts and ends and which models it loaded;
    `chunk_seconds` is the VAE window length (tests shorten it to exercise tiling).
    """
    from sidestep.console import get_console

    console = console or get_console()
    run = _Run(config, console, on_event, chunk_seconds)
    report = run.execute(tuple(passes))
    if 2 not in passes:
        return report
    _print_summary(report, console)
    if not report.num_samples:
        raise SidestepError(f"{run.audio_dir}: no sample could be preprocessed ({len(report.skipped)} file(s) "
                            "skipped, reasons above); fix or replace those files")
    return report
