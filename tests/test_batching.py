"""Batches never pad; crops cover every frame of a song within the expected number of epochs."""

import math

import torch
from torch.utils.data import DataLoader

from helpers import write_tensor_dataset
from sidestep.data.batching import BucketBatchSampler, crop_offset
from sidestep.data.dataset import PreprocessedDataset, pad_collate


def _batches(dataset, sampler, epochs):
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=lambda items: items)
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        yield from loader


def test_no_batch_ever_contains_padding(tmp_path):
    dataset = PreprocessedDataset(write_tensor_dataset(tmp_path / "ds", n=9, frames=(24, 30, 24, 36, 30, 24)))
    for chunk in (None, 28):
        sampler = BucketBatchSampler(dataset.lengths, batch_size=3, seed=1, chunk=chunk)
        seen = 0
        for items in _batches(dataset, sampler, epochs=3):
            lengths = {item["target_latents"].shape[0] for item in items}
            assert len(lengths) == 1, lengths
            batch = pad_collate(items)
            assert batch["attention_mask"].all()  # nothing padded
            assert batch["target_latents"].shape[1] == lengths.pop()
            seen += len(items)
        assert seen == 27


def test_crops_visit_every_frame_within_k_epochs():
    for length, chunk in ((100, 30), (31, 30), (250, 75), (61, 20), (40, 40)):
        k = math.ceil(length / chunk)
        for seed in range(5):
            for start_epoch in (0, 3):
                covered = torch.zeros(length, dtype=torch.bool)
                offsets = []
                for epoch in range(start_epoch, start_epoch + k):
                    offset = crop_offset(length, chunk, seed, epoch, index=7)
                    assert 0 <= offset <= max(length - chunk, 0)
                    covered[offset:offset + chunk] = True
                    offsets.append(offset)
                assert covered.all(), (length, chunk, seed, offsets)
                if k > 1:
                    assert len(set(offsets)) > 1  # new offsets from epoch to epoch


def test_crops_are_cut_from_the_sample(tmp_path):
    dataset = PreprocessedDataset(write_tensor_dataset(tmp_path / "ds", n=1, frames=(36,)))
    whole = dataset[0]
    crop = dataset[(0, 5, 20)]
    assert torch.equal(crop["target_latents"], whole["target_latents"][5:25])
    assert torch.equal(crop["context_latents"], whole["context_latents"][5:25])
    assert torch.equal(crop["encoder_hidden_states"], whole["encoder_hidden_states"])


def test_processes_split_the_global_batches():
    lengths = [24, 24, 30, 24, 30, 24, 24]
    single = BucketBatchSampler(lengths, batch_size=2, seed=3)
    ranks = [BucketBatchSampler(lengths, batch_size=1, seed=3, world_size=2, rank=r) for r in range(2)]
    for epoch in range(3):
        for s in [single, *ranks]:
            s.set_epoch(epoch)
        for whole, a, b in zip(single, *ranks):
            if len(whole) == 2:
                assert a + b == whole
            else:  # a lone item is repeated so both processes get one
                assert a == b == whole
        assert len(single) == len(ranks[0]) == len(ranks[1])


def test_epoch_changes_the_order():
    s = BucketBatchSampler([24] * 12, batch_size=2, seed=0)
    first = list(s)
    s.set_epoch(1)
    assert sorted(map(tuple, first)) != sorted(map(tuple, s)) or first != list(s)
