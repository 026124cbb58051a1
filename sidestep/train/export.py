"""Adapter export to other clients' layouts (docs/design.md §6.3: ComfyUI, model class ACEStep15).

`FORMATS` is the one table of export formats: `train.py export --format NAME` offers its keys and
calls `export_adapter`, so a new layout is one writer function and one entry.

ComfyUI reads one safetensors file. Each adapter kind maps its own files onto ComfyUI's keys
(`Adapter.comfyui_tensors`, sidestep/adapters/) and refuses, in one line, what ComfyUI cannot
represent.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import save

from sidestep.errors import SidestepError
from sidestep.io import atomic_path
from sidestep.adapters.peft_family import COMFY_PREFIX, PEFT_PREFIX  # noqa: F401  (tests map keys back)
from sidestep.train.checkpoints import stable_safetensors



def comfyui_tensors(adapter_dir: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, header) of the ComfyUI file for a Side-Step adapter folder: its kind knows the keys."""
    from sidestep.adapters import find_kind

    folder = Path(adapter_dir)
    return find_kind(folder).comfyui_tensors(folder)


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
