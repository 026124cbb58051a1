"""XL datasets, training, adapter formats, memory forecast and inference defaults (issue 15, points 4-7).

Everything runs on a tiny XL-shaped root written by `sidestep.model.tiny` in the released XL layout
(sharded weights + `model.safetensors.index.json`) next to a tiny 2B folder.
"""

import json
import re
import shutil
from pathlib import Path

import pytest
import soundfile
import torch

from helpers import OfficialNames, write_tensor_dataset
from sidestep.config import Config
from sidestep.data.manifest import check_made_for, read_manifest
from sidestep.errors import SidestepError
from sidestep.estimate.sensitivity import estimate
from sidestep.model import discovery
from sidestep.model.configs import TINY_XL_DIT_CONFIG
from sidestep.model.tiny import write_tiny_checkpoint_root
from sidestep.train.recipe import train

XL = "acestep-v15-xl-turbo"


@pytest.fixture(scope="module")
def xl_root_readonly(tmp_path_factory):
    """turbo (2B) + xl-turbo + xl-sft, tiny, official layout. Do not modify it."""
    return write_tiny_checkpoint_root(tmp_path_factory.mktemp("xl") / "checkpoints",
                                      variants=("turbo", "xl-turbo", "xl-sft"))


@pytest.fixture(scope="module")
def xl_tensors(xl_root_readonly, tmp_path_factory):
    """Two songs preprocessed with xl-turbo. Do not modify it."""
    from sidestep.cli.demo import write_songs
    from sidestep.data.preprocess import preprocess_dataset

    tmp = tmp_path_factory.mktemp("xl-data")
    songs = write_songs(tmp / "songs")
    data = json.loads(songs.read_text())
    data["samples"] = data["samples"][:2]  # two songs of different lengths are enough
    songs.write_text(json.dumps(data))
    for extra in (tmp / "songs").glob("*.wav"):
        if extra.name not in {s["filename"] for s in data["samples"]}:
            extra.unlink()
    wave, rate = soundfile.read(tmp / "songs" / data["samples"][1]["filename"])
    soundfile.write(tmp / "songs" / data["samples"][1]["filename"], wave[:int(rate * 2.2)], rate)  # lengths differ
    config = Config(checkpoint_dir=str(xl_root_readonly), model_variant="xl-turbo", num_workers=0, seed=0,
                    audio_dir=str(tmp / "songs"), dataset_json=str(songs), tensor_output=str(tmp / "tensors"))
    return preprocess_dataset(config).output_dir


def _train_config(root, dataset, out, **changes):
    settings = dict(checkpoint_dir=str(root), dataset_dir=str(dataset), output_dir=str(out), epochs=1,
                    save_every=1, rank=4, alpha=8, learning_rate=1e-3, warmup_steps=0, num_workers=0, seed=0,
                    model_variant="xl-turbo")
    settings.update(changes)
    return Config(**settings)


def _copy(folder, dst, **model_changes):
    """A copy of a dataset folder whose manifest's model record is changed (None values removed)."""
    shutil.copytree(folder, dst)
    manifest = json.loads((dst / "manifest.json").read_text())
    manifest["model"].update(model_changes)
    manifest["model"] = {k: v for k, v in manifest["model"].items() if v is not None}
    (dst / "manifest.json").write_text(json.dumps(manifest))
    return dst


# -- 4. datasets record the model they were made for ---------------------------------------------------------------

def test_xl_preprocessing_writes_the_encoder_width_and_records_the_model(xl_tensors):
    manifest = read_manifest(xl_tensors)
    assert (manifest.family, manifest.encoder_width) == ("XL", TINY_XL_DIT_CONFIG["encoder_hidden_size"])
    assert manifest.model["name"] == XL and manifest.model["is_turbo"] is True
    widths = {torch.load(p, weights_only=True)["encoder_hidden_states"].shape[-1] for p in manifest.files()}
    # the condition encoder's width (64), not the XL decoder's (96)
    assert widths == {TINY_XL_DIT_CONFIG["encoder_hidden_size"]} != {TINY_XL_DIT_CONFIG["hidden_size"]}
    assert len(set(manifest.lengths.values())) == 2


