"""What LoRA and DoRA share: PEFT layers on the decoder, ACE-Step's PEFT folder (docs/design.md §6.1).

A kind of this family sets `use_dora`; everything else (options, files, strength, ComfyUI keys)
is the same code.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from sidestep.adapters.base import (Adapter, copy_into, decoder_param_to_official, no_modules,
                                    official_to_decoder_param, short_target_names)
from sidestep.errors import SidestepError
from sidestep.model.keys import PROJ_OFFICIAL_TO_DIFFUSERS

WEIGHTS = "adapter_model.safetensors"
CONFIG = "adapter_config.json"
PEFT_PREFIX = "base_model.model."
COMFY_PREFIX = "diffusion_model.decoder."


def _diffusers_pattern(pattern: str) -> str:
    """A target/pattern key in ACE-Step's projection names -> diffusers' (`q_proj` -> `to_q`, ...)."""
    for official, diffusers in PROJ_OFFICIAL_TO_DIFFUSERS.items():
        pattern = pattern.replace(official, diffusers)
    return pattern


def _same_shapes(theirs: dict[str, torch.Tensor], mine: dict[str, torch.Tensor], where) -> None:
    """One line naming the first tensor that the other adapter lacks, adds or shapes differently."""
    for key in sorted(set(theirs) | set(mine)):
        if key not in mine:
            raise SidestepError(f"{where}: '{key}' has no place in this run's adapter; --init-adapter needs an "
                                "adapter on the same modules (--attention-type, --target-modules)")
        if key not in theirs:
            raise SidestepError(f"{where}: lacks '{key}' of this run's adapter; --init-adapter needs an adapter on "
                                "the same modules (--attention-type, --target-modules)")
        if theirs[key].shape != mine[key].shape:
            raise SidestepError(f"{where}: '{key}' is {tuple(theirs[key].shape)}, this run's is "
                                f"{tuple(mine[key].shape)}; --init-adapter needs the same shape (rank/dim)")


class PeftAdapter(Adapter):
    """PEFT LoRA injected into the diffusers decoder (via diffusers' own `add_adapter`)."""

    library = "PEFT"
    use_dora = False
    options = ("rank", "alpha", "dropout", "bias")
    resume_options = ("rank", "alpha", "bias")
    quantized_base = True

    def __init__(self, decoder: torch.nn.Module, modules: list[str], rank: int, alpha: float, dropout: float,
                 bias: str = "none", **peft_options: Any):
        """`peft_options`: further LoraConfig fields of an adapter being loaded (use_rslora, rank_pattern,
        alpha_pattern; patterns in diffusers names)."""
        from peft import LoraConfig

        if not modules:
            raise no_modules()
        self.decoder, self.modules = decoder, modules
        self.config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, bias=bias,
                                 target_modules=list(modules), init_lora_weights=True, use_dora=self.use_dora,
                                 **peft_options)
        decoder.add_adapter(self.config)
        for name, param in decoder.named_parameters():
            param.requires_grad_(self._is_adapter_param(name))
            if param.requires_grad:
                param.data = param.data.float()  # adapter weights train in fp32 whatever the base dtype
        self.attach()

    # -- the kind ---------------------------------------------------------------------------------
    @classmethod
    def build(cls, config, decoder, modules):
        return cls(decoder, modules, config.rank, config.alpha, config.dropout, config.bias)

    @classmethod
    def summary(cls, config) -> str:
        return f"{cls.label} (PEFT) rank {config.rank}, alpha {config.alpha}, dropout {config.dropout:g}, " \
               f"bias {config.bias}"

    @classmethod
    def written(cls) -> tuple[str, ...]:
        return CONFIG, WEIGHTS

    @classmethod
    def _config_in(cls, folder: Path) -> dict | None:
        try:
            config = json.loads((folder / CONFIG).read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError):
            return None
        return config if isinstance(config, dict) else None

    @classmethod
    def owns(cls, folder: Path) -> bool:
        config = cls._config_in(folder)
        return (config is not None and (folder / WEIGHTS).is_file() and config.get("peft_type", "LORA") == "LORA"
                and bool(config.get("use_dora")) == cls.use_dora)

    @classmethod
    def load(cls, decoder, folder):
        from safetensors.torch import load_file

        return cls.from_files(decoder, cls._config_in(folder), load_file(folder / WEIGHTS), folder / WEIGHTS)

    @staticmethod
    def _state(tensors: dict[str, torch.Tensor], where) -> dict[str, torch.Tensor]:
        """File keys (`base_model.model.<ACE-Step name>.lora_A.weight`) -> PEFT's decoder-relative names."""
        state = {}
        for key, value in tensors.items():
            if not key.startswith(PEFT_PREFIX):
                raise SidestepError(f"{where}: key '{key}' lacks PEFT's prefix '{PEFT_PREFIX}'; not an ACE-Step "
                                    "PEFT adapter")
            state[official_to_decoder_param(key[len(PEFT_PREFIX):])] = value
        return state

    @classmethod
    def from_files(cls, decoder, config: dict, tensors: dict[str, torch.Tensor], where) -> "PeftAdapter":
        """The adapter an adapter_config.json and its tensors (ACE-Step's layout) describe, on `decoder`."""
        state = cls._state(tensors, where)
        modules = sorted({k.rsplit(".lora_", 1)[0] for k in state if ".lora_" in k})
        options = {"use_rslora": bool(config.get("use_rslora"))}
        for field in ("rank_pattern", "alpha_pattern"):  # PEFT matches them on module names: ours are diffusers'
            options[field] = {_diffusers_pattern(k): v for k, v in (config.get(field) or {}).items()}
        adapter = cls(decoder, modules, config["r"], config["lora_alpha"], 0.0, config.get("bias", "none"), **options)
        adapter.load_state_dict(state)
        return adapter

    def init_from(self, config: dict, tensors: dict[str, torch.Tensor], where) -> None:
        """Start from another adapter of this kind and shape (--init-adapter): its tensors, this run's settings."""
        for field, ours in (("r", self.config.r), ("lora_alpha", self.config.lora_alpha),
                            ("use_rslora", self.config.use_rslora)):
            if config.get(field, ours if field == "use_rslora" else None) != ours:
                raise SidestepError(f"{where}: its {field} is {config.get(field)!r}, this run's is {ours!r}; "
                                    "--init-adapter needs the same settings (pass them)")
        state, mine = self._state(tensors, where), self.state_dict()
        _same_shapes(state, mine, where)
        self.load_state_dict(state)

    @classmethod
    def comfyui_tensors(cls, folder):
        """`diffusion_model.decoder.<M>.lora_A/B.weight` + `.alpha` chosen so ComfyUI's alpha / rank is PEFT's
        scale for that module (alpha_pattern and rank_pattern matched as PEFT matches them, rsLoRA included)."""
        from peft.utils.other import get_pattern_key
        from safetensors.torch import load_file

        config = cls._config_in(folder)
        if config.get("bias", "none") != "none":
            raise SidestepError(f"{folder}: trained with --bias {config['bias']}; ComfyUI reads bias changes only as "
                                "differences from the base model, which the export cannot know: train with --bias "
                                "none for ComfyUI")
        tensors = load_file(folder / WEIGHTS)
        out: dict[str, torch.Tensor] = {}
        alpha_pattern = config.get("alpha_pattern") or {}
        for key, value in tensors.items():
            module, _, suffix = key[len(PEFT_PREFIX):].rpartition(".lora_")
            if not key.startswith(PEFT_PREFIX) or suffix not in ("A.weight", "B.weight", "magnitude_vector"):
                raise SidestepError(f"{folder / WEIGHTS}: key '{key}' has no ComfyUI equivalent; export only adapters "
                                    "Side-Step trained")
            if suffix == "magnitude_vector":
                continue  # DoRA: its ComfyUI form needs the base weight (`dora_scale_for_comfyui`)
            out[f"{COMFY_PREFIX}{module}.lora_{suffix}"] = value
            if suffix == "A.weight":
                rank = value.shape[0]  # rank_pattern is already in the tensor's shape
                pattern = get_pattern_key(list(alpha_pattern), module)
                alpha = float(alpha_pattern.get(pattern, config["lora_alpha"]))
                # ComfyUI scales by alpha / rank; rsLoRA's scale alpha / sqrt(rank) is alpha * sqrt(rank) / rank
                out[f"{COMFY_PREFIX}{module}.alpha"] = torch.tensor(alpha * math.sqrt(rank) if config.get("use_rslora")
                                                                    else alpha)
        return out, {"format": "pt", "source": "side-step", "adapter": cls.name}

    # -- one adapter ------------------------------------------------------------------------------
    def _is_adapter_param(self, name: str) -> bool:
        if ".lora_" in name:
            return True
        bias = self.config.bias
        if bias == "all":
            return name.endswith(".bias")
        if bias == "lora_only":
            return name.endswith(".bias") and any(name.startswith(m + ".base_layer") for m in self.modules)
        return False

    def parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.decoder.parameters() if p.requires_grad]

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Adapter tensors under PEFT's decoder-relative names (no adapter name)."""
        from peft import get_peft_model_state_dict

        return {k: v.detach() for k, v in get_peft_model_state_dict(self.decoder).items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        from peft import set_peft_model_state_dict

        result = set_peft_model_state_dict(self.decoder, state)
        unexpected = getattr(result, "unexpected_keys", [])
        if unexpected:
            raise SidestepError(f"adapter state has unexpected keys ({', '.join(unexpected[:3])}); it was saved "
                                "with other adapter settings")

    def training_state(self) -> dict[str, torch.Tensor]:
        return {n: p.detach().clone() for n, p in self.decoder.named_parameters() if p.requires_grad}

    def load_training_state(self, state: dict[str, torch.Tensor]) -> None:
        copy_into(dict(self.decoder.named_parameters()), state, "adapter")

    def export_tensors(self) -> dict[str, torch.Tensor]:
        """ACE-Step's native PEFT layout: `base_model.model.layers.{i}.self_attn.q_proj.lora_A.weight`."""
        return {PEFT_PREFIX + decoder_param_to_official(k): v.contiguous() for k, v in self.state_dict().items()}

    def export_config(self) -> dict[str, Any]:
        """adapter_config.json content: PEFT LoraConfig fields with ACE-Step module names."""
        config = self.config.to_dict()
        config.update(target_modules=short_target_names(self.modules, self.decoder, official=True),
                      inference_mode=True, task_type="FEATURE_EXTRACTION", peft_type="LORA")
        return json.loads(json.dumps(config, default=list))

    def diffusers_metadata(self) -> dict[str, Any]:
        """The LoraConfig that diffusers reads from the safetensors header (docs/design.md §6.1), diffusers names."""
        config = self.export_config()
        config["target_modules"] = short_target_names(self.modules, self.decoder, official=False)
        # diffusers builds the LoRA layers in train mode; dropout belongs to training, never to inference.
        config["lora_dropout"] = 0.0
        keep = ("r", "lora_alpha", "lora_dropout", "target_modules", "bias", "use_rslora", "use_dora",
                "init_lora_weights", "fan_in_fan_out", "rank_pattern", "alpha_pattern", "lora_bias")
        return {f"transformer.{k}": config[k] for k in keep if k in config}

    def files(self) -> dict[str, Any]:
        metadata = {"format": "pt", "lora_adapter_metadata": json.dumps(self.diffusers_metadata())}
        return {WEIGHTS: (self.export_tensors(), metadata), CONFIG: json.dumps(self.export_config(), indent=2)}

    def _layers(self) -> list:
        from peft.tuners.lora import LoraLayer

        return [m for m in self.decoder.modules() if isinstance(m, LoraLayer)]

    def set_strength(self, strength: float) -> None:
        """PEFT's scale (strength x lora_alpha / r); 0 switches the layers off, so the base layers run alone."""
        for layer in self._layers():
            if strength == 0.0:
                if not layer.disable_adapters:
                    layer.enable_adapters(False)
                continue
            if layer.disable_adapters:
                layer.enable_adapters(True)
            for name in layer.active_adapters:
                layer.set_scale(name, strength)

    def strength_state(self) -> Any:
        return [(layer, dict(layer.scaling), layer.disable_adapters) for layer in self._layers()]

    def restore_strength(self, saved: Any) -> None:
        for layer, scaling, disabled in saved:
            if layer.disable_adapters != disabled:
                layer.enable_adapters(not disabled)
            layer.scaling.update(scaling)
