"""Batches without padding: length buckets, and random crops that cover each song evenly.

The decoder ignores padding masks (docs/design.md §8 Q1), so a padded batch would let the padding leak into
attention. Instead, every batch holds items of one length: whole songs grouped by length, or,
with `--chunk-duration`, crops of a fixed length. A batch sampler yields `(index, offset,
length)` keys that `PreprocessedDataset` cuts the sample with.

Crops: a song of T frames and a crop of C frames has k = ceil(T / C) anchor offsets spread
evenly from 0 to T - C (adjacent anchors are at most C apart). Epoch e uses anchor
(e + phase) mod k, jittered by up to half the slack between anchors, with the phase and jitter
drawn from (seed, index[, epoch]). Any k consecutive epochs visit every anchor once, so every
frame is seen within k epochs, and the offsets change from epoch to epoch.

With several processes, each global batch (batch size x processes) is cut into one slice per
process, so N processes with batch B see exactly the batches of one process with batch N*B.
"""

from __future__ import annotations

import hashlib
import math
import random
from typing import Iterator

from torch.utils.data import Sampler

LATENT_RATE = 25  # latent frames per second at 48 kHz with the VAE's hop of 1920 samples (docs/design.md §5.2)


def _rng(*parts: object) -> random.Random:
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest()
    return random.Random(int.from_bytes(digest, "little"))


def crop_offset(length: int, chunk: int, seed: int, epoch: int, index: int) -> int:
    """Start frame of sample `index`'s crop in `epoch` (0 when the song is not longer than the crop)."""
    if length <= chunk:
        return 0
    k = math.ceil(length / chunk)
    span = length - chunk
    gap = span / (k - 1)
    j = (epoch + _rng(seed, index).randrange(k)) % k
    if j in (0, k - 1):  # the ends stay put so the first and last frames are always reachable
        return 0 if j == 0 else span
    slack = chunk - gap
    jitter = _rng(seed, epoch, index).uniform(-slack / 2, slack / 2)
    return min(max(round(j * gap + jitter), 0), span)


class BucketBatchSampler(Sampler):
    """Equal-length batches, shuffled per (seed, epoch), sharded across processes."""

    def __init__(self, lengths: list[int], batch_size: int, seed: int, chunk: int | None = None,
                 world_size: int = 1, rank: int = 0):
        self.lengths, self.batch_size, self.seed, self.chunk = lengths, batch_size, seed, chunk
        self.world_size, self.rank = world_size, rank
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _global_batches(self) -> list[list[tuple[int, int, int]]]:
        rng = _rng(self.seed, self.epoch, "order")
        buckets: dict[int, list[tuple[int, int, int]]] = {}
        for index, length in enumerate(self.lengths):
            size = min(length, self.chunk) if self.chunk else length
            offset = crop_offset(length, self.chunk, self.seed, self.epoch, index) if self.chunk else 0
            buckets.setdefault(size, []).append((index, offset, size))
        per_global = self.batch_size * self.world_size
        batches = []
        for size in sorted(buckets):
            items = buckets[size]
            rng.shuffle(items)
            for start in range(0, len(items), per_global):
                batch = items[start:start + per_global]
                if self.world_size > 1:  # every process needs its share: repeat items to fill the batch
                    batch = (batch * per_global)[:per_global]
                batches.append(batch)
        rng.shuffle(batches)
        return batches

    def __iter__(self) -> Iterator[list[tuple[int, int, int]]]:
        for i, batch in enumerate(self._global_batches()):
            if i < self.skip:
                continue
            share = len(batch) // self.world_size if self.world_size > 1 else len(batch)
            yield batch[self.rank * share:(self.rank + 1) * share]

    def __len__(self) -> int:
        return max(len(self._global_batches()) - self.skip, 0)

    @property
    def batches_per_epoch(self) -> int:
        return len(self._global_batches())
