from sidestep.cli.main import main


def test_demo_runs_end_to_end(tmp_path, capsys):
    assert main(["--plain", "demo", "--demo-dir", str(tmp_path / "demo")]) == 0
    out = capsys.readouterr().out
    assert "acestep-v15-turbo" in out and "Decoder forward" in out
    assert (tmp_path / "demo" / "checkpoints" / "acestep-v15-turbo" / "model.safetensors").is_file()
