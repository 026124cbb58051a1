"""Load official ACE-Step 1.5 checkpoint folders into diffusers' model classes.

Nothing here defines a network: the DiT is `diffusers.AceStepTransformer1DModel`, the
condition encoder `AceStepConditionEncoder`, the VAE `AutoencoderOobleck`, the text encoder
a transformers Qwen3 model. What we add is the mapping of the released key names onto them
(`keys.py`) and strictness: every key is used, every parameter is filled, shapes match.

Modules are built on the meta device and the checkpoint tensors are assigned into them, so
the 2B model never exists twice in memory. No code from a checkpoint folder is ever run.

Weights come as one `model.safetensors` (2B) or as shards `model-0000X-of-0000N.safetensors`
listed by `model.safetensors.index.json` (XL); shards are read one after another. XL configs
(the four `encoder_*` fields) also get the timbre token upstream's XL encoder prepends (docs/design.md §2.4).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open

from sidestep.errors import SidestepError
from sidestep.model.configs import ENCODER_FIELDS, decoder_family, is_xl_config
from sidestep.model.keys import NULL_CONDITION_KEY, PREFIX_TO_MODULE, diffusers_to_official, official_to_diffusers

WEIGHTS_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
SILENCE_FILE = "silence_latent.pt"
SHARD_PATTERN = re.compile(r"model-\d+-of-\d+\.safetensors")

# config.json fields every ACE-Step DiT config carries (docs/design.md §2.2); their absence means the
# folder is not an ACE-Step 1.5 DiT.
_REQUIRED_FIELDS = (
    "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "head_dim", "in_channels", "audio_acoustic_hidden_dim",
    "patch_size", "text_hidden_dim", "timbre_hidden_dim",
    "num_lyric_encoder_hidden_layers", "num_timbre_encoder_hidden_layers",
)


class CheckpointError(SidestepError):
    """A checkpoint folder that cannot be loaded as it is."""


def read_dit_config(folder: Path) -> dict[str, Any]:
    """Read and sanity-check `<folder>/config.json` of an ACE-Step 1.5 DiT."""
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{path}: not found; a DiT folder holds config.json and {WEIGHTS_FILE}")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as err:  # ValueError: not JSON, or a number too long to read
        detail = "nested too deeply" if isinstance(err, RecursionError) else str(err).splitlines()[0][:200]
        raise CheckpointError(f"{path}: not valid JSON ({detail}); re-download the checkpoint") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{path}: expected a JSON object; re-download the checkpoint")
    missing = [f for f in _REQUIRED_FIELDS if f not in config]
    if missing:
        raise CheckpointError(f"{path}: not an ACE-Step 1.5 DiT config (missing {', '.join(missing)})")
    bad = [f for f in _REQUIRED_FIELDS if isinstance(config[f], bool) or not isinstance(config[f], int)
           or config[f] < 1]
    if bad:
        raise CheckpointError(f"{path}: {bad[0]} must be a positive whole number, got {config[bad[0]]!r}; "
                              "config.json is damaged, re-download the model folder")
    present = [f for f in ENCODER_FIELDS if f in config]
    if present and len(present) < len(ENCODER_FIELDS):
        absent = [f for f in ENCODER_FIELDS if f not in config]
        raise CheckpointError(f"{path}: has {', '.join(present)} but not {', '.join(absent)}; an XL config carries "
                              "all four encoder_* fields, config.json is damaged or edited, re-download the model "
                              "folder")
    bad = [f for f in present if isinstance(config[f], bool) or not isinstance(config[f], int) or config[f] < 1]
    if bad:
        raise CheckpointError(f"{path}: {bad[0]} must be a positive whole number, got {config[bad[0]]!r}; "
                              "config.json is damaged, re-download the model folder")
    types = config.get("layer_types")
    if types is not None and (not isinstance(types, list) or len(types) < config["num_hidden_layers"]):
        count = len(types) if isinstance(types, list) else type(types).__name__
        raise CheckpointError(f"{path}: layer_types lists {count} layers but num_hidden_layers is "
                              f"{config['num_hidden_layers']}; config.json is damaged or edited, re-download the "
                              "model folder")
    return config


def _common(config: dict[str, Any]) -> dict[str, Any]:
    return dict(
        num_attention_heads=config["num_attention_heads"],
        num_key_value_heads=config["num_key_value_heads"],
        head_dim=config["head_dim"],
        rope_theta=config.get("rope_theta", 1_000_000.0),
        attention_bias=config.get("attention_bias", False),
        attention_dropout=config.get("attention_dropout", 0.0),
        rms_norm_eps=config.get("rms_norm_eps", 1e-6),
        sliding_window=config.get("sliding_window", 128),
    )


def transformer_kwargs(config: dict[str, Any]) -> dict[str, Any]:
    """`AceStepTransformer1DModel(**kwargs)` for an official config.json."""
    return dict(
        _common(config),
        hidden_size=config["hidden_size"],
        intermediate_size=config["intermediate_size"],  # docs/design.md §8 Q18: never `inner_mlp_width`
        num_hidden_layers=config["num_hidden_layers"],
        in_channels=config["in_channels"],
        audio_acoustic_hidden_dim=config["audio_acoustic_hidden_dim"],
        patch_size=config["patch_size"],
        layer_types=config.get("layer_types"),
        encoder_hidden_size=config.get("encoder_hidden_size"),  # XL only
        is_turbo=bool(config.get("is_turbo", False)),
        model_version=config.get("model_version"),
    )


def _encoder_dims(config: dict[str, Any]) -> dict[str, Any]:
    """XL builds encoder, tokenizer and null embedding at the encoder width (docs/design.md §2.4)."""
    common = _common(config)
    common["num_attention_heads"] = config.get("encoder_num_attention_heads", common["num_attention_heads"])
    common["num_key_value_heads"] = config.get("encoder_num_key_value_heads", common["num_key_value_heads"])
    return dict(
        common,
        hidden_size=config.get("encoder_hidden_size", config["hidden_size"]),
        intermediate_size=config.get("encoder_intermediate_size", config["intermediate_size"]),
    )


def condition_encoder_kwargs(config: dict[str, Any]) -> dict[str, Any]:
    return dict(
        _encoder_dims(config),
        text_hidden_dim=config["text_hidden_dim"],
        timbre_hidden_dim=config["timbre_hidden_dim"],
        num_lyric_encoder_hidden_layers=config["num_lyric_encoder_hidden_layers"],
        num_timbre_encoder_hidden_layers=config["num_timbre_encoder_hidden_layers"],
        layer_types=config.get("layer_types"),
    )


def _audio_tokenizer_kwargs(config: dict[str, Any], detokenizer: bool) -> dict[str, Any]:
    kwargs = dict(
        _encoder_dims(config),
        audio_acoustic_hidden_dim=config["audio_acoustic_hidden_dim"],
        pool_window_size=config.get("pool_window_size", 5),
        num_attention_pooler_hidden_layers=config.get("num_attention_pooler_hidden_layers", 2),
        layer_types=config.get("layer_types"),
    )
    if not detokenizer:
        kwargs.update(
            fsq_dim=config.get("fsq_dim", kwargs["hidden_size"]),
            fsq_input_levels=config.get("fsq_input_levels"),
            fsq_input_num_quantizers=config.get("fsq_input_num_quantizers", 1),
        )
    return kwargs


def build_modules(config: dict[str, Any], device: str | torch.device = "meta") -> dict[str, torch.nn.Module]:
    """Build the four diffusers modules of an official checkpoint (default: on meta, no memory)."""
    from diffusers import AceStepTransformer1DModel
    from diffusers.pipelines.ace_step.modeling_ace_step import (
        AceStepAudioTokenDetokenizer,
        AceStepAudioTokenizer,
        AceStepConditionEncoder,
    )

    with torch.device(device):
        return {
            "transformer": AceStepTransformer1DModel(**transformer_kwargs(config)),
            "condition_encoder": AceStepConditionEncoder(**condition_encoder_kwargs(config)),
            "audio_tokenizer": AceStepAudioTokenizer(**_audio_tokenizer_kwargs(config, False)),
            "audio_token_detokenizer": AceStepAudioTokenDetokenizer(**_audio_tokenizer_kwargs(config, True)),
        }


def expected_official_shapes(config: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """Official key -> shape for the network a config describes (built on meta, no weights)."""
    shapes = {}
    for module_name, module in build_modules(config).items():
        for name, tensor in module.state_dict().items():
            if module_name == "condition_encoder" and name == "silence_latent":
                continue  # filled from silence_latent.pt, not model.safetensors
            shapes[diffusers_to_official(module_name, name)] = tuple(tensor.shape)
    return shapes


def _open_weights(path: Path):
    if not path.is_file():
        raise CheckpointError(f"{path}: not found; the model folder is incomplete, re-download it")
    try:
        return safe_open(str(path), framework="pt", device="cpu")
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: unreadable safetensors ({err}); the file is truncated or corrupt, "
                              "re-download it") from None


def has_weights(folder: Path) -> bool:
    """Whether `folder` holds its weights: `model.safetensors` or a shard index."""
    return (Path(folder) / WEIGHTS_FILE).is_file() or (Path(folder) / INDEX_FILE).is_file()


def weight_files(folder: Path) -> list[tuple[Path, set[str] | None]]:
    """The safetensors files of a DiT folder, each with the keys the index puts in it (None: one file).

    One `model.safetensors` is taken when present (as transformers does); otherwise the shards of
    `model.safetensors.index.json`, every one of which must exist, and no other shard may lie beside them.
    """
    folder = Path(folder)
    if (folder / WEIGHTS_FILE).is_file():
        return [(folder / WEIGHTS_FILE, None)]
    index_path = folder / INDEX_FILE
    if not index_path.is_file():
        raise CheckpointError(f"{folder / WEIGHTS_FILE}: not found; the model folder is incomplete, "
                              "re-download it")
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as err:
        detail = "nested too deeply" if isinstance(err, RecursionError) else str(err).splitlines()[0][:200]
        raise CheckpointError(f"{index_path}: not valid JSON ({detail}); re-download it") from None
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not weight_map or not all(
            isinstance(v, str) and v and "/" not in v and "\\" not in v for v in weight_map.values()):
        raise CheckpointError(f"{index_path}: no usable weight_map (key -> shard file name); re-download it")
    shards: dict[str, set[str]] = {}
    for key, shard in weight_map.items():
        shards.setdefault(shard, set()).add(key)
    for shard in sorted(shards):
        if not (folder / shard).is_file():
            raise CheckpointError(f"{folder / shard}: not found, but {INDEX_FILE} puts {len(shards[shard])} keys in "
                                  "it; the download is incomplete, re-download the missing shard")
    stray = sorted(p.name for p in folder.iterdir() if SHARD_PATTERN.fullmatch(p.name) and p.name not in shards)
    if stray:
        raise CheckpointError(f"{folder / stray[0]}: a weight shard that {INDEX_FILE} does not list; it belongs to "
                              "another download, remove it or re-download the model folder")
    return [(folder / shard, keys) for shard, keys in sorted(shards.items())]


def load_silence_latent(path: Path) -> torch.Tensor:
    """`silence_latent.pt` ([1, 64, T] channels-first) -> [1, T, 64]."""
    try:
        tensor = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for bad pickles
        raise CheckpointError(f"{path}: cannot be read ({type(err).__name__}); re-download it") from None
    if not isinstance(tensor, torch.Tensor) or tensor.ndim != 3 or tensor.shape[0] != 1:
        raise CheckpointError(f"{path}: expected a tensor of shape [1, 64, T]; re-download it")
    return tensor.transpose(1, 2).contiguous()


@dataclass
class DiT:
    """The trainable half of a checkpoint: the decoder and its condition encoder."""

    folder: Path
    config: dict[str, Any]
    transformer: torch.nn.Module | None  # None when loaded with with_transformer=False
    condition_encoder: torch.nn.Module | None  # None when loaded with with_condition_encoder=False
    silence_latent_path: Path | None
    audio_tokenizer: torch.nn.Module | None = None
    audio_token_detokenizer: torch.nn.Module | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def null_condition_emb(self) -> torch.Tensor:
        """The learned null condition [1, 1, D] (CFG dropout target), kept even without the encoder."""
        if self.condition_encoder is not None:
            return self.condition_encoder.null_condition_emb
        return self.extra["null_condition_emb"]

    def silence_latent(self) -> torch.Tensor:
        """[1, T_sil, 64], as loaded into the condition encoder's buffer."""
        if self.silence_latent_path is None:
            raise CheckpointError(f"{self.folder}: no {SILENCE_FILE} here or at the checkpoint root; "
                                  "copy it from the released checkpoint")
        if self.condition_encoder is None:
            return load_silence_latent(self.silence_latent_path)
        return self.condition_encoder.silence_latent


