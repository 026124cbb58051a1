"""Preprocessed tensors -> training batches.

A dataset folder holds one `.pt` per sample (SPEC 4.6 keys) and a `manifest.json` naming
them; without a manifest every `*.pt` in the folder is used (as upstream does).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch.utils.data import Dataset

from sidestep.errors import SidestepError

TENSOR_KEYS = ("target_latents", "attention_mask", "encoder_hidden_states", "encoder_attention_mask",
               "context_latents")
FRAME_KEYS = ("target_latents", "attention_mask", "context_latents")  # indexed by latent frame
MANIFEST = "manifest.json"


def list_samples(folder: str | Path) -> list[Path]:
    """The sample files of a dataset folder, in manifest order (or sorted when there is none)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SidestepError(f"{folder}: dataset folder not found; pass --dataset-dir pointing at preprocessed "
                            "tensors (train.py preprocess writes them)")
    manifest = folder / MANIFEST
    if not manifest.is_file():
        return sorted(folder.glob("*.pt"))
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
        names = data["samples"]
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise TypeError
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError):
        raise SidestepError(f"{manifest}: unreadable or has no 'samples' list; rerun train.py preprocess "
                            "or delete it to use every *.pt in the folder") from None
    paths = [folder / n for n in names]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise SidestepError(f"{manifest}: names {len(missing)} missing file(s) ({', '.join(missing[:3])}"
                            f"{', ...' if len(missing) > 3 else ''}); rerun train.py preprocess on this folder")
    return paths


class SampleError(SidestepError):
    """A sample file that cannot be loaded. Raised in a DataLoader worker, it comes back to the main
    process re-built as `SampleError("Caught SampleError in DataLoader worker ...<traceback>...")`:
    only the original one-line message is kept, so the user never sees the worker's traceback."""

    def __init__(self, message: str):
        if "\nOriginal Traceback" in message:
            last = message.strip().splitlines()[-1]
            message = last.split(": ", 1)[1] if ": " in last else last
        super().__init__(message)


def load_sample(path: Path) -> dict[str, torch.Tensor]:
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
        sample = {k: data[k] for k in TENSOR_KEYS}
    except Exception as err:  # a bad pickle raises many types
        raise SampleError(f"{path}: not a readable preprocessed sample ({type(err).__name__}); "
                          "rerun train.py preprocess") from None
    return sample


def _manifest_lengths(folder: Path) -> dict[str, int]:
    try:
        data = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        return {info["file"]: int(info["latent_frames"]) for info in data.get("sample_info", [])}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


class PreprocessedDataset(Dataset):
    """Samples by index, or by `(index, offset, length[, weight_num, weight_den])` keys from
    `BucketBatchSampler` (a crop, and the sample's loss weight weight_num / weight_den)."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.paths = list_samples(self.folder)
        self._lengths: list[int] | None = None

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def lengths(self) -> list[int]:
        """Latent frames per sample (from the manifest; files are opened only when it lacks them)."""
        if self._lengths is None:
            known = _manifest_lengths(self.folder)
            self._lengths = [known.get(p.name) or load_sample(p)["target_latents"].shape[0] for p in self.paths]
        return self._lengths

    def __getitem__(self, key: int | tuple[int, ...]) -> dict[str, torch.Tensor]:
        index, offset, length, *weight = key if isinstance(key, tuple) else (key, 0, None)
        sample = load_sample(self.paths[index])
        if length is not None:
            for name in FRAME_KEYS:
                sample[name] = sample[name][offset:offset + length]
        sample["index"] = torch.tensor(index)  # seeds this sample's noise (see train/objective.py)
        if weight:  # integers, so no compute-dtype cast rounds them (see train/objective.py)
            sample["weight_num"], sample["weight_den"] = torch.tensor(weight[0]), torch.tensor(weight[1])
        return sample


def pad_collate(items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Stack a batch; unequal lengths are right-padded with zeros (SPEC 4.6, as upstream).

    Training batches come from `BucketBatchSampler` and never need the padding."""
    batch = {key: torch.stack([item[key] for item in items]) for key in ("index", "weight_num", "weight_den")
             if key in items[0]}
    for key in TENSOR_KEYS:
        tensors = [item[key] for item in items]
        longest = max(t.shape[0] for t in tensors)
        padded = []
        for t in tensors:
            pad = torch.zeros((longest - t.shape[0], *t.shape[1:]), dtype=t.dtype)
            padded.append(torch.cat([t, pad]) if pad.shape[0] else t)
        batch[key] = torch.stack(padded)
    return batch
