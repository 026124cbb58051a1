"""Adapter kinds as plug-ins: one module per kind on the `Adapter` protocol (`base.py`).

Everything outside this package asks the registry (`KINDS`, `kind`, `build_adapter`, `load_adapter`,
`find_kind`, `resume_options`) instead of branching on `adapter_type`. Adding a kind: one module
(usually a subclass of `PeftAdapter` or `LycorisAdapter`), its entry in `KINDS`, its options in
`sidestep/config.py` (group = its label, and `adapter_type`'s choices), and its tests.
"""

from __future__ import annotations

from pathlib import Path

from sidestep.adapters.base import (Adapter, attached, candidate_modules, decoder_param_to_official,
                                    select_target_modules, short_target_names)
from sidestep.adapters.dora import Dora
from sidestep.adapters.loha import Loha
from sidestep.adapters.lokr import Lokr
from sidestep.adapters.lora import Lora
from sidestep.adapters.oft import Oft
from sidestep.config import COMBINATION_RULES
from sidestep.errors import SidestepError

KINDS: dict[str, type[Adapter]] = {k.name: k for k in (Lora, Dora, Lokr, Loha, Oft)}
# Settings every kind's checkpoint must share with the run resuming it.
SHARED_RESUME_OPTIONS = ("adapter_type", "attention_type", "target_modules")

__all__ = ["Adapter", "KINDS", "attached", "build_adapter", "candidate_modules", "decoder_param_to_official",
           "find_kind", "init_adapter", "kind", "load_adapter", "resume_options", "select_target_modules",
           "short_target_names"]


def _quantized_base_rule(config) -> str | None:
    """--quantize-base needs a kind that trains on 4-bit base layers (checked by Config, see COMBINATION_RULES)."""
    if config.quantize_base == "none" or kind(config.adapter_type).quantized_base:
        return None
    able = ", ".join(k.name for k in KINDS.values() if k.quantized_base)
    return (f"--quantize-base {config.quantize_base} works with --adapter-type {able} only (PEFT LoRA knows 4-bit "
            f"base layers; {kind(config.adapter_type).label} does not); use --quantize-base none")


COMBINATION_RULES.append(_quantized_base_rule)


def kind(name: str) -> type[Adapter]:
    try:
        return KINDS[name]
    except KeyError:
        raise SidestepError(f"unknown adapter type '{name}'; use one of {', '.join(KINDS)}") from None


def resume_options(name: str) -> tuple[str, ...]:
    return SHARED_RESUME_OPTIONS + kind(name).resume_options


def option_owners() -> dict[str, tuple[str, ...]]:
    """Config field -> the kinds that read it (fields no kind claims are shared by all)."""
    owners: dict[str, list[str]] = {}
    for k in KINDS.values():
        for name in k.options:
            owners.setdefault(name, []).append(k.name)
    return {name: tuple(kinds) for name, kinds in owners.items()}


def build_adapter(config, decoder, only: list[str] | None = None) -> Adapter:
    """The adapter the config asks for, injected into `decoder` (`only` = selective training's modules)."""
    modules = select_target_modules(decoder, config.attention_type, config.target_modules, only=only)
    return kind(config.adapter_type).build(config, decoder, modules)


def find_kind(folder: str | Path) -> type[Adapter]:
    """The kind of the adapter Side-Step wrote into `folder`."""
    folder = Path(folder)
    for k in KINDS.values():
        if k.owns(folder):
            return k
    raise SidestepError(f"{folder}: no Side-Step adapter here (expected {expected_files()})")


def written_files() -> tuple[str, ...]:
    """Every file name any kind writes into an adapter folder (what an output must never overwrite)."""
    return tuple(dict.fromkeys(name for k in KINDS.values() for name in k.written()))


def expected_files() -> str:
    """What an adapter folder holds, per kind, for messages."""
    return "; ".join(f"{k.label}: {k.file_names()}" for k in KINDS.values())


def load_adapter(decoder, path: str | Path) -> Adapter:
    """Inject the adapter in `path` into a diffusers decoder: a Side-Step folder, or an adapter made elsewhere
    (ACE-Step's PEFT layout, diffusers' layout, ComfyUI's single file, a LyCORIS file; `foreign.py`)."""
    from sidestep.adapters.foreign import read_adapter
    from sidestep.adapters.signature import check_adapter_model

    path = Path(path)
    check_adapter_model(decoder, path)  # an XL adapter never goes onto a 2B model, nor the reverse
    for k in KINDS.values():
        if path.is_dir() and k.owns(path):
            return k.load(decoder, path)
    imported = read_adapter(path, decoder, KINDS)
    return imported.kind.from_files(decoder, imported.config, imported.tensors, imported.where)


def init_adapter(adapter: Adapter, path: str | Path) -> None:
    """--init-adapter: start `adapter`'s training from the adapter in `path` (same kind, modules and shapes)."""
    from sidestep.adapters.foreign import read_adapter

    from sidestep.adapters.signature import check_adapter_model

    path = Path(path)
    if not path.exists():
        raise SidestepError(f"--init-adapter {path}: not found; pass an adapter folder or file")
    check_adapter_model(adapter.decoder, path)
    imported = read_adapter(path, adapter.decoder, KINDS)
    if imported.kind is not type(adapter):
        raise SidestepError(f"--init-adapter {path}: a {imported.kind.label} adapter, this run trains a "
                            f"{adapter.label}; pass --adapter-type {imported.kind.name}")
    adapter.init_from(imported.config, imported.tensors, imported.where)
