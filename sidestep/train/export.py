"""Adapter export to other clients' layouts (docs/design.md §6.3: ComfyUI, model class ACEStep15).

`FORMATS` is the one table of export formats: `train.py export --format NAME` offers its keys and
calls `export_adapter`, so a new layout is one writer function and one entry.

ComfyUI reads one safetensors file. For the decoder weight `diffusion_model.decoder.X.weight`
it accepts LoRA keys `diffusion_model.decoder.X.lora_A.weight` / `.lora_B.weight` scaled by a
`diffusion_model.decoder.X.alpha` tensor divided by the rank (1.0 without one), and LyCORIS keys
`lycoris_<X with '.'->'_'>.*` as LyCORIS writes them (their `.alpha` is already there).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

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


def export_comfyui(adapter_dir: str | Path, out_file: str | Path) -> Path:
    tensors, header = comfyui_tensors(adapter_dir)
    out_file = Path(out_file)
    try:
        with atomic_path(out_file) as tmp:
            tmp.write_bytes(stable_safetensors(save({k: v.contiguous() for k, v in tensors.items()}, metadata=header)))
    except OSError as err:
        raise SidestepError(f"{out_file}: cannot write ({err.strerror or err}); choose a writable path") from None
    return out_file


@dataclass(frozen=True)
class ExportFormat:
    write: Callable[[str | Path, str | Path], Path]  # (adapter folder, output file) -> the file written
    client: str  # what reads the file, shown after writing
    how_to_use: str


FORMATS: dict[str, ExportFormat] = {
    "comfyui": ExportFormat(export_comfyui, "ComfyUI, ACE-Step 1.5", "load it with a LoRA loader node at strength 1.0"),
}


def export_format(name: str) -> ExportFormat:
    try:
        return FORMATS[name]
    except KeyError:
        raise SidestepError(f"unknown export format '{name}'; available: {', '.join(FORMATS)}") from None


def export_adapter(name: str, adapter_dir: str | Path, out_file: str | Path) -> Path:
    """Write the adapter in `adapter_dir` to `out_file` in export format `name` (a key of FORMATS)."""
    return export_format(name).write(adapter_dir, out_file)
