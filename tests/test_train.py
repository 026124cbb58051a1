"""End to end on the tiny checkpoint: fixed/vanilla x LoRA/LoKR, outputs, failures, CLI."""

import json

import pytest
import torch
from safetensors import safe_open

from helpers import write_tensor_dataset
from sidestep.cli.main import main
from sidestep.config import Config
from sidestep.data.dataset import PreprocessedDataset, pad_collate
from sidestep.model.loader import load_dit
from sidestep.adapters import load_adapter
from sidestep.train.objective import Objective, flow_matching_loss, sample_generators
from sidestep.train.recipe import train


def _config(root, dataset, out, adapter, **changes):
    base = dict(checkpoint_dir=str(root), dataset_dir=str(dataset), output_dir=str(out), adapter_type=adapter,
                epochs=12, batch_size=1, gradient_accumulation=1, learning_rate=5e-3, warmup_steps=0, rank=4,
                alpha=8, lokr_linear_dim=4, lokr_linear_alpha=8, dropout=0.0, save_every=6, num_workers=0,
                log_every=1, log_heavy_every=2, scheduler_type="constant")
    base.update(changes)
    return Config(**base)


def _eval_loss(decoder, batch, null_emb, seeds=range(8)):
    objective = Objective("fixed", cfg_ratio=0.0)
    with torch.no_grad():
        return sum(flow_matching_loss(decoder, batch, objective, sample_generators(s, 0, batch["index"].tolist()),
                                      null_emb)[0].item() for s in seeds) / len(seeds)


def _base_weights(decoder):
    return {n.replace(".base_layer", ""): p.detach().clone() for n, p in decoder.named_parameters()
            if ".lora_" not in n and not n.startswith("lycoris")}


@pytest.mark.parametrize("mode,adapter", [("fixed", "lora"), ("fixed", "lokr"), ("vanilla", "lora"),
                                          ("vanilla", "lokr")])
def test_train_end_to_end(tiny_root_readonly, tmp_path, mode, adapter):
    root = tiny_root_readonly
    silence = load_dit(root / "acestep-v15-turbo").silence_latent()
    dataset = write_tensor_dataset(tmp_path / "ds", n=2, silence=silence)  # 24 and 30 frames: one batch of 2
    out = tmp_path / "out"
    result = train(_config(root, dataset, out, adapter, batch_size=2), mode, quiet=True)

    assert result.optimizer_steps == 12 and len(result.losses) == 12
    assert all(torch.isfinite(torch.tensor(result.losses)))
    fresh = load_dit(root / "acestep-v15-turbo")
    trained_base = _base_weights(result.adapter.decoder)
    assert trained_base.keys() == dict(fresh.transformer.named_parameters()).keys()
    assert all(torch.equal(trained_base[n], p) for n, p in fresh.transformer.named_parameters())

    # files: flat final adapter + checkpoints, each loadable
    weights = "adapter_model.safetensors" if adapter == "lora" else "lokr_weights.safetensors"
    for folder in (out, out / "checkpoints" / "epoch_6", out / "checkpoints" / "epoch_12"):
        assert (folder / weights).is_file() and (folder / "sidestep_run.json").is_file()
    assert (out / "checkpoints" / "epoch_6" / "training_state.pt").is_file()
    assert any((out / "runs").iterdir())
    run = json.loads((out / "sidestep_run.json").read_text())
    assert run["inference"]["shift"] == 3.0 and run["inference"]["model_variant"] == "acestep-v15-turbo"
    assert run["training"]["mode"] == mode and run["config"]["adapter_type"] == adapter

    # the saved adapter reloads into a fresh decoder, equals the trained one and fits the batch better
    batch = pad_collate([PreprocessedDataset(dataset)[0], PreprocessedDataset(dataset)[(1, 3, 24)]])
    before = _eval_loss(fresh.transformer, batch, fresh.null_condition_emb)
    adapter_state = result.adapter.export_tensors()
    reloaded = load_adapter(fresh.transformer, out)
    assert adapter_state.keys() == reloaded.export_tensors().keys()
    assert all(torch.equal(adapter_state[k], v) for k, v in reloaded.export_tensors().items())
    assert any(v.abs().sum() > 0 for k, v in adapter_state.items() if "lora_B" in k or "w2" in k or "w1" in k)
    after = _eval_loss(fresh.transformer, batch, fresh.null_condition_emb)
    assert after < before


def test_batches_of_distinct_songs_and_the_summary_says_so(tiny_root_readonly, tmp_path, capsys):
    dataset = write_tensor_dataset(tmp_path / "ds")  # 9 songs of 9 lengths
    lengths = PreprocessedDataset(dataset).lengths
    assert len(set(lengths)) == 9
    code = main(["--plain", "-y", "fixed", "--checkpoint-dir", str(tiny_root_readonly), "--dataset-dir", str(dataset),
                 "--output-dir", str(tmp_path / "out"), "--num-workers", "0", "--batch-size", "4",
                 "--gradient-accumulation", "1", "--epochs", "2", "--rank", "2", "--alpha", "4", "--save-every",
                 "100"])
    out = capsys.readouterr().out
    assert code == 0, out
    # groups by length: 21 24 27 30 | 33 36 39 42 | 45, cropped to 21, 33 and 45 frames
    share = (4 * 21 + 4 * 33 + 45) / sum(lengths)
    assert ("Batches: 4 songs x accumulation 1 x 1 process = effective batch 4; 3 batches per epoch; an epoch "
            f"trains {100 * share:.1f}% of the audio frames (every frame within 2 epochs)") in out
    assert "2 epochs, 6 optimizer steps" in out  # ceil(9 / 4) = 3 per epoch, not 9 batches of 1
    summary = " ".join(out.split())
    assert "effective batch │ 4 (batch 4 x accumulation 1 x 1 processes)" in summary
    assert f"audio frames per epoch │ {100 * share:.1f}% trained" in summary


