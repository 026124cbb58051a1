"""Adapters made elsewhere, read into Side-Step's own file layout (docs/design.md §6).

Accepted: a Side-Step folder; ACE-Step's PEFT layout (`base_model.model.<module>.lora_A.weight`, with
adapter_config.json beside it or `lora_adapter_metadata` in the header); diffusers' layout
(`transformer.<diffusers module>.lora_A.weight`, e.g. `pytorch_lora_weights.safetensors`); ComfyUI's
single file (`diffusion_model.decoder.<module>` or `lora_unet_decoder_<module_with_underscores>` with
`lora_A/lora_B` or `lora_down/lora_up`, `.alpha`, `.dora_scale`) and LyCORIS files (`lycoris_<module>`:
LoKR, LoHA, OFT). A key that maps to no decoder module is a one-line error naming it.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from sidestep.adapters.base import Adapter, candidate_modules, decoder_path_to_official
from sidestep.errors import SidestepError

PEFT_PREFIX = "base_model.model."
DIFFUSERS_PREFIX = "transformer."
COMFY_PREFIX = "diffusion_model.decoder."
KOHYA_PREFIX = "lora_unet_decoder_"
LYCORIS_PREFIX = "lycoris_"
# suffix in the file -> what it is
LORA_SUFFIXES = {"lora_A.weight": "A", "lora_down.weight": "A", "lora_B.weight": "B", "lora_up.weight": "B",
                 "lora_magnitude_vector": "magnitude", "dora_scale": "dora_scale", "alpha": "alpha"}
LYCORIS_ALGOS = (("lokr_", "lokr"), ("hada_", "loha"), ("oft_blocks", "oft"))  # parameter -> kind name


@dataclass
class Imported:
    """An adapter read from anywhere, in the layout its kind's `from_files` takes."""

    kind: type[Adapter]
    config: dict[str, Any]
    tensors: dict[str, torch.Tensor]
    where: Path
    notes: list[str] = field(default_factory=list)


def _weights_file(path: Path) -> Path:
    if path.is_file():
        return path
    files = sorted(path.glob("*.safetensors")) if path.is_dir() else []
    if len(files) != 1:
        found = ", ".join(f.name for f in files) or "none"
        raise SidestepError(f"{path}: no adapter here (safetensors files: {found}); pass the adapter file itself")
    return files[0]


def read_adapter(path: str | Path, decoder: torch.nn.Module, kinds: dict[str, type[Adapter]]) -> Imported:
    """Whatever adapter `path` (a folder or a file) holds, for `decoder`; `kinds`: the registry."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if path.is_dir():
        for kind in kinds.values():
            if kind.owns(path):
                return _own_folder(kind, path)
    file = _weights_file(path)
    try:
        with safe_open(str(file), "pt") as f:
            header = dict(f.metadata() or {})
        tensors = load_file(file)
    except (SafetensorError, OSError, ValueError, RecursionError) as err:
        raise SidestepError(f"{file}: not a readable safetensors file ({err}); pass an adapter file") from None
    if not tensors:
        raise SidestepError(f"{file}: holds no tensors; pass an adapter file")
    official = {decoder_path_to_official(m): m for m in candidate_modules(decoder)}
    if any(k.startswith(LYCORIS_PREFIX) for k in tensors):
        return _lycoris(file, header, tensors, official, kinds)
    return _peft(file, header, tensors, official, decoder, kinds)


def _own_folder(kind: type[Adapter], folder: Path) -> Imported:
    from safetensors.torch import load_file

    from sidestep.adapters.lycoris_family import LycorisAdapter
    from sidestep.adapters.peft_family import CONFIG, WEIGHTS

    if issubclass(kind, LycorisAdapter):
        config, path = kind._file(folder)
        return Imported(kind, config, load_file(path), path)
    return Imported(kind, json.loads((folder / CONFIG).read_text(encoding="utf-8")), load_file(folder / WEIGHTS),
                    folder / WEIGHTS)


def _split(key: str, official: dict[str, str], file: Path) -> tuple[str, str]:
    """A LoRA-style key -> (ACE-Step module name, what it is)."""
    for suffix, what in LORA_SUFFIXES.items():
        if not key.endswith("." + suffix):
            continue
        stem = key[:-len(suffix) - 1]
        for prefix in (PEFT_PREFIX, DIFFUSERS_PREFIX, COMFY_PREFIX):
            if stem.startswith(prefix):
                module = stem[len(prefix):]
                module = {v: k for k, v in official.items()}.get(module, module)  # diffusers name -> ACE-Step's
                if module in official:
                    return module, what
        if stem.startswith(KOHYA_PREFIX):
            flat = {o.replace(".", "_"): o for o in official}
            if stem[len(KOHYA_PREFIX):] in flat:
                return flat[stem[len(KOHYA_PREFIX):]], what
    raise SidestepError(f"{file}: cannot map key '{key}' onto a decoder attention module of this model; expected "
                        "ACE-Step PEFT, diffusers, ComfyUI or LyCORIS adapter keys")


def _header_config(file: Path, header: dict[str, str]) -> dict[str, Any]:
    """LoraConfig fields: adapter_config.json beside the file, else diffusers' `lora_adapter_metadata`."""
    beside = file.parent / "adapter_config.json"
    if beside.is_file():
        try:
            config = json.loads(beside.read_text(encoding="utf-8"))
        except (ValueError, RecursionError):
            raise SidestepError(f"{beside}: not valid JSON; fix or remove it") from None
        if not isinstance(config, dict):
            raise SidestepError(f"{beside}: not a PEFT adapter config (a JSON object); fix or remove it")
        return config
    if "lora_adapter_metadata" in header:
        try:
            meta = json.loads(header["lora_adapter_metadata"])
            if not isinstance(meta, dict):
                raise ValueError
        except (ValueError, RecursionError):
            raise SidestepError(f"{file}: its lora_adapter_metadata header is not valid JSON") from None
        return {k.split(".", 1)[1]: v for k, v in meta.items() if k.startswith("transformer.")}
    return {}


