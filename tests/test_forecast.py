"""The memory forecast: sane parts, checkpointing saves activations, --dry-run trains nothing."""

import pytest
import torch

from helpers import write_tensor_dataset
from sidestep.cli.main import main
from sidestep.config import Config
from sidestep.model.configs import RELEASED_2B_CONFIG
from sidestep.train.forecast import forecast

GIB = 2**30


def test_2b_forecast_parts_on_cuda_bf16():
    f = forecast(Config(), RELEASED_2B_CONFIG, torch.device("cuda"), "bf16", frames=1500)
    assert f.parts["baseline"] == 0.0  # max_memory_allocated has no library baseline
    decoder_params = 1_575_458_880
    assert f.parts["weights"] == decoder_params * 2
    lora = 24 * 2 * 64 * ((2048 + 2048) * 2 + (2048 + 1024) * 2)  # q,o: 2048->2048; k,v: 2048->1024
    assert f.notes["trainable_params"] == lora
    assert f.parts["adapter"] == lora * 4 and f.parts["optimizer state"] == lora * 4 * 2
    assert f.increment == f.total - f.parts["weights"] - f.parts["adapter"]
    no_ckpt = forecast(Config(gradient_checkpointing=False), RELEASED_2B_CONFIG, torch.device("cuda"), "bf16", 1500)
    assert no_ckpt.parts["micro-batch"] > 5 * f.parts["micro-batch"]
    nf4 = forecast(Config(quantize_base="nf4"), RELEASED_2B_CONFIG, torch.device("cuda"), "bf16", frames=1500)
    assert 0.3 * f.parts["weights"] < nf4.parts["weights"] < 0.4 * f.parts["weights"]


def test_chunking_caps_the_forecast_length():
    f = forecast(Config(chunk_duration=10), RELEASED_2B_CONFIG, torch.device("cuda"), "bf16", frames=6000)
    assert f.notes["frames"] == 250


def test_dry_run_prints_and_trains_nothing(tiny_root_readonly, tmp_path, capsys):
    dataset = write_tensor_dataset(tmp_path / "ds", n=2)
    out = tmp_path / "out"
    assert main(["--plain", "fixed", "--checkpoint-dir", str(tiny_root_readonly), "--dataset-dir", str(dataset),
                 "--output-dir", str(out), "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "Predicted peak memory" in text and "micro-batch" in text and "increment" in text and "total" in text
    assert not out.exists()
