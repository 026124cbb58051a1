"""The model an adapter belongs to (family 2B / XL, decoder width, layers): recorded when it is saved, checked
before it is loaded, so an adapter is never put onto a model of the other family or size."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch

from sidestep.errors import SidestepError

MODEL_METADATA_KEY = "sidestep_model"  # safetensors header entry: the model an adapter was trained on
RUN_FILE_KEY = "model"  # the same record in sidestep_run.json
_LAYER = re.compile(r"(?:^|[._])layers[._](\d+)[._]")


def model_signature(decoder: torch.nn.Module) -> dict[str, Any] | None:
    """What an adapter records about its model: family (2B / XL), decoder width and layer count."""
    from sidestep.model.configs import decoder_family

    config = getattr(decoder, "config", None)
    if config is None or config.get("hidden_size") is None:
        return None
    return {"family": decoder_family(decoder), "hidden_size": int(config["hidden_size"]),
            "num_layers": int(config["num_hidden_layers"])}


def describe_model(sig: dict[str, Any]) -> str:
    """"ACE-Step XL (decoder 2560 wide, 32 layers)"; parts an adapter file cannot tell are left out."""
    family = sig.get("family") or {2048: "2B", 2560: "XL"}.get(sig.get("hidden_size"), "")
    dims = [f"decoder {sig['hidden_size']} wide"] if sig.get("hidden_size") else []
    if sig.get("num_layers"):
        dims.append(f"{sig['num_layers']} layers")
    elif sig.get("min_layers"):
        dims.append(f"at least {sig['min_layers']} layers")
    name = f"ACE-Step {family}" if family else "an ACE-Step model"
    return f"{name} ({', '.join(dims)})" if dims else name


def with_signature(files: dict[str, Any], run_info: dict[str, Any], decoder: torch.nn.Module
                   ) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the kind's files with the record in every safetensors header, the run info with it)."""
    model = model_signature(decoder)
    if model is None:
        return files, run_info
    record = json.dumps(model)
    files = {name: (content[0], dict(content[1], **{MODEL_METADATA_KEY: record})) if isinstance(content, tuple)
             else content for name, content in files.items()}
    return files, dict(run_info, **{RUN_FILE_KEY: model})


def _weights(path: Path) -> list[Path]:
    return sorted(path.glob("*.safetensors")) if path.is_dir() else [path]


def _recorded(path: Path) -> dict[str, Any] | None:
    from safetensors import SafetensorError, safe_open

    for file in _weights(path):
        try:
            with safe_open(str(file), "pt") as f:
                recorded = (f.metadata() or {}).get(MODEL_METADATA_KEY)
            if recorded:
                value = json.loads(recorded)
                return value if isinstance(value, dict) else None
        except (SafetensorError, OSError, ValueError, RecursionError):
            continue
    try:
        run = json.loads((path / "sidestep_run.json").read_text(encoding="utf-8")) if path.is_dir() else {}
    except (OSError, ValueError, RecursionError):
        return None
    return run.get(RUN_FILE_KEY) if isinstance(run, dict) and isinstance(run.get(RUN_FILE_KEY), dict) else None


def _inferred(path: Path) -> dict[str, Any]:
    """For adapters without a record (other tools): the width a LoRA's q_proj A matrix reads, the layers it names."""
    from safetensors import SafetensorError, safe_open

    sig: dict[str, Any] = {}
    layers: list[int] = []
    for file in _weights(path):
        try:
            with safe_open(str(file), "pt") as f:
                keys = list(f.keys())
                layers += [int(m.group(1)) for k in keys if (m := _LAYER.search(k))]
                q_a = next((k for k in keys if k.endswith("self_attn.q_proj.lora_A.weight")), None)
                shape = f.get_slice(q_a).get_shape() if q_a is not None else []
                if len(shape) == 2:
                    sig["hidden_size"] = int(shape[1])
        except (SafetensorError, OSError, ValueError):
            continue  # an unreadable file is the loader's to report
    if layers:
        sig["min_layers"] = max(layers) + 1
    return sig


def check_adapter_model(decoder: torch.nn.Module, path: str | Path) -> None:
    """Refuse an adapter trained on another model family or size, naming both (XL vs 2B)."""
    model = model_signature(decoder)
    path = Path(path)
    if model is None or not path.exists():
        return
    adapter = _recorded(path) or _inferred(path)
    wrong = (adapter.get("family") not in (None, model["family"])
             or adapter.get("hidden_size") not in (None, model["hidden_size"])
             or adapter.get("num_layers") not in (None, model["num_layers"])
             or adapter.get("min_layers", 0) > model["num_layers"])
    if wrong:
        raise SidestepError(f"{path}: this adapter was trained on {describe_model(adapter)} and cannot load onto "
                            f"{describe_model(model)}; pick the model it was trained on with --model-variant")