def load_dit(
    folder: str | Path,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    silence_latent: str | Path | None = None,
    with_audio_tokenizer: bool = False,
    with_transformer: bool = True,
    with_condition_encoder: bool = True,
) -> DiT:
    """Load an official DiT folder (`config.json` + `model.safetensors` or its shards) strictly.

    `silence_latent` overrides where `silence_latent.pt` is read from (default: the folder).
    The audio tokenizer/detokenizer (cover mode only) are checked key by key but only kept
    in memory when `with_audio_tokenizer` is set. `with_transformer=False` keeps only the
    condition encoder (preprocessing): the decoder's tensors are checked but never read.
    `with_condition_encoder=False` keeps only the decoder and the null condition embedding
    (training on preprocessed tensors needs nothing else).
    """
    folder = Path(folder)
    config = read_dit_config(folder)
    try:
        modules = build_modules(config)
    except (ValueError, TypeError, IndexError, KeyError, AssertionError, RuntimeError, ZeroDivisionError) as err:
        first = (str(err).strip().splitlines() or [""])[0][:200]
        raise CheckpointError(f"{folder / 'config.json'}: describes a network that cannot be built "
                              f"({type(err).__name__}: {first}); config.json is damaged or edited, re-download "
                              "the model folder") from None
    keep = ({"transformer"} if with_transformer else set()) \
        | ({"condition_encoder"} if with_condition_encoder else set()) \
        | ({"audio_tokenizer", "audio_token_detokenizer"} if with_audio_tokenizer else set())
    null_condition_emb = None
    expected = {name: {k: tuple(v.shape) for k, v in module.state_dict().items()}
                for name, module in modules.items()}
    expected["condition_encoder"].pop("silence_latent")
    state = {name: {} for name in modules}
    seen: set[tuple[str, str]] = set()

    sources = weight_files(folder)
    what = sources[0][0].name if len(sources) == 1 and sources[0][1] is None else "its weight shards"
    for weights_path, listed in sources:
        with _open_weights(weights_path) as weights:
            keys = list(weights.keys())
            if listed is not None:
                unlisted = sorted(set(keys) - listed)
                if unlisted:
                    raise CheckpointError(f"{weights_path}: holds key '{unlisted[0]}' that {INDEX_FILE} does not put "
                                          "in this file; the shards and the index do not belong together, re-download "
                                          "the model folder")
                absent = sorted(listed - set(keys))
                if absent:
                    raise CheckpointError(f"{weights_path}: lacks key '{absent[0]}' that {INDEX_FILE} puts in this "
                                          "file; the shard is incomplete or from another download, re-download it")
            for key in keys:
                null = _take(weights, weights_path, what, key, expected, seen, keep, state, device, dtype)
                if null is not None:
                    null_condition_emb = null
    weights_path = sources[0][0] if len(sources) == 1 else folder / INDEX_FILE

    missing = [diffusers_to_official(m, n) for m, names in expected.items() for n in names if (m, n) not in seen]
    held = {int(n.split(".")[1]) for m, n in seen if m == "transformer" and n.startswith("layers.")}
    if missing and held and len(held) < config["num_hidden_layers"]:
        raise CheckpointError(f"{folder / 'config.json'}: num_hidden_layers is {config['num_hidden_layers']} but "
                              f"{weights_path.name} holds {len(held)} decoder layers; config.json and {what} do "
                              "not belong together, re-download the model folder")
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise CheckpointError(f"{weights_path}: missing key '{missing[0]}'{more}; the file is incomplete, "
                              "re-download it")

    silence_path = Path(silence_latent) if silence_latent else folder / SILENCE_FILE
    silence_path = silence_path if silence_path.is_file() else None
    if silence_path is not None:
        state["condition_encoder"]["silence_latent"] = load_silence_latent(silence_path).to(device=device, dtype=dtype)
    else:
        # Not part of model.safetensors; callers that need it go through DiT.silence_latent().
        state["condition_encoder"]["silence_latent"] = torch.zeros(
            1, 1, config["timbre_hidden_dim"], device=device, dtype=dtype)

    loaded = {}
    for name in keep:
        module = modules[name]
        if name.startswith("audio_"):
            # Their quantizer holds non-persistent buffers computed in __init__: build for real.
            module = build_modules(config, device=device)[name]
        if name == "condition_encoder":
            # The buffer's placeholder length (15000) is not the file's: take the file's shape.
            silence = state[name]["silence_latent"]
            module.register_buffer("silence_latent", torch.empty_like(silence, device="meta"), persistent=True)
        module.load_state_dict(state[name], strict=True, assign=True)
        if name == "condition_encoder":
            _cap_encoder_layers(module, config)
            if is_xl_config(config):
                add_timbre_token(module)
        module.requires_grad_(False).eval()
        loaded[name] = module
    loaded.setdefault("transformer", None)
    loaded.setdefault("condition_encoder", None)
    return DiT(folder=folder, config=config, silence_latent_path=silence_path,
               extra={"null_condition_emb": null_condition_emb}, **loaded)


