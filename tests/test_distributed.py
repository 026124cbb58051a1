"""Many processes: Fabric DDP (gloo on CPU) equals one process with the doubled batch; device selection."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from helpers import write_tensor_dataset
from sidestep.config import Config
from sidestep.data.batching import BucketBatchSampler
from sidestep.data.dataset import PreprocessedDataset
from sidestep.errors import SidestepError
from sidestep.train.recipe import train
from sidestep.runtime import Runtime, fabric_kwargs, resolve_device

REPO = Path(__file__).resolve().parents[1]


def _trained_samples(log_text: str) -> dict[tuple[int, int], dict[int, list[int]]]:
    """{(epoch, batch): {rank: sample indices}} from the debug log's per-batch lines."""
    found: dict[tuple[int, int], dict[int, list[int]]] = {}
    for match in re.finditer(r"rank (\d+) epoch (\d+) batch (\d+) trains samples \[([\d, ]*)\]", log_text):
        rank, epoch, batch = map(int, match.groups()[:3])
        found.setdefault((epoch, batch), {})[rank] = [int(x) for x in match[4].split(",") if x.strip()]
    return found


def test_two_processes_split_the_songs_and_equal_one_with_doubled_batch(tiny_root_readonly, tmp_path):
    dataset = write_tensor_dataset(tmp_path / "ds")  # 9 songs of 9 lengths
    lengths = PreprocessedDataset(dataset).lengths
    assert len(set(lengths)) == 9
    common = ["--checkpoint-dir", str(tiny_root_readonly), "--dataset-dir", str(dataset), "--rank", "4",
              "--alpha", "8", "--lr", "0.01", "--warmup-steps", "0", "--gradient-accumulation", "1", "--epochs", "2",
              "--num-workers", "0", "--dropout", "0", "--device", "cpu", "--save-every", "1"]
    ddp_out = tmp_path / "ddp"
    proc = subprocess.run([sys.executable, str(REPO / "train.py"), "--plain", "-y", "fixed", *common, "--devices", "2",
                           "--batch-size", "2", "--output-dir", str(ddp_out)], capture_output=True, text=True,
                          timeout=600, env=dict(os.environ, MASTER_PORT="29563"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 songs x accumulation 1 x 2 processes = effective batch 4; 3 batches per epoch" in proc.stdout

    # per step the processes train disjoint songs that together make one process's batch of 4
    steps = _trained_samples((tmp_path / "sidestep.log").read_text())
    single_sampler = BucketBatchSampler(lengths, batch_size=4, seed=42)
    assert len(steps) == 2 * 3  # ceil(9 songs / (2 processes x 2)) batches per epoch: half of 1 process's 5
    assert BucketBatchSampler(lengths, batch_size=2, seed=42).batches_per_epoch == 5
    for epoch in (1, 2):
        single_sampler.set_epoch(epoch - 1)
        expected = [[key[0] for key in batch] for batch in single_sampler]
        trained = []
        for i in range(3):
            ranks = steps[(epoch, i)]
            assert ranks.keys() == {0, 1}
            assert not set(ranks[0]) & set(ranks[1]), ranks
            assert ranks[0] + ranks[1] == expected[i]
            assert all(len(ranks[r]) <= 2 for r in ranks)
            trained += ranks[0] + ranks[1]
        assert sorted(trained) == list(range(9))  # every song once an epoch

    single = train(Config(checkpoint_dir=str(tiny_root_readonly), dataset_dir=str(dataset),
                          output_dir=str(tmp_path / "single"), rank=4, alpha=8, learning_rate=0.01, warmup_steps=0,
                          gradient_accumulation=1, epochs=2, num_workers=0, dropout=0.0, device="cpu", save_every=1,
                          batch_size=4), "fixed", quiet=True)
    assert single.optimizer_steps == 6
    a = load_file(ddp_out / "adapter_model.safetensors")
    b = load_file(tmp_path / "single" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    # fp32 all-reduce sums in another order; Adam turns those last-bit differences into ~1e-5 of a step
    assert all(torch.allclose(a[k], b[k], rtol=1e-4, atol=5e-5) for k in a)
    assert max(b[k].abs().max().item() for k in b if "lora_B" in k) > 1e-3  # it trained
    state = torch.load(ddp_out / "checkpoints" / "epoch_1" / "training_state.pt", weights_only=True)
    assert state["world_size"] == 2 and state["global_step"] == 3
    # resume the 2-process run's epoch-1 checkpoint in one process (the device count changed)
    resumed = train(Config(checkpoint_dir=str(tiny_root_readonly), dataset_dir=str(dataset),
                           output_dir=str(tmp_path / "resumed"), rank=4, alpha=8, learning_rate=0.01, warmup_steps=0,
                           gradient_accumulation=1, epochs=2, num_workers=0, dropout=0.0, device="cpu",
                           save_every=1, batch_size=4, resume_from=str(ddp_out / "checkpoints" / "epoch_1")),
                    "fixed", quiet=True)
    assert resumed.optimizer_steps == 6 and len(resumed.losses) == 3
    c = load_file(tmp_path / "resumed" / "adapter_model.safetensors")
    assert all(torch.allclose(c[k], b[k], rtol=1e-4, atol=5e-5) for k in b)


def test_named_cuda_device_is_pinned():
    kwargs = fabric_kwargs(Runtime(torch.device("cuda", 1), "bf16"))
    assert kwargs["accelerator"] == "cuda" and kwargs["devices"] == [1] and kwargs["precision"] == "bf16-mixed"
    assert fabric_kwargs(Runtime(torch.device("cuda"), "bf16"), devices=4)["devices"] == 4
    with pytest.raises(SidestepError, match="names one GPU but --devices is 2"):
        fabric_kwargs(Runtime(torch.device("cuda", 1), "bf16"), devices=2)


def test_cpu_multi_process_uses_ddp_and_precision_follows_device():
    kwargs = fabric_kwargs(Runtime(torch.device("cpu"), "fp32"), devices=2, num_nodes=3)
    assert (kwargs["strategy"], kwargs["devices"], kwargs["num_nodes"], kwargs["precision"]) == ("ddp", 2, 3,
                                                                                                 "32-true")
    assert fabric_kwargs(Runtime(torch.device("mps"), "fp16"))["precision"] == "16-mixed"


def test_missing_device_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SidestepError, match="--device 'cuda:1': not available on this machine"):
        resolve_device("cuda:1")
    assert resolve_device("auto") == torch.device("cpu")
