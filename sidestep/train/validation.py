"""A validation loss that compares across epochs: the same timesteps, the same noise, every time.

The training loss is a random draw (t, noise, condition dropout) per step; its epoch mean moves
with the draws. Here each held-out sample is evaluated at every t of a fixed grid with noise
from a generator seeded by (seed, sample index) only: never the epoch. No condition dropout,
eval mode, no_grad. Two evaluations of the same weights give the same number; a different
number means different weights.
"""

from __future__ import annotations

import hashlib
from typing import Any, Iterable

import torch

from sidestep.data.manifest import FRAME_KEYS
from sidestep.errors import SidestepError

VAL_GRID: tuple[float, ...] = (0.1, 0.3, 0.5, 0.7, 0.9)


def _seed_of(*parts: Any) -> int:
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def split_dataset(dataset_len: int, val_split: float, seed: int) -> tuple[list[int], list[int]]:
    """(train indices, validation indices), sorted; the same for the same (length, split, seed).

    `val_split` is the held-out fraction (0 = no validation set); at least one sample is held out
    and at least one kept for training.
    """
    if not 0.0 <= val_split < 1.0:
        raise SidestepError(f"--val-split {val_split}: use a fraction in [0, 1), e.g. 0.1")
    if val_split == 0.0:
        return list(range(dataset_len)), []
    held = max(1, round(dataset_len * val_split))
    if dataset_len - held < 1:
        raise SidestepError(f"--val-split {val_split}: the dataset has {dataset_len} sample(s), too few to hold "
                            "some out; add samples or pass --val-dataset-dir")
    order = torch.randperm(dataset_len, generator=torch.Generator().manual_seed(_seed_of("val-split", seed)))
    order = order.tolist()
    return sorted(order[held:]), sorted(order[:held])


def _batches(data: Any, batch_size: int) -> Iterable[dict[str, torch.Tensor]]:
    """A Dataset (or Subset) is read in order and collated; anything else is taken as batches."""
    from torch.utils.data import Dataset

    from sidestep.data.dataset import pad_collate

    if isinstance(data, Dataset):
        for start in range(0, len(data), batch_size):
            yield pad_collate([data[i] for i in range(start, min(start + batch_size, len(data)))])
    else:
        yield from data


def validation_noise(seed: int, index: int, shape: tuple[int, ...]) -> torch.Tensor:
    """The fixed noise of one sample (drawn on the CPU in fp32: the same on every device)."""
    return torch.randn(shape, generator=torch.Generator().manual_seed(_seed_of("val-noise", seed, index)))


def validation_loss(decoder: torch.nn.Module, data: Any, grid: tuple[float, ...] = VAL_GRID, *, seed: int = 0,
                    batch_size: int = 1, max_frames: int | None = None, device: torch.device | str | None = None,
                    dtype: torch.dtype | None = None) -> float:
    """Mean flow-matching MSE over the samples of `data` and the timesteps of `grid` (see `grid_losses`)."""
    losses = grid_losses(decoder, data, grid, seed=seed, batch_size=batch_size, max_frames=max_frames, device=device,
                         dtype=dtype)
    return sum(losses) / len(losses)


def grid_losses(decoder: torch.nn.Module, data: Any, grid: tuple[float, ...] = VAL_GRID, *, seed: int = 0,
                batch_size: int = 1, max_frames: int | None = None, device: torch.device | str | None = None,
                dtype: torch.dtype | None = None) -> list[float]:
    """The flow-matching MSE at each timestep of `grid`, averaged over the samples of `data`.

    data: a Dataset/Subset of preprocessed samples (read in order, `batch_size` at a time; 1
    avoids padding) or an iterable of collated batches; every sample needs its `index`.
    max_frames: evaluate only the first N latent frames of each sample (bounds memory).
    A Fabric/DDP wrapper is unwrapped (no collectives), so rank 0 can evaluate alone; the
    decoder's train/eval modes are restored afterwards.
    """
    from sidestep.generate import unwrap_decoder

    if not grid or not all(0.0 < t <= 1.0 for t in grid):
        raise ValueError(f"validation grid {grid!r}: timesteps must lie in (0, 1]")
    module = unwrap_decoder(decoder)
    device = torch.device(device) if device is not None else next(module.parameters()).device
    dtype = dtype or getattr(module, "dtype", None) or next(module.parameters()).dtype
    modes = {m: m.training for m in module.modules()}
    totals, count = [0.0] * len(grid), 0
    try:
        module.eval()
        with torch.no_grad():
            for batch in _batches(data, batch_size):
                if "index" not in batch:
                    raise ValueError("validation batches need each sample's 'index' (it seeds the sample's noise)")
                indices = [int(i) for i in batch["index"].tolist()]
                batch = {k: v[:, :max_frames] if max_frames and k in FRAME_KEYS else v for k, v in batch.items()}
                batch = {k: v.to(device, dtype if v.is_floating_point() else None) for k, v in batch.items()}
                x0 = batch["target_latents"]
                noise = torch.stack([validation_noise(seed, i, tuple(x0.shape[1:])) for i in indices])
                noise = noise.to(device=device, dtype=dtype)
                target = (noise - x0).float()
                for j, t in enumerate(grid):
                    timestep = torch.full((x0.shape[0],), float(t), device=device, dtype=dtype)
                    x_t = t * noise + (1.0 - t) * x0
                    v_pred = module(hidden_states=x_t, timestep=timestep, timestep_r=timestep,
                                    encoder_hidden_states=batch["encoder_hidden_states"],
                                    context_latents=batch["context_latents"]).sample
                    totals[j] += (v_pred.float() - target).square().mean().item() * x0.shape[0]
                count += x0.shape[0]
    finally:
        for m, training in modes.items():
            m.training = training
    if count == 0:
        raise SidestepError("the validation set holds no samples; check --val-split / --val-dataset-dir")
    return [total / count for total in totals]


__all__ = ["VAL_GRID", "grid_losses", "split_dataset", "validation_loss", "validation_noise"]
