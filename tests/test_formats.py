"""Saved adapters load in real clients: diffusers' AceStepPipeline, LyCORIS's own loader, ComfyUI layout."""

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from helpers import OfficialNames, comfyui_to_side_step, decoder_inputs, write_tensor_dataset
from sidestep.cli.main import main
from sidestep.config import Config
from sidestep.errors import SidestepError
from sidestep.model.loader import load_dit, load_text_encoder, load_vae
from sidestep.train.export import FORMATS, ExportFormat, comfyui_tensors, export_adapter
from sidestep.train.recipe import train


@pytest.fixture(scope="module")
def trained(tiny_root_readonly, tmp_path_factory):
    """One LoRA (r=4, alpha=16, q/o only) and one LoKR run, each with two checkpoints."""
    tmp = tmp_path_factory.mktemp("formats")
    dataset = write_tensor_dataset(tmp / "ds", n=2)
    runs = {}
    for kind in ("lora", "lokr"):
        config = Config(checkpoint_dir=str(tiny_root_readonly), dataset_dir=str(dataset), output_dir=str(tmp / kind),
                        adapter_type=kind, epochs=4, save_every=2, rank=4, alpha=16, lokr_linear_dim=4,
                        lokr_linear_alpha=8, learning_rate=1e-2, warmup_steps=0, gradient_accumulation=1,
                        num_workers=0, target_modules=["q_proj", "o_proj"])
        runs[kind] = train(config, "fixed", quiet=True)
    return runs


def _ours(root, folder):
    from sidestep.adapters import load_adapter

    decoder = load_dit(root / "acestep-v15-turbo").transformer
    load_adapter(decoder, folder)
    return decoder.eval()


def _pipeline(root):
    from diffusers import AceStepPipeline, FlowMatchEulerDiscreteScheduler

    dit = load_dit(root / "acestep-v15-turbo")
    tokenizer, text_encoder = load_text_encoder(root / "Qwen3-Embedding-0.6B")
    return AceStepPipeline(vae=load_vae(root / "vae"), text_encoder=text_encoder, tokenizer=tokenizer,
                           transformer=dit.transformer, condition_encoder=dit.condition_encoder,
                           scheduler=FlowMatchEulerDiscreteScheduler(num_train_timesteps=1, shift=1.0))


def test_lora_loads_in_diffusers_pipeline_with_trained_strength(trained, tiny_root_readonly):
    out = trained["lora"].output_dir
    folders = [out, out / "checkpoints" / "epoch_2", out / "checkpoints" / "epoch_4"]
    base = load_dit(tiny_root_readonly / "acestep-v15-turbo").transformer
    with torch.no_grad():
        base_out = base(**decoder_inputs()).sample
    outputs = []
    for folder in folders:
        pipe = _pipeline(tiny_root_readonly)
        pipe.load_lora_weights(str(folder), weight_name="adapter_model.safetensors")
        with torch.no_grad():
            theirs = pipe.transformer(**decoder_inputs()).sample
            ours = _ours(tiny_root_readonly, folder)(**decoder_inputs()).sample
        assert (theirs - ours).abs().max() <= 1e-5, folder
        outputs.append(ours)
    assert (outputs[0] - base_out).abs().max() > 1e-3          # the adapter does something
    assert (outputs[1] - outputs[2]).abs().max() > 0            # checkpoints differ from each other
    assert torch.equal(outputs[0], outputs[2])                  # final == last checkpoint


def test_lora_header_carries_alpha_for_diffusers(trained):
    with safe_open(str(trained["lora"].output_dir / "adapter_model.safetensors"), "pt") as f:
        header = json.loads(f.metadata()["lora_adapter_metadata"])
    assert header["transformer.r"] == 4 and header["transformer.lora_alpha"] == 16
    assert sorted(header["transformer.target_modules"]) == ["to_out.0", "to_q"]
    config = json.loads((trained["lora"].output_dir / "adapter_config.json").read_text())
    assert sorted(config["target_modules"]) == ["o_proj", "q_proj"] and config["r"] == 4