def _take(weights, weights_path: Path, what: str, key: str, expected, seen, keep, state, device,
          dtype) -> torch.Tensor | None:
    """Check one checkpoint key and keep its tensor when its module is wanted; returns the null embedding."""
    try:
        module_name, name = official_to_diffusers(key)
    except KeyError:
        raise CheckpointError(f"{weights_path}: unexpected key '{key}'; this is not an ACE-Step 1.5 "
                              "checkpoint") from None
    want = expected[module_name].get(name)
    if want is None:
        raise CheckpointError(f"{weights_path}: unexpected key '{key}' (config.json describes no such "
                              f"parameter); config.json and {what} do not belong together, "
                              "re-download the model folder")
    got = tuple(weights.get_slice(key).get_shape())
    if got != want:
        raise CheckpointError(f"{weights_path}: key '{key}' has shape {list(got)} but config.json implies "
                              f"{list(want)}; config.json and {what} do not belong together, "
                              "re-download the model folder")
    seen.add((module_name, name))
    null = None
    if key == NULL_CONDITION_KEY or module_name in keep:
        try:
            tensor = weights.get_tensor(key)
        except (SafetensorError, OSError, RuntimeError) as err:
            raise CheckpointError(f"{weights_path}: cannot read '{key}' ({err}); the file is truncated "
                                  "or corrupt, re-download it") from None
        tensor = tensor.to(device=device, dtype=dtype)
        if key == NULL_CONDITION_KEY:
            null = tensor.clone() if module_name in keep else tensor
        if module_name in keep:
            state[module_name][name] = tensor
    return null


