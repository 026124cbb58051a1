"""What every adapter kind shares: target selection, name conversion and the `Adapter` protocol.

The training model uses diffusers' module names (`to_q/to_k/to_v/to_out.0`); users, adapter
files and ACE-Step say `q_proj/k_proj/v_proj/o_proj`. Selection happens here, in diffusers
names; each kind writes its files in ACE-Step's names (docs/design.md §6).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, ClassVar

import torch

from sidestep.errors import SidestepError
from sidestep.model.keys import (PROJ_DIFFUSERS_TO_OFFICIAL, PROJ_OFFICIAL_TO_DIFFUSERS, decoder_path_to_diffusers,
                                 decoder_path_to_official, diffusers_to_official)

ATTENTION_KINDS = {"both": ("self_attn", "cross_attn"), "self": ("self_attn",), "cross": ("cross_attn",)}
_ATTN_MODULE = re.compile(r"^layers\.(\d+)\.(self_attn|cross_attn)\.(to_q|to_k|to_v|to_out\.0)$")


def decoder_param_to_official(name: str) -> str:
    """Decoder-relative diffusers parameter name -> ACE-Step's (e.g. `proj_in_conv.bias` -> `proj_in.1.bias`)."""
    return diffusers_to_official("transformer", name)[len("decoder."):]


def candidate_modules(decoder: torch.nn.Module) -> list[str]:
    """Every attention projection of the decoder, diffusers names, in layer order."""
    return [name for name, _ in decoder.named_modules() if _ATTN_MODULE.match(name)]


def select_target_modules(decoder: torch.nn.Module, attention_type: str = "both",
                          target_modules: tuple[str, ...] | list[str] = ("q_proj", "k_proj", "v_proj", "o_proj"),
                          only: list[str] | None = None) -> list[str]:
    """Full decoder-relative module names the adapter wraps (diffusers names).

    `only` (selective training) lists exact modules in ACE-Step names, e.g. `layers.3.self_attn.q_proj`.
    """
    candidates = candidate_modules(decoder)
    if only is not None:
        wanted = [decoder_path_to_diffusers(m) for m in only]
        unknown = [m for m, w in zip(only, wanted) if w not in candidates]
        if unknown:
            raise SidestepError(f"module config names {len(unknown)} module(s) this model lacks: "
                                f"{', '.join(unknown[:8])}{' ...' if len(unknown) > 8 else ''}; "
                                "re-run estimate on this model")
        return [c for c in candidates if c in set(wanted)]
    projections = set()
    for name in target_modules:
        proj = PROJ_OFFICIAL_TO_DIFFUSERS.get(name, name)
        if proj not in PROJ_DIFFUSERS_TO_OFFICIAL:
            raise SidestepError(f"--target-modules: unknown projection '{name}'; use q_proj k_proj v_proj o_proj")
        projections.add(proj)
    if attention_type not in ATTENTION_KINDS:
        raise SidestepError(f"--attention-type '{attention_type}': use both, self or cross")
    kinds = ATTENTION_KINDS[attention_type]
    return [c for c in candidates if (m := _ATTN_MODULE.match(c)) and m.group(2) in kinds and m.group(3) in projections]


def short_target_names(modules: list[str], decoder: torch.nn.Module, official: bool) -> list[str]:
    """The shortest target list that selects exactly `modules` by PEFT's suffix match."""
    projections = sorted({_ATTN_MODULE.match(m).group(3) for m in modules})
    kinds = sorted({_ATTN_MODULE.match(m).group(2) for m in modules})
    for names in ([p for p in projections], [f"{k}.{p}" for k in kinds for p in projections]):
        if sorted(c for c in candidate_modules(decoder) if any(c.endswith("." + n) for n in names)) == sorted(modules):
            break
    else:
        names = list(modules)
    if official:
        names = [decoder_path_to_official(n) if "." in n.replace("to_out.0", "") else PROJ_DIFFUSERS_TO_OFFICIAL[n]
                 for n in names]
    return names


def copy_into(params: dict[str, torch.nn.Parameter], state: dict[str, torch.Tensor], what: str) -> None:
    wanted = {n for n, p in params.items() if p.requires_grad}
    if set(state) != wanted:
        raise SidestepError(f"the checkpoint's {what} state does not match this run's adapter settings "
                            f"({len(set(state) ^ wanted)} names differ); resume with the settings it was saved with")
    with torch.no_grad():
        for name, value in state.items():
            params[name].copy_(value)




def official_to_decoder_param(name: str) -> str:
    """Inverse of `decoder_param_to_official` (decoder-relative)."""
    from sidestep.model.keys import official_to_diffusers

    return official_to_diffusers("decoder." + name)[1]


def base_decoder(folder: Path) -> torch.nn.Module:
    """The base decoder (fp32, CPU) of the model the adapter in `folder` was trained on (its `sidestep_run.json`:
    --checkpoint-dir and the model folder)."""
    from sidestep.model.discovery import find_model
    from sidestep.model.loader import load_model_dit

    run = folder / "sidestep_run.json"
    try:
        saved = json.loads(run.read_text(encoding="utf-8"))
        root, variant = saved["config"]["checkpoint_dir"], saved["inference"]["model_variant"]
    except (OSError, ValueError, RecursionError, KeyError, TypeError):
        raise SidestepError(f"{run}: missing or unreadable; this export needs the base model the adapter was "
                            "trained on, which Side-Step's run file names") from None
    try:
        entry = find_model(root, variant)
    except SidestepError as err:
        raise SidestepError(f"this export needs the base model the adapter was trained on: {err}") from None
    return load_model_dit(entry, with_condition_encoder=False).transformer


