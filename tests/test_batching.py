"""Batches hold B distinct songs of one length (no padding); crops cover every frame within a stated bound;
processes split each global batch without training a song twice."""

import math

import torch
from torch.utils.data import DataLoader

from helpers import DISTINCT_FRAMES, write_tensor_dataset
from sidestep.data.batching import BucketBatchSampler, crop_offset
from sidestep.data.dataset import PreprocessedDataset, pad_collate

EXAMPLE = [5230, 4875, 6001, 3950, 5500, 6000, 4410, 5999]  # latent frames of 8 real-looking songs


def _batches(dataset, sampler, epochs):
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=lambda items: items)
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        yield from loader


def _epoch(sampler, epoch):
    sampler.set_epoch(epoch)
    return list(sampler)


def test_batches_hold_batch_size_distinct_songs():
    for chunk in (None, 1500):
        sampler = BucketBatchSampler(EXAMPLE, batch_size=4, seed=0, chunk=chunk)
        assert sampler.batches_per_epoch == 2 and len(sampler) == 2
        for epoch in range(4):
            batches = _epoch(sampler, epoch)
            assert [len(b) for b in batches] == [4, 4]
            indices = [key[0] for b in batches for key in b]
            assert sorted(indices) == list(range(8))  # every song once, 4 different ones per batch
            for b in batches:
                assert len({key[2] for key in b}) == 1  # one length per batch
                for index, offset, length, num, den in b:
                    assert 0 <= offset <= EXAMPLE[index] - length and (num, den) == (1, 4)
        if chunk:
            assert {key[2] for b in batches for key in b} == {1500}
        else:  # whole songs: length neighbours batch together, cropped to the shortest of the batch
            assert sorted(key[2] for b in batches for key in b) == [3950] * 4 + [5500] * 4
            assert {frozenset(k[0] for k in b) for b in batches} == {frozenset({3, 6, 1, 0}),
                                                                     frozenset({4, 7, 5, 2})}


def test_last_batch_holds_the_remainder():
    sampler = BucketBatchSampler(list(DISTINCT_FRAMES), batch_size=4, seed=2)
    assert sampler.batches_per_epoch == 3
    orders = set()
    for epoch in range(6):
        batches = _epoch(sampler, epoch)
        assert [len(b) for b in batches] == [4, 4, 1]  # the epoch's last batch holds the remainder
        lone = batches[-1][0]
        assert lone[0] == DISTINCT_FRAMES.index(max(DISTINCT_FRAMES))  # the longest song
        assert lone[2] == max(DISTINCT_FRAMES) and lone[3:] == (1, 1)  # whole, and alone in its batch
        orders.add(tuple(b[0][0] for b in batches))
    assert len(orders) == 2  # the full batches still come in either order


def test_no_batch_ever_contains_padding(tmp_path):
    dataset = PreprocessedDataset(write_tensor_dataset(tmp_path / "ds"))  # 9 songs, 9 lengths
    for chunk in (None, 28):
        sampler = BucketBatchSampler(dataset.lengths, batch_size=3, seed=1, chunk=chunk)
        seen = 0
        for items in _batches(dataset, sampler, epochs=3):
            lengths = {item["target_latents"].shape[0] for item in items}
            assert len(lengths) == 1, lengths
            assert len({int(item["index"]) for item in items}) == len(items) == 3
            batch = pad_collate(items)
            assert batch["attention_mask"].all()  # nothing padded
            assert batch["target_latents"].shape[1] == lengths.pop()
            assert batch["weight_num"].tolist() == [1] * 3 and batch["weight_den"].tolist() == [3] * 3
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


def test_every_frame_is_trained_within_the_stated_bound():
    """Song i, batched with songs no shorter than c, is covered within ceil(T_i / c) consecutive epochs, and
    the sampler's coverage_epochs() is the largest such bound."""
    cases = [(EXAMPLE, 4, None), (EXAMPLE, 4, 1500), (EXAMPLE, 3, None), (list(DISTINCT_FRAMES), 2, None),
             (list(DISTINCT_FRAMES), 4, 25), ([40, 41, 90, 200, 201], 2, None)]
    for lengths, batch_size, chunk in cases:
        for seed in (0, 5):
            sampler = BucketBatchSampler(lengths, batch_size, seed, chunk)
            bound = sampler.coverage_epochs()
            crop = {key[0]: key[2] for b in sampler for key in b}
            assert bound == max(math.ceil(lengths[i] / c) for i, c in crop.items())
            for start in (0, 7):
                covered = [torch.zeros(t, dtype=torch.bool) for t in lengths]
                for epoch in range(start, start + bound):
                    for b in _epoch(sampler, epoch):
                        for index, offset, length, _, _ in b:
                            covered[index][offset:offset + length] = True
                assert all(c.all() for c in covered), (lengths, batch_size, chunk, seed)
    sampler = BucketBatchSampler(EXAMPLE, 4, 0)
    assert sampler.coverage_epochs() == 2  # e.g. 6001 frames cropped to 5500
    assert abs(sampler.frame_share() - (3950 * 4 + 5500 * 4) / sum(EXAMPLE)) < 1e-12
    assert "effective batch 8" in sampler.describe(2) and "2 batches per epoch" in sampler.describe(2)


