"""LoRA (PEFT) and LoKR (LyCORIS) on the decoder's attention projections.

The training model uses diffusers' module names (`to_q/to_k/to_v/to_out.0`); users, adapter
files and ACE-Step say `q_proj/k_proj/v_proj/o_proj`. Selection happens here, in diffusers
names; files are written in ACE-Step's layout (docs/design.md §6) by `export_tensors`/`export_config`.
"""

from __future__ import annotations

import json
import re
from typing import Any

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


class LoraAdapter:
    """PEFT LoRA injected into the diffusers decoder (via diffusers' own `add_adapter`)."""

    kind = "lora"

    def __init__(self, decoder: torch.nn.Module, modules: list[str], rank: int, alpha: float, dropout: float,
                 bias: str = "none"):
        from peft import LoraConfig

        if not modules:
            raise SidestepError("no attention module selected for the adapter; check --attention-type and "
                                "--target-modules")
        self.decoder, self.modules = decoder, modules
        self.config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, bias=bias,
                                 target_modules=list(modules), init_lora_weights=True)
        decoder.add_adapter(self.config)
        for name, param in decoder.named_parameters():
            param.requires_grad_(self._is_adapter_param(name))
            if param.requires_grad:
                param.data = param.data.float()  # adapter weights train in fp32 whatever the base dtype

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
        """Exactly the trainable tensors, for resuming."""
        return {n: p.detach().clone() for n, p in self.decoder.named_parameters() if p.requires_grad}

    def load_training_state(self, state: dict[str, torch.Tensor]) -> None:
        _copy_into(dict(self.decoder.named_parameters()), state, "adapter")

    def export_tensors(self) -> dict[str, torch.Tensor]:
        """ACE-Step's native PEFT layout: `base_model.model.layers.{i}.self_attn.q_proj.lora_A.weight`."""
        return {"base_model.model." + decoder_param_to_official(k): v.contiguous()
                for k, v in self.state_dict().items()}

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


class LokrAdapter:
    """LyCORIS LoKr on exactly the selected decoder modules."""

    kind = "lokr"

    def __init__(self, decoder: torch.nn.Module, modules: list[str], linear_dim: int, linear_alpha: float,
                 factor: int = -1, decompose_both: bool = False, use_tucker: bool = False, use_scalar: bool = False,
                 weight_decompose: bool = False):
        from lycoris import LycorisNetwork, create_lycoris

        if not modules:
            raise SidestepError("no attention module selected for the adapter; check --attention-type and "
                                "--target-modules")
        self.decoder, self.modules = decoder, modules
        self.settings = dict(linear_dim=linear_dim, linear_alpha=linear_alpha, factor=factor,
                             decompose_both=decompose_both, use_tucker=use_tucker, use_scalar=use_scalar,
                             weight_decompose=weight_decompose)
        # Only the named modules: no class-wide targets, so no stray modules on other Linears.
        LycorisNetwork.apply_preset({"target_module": [], "target_name": list(modules), "use_fnmatch": False})
        self.network = create_lycoris(decoder, 1.0, linear_dim=linear_dim, linear_alpha=linear_alpha, algo="lokr",
                                      factor=factor, decompose_both=decompose_both, use_tucker=use_tucker,
                                      use_scalar=use_scalar, dora_wd=weight_decompose)
        self.network.apply_to()
        self.network.to(torch.float32)  # adapter weights train in fp32 whatever the base dtype
        # Registered under the decoder so Fabric/DDP see the parameters with the model's.
        decoder.add_module("lycoris", self.network)
        self.network.requires_grad_(True)
        self._official = {f"lycoris_{m.replace('.', '_')}": f"lycoris_{decoder_path_to_official(m).replace('.', '_')}"
                          for m in modules}

    def parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.network.parameters() if p.requires_grad]

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.detach() for k, v in self.network.state_dict().items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        missing, unexpected = self.network.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise SidestepError(f"LoKR state does not match this adapter (missing {len(missing)}, unexpected "
                                f"{len(unexpected)} keys); it was saved with other adapter settings")

    def training_state(self) -> dict[str, torch.Tensor]:
        """The raw parameters (LyCORIS' own state_dict folds `scalar` into w1, which resume must not do)."""
        return {n: p.detach().clone() for n, p in self.network.named_parameters()}

    def load_training_state(self, state: dict[str, torch.Tensor]) -> None:
        _copy_into(dict(self.network.named_parameters()), state, "LoKR")

    def export_tensors(self) -> dict[str, torch.Tensor]:
        """LyCORIS keys with ACE-Step module names: `lycoris_layers_0_self_attn_q_proj.lokr_w1`."""
        out = {}
        for key, value in self.state_dict().items():
            prefix, _, param = key.partition(".")
            out[f"{self._official.get(prefix, prefix)}.{param}"] = value.contiguous()
        return out

    def export_config(self) -> dict[str, Any]:
        return dict(self.settings, target_modules=short_target_names(self.modules, self.decoder, official=True),
                    full_matrix=False, bypass_mode=False, rs_lora=False, unbalanced_factorization=False)


