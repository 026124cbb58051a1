"""Adapter export to other clients' layouts (docs/design.md §6.3: ComfyUI, model class ACEStep15).

ComfyUI reads one safetensors file. For the decoder weight `diffusion_model.decoder.X.weight`
it accepts LoRA keys `diffusion_model.decoder.X.lora_A.weight` / `.lora_B.weight` scaled by a
`diffusion_model.decoder.X.alpha` tensor divided by the rank (1.0 without one), and LyCORIS keys
`lycoris_<X with '.'->'_'>.*` as LyCORIS writes them (their `.alpha` is already there).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save

from sidestep.errors import SidestepError
from sidestep.io import atomic_path
from sidestep.train.checkpoints import LOKR_WEIGHTS, LORA_CONFIG, LORA_WEIGHTS, stable_safetensors

PEFT_PREFIX = "base_model.model."
COMFY_PREFIX = "diffusion_model.decoder."


def _lora_alpha_for(module: str, config: dict) -> float:
    for pattern, alpha in config.get("alpha_pattern", {}).items():
        if module.endswith(pattern):
            return float(alpha)
    return float(config["lora_alpha"])


def comfyui_tensors(adapter_dir: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, header) of the ComfyUI file for a Side-Step adapter folder."""
    folder = Path(adapter_dir)
    if (folder / LORA_WEIGHTS).is_file() and (folder / LORA_CONFIG).is_file():
        config = json.loads((folder / LORA_CONFIG).read_text(encoding="utf-8"))
        out: dict[str, torch.Tensor] = {}
        for key, value in load_file(folder / LORA_WEIGHTS).items():
            if not key.startswith(PEFT_PREFIX):
                raise SidestepError(f"{folder / LORA_WEIGHTS}: unexpected key '{key}'; not a Side-Step LoRA")
            out[COMFY_PREFIX + key[len(PEFT_PREFIX):]] = value
            module, _, suffix = key[len(PEFT_PREFIX):].rpartition(".lora_")
            if suffix.startswith("A"):
                out[f"{COMFY_PREFIX}{module}.alpha"] = torch.tensor(_lora_alpha_for(module, config))
        return out, {"format": "pt", "source": "side-step", "adapter": "lora"}
    if (folder / LOKR_WEIGHTS).is_file():
        path = folder / LOKR_WEIGHTS
        with safe_open(str(path), "pt") as f:
            header = dict(f.metadata() or {})
        return load_file(path), dict(header, source="side-step", adapter="lokr")
    raise SidestepError(f"{folder}: no Side-Step adapter here (adapter_model.safetensors + adapter_config.json, "
                        "or lokr_weights.safetensors)")


def comfyui_to_side_step(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inverse mapping of the exported tensors (alpha entries dropped): Side-Step's file keys."""
    out = {}
    for key, value in tensors.items():
        if key.startswith(COMFY_PREFIX):
            if key.endswith(".alpha"):
                continue
            out[PEFT_PREFIX + key[len(COMFY_PREFIX):]] = value
        else:
            out[key] = value
    return out


def export_comfyui(adapter_dir: str | Path, out_file: str | Path) -> Path:
    tensors, header = comfyui_tensors(adapter_dir)
    out_file = Path(out_file)
    try:
        with atomic_path(out_file) as tmp:
            tmp.write_bytes(stable_safetensors(save({k: v.contiguous() for k, v in tensors.items()}, metadata=header)))
    except OSError as err:
        raise SidestepError(f"{out_file}: cannot write ({err.strerror or err}); choose a writable path") from None
    return out_file