def test_lokr_reloads_with_lycoris_own_loader(trained, tiny_root_readonly):
    from lycoris import create_lycoris_from_weights

    out = trained["lokr"].output_dir
    path = out / "lokr_weights.safetensors"
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    assert meta["algo"] == "lokr" and meta["format"] == "lycoris"
    assert json.loads(meta["lokr_config"])["target_modules"] == ["o_proj", "q_proj"]
    assert json.loads((out / "lokr_config.json").read_text())["linear_dim"] == 4
    decoder = load_dit(tiny_root_readonly / "acestep-v15-turbo").transformer
    network, _ = create_lycoris_from_weights(1.0, str(path), OfficialNames(decoder))
    network.apply_to()
    network.load_state_dict(load_file(path))
    assert len(network.loras) == 16
    with torch.no_grad():
        theirs = decoder(**decoder_inputs()).sample
        ours = _ours(tiny_root_readonly, out)(**decoder_inputs()).sample
        base = load_dit(tiny_root_readonly / "acestep-v15-turbo").transformer(**decoder_inputs()).sample
    assert (theirs - ours).abs().max() <= 1e-5
    assert (ours - base).abs().max() > 1e-4


@pytest.mark.parametrize("kind", ["lora", "lokr"])
def test_comfyui_export_round_trip(trained, tmp_path, kind):
    out = trained[kind].output_dir
    target = tmp_path / f"{kind}_comfy.safetensors"
    assert main(["--plain", "export", "--format", "comfyui", str(out), str(target)]) == 0
    exported = load_file(target)
    original = load_file(out / ("adapter_model.safetensors" if kind == "lora" else "lokr_weights.safetensors"))
    back = comfyui_to_side_step(exported)
    assert back.keys() == original.keys()
    assert all(torch.equal(back[k], original[k]) for k in original)
    if kind == "lora":
        alphas = {k: v for k, v in exported.items() if k.endswith(".alpha")}
        assert len(alphas) == 16 and all(v.item() == 16.0 for v in alphas.values())
        assert "diffusion_model.decoder.layers.0.self_attn.q_proj.lora_A.weight" in exported
        assert "diffusion_model.decoder.layers.0.self_attn.q_proj.alpha" in exported
    else:
        assert "lycoris_layers_0_self_attn_q_proj.lokr_w1" in exported
        assert "lycoris_layers_0_self_attn_q_proj.alpha" in exported  # LyCORIS's own alpha, read by ComfyUI


def test_export_dispatches_on_format(trained, tmp_path, monkeypatch, capsys):
    """`--format` picks the writer from the FORMATS table: a second format registered there is offered and used."""
    def side_step_keys(adapter_dir, out_file):  # a real second layout: ComfyUI's tensors under Side-Step's keys
        save_file(comfyui_to_side_step(comfyui_tensors(adapter_dir)[0]), str(out_file))
        return Path(out_file)

    monkeypatch.setitem(FORMATS, "side-step-keys", ExportFormat(side_step_keys, "Side-Step keys", "for tests"))
    out = trained["lora"].output_dir
    assert main(["--plain", "export", "--format", "side-step-keys", str(out), str(tmp_path / "a.safetensors")]) == 0
    assert "(Side-Step keys): for tests" in capsys.readouterr().out
    assert load_file(tmp_path / "a.safetensors").keys() == load_file(out / "adapter_model.safetensors").keys()
    assert main(["--plain", "export", str(out), str(tmp_path / "b.safetensors")]) == 0  # default: comfyui
    assert all(k.startswith("diffusion_model.") for k in load_file(tmp_path / "b.safetensors"))
    with pytest.raises(SystemExit) as exit_info:
        main(["--plain", "export", "--format", "a1111", str(out), str(tmp_path / "c.safetensors")])
    assert exit_info.value.code == 2 and "invalid choice: 'a1111'" in capsys.readouterr().err
    with pytest.raises(SidestepError, match="unknown export format 'a1111'; available: comfyui, side-step-keys"):
        export_adapter("a1111", out, tmp_path / "c.safetensors")


def test_export_of_a_non_adapter_folder_is_a_clear_error(tmp_path, capsys):
    assert main(["--plain", "export", str(tmp_path), str(tmp_path / "x.safetensors")]) == 2
    assert "no Side-Step adapter here" in capsys.readouterr().out
    with pytest.raises(Exception):
        comfyui_tensors(tmp_path)