def test_lora_file_layout_is_ace_steps(tiny_root_readonly, tmp_path):
    dataset = write_tensor_dataset(tmp_path / "ds", n=2)
    out = tmp_path / "out"
    train(_config(tiny_root_readonly, dataset, out, "lora", epochs=1, attention_type="self"), "fixed", quiet=True)
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 4 and config["lora_alpha"] == 8
    assert sorted(config["target_modules"]) == ["self_attn.k_proj", "self_attn.o_proj", "self_attn.q_proj",
                                                "self_attn.v_proj"]
    with safe_open(str(out / "adapter_model.safetensors"), "pt") as f:
        keys = set(f.keys())
        header = json.loads(f.metadata()["lora_adapter_metadata"])
    assert "base_model.model.layers.0.self_attn.o_proj.lora_A.weight" in keys
    assert all(k.startswith("base_model.model.layers.") and "self_attn" in k for k in keys)
    assert header["transformer.r"] == 4 and header["transformer.lora_alpha"] == 8


def test_empty_dataset_fails_loudly(tiny_root_readonly, tmp_path, capsys):
    ds = tmp_path / "empty"
    ds.mkdir()
    (ds / "manifest.json").write_text(json.dumps({"samples": [], "num_samples": 0}))
    code = main(["--plain", "-y", "fixed", "--checkpoint-dir", str(tiny_root_readonly), "--dataset-dir", str(ds),
                 "--output-dir", str(tmp_path / "out"), "--num-workers", "0"])
    out = capsys.readouterr().out
    assert code == 3
    assert "[FAIL]" in out and "no samples" in out and "Training complete" not in out


def test_manifest_naming_missing_files(tmp_path):
    ds = write_tensor_dataset(tmp_path / "ds", n=2)
    (ds / "song1.pt").unlink()
    with pytest.raises(Exception, match="names 1 missing file"):
        PreprocessedDataset(ds)


def test_cli_help_is_grouped_and_per_command(capsys):
    with pytest.raises(SystemExit):
        main(["fixed", "--help"])
    fixed = capsys.readouterr().out
    for heading in ("Model and paths:", "LoRA:", "LoKR:", "Training:", "Corrected training:", "Data loading:",
                    "Checkpointing:", "Logging:", "Preprocessing:"):
        assert heading in fixed
    assert "--cfg-ratio" in fixed and "-r RANK, --rank RANK" in fixed and "--lr RATE, --learning-rate RATE" in fixed
    assert "--no-gradient-checkpointing" in fixed
    with pytest.raises(SystemExit):
        main(["vanilla", "--help"])
    assert "--cfg-ratio" not in capsys.readouterr().out


def test_cli_defaults_match_the_seed():
    c = Config()
    assert (c.model_variant, c.rank, c.alpha, c.dropout, c.attention_type, c.bias) == ("turbo", 64, 128, 0.1, "both",
                                                                                         "none")
    assert c.target_modules == ["q_proj", "k_proj", "v_proj", "o_proj"]
    assert (c.learning_rate, c.batch_size, c.gradient_accumulation, c.epochs, c.warmup_steps) == (1e-4, 1, 4, 100, 100)
    assert (c.weight_decay, c.max_grad_norm, c.seed, c.shift, c.num_inference_steps) == (0.01, 1.0, 42, 3.0, 8)
    assert (c.optimizer_type, c.scheduler_type, c.gradient_checkpointing, c.cfg_ratio) == ("adamw", "cosine", True, 0.15)
    assert (c.num_workers, c.pin_memory, c.prefetch_factor, c.persistent_workers) == (4, True, 2, True)
    assert (c.save_every, c.log_every, c.log_heavy_every, c.sample_every_n_epochs) == (10, 10, 50, 0)
    assert (c.lokr_linear_dim, c.lokr_linear_alpha, c.lokr_factor) == (64, 128, -1)


def test_windows_forces_zero_workers(monkeypatch):
    monkeypatch.setattr("sys.platform", "win32")
    assert Config(num_workers=8).effective_num_workers == 0
    monkeypatch.setattr("sys.platform", "linux")
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    assert Config(num_workers=8).effective_num_workers == 8
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert Config(num_workers=8).effective_num_workers == 2


def test_compile_matches_eager(tiny_root_readonly, tmp_path):
    dataset = write_tensor_dataset(tmp_path / "ds", n=2)  # 24 and 30 frames, batched together as 2 x 24
    eager = train(_config(tiny_root_readonly, dataset, tmp_path / "eager", "lora", epochs=2, batch_size=2), "fixed",
                  quiet=True)
    compiled = train(_config(tiny_root_readonly, dataset, tmp_path / "compiled", "lora", epochs=2, batch_size=2,
                             compile=True), "fixed", quiet=True)
    a, b = eager.adapter.export_tensors(), compiled.adapter.export_tensors()
    assert all(torch.allclose(a[k], b[k], atol=1e-5, rtol=1e-4) for k in a)
    assert compiled.losses == pytest.approx(eager.losses, rel=1e-4)


def test_quantize_base_needs_cuda(tiny_root_readonly, tmp_path, capsys):
    dataset = write_tensor_dataset(tmp_path / "ds", n=1)
    code = main(["--plain", "-y", "fixed", "--checkpoint-dir", str(tiny_root_readonly), "--dataset-dir", str(dataset),
                 "--output-dir", str(tmp_path / "out"), "--quantize-base", "nf4", "--device", "cpu"])
    assert code == 2
    assert "--quantize-base nf4 needs a CUDA GPU" in capsys.readouterr().out
