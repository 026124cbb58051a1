"""The dataset contract: what a preprocessed folder holds, defined once and read only through here.

A dataset folder holds one `<sample>.pt` per song (a dict of the tensors in `TENSOR_KEYS` plus a
`metadata` dict; docs/design.md §5.6) and `manifest.json`, which names the samples in training order
and records how they were made. Without a manifest every `*.pt` in the folder is a sample (as
upstream's trainer does).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sidestep.errors import SidestepError

MANIFEST = "manifest.json"
# The tensors of one sample, in the order a batch holds them.
TENSOR_KEYS = ("target_latents", "attention_mask", "encoder_hidden_states", "encoder_attention_mask",
               "context_latents")
FRAME_KEYS = ("target_latents", "attention_mask", "context_latents")  # indexed by latent frame
SAMPLE_KEYS = TENSOR_KEYS + ("metadata",)  # everything a sample file holds


@dataclass(frozen=True)
class Manifest:
    """What `manifest.json` says (empty fields when the folder has none)."""

    folder: Path
    samples: list[str] | None = None  # file names in training order; None: no manifest
    metadata: dict[str, Any] = field(default_factory=dict)  # name, custom_tag, tag_position, genre_ratio, ...
    model: dict[str, Any] = field(default_factory=dict)  # the model the tensors were made with
    lengths: dict[str, int] = field(default_factory=dict)  # file name -> latent frames
    raw: bytes = b""

    @property
    def trigger(self) -> str | None:
        """The dataset's custom tag (the trigger word), if it has one."""
        return self.metadata.get("custom_tag") or None

    @property
    def tag_position(self) -> str:
        return self.metadata.get("tag_position") or "prepend"

    @property
    def family(self) -> str | None:
        """"2B" or "XL": the family of the model the tensors were made with (None: not recorded)."""
        value = self.model.get("family")
        return value if value in ("2B", "XL") else None

    @property
    def encoder_width(self) -> int | None:
        """The width of the condition tensors (`encoder_hidden_states`) as recorded (None: not recorded)."""
        value = self.model.get("encoder_width")
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    def files(self) -> list[Path]:
        """The sample files, in manifest order (sorted when there is no manifest); missing ones are an error."""
        if self.samples is None:
            return sorted(self.folder.glob("*.pt"))
        paths = [self.folder / n for n in self.samples]
        missing = [p.name for p in paths if not p.is_file()]
        if missing:
            raise SidestepError(f"{self.folder / MANIFEST}: names {len(missing)} missing file(s) "
                                f"({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}); rerun "
                                "train.py preprocess on this folder")
        return paths

    def fingerprint(self) -> str:
        """Identifies the dataset's content (the manifest's bytes, or the sample names without one)."""
        digest = hashlib.sha256(self.raw if self.samples is not None else
                                "\n".join(p.name for p in self.files()).encode())
        return digest.hexdigest()[:16]


def _plain_name(name: str) -> bool:
    """A file directly in the folder: no separators, NUL, '.'/'..', and short enough for any file system."""
    return (bool(name) and name not in (".", "..") and not any(c in name for c in "/\\\0")
            and len(name.encode("utf-8", "surrogateescape")) <= 255)


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _lengths(infos: Any) -> dict[str, int]:
    """file -> latent frames from `sample_info`; entries that do not say are left out (the file tells)."""
    lengths = {}
    for info in infos if isinstance(infos, list) else ():
        try:
            name, frames = str(info["file"]), int(info["latent_frames"])
        except (KeyError, TypeError, ValueError, OverflowError):
            continue
        if 0 < frames < 1 << 31:
            lengths[name] = frames
    return lengths