def add_timbre_token(encoder: torch.nn.Module) -> None:
    """XL only (docs/design.md §2.4): prepend the timbre encoder's learned `special_token` to the embedded references.

    Upstream's XL timbre encoder runs `cat([special_token.expand(N, 1, -1), embed_tokens(x)], 1)`, so
    the sequence is 1 + Tr long and row 0 (its pooled output) is that token's. diffusers' encoder
    never prepends it; a forward hook on `embed_tokens` adds it without changing the network. Idempotent.
    """
    timbre = encoder.timbre_encoder
    if getattr(timbre, "_sidestep_timbre_token", None) is not None:
        return

    def prepend(module, args, output):
        token = timbre.special_token.to(dtype=output.dtype, device=output.device)
        return torch.cat([token.expand(output.shape[0], 1, -1), output], dim=1)

    timbre._sidestep_timbre_token = timbre.embed_tokens.register_forward_hook(prepend)


def has_timbre_token(encoder: torch.nn.Module) -> bool:
    return getattr(encoder.timbre_encoder, "_sidestep_timbre_token", None) is not None


def _cap_encoder_layers(encoder: torch.nn.Module, config: dict[str, Any]) -> None:
    """docs/design.md §8 Q13: the reference runs only `layers[:num_hidden_layers]` of each encoder stack."""
    cap = config["num_hidden_layers"]
    for stack in (encoder.lyric_encoder, encoder.timbre_encoder):
        if len(stack.layers) > cap:
            stack.layers = stack.layers[:cap]