def base_weights(folder: Path, modules: list[str]) -> dict[str, torch.Tensor]:
    """The base model's fp32 weights of `modules` (ACE-Step names), see `base_decoder`."""
    params = dict(base_decoder(folder).named_parameters())
    return {m: params[decoder_path_to_diffusers(m) + ".weight"].detach().float() for m in modules}


def comfyui_dora_scale(magnitude: torch.Tensor, base: torch.Tensor, adapted: torch.Tensor,
                       adapted_eps: float = 0.0) -> torch.Tensor:
    """A magnitude that divides the adapted rows by their own norm (PEFT, LyCORIS: m / (||W + dW|| + adapted_eps))
    as ComfyUI's `.dora_scale` [out, 1], which ComfyUI divides by the *base* rows' norm + fp32 eps instead."""
    eps = torch.finfo(torch.float32).eps
    ratio = (base.float().norm(dim=1) + eps) / (adapted.float().norm(dim=1) + adapted_eps)
    return (magnitude.float().reshape(-1) * ratio).unsqueeze(1).to(magnitude.dtype).contiguous()


def no_modules() -> SidestepError:
    return SidestepError("no attention module selected for the adapter; check --attention-type and --target-modules")


class Adapter:
    """One adapter kind (class attributes and classmethods) and one adapter on a decoder (the instance).

    A kind is a subclass registered in `sidestep/adapters/__init__.py`; nothing outside this package
    branches on `adapter_type`. What a kind declares:
    """

    name: ClassVar[str]  # the --adapter-type value
    label: ClassVar[str]  # how people write it: "LoRA"
    library: ClassVar[str]  # "PEFT" or "LyCORIS"
    experimental: ClassVar[bool] = False
    options: ClassVar[tuple[str, ...]] = ()  # the Config fields only this kind reads (asked only for it)
    resume_options: ClassVar[tuple[str, ...]] = ()  # those a checkpoint must share with the run resuming it
    quantized_base: ClassVar[bool] = False  # trains on a 4-bit frozen base (--quantize-base)

    decoder: torch.nn.Module
    modules: list[str]

    # -- the kind ---------------------------------------------------------------------------------
    @classmethod
    def build(cls, config, decoder: torch.nn.Module, modules: list[str]) -> "Adapter":
        """This kind on `modules` of `decoder`, with the config's options."""
        raise NotImplementedError

    @classmethod
    def summary(cls, config) -> str:
        """One line for the run summary: "LoRA rank 64, alpha 128"."""
        raise NotImplementedError

    @classmethod
    def file_names(cls) -> str:
        """The files an adapter folder of this kind holds, for messages."""
        return " + ".join(cls.written())

    @classmethod
    def written(cls) -> tuple[str, ...]:
        """The names of the files this kind writes into an adapter folder."""
        raise NotImplementedError

    @classmethod
    def owns(cls, folder: Path) -> bool:
        """Whether `folder` holds an adapter of this kind (as Side-Step writes it)."""
        raise NotImplementedError

    @classmethod
    def load(cls, decoder: torch.nn.Module, folder: Path) -> "Adapter":
        """The adapter in `folder`, injected into `decoder`."""
        raise NotImplementedError

    @classmethod
    def from_files(cls, decoder: torch.nn.Module, config: dict, tensors: dict[str, torch.Tensor], where
                   ) -> "Adapter":
        """The adapter that a config and tensors in this kind's file layout describe, on `decoder`."""
        raise NotImplementedError

    def init_from(self, config: dict, tensors: dict[str, torch.Tensor], where) -> None:
        """Start training from another adapter of this kind and shape (--init-adapter)."""
        raise NotImplementedError

    @classmethod
    def comfyui_tensors(cls, folder: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        """(tensors, header) of the ComfyUI file for the adapter in `folder` (docs/design.md §6.3)."""
        raise NotImplementedError

    # -- one adapter ------------------------------------------------------------------------------
    def parameters(self) -> list[torch.nn.Parameter]:
        raise NotImplementedError

    def training_state(self) -> dict[str, torch.Tensor]:
        """Exactly the trainable tensors, for a bit-identical resume."""
        raise NotImplementedError

    def load_training_state(self, state: dict[str, torch.Tensor]) -> None:
        raise NotImplementedError

    def files(self) -> dict[str, Any]:
        """file name -> JSON text, or (tensors, header metadata) for a safetensors file."""
        raise NotImplementedError

    def set_strength(self, strength: float) -> None:
        """1.0 = as trained, 0 = exactly the base model."""
        raise NotImplementedError

    def strength_state(self) -> Any:
        """What `set_strength` changes, for `restore_strength`."""
        raise NotImplementedError

    def restore_strength(self, saved: Any) -> None:
        raise NotImplementedError

    def attach(self) -> None:
        """Remember this adapter on its decoder, so code holding only the decoder finds it (`attached`)."""
        self.decoder.__dict__["_sidestep_adapter"] = self


def attached(module: Any) -> Adapter | None:
    """The Side-Step adapter on `module` (an adapter itself, or a decoder carrying one), else None."""
    if isinstance(module, Adapter):
        return module
    return getattr(module, "__dict__", {}).get("_sidestep_adapter")
