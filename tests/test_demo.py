import json

from sidestep.cli.main import main


def test_demo_runs_end_to_end(tmp_path, capsys):
    demo = tmp_path / "demo"
    assert main(["--plain", "demo", "--demo-dir", str(demo)]) == 0
    out = capsys.readouterr().out
    assert "acestep-v15-turbo" in out and "Demo finished" in out
    manifest = json.loads((demo / "tensors" / "manifest.json").read_text())
    assert manifest["num_samples"] == 6 and not manifest["skipped"]
    lora, lokr = demo / "output" / "lora", demo / "output" / "lokr"
    assert (lora / "adapter_model.safetensors").is_file() and (lora / "adapter_config.json").is_file()
    assert (lora / "checkpoints" / "epoch_2" / "training_state.pt").is_file()
    assert (lokr / "lokr_weights.safetensors").is_file() and (lokr / "lokr_config.json").is_file()
    assert f"Adapter: {lora}" in out and f"Adapter: {lokr}" in out