__all__ = ["CheckpointError", "DiT", "load_dit", "read_dit_config", "build_modules",
           "expected_official_shapes", "load_silence_latent", "PREFIX_TO_MODULE"]


def load_diffusers_dit(folder: str | Path, device: str | torch.device = "cpu",
                       dtype: torch.dtype = torch.float32) -> DiT:
    """A diffusers-format `AceStepPipeline` folder (`transformer/`, `condition_encoder/`)."""
    from diffusers import AceStepTransformer1DModel
    from diffusers.pipelines.ace_step.modeling_ace_step import AceStepConditionEncoder

    folder = Path(folder)
    modules = {}
    for name, cls in (("transformer", AceStepTransformer1DModel), ("condition_encoder", AceStepConditionEncoder)):
        try:
            modules[name] = cls.from_pretrained(folder / name, torch_dtype=dtype, local_files_only=True)
        except (OSError, ValueError, RuntimeError, SafetensorError) as err:
            raise CheckpointError(f"{folder / name}: cannot load ({str(err).splitlines()[0]})") from None
        modules[name].to(device).requires_grad_(False).eval()
    if decoder_family(modules["transformer"]) == "XL":
        add_timbre_token(modules["condition_encoder"])
    config = dict(modules["transformer"].config)
    config.update(text_hidden_dim=modules["condition_encoder"].config.text_hidden_dim,
                  timbre_hidden_dim=modules["condition_encoder"].config.timbre_hidden_dim)
    return DiT(folder=folder, config=config, silence_latent_path=folder / "condition_encoder", **modules)