def _copy_into(params: dict[str, torch.nn.Parameter], state: dict[str, torch.Tensor], what: str) -> None:
    wanted = {n for n, p in params.items() if p.requires_grad}
    if set(state) != wanted:
        raise SidestepError(f"the checkpoint's {what} state does not match this run's adapter settings "
                            f"({len(set(state) ^ wanted)} names differ); resume with the settings it was saved with")
    with torch.no_grad():
        for name, value in state.items():
            params[name].copy_(value)


def build_adapter(config, decoder: torch.nn.Module, only: list[str] | None = None):
    """The adapter the config asks for, injected into `decoder`."""
    modules = select_target_modules(decoder, config.attention_type, config.target_modules, only=only)
    if config.adapter_type == "lokr":
        return LokrAdapter(decoder, modules, config.lokr_linear_dim, config.lokr_linear_alpha, config.lokr_factor,
                           config.lokr_decompose_both, config.lokr_use_tucker, config.lokr_use_scalar,
                           config.lokr_weight_decompose)
    return LoraAdapter(decoder, modules, config.rank, config.alpha, config.dropout, config.bias)


def _official_to_decoder_param(name: str) -> str:
    """Inverse of `decoder_param_to_official` (decoder-relative)."""
    from sidestep.model.keys import official_to_diffusers

    return official_to_diffusers("decoder." + name)[1]


MODEL_METADATA_KEY = "sidestep_model"  # safetensors header entry: the model an adapter was trained on
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


def _recorded_signature(folder, weights_path) -> dict[str, Any] | None:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(weights_path), "pt") as f:
            recorded = (f.metadata() or {}).get(MODEL_METADATA_KEY)
        if recorded:
            signature = json.loads(recorded)
            return signature if isinstance(signature, dict) else None
    except (SafetensorError, OSError, ValueError, RecursionError):
        return None
    try:
        run = json.loads((folder / "sidestep_run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    return run.get("model") if isinstance(run, dict) and isinstance(run.get("model"), dict) else None


def _inferred_signature(tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    """For adapters without a record (other tools): the width a LoRA's q_proj A matrix reads, the layers it names."""
    sig: dict[str, Any] = {}
    layers = [int(m.group(1)) for k in tensors if (m := _LAYER.search(k))]
    if layers:
        sig["min_layers"] = max(layers) + 1
    for key, value in tensors.items():
        if key.endswith("self_attn.q_proj.lora_A.weight") and value.ndim == 2:
            sig["hidden_size"] = int(value.shape[1])
            break
    return sig


def check_adapter_model(decoder: torch.nn.Module, folder, weights_path, tensors: dict[str, torch.Tensor]) -> None:
    """Refuse an adapter trained on another model family or size, naming both (XL vs 2B)."""
    model = model_signature(decoder)
    if model is None:
        return
    adapter = _recorded_signature(folder, weights_path) or _inferred_signature(tensors)
    wrong = (adapter.get("family") not in (None, model["family"])
             or adapter.get("hidden_size") not in (None, model["hidden_size"])
             or adapter.get("num_layers") not in (None, model["num_layers"])
             or adapter.get("min_layers", 0) > model["num_layers"])
    if wrong:
        raise SidestepError(f"{folder}: this adapter was trained on {describe_model(adapter)} and cannot load onto "
                            f"{describe_model(model)}; pick the model it was trained on with --model-variant")


def load_adapter(decoder: torch.nn.Module, folder):
    """Inject an adapter saved by Side-Step (ACE-Step layout) into a diffusers decoder.

    An adapter trained on another family or size (XL vs 2B) is refused with a one-line error.
    """
    from pathlib import Path

    from safetensors.torch import load_file

    folder = Path(folder)
    if (folder / "adapter_config.json").is_file():
        config = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
        tensors = load_file(folder / "adapter_model.safetensors")
        check_adapter_model(decoder, folder, folder / "adapter_model.safetensors", tensors)
        prefix = "base_model.model."
        state = {_official_to_decoder_param(k[len(prefix):]): v for k, v in tensors.items()}
        modules = sorted({k.rsplit(".lora_", 1)[0] for k in state if ".lora_" in k})
        adapter = LoraAdapter(decoder, modules, config["r"], config["lora_alpha"], 0.0, config.get("bias", "none"))
        adapter.load_state_dict(state)
        return adapter
    if (folder / "lokr_weights.safetensors").is_file():
        from safetensors import safe_open

        path = folder / "lokr_weights.safetensors"
        with safe_open(str(path), "pt") as f:
            config = json.loads(f.metadata()["lokr_config"])
        tensors = load_file(path)
        check_adapter_model(decoder, folder, path, tensors)
        wanted = {k.split(".", 1)[0] for k in tensors}
        modules = [m for m in candidate_modules(decoder)
                   if f"lycoris_{decoder_path_to_official(m).replace('.', '_')}" in wanted]
        adapter = LokrAdapter(decoder, modules, config["linear_dim"], config["linear_alpha"], config["factor"],
                              config["decompose_both"], config["use_tucker"], config["use_scalar"],
                              config["weight_decompose"])
        inverse = {v: k for k, v in adapter._official.items()}
        adapter.load_state_dict({f"{inverse[k.split('.', 1)[0]]}.{k.split('.', 1)[1]}": v for k, v in tensors.items()})
        return adapter
    raise SidestepError(f"{folder}: no adapter here (expected adapter_config.json + adapter_model.safetensors, or "
                        "lokr_weights.safetensors)")
