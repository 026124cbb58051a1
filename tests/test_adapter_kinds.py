"""Adapter kinds as plug-ins (sidestep/adapters/): the registry, DoRA / LoHA / OFT in their clients, and the
ComfyUI export of every kind checked against ComfyUI's own formula per module."""

import ast
import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from helpers import OfficialNames, decoder_inputs, write_tensor_dataset
from sidestep.adapters import KINDS, find_kind, load_adapter, option_owners, resume_options
from sidestep.cli.main import main
from sidestep.config import Config
from sidestep.errors import SidestepError
from sidestep.generate import adapter_strength
from sidestep.model.keys import decoder_path_to_diffusers
from sidestep.model.loader import load_dit
from sidestep.train.export import comfyui_tensors
from sidestep.train.recipe import train

SHARED_TARGETS = {"attention_type", "target_modules"}  # in the LoRA group, but every kind's targets
PACKAGE = Path(__file__).resolve().parents[1] / "sidestep"


# -- the registry ---------------------------------------------------------------------------------------------

def test_every_kind_is_an_adapter_type_and_owns_its_option_group():
    field = {f.name: f for f in Config.fields()}
    assert set(field["adapter_type"].metadata["choices"]) == set(KINDS)
    owners = option_owners()
    for kind in KINDS.values():
        assert set(kind.resume_options) <= set(kind.options) <= set(field), kind.name
        group = {f.name for f in Config.fields() if f.metadata["group"] == kind.label} - SHARED_TARGETS
        assert group <= set(kind.options), kind.name  # a kind's option group is asked only for that kind
    assert owners["rank"] == ("lora", "dora") and owners["oft_block_size"] == ("oft",)
    assert resume_options("loha")[:3] == ("adapter_type", "attention_type", "target_modules")


