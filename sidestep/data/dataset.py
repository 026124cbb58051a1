"""Preprocessed tensors -> training batches.

The folder's layout (sample files, manifest) is the contract in `sidestep/data/manifest.py`.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import Dataset

from sidestep.data.manifest import FRAME_KEYS, TENSOR_KEYS, read_manifest
from sidestep.errors import SidestepError


class SampleError(SidestepError):
    """A sample file that cannot be loaded. Raised in a DataLoader worker, it comes back to the main
    process re-built as `SampleError("Caught SampleError in DataLoader worker ...<traceback>...")`:
    only the original one-line message is kept, so the user never sees the worker's traceback."""

    def __init__(self, message: str):
        if "\nOriginal Traceback" in message:
            last = message.strip().splitlines()[-1]
            message = last.split(": ", 1)[1] if ": " in last else last
        super().__init__(message)


def _read(path: Path, pick):
    try:
        return pick(torch.load(path, map_location="cpu", weights_only=True))
    except Exception as err:  # a bad pickle raises many types
        raise SampleError(f"{path}: not a readable preprocessed sample ({type(err).__name__}); "
                          "rerun train.py preprocess") from None


def load_sample(path: Path) -> dict[str, torch.Tensor]:
    """The sample file's tensors."""
    return _read(path, lambda data: {k: data[k] for k in TENSOR_KEYS})


def load_sample_metadata(path: Path) -> dict:
    """The sample file's `metadata` dict (caption, lyrics, bpm, ...; empty when it has none)."""
    meta = _read(path, lambda data: data.get("metadata"))
    return meta if isinstance(meta, dict) else {}


class PreprocessedDataset(Dataset):
    """Samples by index, or by `(index, offset, length[, weight_num, weight_den])` keys from
    `BucketBatchSampler` (a crop, and the sample's loss weight weight_num / weight_den)."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.manifest = read_manifest(self.folder)
        self.paths = self.manifest.files()
        self._lengths: list[int] | None = None

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def lengths(self) -> list[int]:
        """Latent frames per sample (from the manifest; files are opened only when it lacks them)."""
        if self._lengths is None:
            known = self.manifest.lengths
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
    """Stack a batch; unequal lengths are right-padded with zeros (docs/design.md §5.6, as upstream).

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
