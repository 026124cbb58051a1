"""Previews, validation loss, loss.png and the summary wired into a real training run."""

import json

import soundfile as sf

from helpers import write_tensor_dataset
from sidestep.cli.main import main
from sidestep.model.loader import load_dit


def test_training_with_previews_validation_and_plot(tiny_root_readonly, tmp_path, capsys):
    silence = load_dit(tiny_root_readonly / "acestep-v15-turbo").silence_latent()
    dataset = write_tensor_dataset(tmp_path / "ds", n=4, silence=silence)
    out = tmp_path / "out"
    code = main(["--plain", "-y", "fixed", "--checkpoint-dir", str(tiny_root_readonly), "--dataset-dir", str(dataset),
                 "--output-dir", str(out), "--epochs", "2", "--rank", "4", "--alpha", "8", "--lr", "0.01",
                 "--gradient-accumulation", "1", "--num-workers", "0", "--sample-every-n-epochs", "2",
                 "--sample-prompt", "calm piano", "--sample-duration", "1", "--val-split", "0.25", "--keep-best",
                 "--save-every", "100"])
    text = capsys.readouterr().out
    assert code == 0, text
    samples = sorted(p.name for p in (out / "samples").glob("*.wav"))
    assert samples == ["base_1.wav", "epoch_2_1.wav"]  # k counts prompts from 1
    audio, rate = sf.read(out / "samples" / "epoch_2_1.wav")
    assert rate == 48000 and abs(len(audio) - 48000) <= 1920
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "best" / "adapter_model.safetensors").is_file()
    assert json.loads((out / "best" / "sidestep_run.json").read_text())["best_epoch"] in (1, 2)
    assert "val " in text and "best validation loss" in text and "loss plot" in text
    # 3 of 4 samples train (the 4th is held out): 3 steps per epoch
    assert "6 optimizer steps" in text