def _kind_branches(path: Path) -> list[str]:
    """`x == "lora"`, `x in ("lora", "lokr")`, ...: comparisons against an adapter kind's name."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Compare):
            for side in [node.left, *node.comparators]:
                names = [side] + (list(side.elts) if isinstance(side, (ast.Tuple, ast.List, ast.Set)) else [])
                found += [f"{path.name}:{node.lineno}" for n in names
                          if isinstance(n, ast.Constant) and n.value in KINDS]
        if isinstance(node, ast.Attribute) and node.attr in ("kind", "adapter_type") and \
                isinstance(node.value, ast.Name) and node.value.id == "adapter":
            found.append(f"{path.name}:{node.lineno} (adapter.{node.attr})")
    return found


def test_nothing_outside_the_adapters_package_branches_on_the_kind():
    offenders = [hit for path in PACKAGE.rglob("*.py") if "adapters" not in path.relative_to(PACKAGE).parts[:1]
                 for hit in _kind_branches(path)]
    assert offenders == []
    # the check can fail: the comparison the old checkpoints.py made is found
    probe = PACKAGE.parent / "tests" / "_probe_kind_branch.py"
    try:
        probe.write_text('def f(adapter):\n    return adapter.kind == "lora"\n')
        assert len(_kind_branches(probe)) == 2
    finally:
        probe.unlink()


def test_an_unknown_folder_names_every_kinds_files(tmp_path):
    with pytest.raises(SidestepError, match="no Side-Step adapter here .*DoRA: adapter_config.json.*"
                                            "LoHA: loha_weights.safetensors.*OFT: oft_weights.safetensors"):
        find_kind(tmp_path)


# -- trained adapters of every kind -----------------------------------------------------------------------------

SETTINGS = {"lora": {}, "dora": {}, "lokr": {}, "loha": {"loha_linear_dim": 4, "loha_linear_alpha": 2.0},
            "oft": {"oft_block_size": 4, "oft_constraint": 0.05}}
# runs: name -> (kind, options); LyCORIS' weight decomposition too (ComfyUI's `.dora_scale` for those kinds)
RUNS = {**{kind: (kind, extra) for kind, extra in SETTINGS.items()},
        "lokr_wd": ("lokr", {"lokr_weight_decompose": True}),
        "loha_wd": ("loha", {**SETTINGS["loha"], "loha_weight_decompose": True})}


@pytest.fixture(scope="module")
def trained(tiny_root_readonly, tmp_path_factory):
    """One run per kind (q/o projections), 2 epochs with a checkpoint after each."""
    tmp = tmp_path_factory.mktemp("kinds")
    dataset = write_tensor_dataset(tmp / "ds", n=2)
    runs = {}
    for name, (kind, extra) in RUNS.items():
        config = Config(checkpoint_dir=str(tiny_root_readonly), dataset_dir=str(dataset), output_dir=str(tmp / name),
                        adapter_type=kind, epochs=2, save_every=1, rank=4, alpha=16, lokr_linear_dim=4,
                        lokr_linear_alpha=8, learning_rate=2e-2, warmup_steps=0, gradient_accumulation=1,
                        num_workers=0, dropout=0.0, target_modules=["q_proj", "o_proj"], **extra)
        runs[name] = train(config, "fixed", quiet=True).output_dir
    return runs


def _decoder(root):
    return load_dit(root / "acestep-v15-turbo").transformer.eval()


def _run(decoder):
    with torch.no_grad():
        return decoder.eval()(**decoder_inputs()).sample


def test_dora_folder_is_aces_peft_layout_with_magnitudes(trained):
    folder = trained["dora"]
    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["use_dora"] is True and config["peft_type"] == "LORA" and config["r"] == 4
    tensors = load_file(folder / "adapter_model.safetensors")
    magnitudes = [k for k in tensors if k.endswith(".lora_magnitude_vector")]
    assert len(magnitudes) == 16 and "base_model.model.layers.0.self_attn.q_proj.lora_magnitude_vector" in tensors
    assert tensors["base_model.model.layers.0.self_attn.q_proj.lora_magnitude_vector"].shape == (64,)
    with safe_open(str(folder / "adapter_model.safetensors"), "pt") as f:
        header = json.loads(f.metadata()["lora_adapter_metadata"])
    assert header["transformer.use_dora"] is True and header["transformer.lora_alpha"] == 16
    assert find_kind(folder).name == "dora" and find_kind(trained["lora"]).name == "lora"


def test_dora_reloads_in_peft_and_diffusers_to_our_outputs(trained, tiny_root_readonly):
    from diffusers import AceStepPipeline, FlowMatchEulerDiscreteScheduler
    from peft import PeftModel

    from sidestep.model.loader import load_text_encoder, load_vae

    base = _run(_decoder(tiny_root_readonly))
    for folder in (trained["dora"], trained["dora"] / "checkpoints" / "epoch_1"):
        ours_decoder = _decoder(tiny_root_readonly)
        assert load_adapter(ours_decoder, folder).name == "dora"
        ours = _run(ours_decoder)
        assert (ours - base).abs().max() > 1e-3

        decoder = _decoder(tiny_root_readonly)  # PEFT's own loader on ACE-Step's module names
        view = OfficialNames(decoder)
        PeftModel.from_pretrained(view, str(folder))
        view.put_back(decoder)
        assert (_run(decoder) - ours).abs().max() <= 1e-5

        dit = load_dit(tiny_root_readonly / "acestep-v15-turbo")  # diffusers' pipeline, header only
        tokenizer, text_encoder = load_text_encoder(tiny_root_readonly / "Qwen3-Embedding-0.6B")
        pipe = AceStepPipeline(vae=load_vae(tiny_root_readonly / "vae"), text_encoder=text_encoder,
                               tokenizer=tokenizer, transformer=dit.transformer,
                               condition_encoder=dit.condition_encoder,
                               scheduler=FlowMatchEulerDiscreteScheduler(num_train_timesteps=1, shift=1.0))
        pipe.load_lora_weights(str(folder), weight_name="adapter_model.safetensors")
        assert (_run(pipe.transformer) - ours).abs().max() <= 1e-5


@pytest.mark.parametrize("kind", ["loha", "oft"])
def test_lycoris_kinds_reload_with_lycoris_own_loader(trained, tiny_root_readonly, kind):
    from lycoris import create_lycoris_from_weights

    folder = trained[kind]
    path = folder / f"{kind}_weights.safetensors"
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    assert meta["algo"] == KINDS[kind].algo and meta["format"] == "lycoris"
    assert json.loads(meta[f"{kind}_config"])["target_modules"] == ["o_proj", "q_proj"]
    assert (folder / f"{kind}_config.json").is_file()
    decoder = _decoder(tiny_root_readonly)
    network, _ = create_lycoris_from_weights(1.0, str(path), OfficialNames(decoder))
    network.apply_to()
    network.load_state_dict(load_file(path))
    assert len(network.loras) == 16
    ours_decoder = _decoder(tiny_root_readonly)
    assert load_adapter(ours_decoder, folder).name == kind
    ours = _run(ours_decoder)
    assert (_run(decoder) - ours).abs().max() <= 1e-5
    assert (ours - _run(_decoder(tiny_root_readonly))).abs().max() > 1e-4


# -- ComfyUI: its formula, per module ---------------------------------------------------------------------------

def _comfy_module(key: str) -> str:
    """ComfyUI's key prefix -> ACE-Step module name (the two forms the export writes)."""
    if key.startswith("diffusion_model.decoder."):
        return key[len("diffusion_model.decoder."):]
    assert key.startswith("lycoris_"), key
    name = key[len("lycoris_"):]
    for kind in ("self_attn", "cross_attn"):
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
            if name.endswith(f"_{kind}_{proj}"):
                return f"layers.{name.split('_')[1]}.{kind}.{proj}"
    raise AssertionError(key)