def _peft(file: Path, header: dict, tensors: dict[str, torch.Tensor], official: dict[str, str],
          decoder: torch.nn.Module, kinds: dict[str, type[Adapter]]) -> Imported:
    parts: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        module, what = _split(key, official, file)
        parts.setdefault(module, {})[what] = value
    for module, got in parts.items():
        if "A" not in got or "B" not in got:
            raise SidestepError(f"{file}: module '{module}' lacks its lora_{'B' if 'A' in got else 'A'} weight; the "
                                "file is incomplete")
    config = _header_config(file, header)
    ranks = {m: got["A"].shape[0] for m, got in parts.items()}
    if any("alpha" in got for got in parts.values()) or "lora_alpha" not in config:
        # ComfyUI / kohya files: a per-module alpha (none = scale 1, as those clients apply it)
        alphas = {m: float(got["alpha"].item()) if "alpha" in got else float(ranks[m]) for m, got in parts.items()}
        r = Counter(ranks.values()).most_common(1)[0][0]
        alpha = Counter(alphas.values()).most_common(1)[0][0]
        exact = lambda m: re.escape(m)  # noqa: E731  PEFT matches `(.*\.)?key$`: the whole module name
        config = dict(config, r=r, lora_alpha=alpha, use_rslora=False,
                      rank_pattern={exact(m): v for m, v in ranks.items() if v != r},
                      alpha_pattern={exact(m): v for m, v in alphas.items() if v != alpha})
    dora = any("magnitude" in got or "dora_scale" in got for got in parts.values())
    config["use_dora"] = dora
    out = {}
    for module, got in parts.items():
        out[f"{PEFT_PREFIX}{module}.lora_A.weight"] = got["A"]
        out[f"{PEFT_PREFIX}{module}.lora_B.weight"] = got["B"]
        if "magnitude" in got:
            out[f"{PEFT_PREFIX}{module}.lora_magnitude_vector"] = got["magnitude"]
        elif "dora_scale" in got:
            out[f"{PEFT_PREFIX}{module}.lora_magnitude_vector"] = _magnitude(decoder, official[module], got, config)
        elif dora:
            raise SidestepError(f"{file}: module '{module}' has no DoRA magnitude while others do; the file is "
                                "incomplete")
    peft_kinds = [k for k in kinds.values() if k.library == "PEFT" and getattr(k, "use_dora", False) == dora]
    return Imported(peft_kinds[0], config, out, file)