def test_xl_tensors_train_xl_and_are_refused_by_2b(xl_root_readonly, xl_tensors, tmp_path):
    result = train(_train_config(xl_root_readonly, xl_tensors, tmp_path / "xl"), "fixed", quiet=True)
    assert result.optimizer_steps > 0
    with pytest.raises(SidestepError) as err:
        train(_train_config(xl_root_readonly, xl_tensors, tmp_path / "2b", model_variant="turbo"), "fixed",
              quiet=True)
    message = str(err.value)
    assert "\n" not in message
    assert (f"{xl_tensors}: preprocessed with {XL} (ACE-Step XL), cannot train acestep-v15-turbo (ACE-Step 2B); "
            "rerun train.py preprocess with --model-variant acestep-v15-turbo") in message
    assert not (tmp_path / "2b").exists()  # refused before any output or model


def test_2b_tensors_are_refused_by_xl_in_training_estimate_and_validation(xl_root_readonly, xl_tensors, tmp_path):
    b2 = _copy(xl_tensors, tmp_path / "b2", name="acestep-v15-turbo", family="2B", variant="turbo")
    match = (r"b2: preprocessed with acestep-v15-turbo \(ACE-Step 2B\), cannot train acestep-v15-xl-turbo "
             r"\(ACE-Step XL\)")
    with pytest.raises(SidestepError, match=match):
        train(_train_config(xl_root_readonly, b2, tmp_path / "out"), "fixed", quiet=True)
    with pytest.raises(SidestepError, match=match):
        train(_train_config(xl_root_readonly, xl_tensors, tmp_path / "out", val_dataset_dir=str(b2)), "fixed",
              quiet=True)
    with pytest.raises(SidestepError, match=match):
        estimate(Config(checkpoint_dir=str(xl_root_readonly), model_variant="xl-turbo", dataset_dir=str(b2),
                        output=str(tmp_path / "m.json"), estimate_batches=1))
    assert not (tmp_path / "m.json").exists()


def test_without_a_record_the_tensor_width_is_compared(xl_root_readonly, xl_tensors, tmp_path):
    xl = discovery.find_model(xl_root_readonly, "xl-turbo")
    narrow = write_tensor_dataset(tmp_path / "narrow", n=2, hidden=48)  # no model record at all
    with pytest.raises(SidestepError, match=r"narrow: song0\.pt holds condition tensors 48 wide, "
                                            r"acestep-v15-xl-turbo expects 64 \(made for another model\); rerun"):
        check_made_for(read_manifest(narrow), xl)
    with pytest.raises(SidestepError, match="song0.pt holds condition tensors 48 wide"):
        train(_train_config(xl_root_readonly, narrow, tmp_path / "out"), "fixed", quiet=True)
    # a recorded width is trusted over opening files
    recorded = _copy(xl_tensors, tmp_path / "recorded", family=None, encoder_width=2048)
    with pytest.raises(SidestepError, match="its manifest records condition tensors 2048 wide, acestep-v15-xl-turbo "
                                            "expects 64"):
        check_made_for(read_manifest(recorded), xl)
    # the right width without any record is accepted (datasets made before the record existed)
    check_made_for(read_manifest(write_tensor_dataset(tmp_path / "old", n=2, hidden=64)), xl)
    check_made_for(read_manifest(_copy(xl_tensors, tmp_path / "bare", family=None, encoder_width=None)), xl)


# -- 7. previews and generate use the model's own inference defaults -----------------------------------------------