def comfyui_weight(file: dict[str, torch.Tensor], prefix: str, weight: torch.Tensor) -> torch.Tensor:
    """The patched weight ComfyUI computes at strength 1 for one module (comfy/weight_adapter, as documented in
    docs/design.md §6.3): delta from the kind's keys scaled by .alpha / rank, then DoRA's decomposition."""
    get = lambda name: file.get(f"{prefix}.{name}")  # noqa: E731
    alpha = get("alpha")
    if get("lora_A.weight") is not None:
        down, up = get("lora_A.weight"), get("lora_B.weight")
        delta = up @ down * (alpha.item() / down.shape[0] if alpha is not None else 1.0)
    elif get("hada_w1_a") is not None:
        rank = get("hada_w1_b").shape[0]
        delta = (get("hada_w1_a") @ get("hada_w1_b")) * (get("hada_w2_a") @ get("hada_w2_b")) * (alpha.item() / rank)
    elif get("lokr_w1") is not None or get("lokr_w1_a") is not None:
        w1 = get("lokr_w1") if get("lokr_w1") is not None else get("lokr_w1_a") @ get("lokr_w1_b")
        w2 = get("lokr_w2") if get("lokr_w2") is not None else get("lokr_w2_a") @ get("lokr_w2_b")
        low_rank = get("lokr_w1") is None or get("lokr_w2") is None
        rank = (get("lokr_w1_b") if get("lokr_w1") is None else get("lokr_w2_b")).shape[0] if low_rank else None
        delta = torch.kron(w1, w2) * (alpha.item() / rank if low_rank and alpha is not None else 1.0)
    elif get("oft_blocks") is not None:
        blocks = get("oft_blocks")
        n, b, _ = blocks.shape
        q = blocks - blocks.transpose(1, 2)
        bound = alpha.item() if alpha is not None else 0.0
        if bound > 0 and q.norm() + 1e-8 > bound:
            q = q * bound / (q.norm() + 1e-8)
        eye = torch.eye(b)
        r = (eye + q) @ torch.linalg.inv(eye - q)
        delta = torch.einsum("knm,kn...->km...", r - eye, weight.view(n, b, -1)).reshape(weight.shape)
    else:
        raise AssertionError(f"no adapter keys for {prefix}")
    scale = get("dora_scale")
    if scale is None:
        return weight + delta
    adapted = weight + delta
    assert scale.shape == (weight.shape[0], 1)  # the output axis: ComfyUI divides by the base rows' norm
    return adapted * (scale / (weight.norm(dim=1, keepdim=True) + torch.finfo(torch.float32).eps))


@pytest.mark.parametrize("kind", list(RUNS))
def test_comfyui_export_applies_the_change_peft_or_lycoris_apply(trained, tiny_root_readonly, tmp_path, kind):
    target = tmp_path / f"{kind}.safetensors"
    assert main(["--plain", "export", "--format", "comfyui", str(trained[kind]), str(target)]) == 0
    exported = load_file(target)
    prefixes = {k.rsplit(".", 2 if ".lora_" in k else 1)[0] for k in exported}
    assert len(prefixes) == 16
    decoder = _decoder(tiny_root_readonly)
    adapter = load_adapter(decoder, trained[kind])
    params = dict(_decoder(tiny_root_readonly).named_parameters())
    for prefix in sorted(prefixes):
        module = _comfy_module(prefix)
        linear = decoder.get_submodule(decoder_path_to_diffusers(module))
        eye = torch.eye(64)
        with torch.no_grad():  # row i = W e_i: the effective weight, transposed
            ours = (linear(eye) - linear(torch.zeros(1, 64))).T
            with adapter_strength(adapter, 0.0):
                base_rows = linear(eye) - linear(torch.zeros(1, 64))
        weight = params[decoder_path_to_diffusers(module) + ".weight"].detach()
        assert torch.allclose(base_rows.T, weight, atol=1e-6)
        comfy = comfyui_weight(exported, prefix, weight)
        assert (comfy - ours).abs().max() <= 2e-5, (kind, prefix)
        assert (ours - weight).abs().max() > 1e-5  # the module did change


