"""The "reference" variant for the train-step bench: ACE-Step's own upstream PyTorch decoder + plain PEFT LoRA.

Bench only. Side-Step never imports this module nor the upstream code (no trust_remote_code in the product),
and the upstream files are never copied into this repository: the user points at a folder that holds them.

Getting the upstream code
    The official checkpoint folder `acestep-v15-turbo/` (what ACE-Step downloads from the Hugging Face Hub)
    ships its modelling code as remote code next to the weights:
        acestep-v15-turbo/modeling_acestep_v15_turbo.py
        acestep-v15-turbo/configuration_acestep_v15.py
    The same two files live in the ACE-Step-1.5 source repository under `acestep/models/turbo/`.
    Any folder holding both files works; nothing else in it is read (weights are not loaded: the decoder gets
    random weights, which is all a timing needs).

    The upstream module imports einops and vector_quantize_pytorch at import time, which Side-Step does not
    depend on, so run the bench with them added for that run only:
        uv run --with einops --with vector-quantize-pytorch python bench/train_step.py --reference-code DIR

Calling it
    from _reference import reference_step_parts
    decoder, forward_fn, targets = reference_step_parts(Path(DIR), config_dict, device, dtype, checkpointing)
    params = [p for p in decoder.parameters() if p.requires_grad]      # the LoRA weights only
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    pred = forward_fn(x_t, t, encoder_hidden_states, context_latents)  # [B, T, 64]
    loss = torch.nn.functional.mse_loss(pred.float(), flow.float()); loss.backward(); optimizer.step()

    What the variant measures: upstream's attention goes through transformers' SDPA with dense additive 4-D
    masks built each step (full, sliding window and cross attention), i.e. the same kind of dense sliding mask
    as the stock diffusers variant, but upstream's own module code, rotary embedding and layer structure.
    Upstream's decoder builds those masks without the [B, T] masks it is given, so the all-ones masks passed
    here change nothing; they are passed because upstream's trainer passes them.

    `config_dict` is an upstream-style config.json as a dict (the keys of reference/medium-config.json or the
    released 2B config). Run `python bench/_reference.py DIR` for a short self-check (medium config, B=1,
    200 frames, 50 condition tokens, checkpointing on and off) that also compares the trainable parameter
    count with the stock diffusers + PEFT path.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from collections.abc import Callable
from pathlib import Path

import torch

MODELING_FILE = "modeling_acestep_v15_turbo.py"
CONFIG_FILE = "configuration_acestep_v15.py"
LORA_RANK, LORA_ALPHA = 64, 128
# The projections the stock variant targets (to_q/to_k/to_v/to_out.0 in diffusers' naming), in upstream's
# naming; matched as name suffixes, and only the decoder is built, so only its self and cross attention match.
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj")

# Names the upstream module imports from transformers but that newer transformers releases dropped. Each is
# imported and never called by the decoder, so a placeholder that fails loudly if it ever is called is enough.
# (transformers 5.x removed `transformers.modeling_attn_mask_utils`.)
_MISSING_IMPORTS = {"transformers.modeling_attn_mask_utils": ("_prepare_4d_causal_attention_mask",)}


def _placeholder(name: str) -> Callable:
    def missing(*args, **kwargs):
        raise NotImplementedError(f"{name} is not available in this transformers version (bench shim)")
    return missing


def _shim_missing_transformers_imports() -> list[str]:
    """Register placeholder modules for the imports this transformers lacks; returns the ones added."""
    added = []
    for module_name, names in _MISSING_IMPORTS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError:
            module = types.ModuleType(module_name)
            sys.modules[module_name] = module
            added.append(module_name)
        for name in names:
            if not hasattr(module, name):
                setattr(module, name, _placeholder(name))
    return added


def load_upstream(code_dir: Path) -> types.ModuleType:
    """Import the upstream modelling module from `code_dir` by file path (its config module as a sibling)."""
    code_dir = Path(code_dir).expanduser().resolve()
    for name in (MODELING_FILE, CONFIG_FILE):
        if not (code_dir / name).is_file():
            raise FileNotFoundError(f"{code_dir / name} not found: point --reference-code at a folder holding "
                                    f"{MODELING_FILE} and {CONFIG_FILE} (e.g. the acestep-v15-turbo checkpoint)")
    module_name = MODELING_FILE.removesuffix(".py")
    if module_name in sys.modules:
        return sys.modules[module_name]
    # The modelling file falls back to a top-level `configuration_acestep_v15` import when it is not loaded
    # as part of a package, so its folder must be importable.
    if str(code_dir) not in sys.path:
        sys.path.insert(0, str(code_dir))
    _shim_missing_transformers_imports()
    spec = importlib.util.spec_from_file_location(module_name, code_dir / MODELING_FILE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception:
        del sys.modules[module_name]
        raise
    return module


def _decoder_class(module: types.ModuleType) -> type:
    """The DiT decoder class: upstream names it AceStepDiTModel (the `decoder` of the full model)."""
    cls = getattr(module, "AceStepDiTModel", None)
    if cls is None:
        raise AttributeError(f"{module.__file__} has no AceStepDiTModel; the upstream layout changed")
    return cls


def reference_step_parts(code_dir: Path, config: dict, device: torch.device | str,
                         dtype: torch.dtype | None = None, checkpointing: bool = False,
                         rank: int = LORA_RANK, alpha: int = LORA_ALPHA):
    """Upstream's DiT decoder with random weights and plain PEFT LoRA, ready for one training step.

    Returns (decoder, forward_fn, lora_target_modules):
      decoder      the PEFT-wrapped upstream decoder in train mode; its only trainable parameters are the LoRA
                   weights (kept in fp32, like the stock variant), base weights frozen in `dtype`.
      forward_fn   forward_fn(x_t [B,T,64], t [B], encoder_hidden_states [B,L,D], context_latents [B,T,128])
                   -> prediction [B,T,64], calling the decoder the way upstream's LoRA trainer does
                   (timestep_r = timestep for the turbo model, all-ones audio and condition masks, bf16 autocast
                   when `dtype` is not fp32).
      lora_target_modules  the full names of the wrapped projections (q/k/v/o of self and cross attention).
    dtype defaults to bf16 on CUDA and fp32 elsewhere. Attention runs through transformers' "sdpa".
    Gradient checkpointing, when on, is upstream's own: its decoder layers are transformers
    GradientCheckpointingLayer modules, switched on through the PreTrainedModel API.
    """
    from peft import LoraConfig, get_peft_model

    device = torch.device(device)
    if dtype is None:
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    module = load_upstream(code_dir)
    # `architectures` etc. are plain config.json metadata the config class stores as-is.
    upstream_config = module.AceStepConfig(**config, attn_implementation="sdpa")
    decoder = _decoder_class(module)(upstream_config)
    # Inside upstream's full model, post_init() runs its _init_weights over the decoder too; do the same so
    # the random weights have upstream's initial scale.
    decoder.post_init()
    decoder.to(device=device, dtype=dtype)
    decoder.requires_grad_(False)
    if checkpointing:
        # Non-reentrant: the frozen base means no input carries requires_grad, which the reentrant variant
        # needs to backpropagate into the LoRA weights inside each checkpointed layer.
        enable = getattr(decoder, "activation_checkpointing_enable", None)
        if enable is not None:  # transformers >= 5.x name; gradient_checkpointing_enable is its deprecated alias
            enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            decoder.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})

    targets = [name for name, sub in decoder.named_modules()
               if isinstance(sub, torch.nn.Linear) and name.rsplit(".", 1)[-1] in PROJECTIONS
               and (".self_attn." in name or ".cross_attn." in name)]
    expected = upstream_config.num_hidden_layers * 2 * len(PROJECTIONS)
    if len(targets) != expected:
        raise RuntimeError(f"found {len(targets)} attention projections, expected {expected}")
    # No task_type: the plain PeftModel forwards keyword arguments to the decoder unchanged.
    decoder = get_peft_model(decoder, LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0,
                                                 target_modules=targets))
    for name, param in decoder.named_parameters():
        if param.requires_grad:
            param.data = param.data.float()
    decoder.train()

    autocast = dtype != torch.float32

    def forward_fn(x_t: torch.Tensor, t: torch.Tensor, encoder_hidden_states: torch.Tensor,
                   context_latents: torch.Tensor) -> torch.Tensor:
        B, T = x_t.shape[:2]
        L = encoder_hidden_states.shape[1]
        with torch.autocast(device.type, dtype=dtype, enabled=autocast):
            out = decoder(hidden_states=x_t.to(device, dtype), timestep=t.to(device, dtype),
                          timestep_r=t.to(device, dtype),
                          attention_mask=torch.ones(B, T, device=device, dtype=dtype),
                          encoder_hidden_states=encoder_hidden_states.to(device, dtype),
                          encoder_attention_mask=torch.ones(B, L, device=device, dtype=dtype),
                          context_latents=context_latents.to(device, dtype))
        return out[0]

    return decoder, forward_fn, targets


def _stock_trainable_count(config: dict) -> int:
    """LoRA parameters the stock diffusers + PEFT path gets with the same rank and targets."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from peft import LoraConfig

    from sidestep.model.loader import build_modules

    stock = build_modules(config, device="cpu")["transformer"]
    stock.requires_grad_(False)
    stock.add_adapter(LoraConfig(r=LORA_RANK, lora_alpha=LORA_ALPHA, lora_dropout=0.0,
                                 target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    return sum(p.numel() for p in stock.parameters() if p.requires_grad)


def _self_check(code_dir: Path) -> None:
    import json
    import time

    config = json.loads((Path(__file__).resolve().parents[1] / "reference" / "medium-config.json").read_text())
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    B, T, L = 1, 200, 50
    for checkpointing in (True, False):
        torch.manual_seed(0)
        decoder, forward_fn, targets = reference_step_parts(code_dir, config, device, checkpointing=checkpointing)
        params = [p for p in decoder.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=1e-4)
        g = torch.Generator().manual_seed(1)
        x0 = torch.randn(B, T, 64, generator=g)
        noise = torch.randn(B, T, 64, generator=g)
        ehs = torch.randn(B, L, config["hidden_size"], generator=g)
        ctx = torch.randn(B, T, 128, generator=g)
        t = torch.full((B,), 0.5)
        x_t = t[:, None, None] * noise + (1 - t[:, None, None]) * x0
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        pred = forward_fn(x_t, t, ehs, ctx)
        loss = torch.nn.functional.mse_loss(pred.float(), (noise - x0).to(device))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        assert pred.shape == (B, T, 64), pred.shape
        print(json.dumps({"checkpointing": checkpointing, "device": str(device), "first_step_s": round(seconds, 3),
                          "loss": round(loss.item(), 4), "lora_targets": len(targets),
                          "trainable": sum(p.numel() for p in params)}), flush=True)
    print(json.dumps({"stock_diffusers_trainable": _stock_trainable_count(config)}), flush=True)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python bench/_reference.py FOLDER_WITH_UPSTREAM_CODE")
    _self_check(Path(sys.argv[1]))