def test_xl_inference_defaults_come_from_the_model_not_its_name(xl_root_readonly, tmp_path):
    from sidestep.generate import BASE_SETTINGS, TURBO_SETTINGS, sampler_settings
    from sidestep.model.tiny import write_dit_folder
    from sidestep.train.previews import PreviewSampler

    root = tmp_path / "checkpoints"
    shutil.copytree(xl_root_readonly, root)
    # names that say the opposite of what their config.json says
    write_dit_folder(root / "xl-sft-turbo-lookalike", dict(TINY_XL_DIT_CONFIG, is_turbo=True, model_version="turbo"),
                     shards=2)
    write_dit_folder(root / "my-xl-turbo-tune", dict(TINY_XL_DIT_CONFIG, is_turbo=False, model_version="sft"),
                     shards=2)
    cases = {"xl-turbo": TURBO_SETTINGS, "xl-sft": BASE_SETTINGS, "xl-sft-turbo-lookalike": TURBO_SETTINGS,
             "my-xl-turbo-tune": BASE_SETTINGS}
    assert (TURBO_SETTINGS.steps, TURBO_SETTINGS.shift, TURBO_SETTINGS.guidance) == (8, 3.0, 1.0)
    assert (BASE_SETTINGS.steps, BASE_SETTINGS.shift, BASE_SETTINGS.guidance) == (50, 1.0, 7.0)
    for variant, expected in cases.items():
        model = discovery.resolve_training_model(discovery.find_model(root, variant), root=root)
        assert model.entry.family == "XL"
        assert sampler_settings(model.entry) == sampler_settings(model) == expected, variant
        previews = PreviewSampler(model.parts(), None, tmp_path / variant, prompts=["calm"], device="cpu",
                                  dtype=torch.float32, base_variant=model.base_variant)
        assert previews.settings == expected, variant
    # --base-model in its XL spelling
    assert sampler_settings(discovery.find_model(root, "xl-sft"), "xl-turbo") == TURBO_SETTINGS


@pytest.mark.parametrize("variant,expected", [("xl-turbo", "8 steps, shift 3, guidance 1"),
                                              ("xl-sft", "50 steps, shift 1, guidance 7")])
def test_generate_on_xl_uses_its_defaults_and_equals_the_staged_previews(xl_root_readonly, tmp_path, capsys,
                                                                        monkeypatch, variant, expected):
    import soundfile

    from sidestep.cli.main import main
    from sidestep.generate import (build_pipeline, decode_latents, encode_condition, encode_text, latent_length,
                                   sample_latents, sampler_settings)
    from sidestep.model.loader import load_model_dit, load_text_encoder, load_vae

    monkeypatch.chdir(tmp_path)  # sidestep.log
    out = tmp_path / "song.wav"
    assert main(["--plain", "generate", "--checkpoint-dir", str(xl_root_readonly), "--model-variant", variant,
                 "--prompt", "calm piano", "--duration", "1", "--seed", "3", "--out", str(out)]) == 0
    assert expected in capsys.readouterr().out
    parts = discovery.locate_parts(xl_root_readonly, variant)
    dit = load_model_dit(parts.model, silence_latent=parts.silence_latent)
    tokenizer, text_encoder = load_text_encoder(parts.text_encoder)
    vae = load_vae(parts.vae)
    assert build_pipeline(dit, vae, tokenizer, text_encoder).is_turbo == (variant == "xl-turbo")
    settings = sampler_settings(parts.model)
    text = encode_text(tokenizer, text_encoder, "calm piano", None, 1.0)
    cond = encode_condition(dit.condition_encoder, text, latent_length(1.0), torch.float32)
    staged = decode_latents(vae, sample_latents(dit.transformer, cond, seed=3, steps=settings.steps,
                                                shift=settings.shift, guidance=settings.guidance))[0]
    written, rate = soundfile.read(out, dtype="float32", always_2d=True)
    assert rate == 48000 and written.shape[0] == staged.shape[1]
    assert torch.allclose(torch.from_numpy(written.T.copy()), staged.clamp(-1, 1), atol=1e-4)


# -- 5. training and adapter files on XL ----------------------------------------------------------------------------

def _xl_inputs(seed=0, T=20, L=7):
    """Decoder inputs at the tiny XL widths: latents 64, context 128, condition = the encoder width (64)."""
    g = torch.Generator().manual_seed(seed)
    t = torch.tensor([0.6])
    return dict(hidden_states=torch.randn(1, T, 64, generator=g), timestep=t, timestep_r=t,
                encoder_hidden_states=torch.randn(1, L, TINY_XL_DIT_CONFIG["encoder_hidden_size"], generator=g),
                context_latents=torch.randn(1, T, 128, generator=g))


def _xl_decoder(root):
    from sidestep.model.loader import load_dit

    return load_dit(root / XL, with_condition_encoder=False).transformer.eval()