# -- dry run, wizard, presets -----------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", list(KINDS))
def test_dry_run_forecast_counts_each_kinds_parameters(tiny_root_readonly, kind):
    from sidestep.adapters import build_adapter
    from sidestep.model.loader import read_dit_config
    from sidestep.train.forecast import forecast

    config = Config(adapter_type=kind, rank=4, alpha=16, lokr_linear_dim=4, **SETTINGS[kind])
    f = forecast(config, read_dit_config(tiny_root_readonly / "acestep-v15-turbo"), torch.device("cpu"), "fp32",
                 frames=100, baseline=0.0)
    real = sum(p.numel() for p in build_adapter(config, _decoder(tiny_root_readonly)).parameters())
    assert f.notes["trainable_params"] == real
    assert f.parts["adapter"] == real * 4  # fp32 weights (their gradients are part of the simulated micro-batch)
    assert f.parts["optimizer state"] == real * 4 * 2  # AdamW's 2 states


def test_2b_forecast_counts_from_each_kinds_shapes():
    from sidestep.model.configs import RELEASED_2B_CONFIG
    from sidestep.train.forecast import forecast

    shapes = [(2048, 2048), (2048, 1024), (2048, 1024), (2048, 2048)] * 48  # (in, out) of q k v o, 24 x 2 attn
    expected = {"lora": sum(64 * (i + o) for i, o in shapes),               # rank 64: A [64, in], B [out, 64]
                "dora": sum(64 * (i + o) + o for i, o in shapes),           # + the magnitude [out]
                "loha": sum(2 * 4 * (i + o) for i, o in shapes),            # LyCORIS dim 4: two (a, b) pairs
                "oft": sum(o * 4 for i, o in shapes)}                       # out / 4 blocks of 4 x 4
    for kind, count in expected.items():
        f = forecast(Config(adapter_type=kind), RELEASED_2B_CONFIG, torch.device("cuda"), "bf16", frames=1500)
        assert f.notes["trainable_params"] == count, kind


def test_wizard_asks_each_kinds_own_options_only_for_it():
    from sidestep.wizard.flows import _training_tweaks, adapter_choices

    tweaks = _training_tweaks(lambda a: "fixed")
    for kind in KINDS.values():
        answers = {"adapter_type": kind.name}
        for name, owners in option_owners().items():
            assert tweaks[name]["when"](answers) == (kind.name in owners), (kind.name, name)
    assert [k for k, _ in adapter_choices()] == list(KINDS)


def test_presets_store_and_restore_every_kinds_options(tmp_path, monkeypatch):
    from sidestep import presets

    monkeypatch.chdir(tmp_path)
    config = Config(adapter_type="oft", oft_block_size=8, oft_constraint=0.1, loha_linear_dim=2, epochs=3)
    presets.save_preset("mine", config, "an OFT")
    loaded = presets.find_preset("mine").config()
    assert (loaded.adapter_type, loaded.oft_block_size, loaded.oft_constraint, loaded.loha_linear_dim) == \
        ("oft", 8, 0.1, 2)


# -- ComfyUI: what the export maps and what it refuses -------------------------------------------------------

