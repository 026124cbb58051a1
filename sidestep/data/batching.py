"""Batches without padding: length-sorted groups of distinct songs, cropped to one length.

The decoder ignores padding masks (docs/design.md §8 Q1), so a padded batch would let the padding leak into
attention. Instead every batch holds items of one length, and the batch sampler yields
`(index, offset, length, weight_num, weight_den)` keys that `PreprocessedDataset` cuts the
sample with (the two integers weight the sample's loss, see `flow_matching_loss`).

Groups. Each song i has a size s_i = min(T_i, C) (C = `--chunk-duration` in frames; whole
songs: s_i = T_i). Songs are sorted by (s_i, a tie-break hashed from (seed, i)) and cut into
consecutive groups of G = batch size x processes, so neighbours in length train together;
the last group holds the remainder (the longest songs). The groups are fixed for a run; only
their order is shuffled per (seed, epoch), and a short remainder group is always the epoch's
last batch. Every item of a group is cropped to the group's
shortest size c, at `crop_offset(T_i, c, seed, epoch, i)`.

Crops: a song of T frames and a crop of C frames has k = ceil(T / C) anchor offsets spread
evenly from 0 to T - C (adjacent anchors are at most C apart). Epoch e uses anchor
(e + phase) mod k, jittered by up to half the slack between anchors, with the phase and jitter
drawn from (seed, index[, epoch]). Any k consecutive epochs visit every anchor once, so every
frame of song i is trained within ceil(T_i / c) epochs, and the offsets change between epochs.

Processes: each group is cut into one slice per process (sizes differ by at most one). A sample's
loss weight is N / |group| over the process's sum, so DDP's gradient average is the group's
mean: N processes with batch B train exactly like one process with batch N*B. A process whose
slice of a short last group is empty gets a copy of the group's first item with weight 0 (it
must still run a backward pass for DDP); it trains nothing.
"""

from __future__ import annotations

import hashlib
import math
import random
from typing import Iterator

from torch.utils.data import Sampler

LATENT_RATE = 25  # latent frames per second at 48 kHz with the VAE's hop of 1920 samples (docs/design.md §5.2)

Key = tuple[int, int, int, int, int]  # (index, offset, length, weight numerator, weight denominator)


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


def length_groups(lengths: list[int], group_size: int, seed: int, chunk: int | None = None) -> list[list[int]]:
    """Sample indices sorted by size (ties broken by a hash of (seed, index)), cut into groups of
    `group_size`; the last group holds the remainder."""
    sizes = [min(t, chunk) if chunk else t for t in lengths]
    order = sorted(range(len(lengths)), key=lambda i: (sizes[i], _rng(seed, i, "tie").random(), i))
    return [order[start:start + group_size] for start in range(0, len(order), group_size)]


def _slices(n: int, parts: int) -> list[tuple[int, int]]:
    """[start, end) of `parts` contiguous slices of n items whose sizes differ by at most one."""
    base, extra = divmod(n, parts)
    bounds, start = [], 0
    for p in range(parts):
        end = start + base + (p < extra)
        bounds.append((start, end))
        start = end
    return bounds


class BucketBatchSampler(Sampler):
    """Batches of `batch_size` distinct, length-neighbouring songs cropped to one length; the group
    order is shuffled per (seed, epoch) and every group is sharded across the processes."""

    def __init__(self, lengths: list[int], batch_size: int, seed: int, chunk: int | None = None,
                 world_size: int = 1, rank: int = 0):
        self.lengths, self.batch_size, self.seed, self.chunk = list(lengths), batch_size, seed, chunk
        self.world_size, self.rank = world_size, rank
        self.epoch, self.skip = 0, 0
        self.groups = length_groups(self.lengths, batch_size * world_size, seed, chunk)
        self.crops = [min(min(self.lengths[i], chunk) if chunk else self.lengths[i] for i in g)
                      for g in self.groups]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _global_batches(self) -> list[list[Key]]:
        """Every process's keys of every batch of this epoch, in order: [batch][item]."""
        short = bool(self.groups) and len(self.groups[-1]) < self.batch_size * self.world_size
        full = len(self.groups) - short
        order = list(range(full))
        _rng(self.seed, self.epoch, "order").shuffle(order)
        order += range(full, len(self.groups))  # a short remainder group is always the epoch's last batch
        batches = []
        for g in order:
            c, group = self.crops[g], self.groups[g]
            batches.append([(i, crop_offset(self.lengths[i], c, self.seed, self.epoch, i), c, self.world_size,
                             len(group)) for i in group])
        return batches

    def _share(self, batch: list[Key], rank: int) -> list[Key]:
        start, end = _slices(len(batch), self.world_size)[rank]
        if start == end:  # a short last group: a weight-0 copy keeps this process in step
            return [batch[0][:3] + (0, batch[0][4])]
        return batch[start:end]

    def __iter__(self) -> Iterator[list[Key]]:
        for i, batch in enumerate(self._global_batches()):
            if i >= self.skip:
                yield self._share(batch, self.rank)

    def __len__(self) -> int:
        return max(len(self.groups) - self.skip, 0)

    @property
    def batches_per_epoch(self) -> int:
        """ceil(songs / (batch size x processes)) batches per process per epoch."""
        return len(self.groups)

    def frame_share(self) -> float:
        """The share of the dataset's audio frames one epoch trains."""
        total = sum(self.lengths)
        return sum(c * len(g) for c, g in zip(self.crops, self.groups)) / total if total else 0.0

    def coverage_epochs(self) -> int:
        """Every frame of every song is trained within this many consecutive epochs."""
        return max((math.ceil(self.lengths[i] / c) for c, g in zip(self.crops, self.groups) for i in g), default=1)

    def describe(self, accumulation: int) -> str:
        """The start-of-training line: what one batch and one epoch hold."""
        effective = self.batch_size * accumulation * self.world_size
        epochs = self.coverage_epochs()
        return (f"Batches: {_count(self.batch_size, 'song')} x accumulation {accumulation} x "
                f"{_count(self.world_size, 'process', 'processes')} = effective batch {effective}; "
                f"{_count(self.batches_per_epoch, 'batch', 'batches')} per epoch; an epoch trains "
                f"{100 * self.frame_share():.1f}% of the audio frames (every frame within "
                f"{_count(epochs, 'epoch')})")


def _count(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else many or one + 's'}"