@pytest.fixture(scope="module")
def xl_trained(xl_root_readonly, tmp_path_factory):
    """fixed and vanilla x LoRA (r 4, alpha 16) and LoKR on tiny xl-turbo, default targets (q/k/v/o, self and cross)."""
    tmp = tmp_path_factory.mktemp("xl-formats")
    silence = _xl_decoder_silence(xl_root_readonly)
    dataset = write_tensor_dataset(tmp / "ds", n=3, silence=silence)  # 24, 30, 36 frames
    runs = {}
    for mode in ("fixed", "vanilla"):
        for kind in ("lora", "lokr"):
            config = _train_config(xl_root_readonly, dataset, tmp / f"{mode}-{kind}", adapter_type=kind, epochs=2,
                                   save_every=100, rank=4, alpha=16, lokr_linear_dim=4, lokr_linear_alpha=8,
                                   learning_rate=1e-2)
            runs[mode, kind] = train(config, mode, quiet=True)
    return runs


def _xl_decoder_silence(root):
    from sidestep.model.loader import load_dit

    return load_dit(root / XL).silence_latent()


@pytest.mark.parametrize("mode", ["fixed", "vanilla"])
@pytest.mark.parametrize("kind", ["lora", "lokr"])
def test_fixed_and_vanilla_lora_and_lokr_train_on_xl(xl_trained, xl_root_readonly, mode, kind):
    from sidestep.adapters import load_adapter

    result = xl_trained[mode, kind]
    assert result.optimizer_steps > 0 and all(torch.isfinite(torch.tensor(result.losses)))
    run = json.loads((result.output_dir / "sidestep_run.json").read_text())
    assert run["model"] == {"family": "XL", "hidden_size": 96, "num_layers": 4}
    base = _xl_decoder(xl_root_readonly)
    with torch.no_grad():
        before = base(**_xl_inputs()).sample
        adapter = load_adapter(base, result.output_dir)
        after = base.eval()(**_xl_inputs()).sample
    assert adapter.name == kind and len(adapter.modules) == 8 * TINY_XL_DIT_CONFIG["num_hidden_layers"]
    assert (after - before).abs().max() > 1e-4  # it learned something


def test_released_xl_adapters_have_256_modules():
    """The full-size XL decoder (on meta, no memory): LoRA and LoKR wrap q/k/v/o of self and cross attention in
    all 32 layers, and the LoRA file would hold 512 tensors under ACE-Step's names."""
    from sidestep.model.configs import RELEASED_XL_CONFIG
    from sidestep.model.loader import build_modules
    from sidestep.adapters import select_target_modules
    from sidestep.adapters.lora import Lora as LoraAdapter
    from helpers import LokrAdapter

    official = set(json.loads((Path(__file__).resolve().parents[1] / "reference/xl/keys-v15-xl.json").read_text()))
    decoder = build_modules(RELEASED_XL_CONFIG)["transformer"]
    modules = select_target_modules(decoder)
    lora = LoraAdapter(decoder, modules, 64, 128, 0.0)
    keys = lora.export_tensors().keys()
    assert len(modules) == 256 and len(keys) == 512
    mapped = {"decoder." + k[len("base_model.model."):].rsplit(".lora_", 1)[0] + ".weight" for k in keys}
    assert len(mapped) == 256 and mapped <= official
    lokr = LokrAdapter(build_modules(RELEASED_XL_CONFIG)["transformer"], modules, 64, 128)
    assert len(lokr.network.loras) == 256


def _ours(root, folder):
    from sidestep.adapters import load_adapter

    decoder = _xl_decoder(root)
    load_adapter(decoder, folder)
    return decoder.eval()


