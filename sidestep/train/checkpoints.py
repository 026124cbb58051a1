"""Adapter files (ACE-Step layout) and resumable training state, written atomically.

Every adapter folder (the final output dir and each `checkpoints/epoch_N/`) is directly
loadable for inference: the kind's files (`Adapter.files`, e.g. `adapter_config.json` +
`adapter_model.safetensors` for LoRA/DoRA), plus `sidestep_run.json`.
Checkpoint folders add `training_state.pt` (loaded with weights_only=True).
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save

from sidestep.errors import SidestepError
from sidestep.io import atomic_dir, atomic_write_many, recover_dir, write_error, write_problem

RUN_FILE = "sidestep_run.json"
STATE_FILE = "training_state.pt"
CHECKPOINTS = "checkpoints"


def adapter_files(adapter, run_info: dict[str, Any]) -> dict[str, bytes | tuple[dict, dict]]:
    """file name -> JSON text, or (tensors, header metadata) for safetensors: the kind's files and the run file.

    The model the adapter belongs to (family 2B/XL, decoder width, layers) goes into every weights header
    (`sidestep_model`) and the run file (`model`), so it is never loaded onto the other family.
    """
    from sidestep.adapters.signature import with_signature

    files, run_info = with_signature(adapter.files(), run_info, adapter.decoder)
    return {RUN_FILE: json.dumps(run_info, indent=2), **files}


def _encode(content) -> bytes:
    if isinstance(content, tuple):
        tensors, metadata = content
        return stable_safetensors(save({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()},
                                       metadata=metadata))
    return content.encode("utf-8")


def stable_safetensors(data: bytes) -> bytes:
    """safetensors writes its `__metadata__` map in a random order (a Rust HashMap), so the same adapter
    saved twice gives different bytes. Sort that map: the header keeps its length, the tensors their offsets."""
    size = int.from_bytes(data[:8], "little")
    raw = data[8:8 + size].rstrip(b" ")
    header = json.loads(raw)
    if len(header.get("__metadata__") or {}) < 2:
        return data
    header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    if len(text) != len(raw):  # not the writer's formatting after all: keep its bytes
        return data
    return data[:8] + text.ljust(size, b" ") + data[8 + size:]


def save_adapter(folder: str | Path, adapter, run_info: dict[str, Any]) -> Path:
    """Write the adapter files into `folder` as one set (all new or all old, also on a full disk; other files
    there are kept)."""
    folder = Path(folder)
    try:
        atomic_write_many(folder, {name: _encode(data) for name, data in adapter_files(adapter, run_info).items()})
    except OSError as err:
        raise write_error(folder, err, "the adapter", _fix(err)) from None
    return folder


def save_checkpoint(folder: str | Path, adapter, run_info: dict[str, Any], state: dict[str, Any]) -> Path:
    """A resumable checkpoint folder, swapped in whole: a crash leaves the previous one intact."""
    folder = Path(folder)
    try:
        with atomic_dir(folder) as tmp:
            for name, content in adapter_files(adapter, run_info).items():
                # serialized in memory, written with plain file I/O: a full disk is an OSError (ENOSPC)
                (tmp / name).write_bytes(_encode(content))
            buffer = io.BytesIO()  # torch.save to a file reports a full disk as a RuntimeError
            torch.save(state, buffer)
            (tmp / STATE_FILE).write_bytes(buffer.getbuffer())
    except OSError as err:
        raise write_error(folder, err, "the checkpoint", _fix(err)) from None
    return folder


def _fix(err: OSError) -> str | None:
    """The hint for a failed adapter/checkpoint write: free space, or another --output-dir."""
    problem, _ = write_problem(err)
    if problem == "the disk is full":
        return ("free some space on that drive (or pass another --output-dir) and resume from the last "
                "checkpoint; earlier checkpoints are intact")
    return None if problem != "the file system is read-only" else "pass an --output-dir on a writable drive"


def load_training_state(folder: str | Path) -> dict[str, Any]:
    folder = Path(folder)
    recover_dir(folder)
    path = folder / STATE_FILE
    if not path.is_file():
        raise SidestepError(f"{path}: not found; --resume-from takes a checkpoints/epoch_N folder written by "
                            "Side-Step")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a damaged pickle raises many types
        raise SidestepError(f"{path}: unreadable ({type(err).__name__}); resume from an earlier checkpoint") from None
    problem = training_state_problem(state)
    if problem:
        raise SidestepError(f"{path}: not a Side-Step training state ({problem}); resume from an earlier checkpoint")
    return state


def training_state_problem(state: Any) -> str | None:
    """Why a loaded training_state.pt cannot be resumed from (types, ranges, finite adapter tensors), else None."""
    if not isinstance(state, dict):
        return f"holds {type(state).__name__}, not a dict"
    for key in ("adapter", "optimizer", "scheduler", "rng"):
        if not isinstance(state.get(key), dict):
            return f"'{key}' missing or not a dict"
    for key in ("epoch", "global_step", "samples_in_epoch"):
        value = state.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << 40:
            return f"'{key}' must be a whole number of 0 or more, got {value!r}"
    adapter = state["adapter"]
    if not adapter or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in adapter.items()):
        return "'adapter' must map parameter names to tensors"
    for name, tensor in adapter.items():
        if not tensor.is_floating_point() or not bool(torch.isfinite(tensor).all()):
            return f"adapter tensor '{name}' is not finite floating point"
    rng = state["rng"].get("torch")
    if not isinstance(rng, torch.Tensor) or rng.dtype != torch.uint8 or rng.ndim != 1:
        return "'rng' has no torch generator state"
    return None


def checkpoint_dir(output_dir: str | Path, name: str) -> Path:
    return Path(output_dir) / CHECKPOINTS / name