def load_vae(folder: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
    """diffusers `AutoencoderOobleck` from a local `vae/` folder."""
    from diffusers import AutoencoderOobleck

    try:
        vae = AutoencoderOobleck.from_pretrained(Path(folder), torch_dtype=dtype, local_files_only=True)
    except (OSError, ValueError, RuntimeError, SafetensorError, EnvironmentError) as err:
        raise CheckpointError(f"{folder}: cannot load the VAE ({str(err).splitlines()[0]}); "
                              "re-download vae/") from None
    return vae.to(device).requires_grad_(False).eval()


def load_text_encoder(folder: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
    """(tokenizer, Qwen3 model) from a local folder; never a hub download, never remote code."""
    from transformers import AutoModel, AutoTokenizer

    folder = Path(folder)
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True, trust_remote_code=False)
        model = AutoModel.from_pretrained(folder, dtype=dtype, local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError, RuntimeError, SafetensorError, KeyError) as err:
        raise CheckpointError(f"{folder}: cannot load the text encoder ({str(err).splitlines()[0]}); "
                              "re-download Qwen3-Embedding-0.6B/") from None
    return tokenizer, model.to(device).requires_grad_(False).eval()


def load_model_dit(entry, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                   silence_latent: str | Path | None = None, with_transformer: bool = True,
                   with_condition_encoder: bool = True) -> DiT:
    """Load the DiT of a discovered `ModelEntry`, whatever its on-disk layout."""
    if entry.layout == "diffusers":
        dit = load_diffusers_dit(entry.path, device, dtype)
        if not with_transformer:
            dit.transformer = None
        return dit
    return load_dit(entry.path, device, dtype, silence_latent=silence_latent, with_transformer=with_transformer,
                    with_condition_encoder=with_condition_encoder)
