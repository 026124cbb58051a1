"""What a checkpoint must hold for a run to continue bit-identically, and the checks before it does."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from sidestep.adapters import resume_options
from sidestep.config import Config, config_to_argv
from sidestep.errors import SidestepError
from sidestep.model.discovery import TrainingModel
from sidestep.train import checkpoints

STATE_FORMAT = 1


def load_resume_state(config: Config, model: TrainingModel, mode: str) -> dict[str, Any]:
    """The checkpoint's state, after checking it belongs to this run's model and adapter."""
    folder = Path(config.resume_from)
    state = checkpoints.load_training_state(folder)
    try:
        saved = json.loads((folder / checkpoints.RUN_FILE).read_text(encoding="utf-8"))
        saved_config, saved_model = saved["config"], saved["inference"]["model_variant"]
        if not isinstance(saved_config, dict) or not isinstance(saved_model, str) or \
                not isinstance(saved.get("training", {}), dict):
            raise TypeError
    except (OSError, ValueError, RecursionError, KeyError, TypeError):
        raise SidestepError(f"{folder / checkpoints.RUN_FILE}: missing or unreadable; --resume-from takes a "
                            "checkpoints/... folder written by Side-Step") from None
    if saved_model != model.entry.name:
        raise SidestepError(f"--resume-from {folder}: trained on model '{saved_model}', this run uses "
                            f"'{model.entry.name}'; resume with --model-variant {saved_model}")
    # Settings a checkpoint must share with the run resuming from it: the shared ones and its kind's.
    for name in resume_options(saved_config.get("adapter_type", "lora")):
        if saved_config.get(name) != getattr(config, name):
            flag = name.replace("_", "-")
            raise SidestepError(f"--resume-from {folder}: checkpoint has {flag} {saved_config.get(name)!r}, this "
                                f"run asks for {getattr(config, name)!r}; pass --{flag} {saved_config.get(name)}")
    if saved.get("training", {}).get("mode") not in (None, mode):
        raise SidestepError(f"--resume-from {folder}: checkpoint is from '{saved['training']['mode']}' training; "
                            f"resume it with train.py {saved['training']['mode']}")
    return state


def rng_state() -> dict[str, torch.Tensor]:
    """Global RNG (LoRA dropout); the loss's own randomness is derived per sample."""
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.stack(torch.cuda.get_rng_state_all())
    return state


def set_rng_state(state: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(list(state["cuda"]))


def resume_command(config: Config, mode: str, folder: Path) -> str:
    return "python train.py " + " ".join(config_to_argv(config.replace(resume_from=str(folder)), mode))