def test_processes_split_each_global_batch_without_repeats():
    lengths = list(DISTINCT_FRAMES)  # 9 songs: 2 processes x batch 2 -> groups of 4, 4, 1
    single = BucketBatchSampler(lengths, batch_size=4, seed=3)
    ranks = [BucketBatchSampler(lengths, batch_size=2, seed=3, world_size=2, rank=r) for r in range(2)]
    assert single.batches_per_epoch == ranks[0].batches_per_epoch == 3 == math.ceil(9 / 4)
    for epoch in range(3):
        whole, a, b = _epoch(single, epoch), _epoch(ranks[0], epoch), _epoch(ranks[1], epoch)
        assert len(whole) == len(a) == len(b)
        for w, x, y in zip(whole, a, b):
            trained = [k for k in x + y if k[3] > 0]
            assert [k[:3] for k in trained] == [k[:3] for k in w]  # the same items, each on one process
            assert not {k[0] for k in x if k[3]} & {k[0] for k in y if k[3]}
            # weights: DDP averages the two processes' gradients, so each sample counts 2 / |group| there
            assert all(k[3:] == (2, len(w)) for k in trained)
            # both processes always run (DDP); one with no share gets a weight-0 copy
            assert x and y and all(k[3] == 0 for k in x + y if k not in trained)
            assert len({k[2] for k in x + y}) == 1


def test_groups_are_fixed_and_their_order_changes_with_the_epoch():
    s = BucketBatchSampler(list(range(20, 44)), batch_size=2, seed=0)
    first = _epoch(s, 0)
    second = _epoch(s, 1)
    assert [[k[0] for k in b] for b in first] != [[k[0] for k in b] for b in second]
    assert sorted(tuple(k[0] for k in b) for b in first) == sorted(tuple(k[0] for k in b) for b in second)
    s.skip = 5
    assert len(s) == 7 and _epoch(s, 1) == second[5:]


def test_crops_are_cut_from_the_sample(tmp_path):
    dataset = PreprocessedDataset(write_tensor_dataset(tmp_path / "ds", n=1, frames=(36,)))
    whole = dataset[0]
    crop = dataset[(0, 5, 20)]
    assert torch.equal(crop["target_latents"], whole["target_latents"][5:25])
    assert torch.equal(crop["context_latents"], whole["context_latents"][5:25])
    assert torch.equal(crop["encoder_hidden_states"], whole["encoder_hidden_states"])
    weighted = dataset[(0, 5, 20, 2, 3)]
    assert (int(weighted["weight_num"]), int(weighted["weight_den"])) == (2, 3)


def test_process_loss_weights_average_to_the_global_batch_gradient(tiny_root_readonly, tmp_path):
    """What DDP does with 2 processes x batch 2 (mean of their gradients) equals 1 process x batch 4, last
    short batch (1 song, a weight-0 copy on the other process) included."""
    from sidestep.model.loader import load_dit
    from sidestep.train.objective import Objective, flow_matching_loss, sample_generators

    dit = load_dit(tiny_root_readonly / "acestep-v15-turbo")
    weights = [p.requires_grad_(True) for n, p in dit.transformer.named_parameters() if "layers.0.self_attn" in n]
    dataset = PreprocessedDataset(write_tensor_dataset(tmp_path / "ds"))

    def grads(keys):
        batch = pad_collate([dataset[key] for key in keys])
        gens = sample_generators(0, 0, batch.pop("index").tolist())
        loss, _ = flow_matching_loss(dit.transformer, batch, Objective("fixed"), gens, dit.null_condition_emb)
        return torch.autograd.grad(loss, weights)

    single = list(BucketBatchSampler(dataset.lengths, 4, seed=0))
    ranks = [list(BucketBatchSampler(dataset.lengths, 2, seed=0, world_size=2, rank=r)) for r in range(2)]
    assert sorted(len(b) for b in single) == [1, 4, 4]
    for whole, a, b in zip(single, *ranks):
        expected = grads(whole)
        averaged = [(x + y) / 2 for x, y in zip(grads(a), grads(b))]
        assert all(torch.allclose(x, y, rtol=1e-5, atol=1e-9) for x, y in zip(averaged, expected))
        assert any(x.abs().max() > 0 for x in expected)