def test_xl_lora_loads_in_reference_peft_layout_and_diffusers_with_the_same_outputs(xl_trained, xl_root_readonly):
    from diffusers import AceStepPipeline, FlowMatchEulerDiscreteScheduler
    from peft import PeftModel

    from sidestep.model.loader import load_dit, load_text_encoder, load_vae

    folder = xl_trained["fixed", "lora"].output_dir
    with torch.no_grad():
        ours = _ours(xl_root_readonly, folder)(**_xl_inputs()).sample
        base = _xl_decoder(xl_root_readonly)(**_xl_inputs()).sample
    assert (ours - base).abs().max() > 1e-3

    # ACE-Step's way: PeftModel.from_pretrained on the reference names, reading adapter_config.json
    decoder = _xl_decoder(xl_root_readonly)
    view = OfficialNames(decoder)
    peft = PeftModel.from_pretrained(view, str(folder))
    assert len([m for m in peft.modules() if hasattr(m, "lora_A")]) == 32  # 8 per layer, 4 layers
    for layer, block in zip(decoder.layers, view.layers):  # PEFT swapped the view's modules: run them in place
        for kind in ("self_attn", "cross_attn"):
            attn, names = getattr(layer, kind), getattr(block, kind)
            attn.to_q, attn.to_k, attn.to_v, attn.to_out[0] = names.q_proj, names.k_proj, names.v_proj, names.o_proj
    with torch.no_grad():
        reference = decoder(**_xl_inputs()).sample
    assert (reference - ours).abs().max() <= 1e-5

    # diffusers' way: AceStepPipeline.load_lora_weights, reading the header's lora_adapter_metadata
    dit = load_dit(xl_root_readonly / XL)
    tokenizer, text_encoder = load_text_encoder(xl_root_readonly / "Qwen3-Embedding-0.6B")
    pipe = AceStepPipeline(vae=load_vae(xl_root_readonly / "vae"), text_encoder=text_encoder, tokenizer=tokenizer,
                           transformer=dit.transformer, condition_encoder=dit.condition_encoder,
                           scheduler=FlowMatchEulerDiscreteScheduler(num_train_timesteps=1, shift=1.0))
    pipe.load_lora_weights(str(folder), weight_name="adapter_model.safetensors")
    with torch.no_grad():
        theirs = pipe.transformer.eval()(**_xl_inputs()).sample
    assert (theirs - ours).abs().max() <= 1e-5


def test_xl_lokr_reloads_with_lycoris_own_loader(xl_trained, xl_root_readonly):
    from lycoris import create_lycoris_from_weights
    from safetensors.torch import load_file

    path = xl_trained["fixed", "lokr"].output_dir / "lokr_weights.safetensors"
    decoder = _xl_decoder(xl_root_readonly)
    network, _ = create_lycoris_from_weights(1.0, str(path), OfficialNames(decoder))
    network.apply_to()
    network.load_state_dict(load_file(path))
    assert len(network.loras) == 32
    with torch.no_grad():
        theirs = decoder(**_xl_inputs()).sample
        ours = _ours(xl_root_readonly, path.parent)(**_xl_inputs()).sample
        base = _xl_decoder(xl_root_readonly)(**_xl_inputs()).sample
    assert (theirs - ours).abs().max() <= 1e-5 and (ours - base).abs().max() > 1e-4


@pytest.mark.parametrize("kind", ["lora", "lokr"])
def test_xl_comfyui_export_maps_every_key(xl_trained, xl_root_readonly, tmp_path, kind):
    from safetensors import safe_open
    from safetensors.torch import load_file

    from sidestep.cli.main import main
    from sidestep.model.loader import INDEX_FILE
    from sidestep.train.export import COMFY_PREFIX

    out = xl_trained["fixed", kind].output_dir
    target = tmp_path / "comfy.safetensors"
    assert main(["--plain", "export", "--format", "comfyui", str(out), str(target)]) == 0
    exported = load_file(target)
    weights = json.loads((xl_root_readonly / XL / INDEX_FILE).read_text())["weight_map"]  # the XL checkpoint's keys
    shapes = {}
    for shard in set(weights.values()):
        with safe_open(str(xl_root_readonly / XL / shard), "pt") as f:
            shapes.update({k: f.get_slice(k).get_shape() for k in f.keys()})
    # ComfyUI's names for each decoder weight `decoder.<path>.weight` (docs/design.md §6.3)
    paths = {k: k[len("decoder."):-len(".weight")] for k in weights if k.startswith("decoder.") and
             k.endswith(".weight")}
    lora_names = {COMFY_PREFIX + path: k for k, path in paths.items()}
    lycoris_names = {"lycoris_" + path.replace(".", "_"): k for k, path in paths.items()}
    targets = {}
    for key in exported:
        if kind == "lora":
            module = key.rsplit(".lora_", 1)[0] if ".lora_" in key else key.rsplit(".", 1)[0]
            weight = lora_names.get(module)
        else:
            weight = lycoris_names.get(key.split(".")[0])
        assert weight is not None, key  # every key lands on a weight of the XL checkpoint
        targets.setdefault(weight, []).append(key)
    assert len(targets) == 8 * TINY_XL_DIT_CONFIG["num_hidden_layers"]
    for weight, keys in targets.items():
        out_dim, in_dim = shapes[weight]
        if kind == "lora":
            a, b = (exported[next(k for k in keys if k.endswith(s))] for s in (".lora_A.weight", ".lora_B.weight"))
            assert a.shape == (4, in_dim) and b.shape == (out_dim, 4), weight
            assert exported[next(k for k in keys if k.endswith(".alpha"))].item() == 16.0
        else:
            assert any(k.endswith(".lokr_w1") for k in keys) and any(k.endswith(".alpha") for k in keys), weight


