"""Adapter files (ACE-Step layout) and resumable training state, written atomically.

Every adapter folder (the final output dir and each `checkpoints/epoch_N/`) is directly
loadable for inference: `adapter_config.json` + `adapter_model.safetensors` (LoRA) or
`lokr_weights.safetensors` + `lokr_config.json` (LoKR), plus `sidestep_run.json`.
Checkpoint folders add `training_state.pt` (loaded with weights_only=True).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from sidestep.errors import SidestepError
from sidestep.io import atomic_dir, atomic_path, atomic_write_text, recover_dir

LORA_WEIGHTS = "adapter_model.safetensors"
LORA_CONFIG = "adapter_config.json"
LOKR_WEIGHTS = "lokr_weights.safetensors"
LOKR_CONFIG = "lokr_config.json"
RUN_FILE = "sidestep_run.json"
STATE_FILE = "training_state.pt"
CHECKPOINTS = "checkpoints"


def adapter_files(adapter, run_info: dict[str, Any]) -> dict[str, bytes | tuple[dict, dict]]:
    """file name -> JSON text, or (tensors, header metadata) for safetensors."""
    files: dict[str, Any] = {RUN_FILE: json.dumps(run_info, indent=2)}
    if adapter.kind == "lora":
        metadata = {"format": "pt", "lora_adapter_metadata": json.dumps(adapter.diffusers_metadata())}
        files[LORA_WEIGHTS] = (adapter.export_tensors(), metadata)
        files[LORA_CONFIG] = json.dumps(adapter.export_config(), indent=2)
    else:
        config = adapter.export_config()
        metadata = {"algo": "lokr", "format": "lycoris", "lokr_config": json.dumps(config)}
        files[LOKR_WEIGHTS] = (adapter.export_tensors(), metadata)
        files[LOKR_CONFIG] = json.dumps(dict(config, algo="lokr", format="lycoris"), indent=2)
    return files


def _write(folder: Path, name: str, content, atomic: bool) -> None:
    path = folder / name
    if isinstance(content, tuple):
        tensors, metadata = content
        tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
        if atomic:
            with atomic_path(path) as tmp:
                save_file(tensors, str(tmp), metadata=metadata)
        else:
            save_file(tensors, str(path), metadata=metadata)
    elif atomic:
        atomic_write_text(path, content)
    else:
        path.write_text(content, encoding="utf-8")


def save_adapter(folder: str | Path, adapter, run_info: dict[str, Any]) -> Path:
    """Write the adapter files into `folder` (each file atomically; other files there are kept)."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for name, content in adapter_files(adapter, run_info).items():
            _write(folder, name, content, atomic=True)
    except OSError as err:
        raise SidestepError(f"{folder}: cannot write the adapter ({err.strerror or err}); check free space and "
                            "permissions of --output-dir") from None
    return folder


def save_checkpoint(folder: str | Path, adapter, run_info: dict[str, Any], state: dict[str, Any]) -> Path:
    """A resumable checkpoint folder, swapped in whole: a crash leaves the previous one intact."""
    folder = Path(folder)
    try:
        with atomic_dir(folder) as tmp:
            for name, content in adapter_files(adapter, run_info).items():
                _write(tmp, name, content, atomic=False)
            torch.save(state, tmp / STATE_FILE)
    except OSError as err:
        raise SidestepError(f"{folder}: cannot write the checkpoint ({err.strerror or err}); check free space "
                            "and permissions of --output-dir") from None
    return folder


def load_training_state(folder: str | Path) -> dict[str, Any]:
    folder = Path(folder)
    recover_dir(folder)
    path = folder / STATE_FILE
    if not path.is_file():
        raise SidestepError(f"{path}: not found; --resume-from takes a checkpoints/epoch_N folder written by "
                            "Side-Step")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a damaged pickle raises many types
        raise SidestepError(f"{path}: unreadable ({type(err).__name__}); resume from an earlier checkpoint") from None


def checkpoint_dir(output_dir: str | Path, name: str) -> Path:
    return Path(output_dir) / CHECKPOINTS / name