def test_comfyui_alpha_follows_peft_matching_of_patterns_and_rslora(trained, tmp_path):
    """alpha_pattern keys are regexes PEFT matches as `(.*\\.)?key$`; with rsLoRA the scale is alpha / sqrt(r).
    The exported `.alpha / rank` must be the scale PEFT's own loader gives each module."""
    from peft import PeftModel
    from peft.tuners.lora import LoraLayer

    folder = tmp_path / "patterned"
    shutil.copytree(trained["lora"], folder)
    config = json.loads((folder / "adapter_config.json").read_text())
    config.update(use_rslora=True, alpha_pattern={r"layers\.[01]\.self_attn\.q_proj": 2, "cross_attn.o_proj": 32})
    (folder / "adapter_config.json").write_text(json.dumps(config))
    exported, _ = comfyui_tensors(folder)

    decoder = load_dit(Path(json.loads((folder / "sidestep_run.json").read_text())["config"]["checkpoint_dir"])
                       / "acestep-v15-turbo").transformer
    view = OfficialNames(decoder)
    PeftModel.from_pretrained(view, str(folder))
    scales = {name: m.scaling["default"] for name, m in view.named_modules() if isinstance(m, LoraLayer)}
    assert len(scales) == 16 and len(set(scales.values())) == 3  # three different scales: the patterns matter
    for module, scale in scales.items():
        key = f"diffusion_model.decoder.{module}"
        rank = exported[f"{key}.lora_A.weight"].shape[0]
        assert math.isclose(exported[f"{key}.alpha"].item() / rank, scale, rel_tol=1e-6), module
    # our own loader reads the patterns too (matched on diffusers' names)
    view.put_back(decoder)
    ours = _decoder(Path(json.loads((folder / "sidestep_run.json").read_text())["config"]["checkpoint_dir"]))
    load_adapter(ours, folder)
    assert (_run(ours) - _run(decoder)).abs().max() <= 1e-5


@pytest.mark.parametrize("case,message", [
    ("bias", "trained with --bias all; ComfyUI reads bias changes only as differences"),
    ("oft_rescaled", "trained with --oft-rescaled; ComfyUI ignores OFT's rescale vector"),
])
def test_comfyui_export_refuses_what_comfyui_cannot_apply(tiny_root_readonly, tmp_path, capsys, case, message):
    from helpers import train_tiny_lora

    changes = {"bias": {"bias": "all"}, "oft_rescaled": {"adapter_type": "oft", "oft_rescaled": True}}[case]
    _, out = train_tiny_lora(tiny_root_readonly, tmp_path, epochs=1, **changes)
    target = tmp_path / "comfy.safetensors"
    assert main(["--plain", "export", str(out), str(target)]) == 2
    text = capsys.readouterr().out.strip()
    assert len(text.splitlines()) == 1 and message in text, text
    assert not target.exists()


# -- adapters made elsewhere: generate --adapter FILE and --init-adapter ---------------------------------------

@pytest.mark.parametrize("kind", list(SETTINGS))
def test_comfyui_files_load_back_to_the_same_outputs(trained, tiny_root_readonly, tmp_path, kind):
    from sidestep.train.export import export_adapter

    target = export_adapter("comfyui", trained[kind], tmp_path / "comfy.safetensors")
    ours = _decoder(tiny_root_readonly)
    load_adapter(ours, trained[kind])
    theirs = _decoder(tiny_root_readonly)
    assert load_adapter(theirs, target).name == kind
    assert (_run(theirs) - _run(ours)).abs().max() <= 1e-5
    if kind == "lora":  # kohya-style names and lora_down/lora_up read the same
        kohya = {}
        for key, value in load_file(target).items():
            module, _, suffix = key[len("diffusion_model.decoder."):].rpartition(
                ".lora_" if ".lora_" in key else ".")
            suffix = {"A.weight": "lora_down.weight", "B.weight": "lora_up.weight"}.get(suffix, suffix)
            kohya[f"lora_unet_decoder_{module.replace('.', '_')}.{suffix}"] = value
        from safetensors.torch import save_file

        save_file(kohya, str(tmp_path / "kohya.safetensors"))
        again = _decoder(tiny_root_readonly)
        load_adapter(again, tmp_path / "kohya.safetensors")
        assert (_run(again) - _run(ours)).abs().max() <= 1e-5


@pytest.mark.parametrize("kind", ["lora", "dora"])
def test_diffusers_layout_loads_to_the_same_outputs(trained, tiny_root_readonly, tmp_path, kind):
    from diffusers import AceStepPipeline
    from peft import get_peft_model_state_dict

    ours = _decoder(tiny_root_readonly)
    adapter = load_adapter(ours, trained[kind])
    meta = {k.split(".", 1)[1]: v for k, v in adapter.diffusers_metadata().items()}
    AceStepPipeline.save_lora_weights(tmp_path / "diffusers", transformer_lora_layers=get_peft_model_state_dict(ours),
                                      transformer_lora_adapter_metadata=meta)
    file = tmp_path / "diffusers" / "pytorch_lora_weights.safetensors"
    assert all(k.startswith("transformer.layers.") for k in load_file(file))
    theirs = _decoder(tiny_root_readonly)
    assert load_adapter(theirs, tmp_path / "diffusers").name == kind  # the folder with its one file
    assert (_run(theirs) - _run(ours)).abs().max() <= 1e-5


