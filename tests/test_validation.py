"""Deterministic validation loss and the train/validation split."""

import pytest
import torch
from torch.utils.data import Subset

from helpers import write_tensor_dataset
from sidestep.data.dataset import PreprocessedDataset, pad_collate
from sidestep.errors import SidestepError
from sidestep.model.loader import load_dit
from sidestep.adapters import select_target_modules
from sidestep.adapters.lora import Lora as LoraAdapter
from sidestep.train.validation import VAL_GRID, split_dataset, validation_loss


@pytest.fixture(scope="module")
def setup(tiny_root_readonly, tmp_path_factory):
    dit = load_dit(tiny_root_readonly / "acestep-v15-turbo")
    decoder = dit.transformer
    adapter = LoraAdapter(decoder, select_target_modules(decoder), 4, 8, 0.1)  # dropout: must be off in eval
    with torch.no_grad():
        for name, p in decoder.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(1)) * 0.1)
    dataset = PreprocessedDataset(write_tensor_dataset(tmp_path_factory.mktemp("val") / "ds", n=3,
                                                       silence=dit.silence_latent()))
    return decoder, adapter, dataset


def test_identical_across_evaluations_and_modes_restored(setup):
    decoder, _, dataset = setup
    decoder.train()
    first = validation_loss(decoder, dataset)
    assert decoder.training and all(m.training for m in decoder.modules())
    torch.manual_seed(123)  # the global RNG plays no part
    second = validation_loss(decoder, dataset)
    assert first == second and torch.isfinite(torch.tensor(first))
    decoder.eval()
    assert validation_loss(decoder, dataset) == first and not decoder.training

    # different weights, different loss; a different grid or seed measures something else
    lora_b = next(p for n, p in decoder.named_parameters() if "lora_B" in n)
    saved = lora_b.detach().clone()
    with torch.no_grad():
        lora_b.add_(0.05)
    try:
        assert validation_loss(decoder, dataset) != first
    finally:
        with torch.no_grad():
            lora_b.copy_(saved)
    assert validation_loss(decoder, dataset) == first
    assert validation_loss(decoder, dataset, grid=(0.5,)) != first
    assert validation_loss(decoder, dataset, seed=1) != first


def test_noise_follows_the_sample_not_its_position(setup):
    """A sample's loss is the same alone, in a subset, or in a pre-collated batch list."""
    decoder, _, dataset = setup
    whole = validation_loss(decoder, dataset)
    alone = [validation_loss(decoder, Subset(dataset, [i])) for i in range(len(dataset))]
    assert whole == pytest.approx(sum(alone) / len(alone), rel=1e-12)
    batches = [pad_collate([dataset[i]]) for i in reversed(range(len(dataset)))]
    assert validation_loss(decoder, batches) == pytest.approx(whole, rel=1e-12)
    assert validation_loss(decoder, Subset(dataset, [2])) == alone[2]
    # cropped evaluation only sees the first frames
    assert validation_loss(decoder, dataset, max_frames=8) != whole
    with pytest.raises(ValueError, match="index"):
        validation_loss(decoder, [{k: v for k, v in batches[0].items() if k != "index"}])
    assert VAL_GRID == (0.1, 0.3, 0.5, 0.7, 0.9)


def test_split_dataset():
    train, val = split_dataset(20, 0.1, seed=7)
    assert (train, val) == split_dataset(20, 0.1, seed=7)
    assert len(val) == 2 and sorted(train + val) == list(range(20)) and not set(train) & set(val)
    assert train == sorted(train) and val == sorted(val)
    assert split_dataset(20, 0.1, seed=8)[1] != val or split_dataset(20, 0.1, seed=9)[1] != val
    assert split_dataset(5, 0.01, seed=0)[1].__len__() == 1  # at least one held out
    assert split_dataset(4, 0.0, seed=0) == ([0, 1, 2, 3], [])
    with pytest.raises(SidestepError, match="too few"):
        split_dataset(1, 0.5, seed=0)
    for bad in (-0.1, 1.0):
        with pytest.raises(SidestepError, match="--val-split"):
            split_dataset(10, bad, seed=0)