def _magnitude(decoder: torch.nn.Module, module: str, got: dict[str, torch.Tensor], config: dict) -> torch.Tensor:
    """ComfyUI's `.dora_scale` (divided by the base rows' norm when applied) -> PEFT's magnitude (divided by the
    adapted rows' norm): m = dora_scale ||W + s B A|| / (||W|| + eps), the inverse of our export."""
    weight = decoder.get_submodule(module).weight.detach().float()
    down, up, scale = got["A"].float(), got["B"].float(), got["dora_scale"].float().reshape(-1)
    if scale.shape[0] != weight.shape[0]:
        raise SidestepError(f"DoRA scale of '{module}' is on the input axis ({tuple(got['dora_scale'].shape)}); "
                            "only output-axis magnitudes (PEFT's) can be read")
    alpha = float(got["alpha"].item()) if "alpha" in got else float(down.shape[0])
    adapted = weight + alpha / down.shape[0] * (up @ down)
    eps = torch.finfo(torch.float32).eps
    return (scale * adapted.norm(dim=1) / (weight.norm(dim=1) + eps)).to(got["dora_scale"].dtype)


def _lycoris(file: Path, header: dict, tensors: dict[str, torch.Tensor], official: dict[str, str],
             kinds: dict[str, type[Adapter]]) -> Imported:
    flat = {f"{LYCORIS_PREFIX}{o.replace('.', '_')}" for o in official}
    algos = set()
    for key in tensors:
        prefix, _, param = key.partition(".")
        if prefix not in flat:
            raise SidestepError(f"{file}: cannot map key '{key}' onto a decoder attention module of this model")
        algos |= {algo for marker, algo in LYCORIS_ALGOS if param.startswith(marker)}
    if len(algos) != 1:
        raise SidestepError(f"{file}: LyCORIS keys of {'no known' if not algos else 'several'} algorithm(s) "
                            f"({', '.join(sorted(algos)) or next(iter(tensors))}); Side-Step reads LoKR, LoHA or OFT")
    kind = kinds[algos.pop()]
    from sidestep.adapters.lycoris_family import COMFY_DORA_MARK

    if COMFY_DORA_MARK in header:
        raise SidestepError(f"{file}: a ComfyUI export of a weight-decomposed {kind.label}, whose .dora_scale only "
                            "ComfyUI reads right; load the Side-Step folder it was exported from")
    if f"{kind.name}_config" in header:  # written by Side-Step (also its ComfyUI export)
        try:
            config = json.loads(header[f"{kind.name}_config"])
            if not isinstance(config, dict):
                raise ValueError
        except (ValueError, RecursionError):
            raise SidestepError(f"{file}: its {kind.name}_config header is not a JSON object; export the adapter "
                                "again") from None
    else:
        config = _infer_settings(kind.name, tensors, file)
    tensors = dict(tensors)
    if "constraint" in config:  # OFT: LyCORIS stores the bare constraint as alpha (ComfyUI files: constraint x out dim)
        for key in [k for k in tensors if k.endswith(".alpha")]:
            tensors[key] = torch.tensor(float(config["constraint"]))
    return Imported(kind, config, tensors, file)


def _infer_settings(name: str, tensors: dict[str, torch.Tensor], file: Path) -> dict[str, Any]:
    """A LyCORIS file without Side-Step's config header: its settings from the first module's tensors."""
    first = sorted({k.split(".", 1)[0] for k in tensors})[0]
    get = lambda p: tensors.get(f"{first}.{p}")  # noqa: E731
    alpha = float(get("alpha").item()) if get("alpha") is not None else None
    decompose = get("dora_scale") is not None
    if name == "loha":
        return dict(linear_dim=get("hada_w1_b").shape[0], linear_alpha=alpha, use_tucker=get("hada_t1") is not None,
                    use_scalar=False, weight_decompose=decompose)
    if name == "oft":
        return dict(block_size=get("oft_blocks").shape[-1], constraint=alpha or 0.0,
                    rescaled=get("rescale") is not None)
    low_rank = get("lokr_w2_b") if get("lokr_w2_b") is not None else get("lokr_w1_b")
    if low_rank is None:
        raise SidestepError(f"{file}: '{first}.lokr_w2' is a full-matrix LoKR factor, whose LyCORIS dimension the "
                            "file does not tell; Side-Step reads low-rank LoKR files or its own")
    w1 = get("lokr_w1") if get("lokr_w1") is not None else get("lokr_w1_a")
    return dict(linear_dim=low_rank.shape[0], linear_alpha=alpha, factor=w1.shape[0],
                decompose_both=get("lokr_w1_a") is not None, use_tucker=get("lokr_t2") is not None, use_scalar=False,
                weight_decompose=decompose)
