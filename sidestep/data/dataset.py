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


_NDIM = {"target_latents": 2, "attention_mask": 1, "encoder_hidden_states": 2, "encoder_attention_mask": 1,
         "context_latents": 2}


def sample_problem(data: dict) -> str | None:
    """Why a loaded sample's tensors cannot be trained on (types, dims, dtypes, lengths), else None. NaN or
    infinite values are left to the training loop, which skips such a step and counts it (--max-bad-steps)."""
    for key in TENSOR_KEYS:
        value = data.get(key)
        if not isinstance(value, torch.Tensor):
            return f"'{key}' is {'missing' if value is None else type(value).__name__}, not a tensor"
        if value.ndim != _NDIM.get(key, value.ndim):
            return f"'{key}' has {value.ndim} dimensions, expected {_NDIM[key]}"
        if not (value.is_floating_point() or value.dtype == torch.bool or (key.endswith("mask") and
                                                                           not value.is_complex())):
            return f"'{key}' has dtype {value.dtype}, expected floating point"
    frames = {data[k].shape[0] for k in FRAME_KEYS}
    if len(frames) != 1 or 0 in frames:
        return f"frame counts of {', '.join(FRAME_KEYS)} differ or are zero ({sorted(frames)})"
    if data["context_latents"].shape[1] != 2 * data["target_latents"].shape[1]:
        return (f"context_latents is {data['context_latents'].shape[1]} wide, expected twice target_latents' "
                f"{data['target_latents'].shape[1]}")
    if data["encoder_hidden_states"].shape[0] != data["encoder_attention_mask"].shape[0]:
        return "encoder_hidden_states and encoder_attention_mask differ in length"
    return None


def _checked(path: Path, data) -> dict[str, torch.Tensor]:
    if not isinstance(data, dict):
        raise SampleError(f"{path}: not a preprocessed sample (holds {type(data).__name__}); rerun train.py "
                          "preprocess")
    problem = sample_problem(data)
    if problem:
        raise SampleError(f"{path}: not a usable preprocessed sample ({problem}); rerun train.py preprocess")
    return {k: data[k] for k in TENSOR_KEYS}


def load_sample(path: Path) -> dict[str, torch.Tensor]:
    """The sample file's tensors, checked (types, shapes, dtypes, lengths)."""
    data = _read(path, lambda data: data)
    return _checked(path, data)


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