# -- 6. memory: the forecast for XL ---------------------------------------------------------------------------------

GIB = 2**30


def test_xl_forecast_and_the_16_and_10_gib_targets():
    """XL LoRA r64, 60 s, batch 1, bf16, checkpointing: the forecast the README quotes (CUDA, no context)."""
    from sidestep.model.configs import RELEASED_2B_CONFIG, RELEASED_XL_CONFIG
    from sidestep.train.forecast import forecast

    shapes = json.loads((Path(__file__).resolve().parents[1] / "reference/xl/keys-v15-xl.json").read_text())
    decoder_params = sum(int(torch.tensor(s).prod()) for k, s in shapes.items() if k.startswith("decoder."))
    f = forecast(Config(), RELEASED_XL_CONFIG, torch.device("cuda"), "bf16", frames=1500)
    assert f.notes["base_params"] == decoder_params and f.parts["weights"] == decoder_params * 2
    lora = 32 * 2 * 64 * ((2560 + 4096) * 2 + (2560 + 1024) * 2)  # q: 2560->4096, o: 4096->2560; k, v: 2560->1024
    assert f.notes["trainable_params"] == lora == 83_886_080
    assert f.parts["micro-batch"] > 0.5 * GIB  # a 60 s clip's activations, recomputed block and gradients
    assert 8 * GIB < f.total < 15 * GIB  # 16 GiB with room for the CUDA context (README: 9.4 GiB)
    nf4 = forecast(Config(quantize_base="nf4"), RELEASED_XL_CONFIG, torch.device("cuda"), "bf16", frames=1500)
    assert 3 * GIB < nf4.total < 9 * GIB and nf4.increment == f.increment  # 10 GiB with room (README: 3.9 GiB)
    two_b = forecast(Config(), RELEASED_2B_CONFIG, torch.device("cuda"), "bf16", frames=1500)
    assert f.total > 1.5 * two_b.total


def test_dry_run_forecasts_xl_and_refuses_a_2b_dataset(xl_root_readonly, xl_tensors, tmp_path, capsys):
    from sidestep.cli.main import main

    common = ["--plain", "fixed", "--checkpoint-dir", str(xl_root_readonly), "--model-variant", "xl-turbo",
              "--output-dir", str(tmp_path / "out"), "--dry-run", "--device", "cpu", "--precision", "fp32"]
    assert main(common + ["--dataset-dir", str(xl_tensors)]) == 0
    text = capsys.readouterr().out
    frames = max(read_manifest(xl_tensors).lengths.values())
    assert f"batch 1 x {frames} frames" in text and "weights" in text
    decoder = _xl_decoder(xl_root_readonly)
    weights = sum(p.numel() for p in decoder.parameters()) * 4 / GIB
    assert re.search(rf"weights\W+{weights:.3f}", text), text  # the tiny XL decoder in fp32
    b2 = _copy(xl_tensors, tmp_path / "b2", name="acestep-v15-turbo", family="2B")
    assert main(common + ["--dataset-dir", str(b2)]) == 2
    assert "preprocessed with acestep-v15-turbo (ACE-Step 2B), cannot train acestep-v15-xl-turbo" in \
        capsys.readouterr().out
    assert not (tmp_path / "out").exists()