def read_manifest(folder: str | Path) -> Manifest:
    """The dataset folder's manifest; a missing folder or an unreadable manifest is a one-line error."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SidestepError(f"{folder}: dataset folder not found; pass --dataset-dir pointing at preprocessed "
                            "tensors (train.py preprocess writes them)")
    path = folder / MANIFEST
    if not path.is_file():
        return Manifest(folder=folder)
    try:
        raw = path.read_bytes()
        data = json.loads(raw.decode("utf-8"))
        names = data["samples"]
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise TypeError
        bad = next((n for n in names if not _plain_name(n)), None)
        if bad is not None:
            raise SidestepError(f"{path}: sample name {bad[:80]!r} is not a file name in the dataset folder; rerun "
                                "train.py preprocess or delete the manifest to use every *.pt in the folder")
    except (OSError, UnicodeDecodeError, ValueError, RecursionError, KeyError, TypeError):
        raise SidestepError(f"{path}: unreadable or has no 'samples' list; rerun train.py preprocess "
                            "or delete it to use every *.pt in the folder") from None
    return Manifest(folder=folder, samples=names, metadata=_dict(data.get("metadata")), model=_dict(data.get("model")),
                    lengths=_lengths(data.get("sample_info")), raw=raw)


def _sample_width(path: Path) -> int | None:
    """The last dimension of a sample file's `encoder_hidden_states` (None when it cannot be read: the
    dataset reports that file itself when training reaches it)."""
    import torch

    try:
        return int(torch.load(path, map_location="cpu", weights_only=True)["encoder_hidden_states"].shape[-1])
    except Exception:  # a bad pickle raises many types
        return None


def check_made_for(manifest: Manifest, model: Any, recorded_only: bool = False) -> None:
    """Refuse tensors preprocessed for another model family, or at another condition width.

    `model` is a discovery `ModelEntry` (its name, family and encoder_width). XL's condition encoder
    has 2B's width (2048) but other weights, so the family recorded in the manifest is what tells
    them apart; a dataset without that record has its first sample's `encoder_hidden_states` width
    compared with the model's (docs/design.md §2.4, §5.6); `recorded_only` skips that comparison (before
    the model's weights have shown that its config.json can be trusted).
    """
    fix = (f"rerun train.py preprocess with --model-variant {model.name} into a new --tensor-output folder "
           "and train on that")
    made_with = manifest.model.get("name") or "another model"
    if manifest.family is not None and manifest.family != model.family:
        raise SidestepError(f"{manifest.folder}: preprocessed with {made_with} (ACE-Step {manifest.family}), "
                            f"cannot train {model.name} (ACE-Step {model.family}); {fix}")
    width, source = manifest.encoder_width, "its manifest records"
    if width is None and recorded_only:
        return
    if width is None:
        paths = manifest.files()
        width, source = (_sample_width(paths[0]) if paths else None), f"{paths[0].name if paths else ''} holds"
    if width is not None and model.encoder_width is not None and width != model.encoder_width:
        raise SidestepError(f"{manifest.folder}: {source} condition tensors {width} wide, {model.name} "
                            f"expects {model.encoder_width} (made for another model); {fix}")


def has_samples(folder: str | Path) -> bool:
    """A folder that looks like a dataset: a manifest or at least one sample file."""
    folder = Path(folder)
    return (folder / MANIFEST).is_file() or any(folder.glob("*.pt"))


def write_dataset(folder: str | Path, samples: dict[str, dict[str, Any]], metadata: dict[str, Any]) -> Path:
    """A dataset folder as preprocessing leaves it, from samples already made (file name -> sample dict):
    each sample file, then `manifest.json` naming them in order. Every write is atomic. Used by the memory
    probe and the tests' fixtures; preprocessing writes its own richer manifest as songs finish."""
    from sidestep.io import atomic_save_tensors, atomic_write_text, json_text

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name, sample in samples.items():
        atomic_save_tensors(folder / name, sample)
    atomic_write_text(folder / MANIFEST, json_text({"metadata": dict(metadata, num_samples=len(samples)),
                                                    "samples": list(samples), "num_samples": len(samples)}))
    return folder