def test_an_unmappable_key_is_one_line_naming_it(tiny_root_readonly, tmp_path, capsys):
    from safetensors.torch import save_file

    bad = tmp_path / "bad.safetensors"
    save_file({"diffusion_model.decoder.layers.0.mlp.gate_proj.lora_A.weight": torch.zeros(4, 64),
               "diffusion_model.decoder.layers.0.mlp.gate_proj.lora_B.weight": torch.zeros(64, 4)}, str(bad))
    with pytest.raises(SidestepError, match="cannot map key 'diffusion_model.decoder.layers.0.mlp.gate_proj"):
        load_adapter(_decoder(tiny_root_readonly), bad)
    assert main(["--plain", "generate", "--checkpoint-dir", str(tiny_root_readonly), "--prompt", "x", "--duration",
                 "1", "--adapter", str(bad), "--out", str(tmp_path / "song.wav")]) == 2
    lines = capsys.readouterr().out.strip().splitlines()  # the loading notice, then the one-line error
    assert len(lines) == 2 and lines[0].startswith("Loading the model")
    assert "cannot map key 'diffusion_model.decoder.layers.0.mlp" in lines[1]


@pytest.mark.parametrize("kind", ["dora", "oft"])
def test_init_adapter_starts_from_that_adapter_and_refuses_another_shape(trained, tiny_root_readonly, tmp_path,
                                                                         kind):
    from sidestep.adapters import build_adapter, init_adapter
    from sidestep.train.export import export_adapter

    reference = _decoder(tiny_root_readonly)
    load_adapter(reference, trained[kind])
    config = Config(adapter_type=kind, rank=4, alpha=16, target_modules=["q_proj", "o_proj"], **SETTINGS[kind])
    for source in (trained[kind], export_adapter("comfyui", trained[kind], tmp_path / "c.safetensors")):
        decoder = _decoder(tiny_root_readonly)
        adapter = build_adapter(config, decoder)
        assert (_run(decoder) - _run(reference)).abs().max() > 1e-4  # fresh
        init_adapter(adapter, source)
        assert (_run(decoder) - _run(reference)).abs().max() <= 1e-5
    other = "lora" if kind == "dora" else "loha"
    with pytest.raises(SidestepError, match=f"this run trains a {KINDS[other].label}; pass --adapter-type {kind}"):
        init_adapter(build_adapter(config.replace(adapter_type=other), _decoder(tiny_root_readonly)), trained[kind])
    with pytest.raises(SidestepError, match="no place in this run's adapter|lacks '"):
        init_adapter(build_adapter(config.replace(target_modules=["q_proj"]), _decoder(tiny_root_readonly)),
                     trained[kind])
    wider = config.replace(rank=8) if kind == "dora" else config.replace(oft_block_size=8)
    with pytest.raises(SidestepError, match="needs the same"):
        init_adapter(build_adapter(wider, _decoder(tiny_root_readonly)), trained[kind])


def test_training_with_init_adapter(tiny_root_readonly, tmp_path):
    from helpers import train_tiny_lora

    first, out = train_tiny_lora(tiny_root_readonly, tmp_path / "a", epochs=1)
    cold, _ = train_tiny_lora(tiny_root_readonly, tmp_path / "b", epochs=1)
    warm, _ = train_tiny_lora(tiny_root_readonly, tmp_path / "c", epochs=1, init_adapter=str(out))
    assert cold.losses == first.losses  # deterministic
    assert warm.losses[0] != cold.losses[0]  # the warm start begins where the first run ended
    with pytest.raises(SidestepError, match="--init-adapter .*: not found"):
        train_tiny_lora(tiny_root_readonly, tmp_path / "d", epochs=1, init_adapter=str(tmp_path / "nope"))


def test_comfyui_export_of_lycoris_weight_decomposition_is_not_read_back_as_lycoris(trained, tmp_path):
    from sidestep.train.export import export_adapter

    target = export_adapter("comfyui", trained["loha_wd"], tmp_path / "c.safetensors")
    with pytest.raises(SidestepError, match="a ComfyUI export of a weight-decomposed LoHA"):
        load_adapter(load_dit(Path(json.loads((trained["loha_wd"] / "sidestep_run.json").read_text())["config"]
                                   ["checkpoint_dir"]) / "acestep-v15-turbo").transformer, target)
