"""What LoKR, LoHA and OFT share: a LyCORIS network on exactly the selected decoder modules, one
safetensors file in LyCORIS' keys with ACE-Step module names (docs/design.md §6.2).

A kind of this family declares its LyCORIS `algo`, how its options map onto `create_lycoris`
(`settings` / `lycoris_kwargs`) and, for ComfyUI, what it cannot represent (`comfyui_refusal`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from sidestep.adapters.base import Adapter, candidate_modules, copy_into, decoder_path_to_official, no_modules, \
    short_target_names
from sidestep.errors import SidestepError


COMFY_DORA_MARK = "sidestep_comfyui_dora_scale"  # header entry of a ComfyUI export whose .dora_scale was rewritten


def lycoris_name(module: str) -> str:
    """LyCORIS' name of a decoder module: `lycoris_` + the path with `.` -> `_`."""
    return "lycoris_" + module.replace(".", "_")


class LycorisAdapter(Adapter):
    """A LyCORIS network (algorithm `algo`) on exactly the selected decoder modules."""

    library = "LyCORIS"
    algo: str = ""
    extra_config: dict[str, Any] = {}  # written into the file's config beside the settings

    def __init__(self, decoder: torch.nn.Module, modules: list[str], settings: dict[str, Any]):
        from lycoris import LycorisNetwork, create_lycoris

        if not modules:
            raise no_modules()
        self.decoder, self.modules, self.settings = decoder, modules, dict(settings)
        # Only the named modules: no class-wide targets, so no stray modules on other Linears.
        LycorisNetwork.apply_preset({"target_module": [], "target_name": list(modules), "use_fnmatch": False})
        device = next(decoder.parameters()).device
        kwargs = self.lycoris_kwargs(self.settings)
        if device.type == "meta":  # shapes only (--dry-run): nothing may depend on values
            kwargs = self.meta_kwargs(kwargs)
        self.network = create_lycoris(decoder, 1.0, algo=self.algo, **kwargs)
        self.network.apply_to()
        # adapter weights train in fp32 whatever the base dtype, on the decoder's device (meta for --dry-run)
        self.network.to(device=device, dtype=torch.float32)
        # Registered under the decoder so Fabric/DDP see the parameters with the model's.
        decoder.add_module("lycoris", self.network)
        self.network.requires_grad_(True)
        self._official = {lycoris_name(m): lycoris_name(decoder_path_to_official(m)) for m in modules}
        self.attach()

    # -- what a kind declares -----------------------------------------------------------------------
    @classmethod
    def settings(cls, config) -> dict[str, Any]:
        """The kind's options from a Config, under the names its file's config uses."""
        raise NotImplementedError

    @classmethod
    def lycoris_kwargs(cls, settings: dict[str, Any]) -> dict[str, Any]:
        """`create_lycoris` keyword arguments for these settings."""
        raise NotImplementedError

    @classmethod
    def meta_kwargs(cls, kwargs: dict[str, Any]) -> dict[str, Any]:
        """`create_lycoris` arguments for a decoder on the meta device: the same shapes, no value-dependent
        branches (default: as they are)."""
        return kwargs

    @classmethod
    def comfyui_refusal(cls, settings: dict[str, Any]) -> str | None:
        """Why ComfyUI cannot apply an adapter with these settings as LyCORIS does, else None."""
        return None

    @classmethod
    def comfyui_fix(cls, tensors: dict[str, torch.Tensor], settings: dict[str, Any]) -> dict[str, torch.Tensor]:
        """LyCORIS' tensors -> the ones ComfyUI reads to the same effect (default: as they are)."""
        return tensors

    # -- the kind ---------------------------------------------------------------------------------
    @classmethod
    def weights_file(cls) -> str:
        return f"{cls.name}_weights.safetensors"

    @classmethod
    def config_file(cls) -> str:
        return f"{cls.name}_config.json"

    @classmethod
    def build(cls, config, decoder, modules):
        return cls(decoder, modules, cls.settings(config))

    @classmethod
    def written(cls) -> tuple[str, ...]:
        return cls.weights_file(), cls.config_file()

    @classmethod
    def owns(cls, folder: Path) -> bool:
        return (folder / cls.weights_file()).is_file()

    @classmethod
    def _file(cls, folder: Path) -> tuple[dict[str, Any], Path]:
        from safetensors import safe_open

        path = folder / cls.weights_file()
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        try:
            return json.loads(meta[f"{cls.name}_config"]), path
        except (KeyError, ValueError, RecursionError):
            raise SidestepError(f"{path}: no '{cls.name}_config' header entry; not a {cls.label} file Side-Step "
                                "wrote") from None

    @classmethod
    def load(cls, decoder, folder):
        from safetensors.torch import load_file

        config, path = cls._file(folder)
        return cls.from_files(decoder, config, load_file(path), path)

    @classmethod
    def from_files(cls, decoder, config: dict, tensors: dict[str, torch.Tensor], where) -> "LycorisAdapter":
        """The adapter a kind's config and its LyCORIS tensors (ACE-Step module names) describe, on `decoder`."""
        wanted = {k.split(".", 1)[0] for k in tensors}
        modules = [m for m in candidate_modules(decoder) if lycoris_name(decoder_path_to_official(m)) in wanted]
        settings = {k: config[k] for k in cls.settings_keys() if k in config}
        adapter = cls(decoder, modules, settings)
        adapter.load_state_dict(adapter._state(tensors, where))
        return adapter

    def _state(self, tensors: dict[str, torch.Tensor], where) -> dict[str, torch.Tensor]:
        inverse = {v: k for k, v in self._official.items()}
        state = {}
        for key, value in tensors.items():
            prefix, _, param = key.partition(".")
            if prefix not in inverse:
                raise SidestepError(f"{where}: key '{key}' has no place in this run's adapter (no module it "
                                    "wraps); use the same --attention-type and --target-modules")
            state[f"{inverse[prefix]}.{param}"] = value
        return state

    def init_from(self, config: dict, tensors: dict[str, torch.Tensor], where) -> None:
        """Start from another adapter of this kind and shape (--init-adapter)."""
        from sidestep.adapters.peft_family import _same_shapes

        for key in self.settings_keys():
            if key in config and config[key] != self.settings[key]:
                raise SidestepError(f"{where}: its {key} is {config[key]!r}, this run's is {self.settings[key]!r}; "
                                    "--init-adapter needs the same settings (pass them)")
        state = self._state(tensors, where)
        _same_shapes(state, self.state_dict(), where)
        self.load_state_dict(state)

    @classmethod
    def settings_keys(cls) -> tuple[str, ...]:
        from sidestep.config import Config

        return tuple(cls.settings(Config()))

    @classmethod
    def comfyui_tensors(cls, folder):
        """LyCORIS' keys as they are (`lycoris_<module>.*` with its `.alpha`), which ComfyUI reads."""
        from safetensors import safe_open
        from safetensors.torch import load_file

        config, path = cls._file(folder)
        refusal = cls.comfyui_refusal(config)
        if refusal:
            raise SidestepError(f"{folder}: {refusal}")
        with safe_open(str(path), "pt") as f:
            header = dict(f.metadata() or {})
        tensors = cls.comfyui_fix(load_file(path), config)
        header = dict(header, source="side-step", adapter=cls.name)
        if any(k.endswith(".dora_scale") for k in tensors):
            tensors = cls._comfyui_dora_scales(folder, tensors)
            header[COMFY_DORA_MARK] = "divided by the base weight's row norms (ComfyUI), not LyCORIS' magnitude"
        return tensors, header

    @classmethod
    def _comfyui_dora_scales(cls, folder: Path, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Weight decomposition (`--*-weight-decompose`): LyCORIS divides the adapted rows by their own norm,
        ComfyUI by the base rows' norm, so each `.dora_scale` is rewritten for ComfyUI (`comfyui_dora_scale`)
        from LyCORIS' own weight change on the base model named in sidestep_run.json."""
        from sidestep.adapters.base import base_decoder, comfyui_dora_scale

        adapter = cls.load(base_decoder(folder), folder)
        out = dict(tensors)
        with torch.no_grad():
            for module in adapter.network.loras:
                if not getattr(module, "wd", False) or not getattr(module, "wd_on_out", True):
                    raise SidestepError(f"{folder}: {module.lora_name} decomposes on the input axis, which ComfyUI "
                                        "reads differently; export without weight decomposition")
                base = module.org_weight.detach().float()
                # the weight change as LyCORIS' forward computes it (its get_diff_weight scales once more)
                adapted = base + (module.get_weight(module.shape) * module.scalar).float()
                key = f"{adapter._official[module.lora_name]}.dora_scale"
                out[key] = comfyui_dora_scale(module.dora_scale.detach(), base, adapted, torch.finfo(torch.float32).eps)
        return out

    # -- one adapter ------------------------------------------------------------------------------
    def parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.network.parameters() if p.requires_grad]

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.detach() for k, v in self.network.state_dict().items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        missing, unexpected = self.network.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise SidestepError(f"{self.label} state does not match this adapter (missing {len(missing)}, unexpected "
                                f"{len(unexpected)} keys); it was saved with other adapter settings")

    def training_state(self) -> dict[str, torch.Tensor]:
        """The raw parameters (LyCORIS' own state_dict folds `scalar` into w1, which resume must not do)."""
        return {n: p.detach().clone() for n, p in self.network.named_parameters()}

    def load_training_state(self, state: dict[str, torch.Tensor]) -> None:
        copy_into(dict(self.network.named_parameters()), state, self.label)

    def export_tensors(self) -> dict[str, torch.Tensor]:
        """LyCORIS keys with ACE-Step module names: `lycoris_layers_0_self_attn_q_proj.lokr_w1`."""
        out = {}
        for key, value in self.state_dict().items():
            prefix, _, param = key.partition(".")
            out[f"{self._official.get(prefix, prefix)}.{param}"] = value.contiguous()
        return out

    def export_config(self) -> dict[str, Any]:
        return dict(self.settings, target_modules=short_target_names(self.modules, self.decoder, official=True),
                    **self.extra_config)

    def files(self) -> dict[str, Any]:
        config = self.export_config()
        metadata = {"algo": self.algo, "format": "lycoris", f"{self.name}_config": json.dumps(config)}
        return {self.weights_file(): (self.export_tensors(), metadata),
                self.config_file(): json.dumps(dict(config, algo=self.algo, format="lycoris"), indent=2)}

    def set_strength(self, strength: float) -> None:
        """The LyCORIS multiplier; 0 unhooks the network (DoRA-safe)."""
        network = self.network
        unhooked = getattr(network, "_sidestep_unhooked", False)
        if strength == 0.0 and not unhooked:
            network.restore()
        elif strength != 0.0 and unhooked:
            network.apply_to()
        network._sidestep_unhooked = strength == 0.0
        network.set_multiplier(strength)

    def strength_state(self) -> Any:
        return self.network.multiplier, getattr(self.network, "_sidestep_unhooked", False)

    def restore_strength(self, saved: Any) -> None:
        multiplier, unhooked = saved
        network = self.network
        now = getattr(network, "_sidestep_unhooked", False)
        if now and not unhooked:
            network.apply_to()
        elif unhooked and not now:
            network.restore()
        network._sidestep_unhooked = unhooked
        network.set_multiplier(multiplier)
