"""NaN/inf losses are skipped and counted; K in a row stop the run with a checkpoint and the resume command."""

import torch

from helpers import write_tensor_dataset
from sidestep.cli.main import main
from sidestep.config import Config
from sidestep.train.recipe import train


def _poison(dataset, names):
    for name in names:
        sample = torch.load(dataset / name, weights_only=True)
        sample["target_latents"][0, 0] = float("nan")
        torch.save(sample, dataset / name)


def test_a_nan_sample_is_skipped_and_counted(tiny_root_readonly, tmp_path):
    dataset = write_tensor_dataset(tmp_path / "ds", n=3)
    _poison(dataset, ["song1.pt"])
    result = train(Config(checkpoint_dir=str(tiny_root_readonly), dataset_dir=str(dataset),
                          output_dir=str(tmp_path / "out"), epochs=3, rank=4, alpha=8, gradient_accumulation=1,
                          num_workers=0), "fixed", quiet=True)
    assert result.skipped_steps == 3 and result.optimizer_steps == 6
    assert all(torch.isfinite(torch.tensor(result.losses)))
    weights = result.adapter.export_tensors()
    assert all(torch.isfinite(v).all() for v in weights.values())


def test_k_bad_steps_in_a_row_stop_with_a_checkpoint(tiny_root_readonly, tmp_path, capsys):
    dataset = write_tensor_dataset(tmp_path / "ds", n=3)
    _poison(dataset, ["song0.pt", "song1.pt", "song2.pt"])
    out = tmp_path / "out"
    code = main(["--plain", "-y", "fixed", "--checkpoint-dir", str(tiny_root_readonly), "--dataset-dir",
                 str(dataset), "--output-dir", str(out), "--epochs", "5", "--gradient-accumulation", "1",
                 "--num-workers", "0", "--max-bad-steps", "4"])
    text = capsys.readouterr().out
    assert code == 3
    assert "[FAIL] 4 optimizer steps in a row had a NaN/inf loss" in text and "--resume-from" in text
    saved = list((out / "checkpoints").iterdir())
    assert len(saved) == 1 and saved[0].name == "step_0_last_good"
    state = torch.load(saved[0] / "training_state.pt", weights_only=True)
    assert all(torch.isfinite(v).all() for v in state["adapter"].values())
    assert not (out / "adapter_model.safetensors").exists()
