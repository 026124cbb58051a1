"""Find the models in a checkpoints root and the parts each needs (docs/design.md §2.1-§2.3).

A root holds DiT folders (official names or any fine-tune with an ACE-Step `config.json`),
`vae/`, `Qwen3-Embedding-0.6B/` and the silence latent. A diffusers-format pipeline folder
(`model_index.json` naming `AceStepPipeline`) is accepted as a model too.
"""

from __future__ import annotations

import difflib
import json
import math
from dataclasses import dataclass
from pathlib import Path

from sidestep.model.configs import is_xl_config
from sidestep.model.loader import INDEX_FILE, SILENCE_FILE, WEIGHTS_FILE, CheckpointError, has_weights

OFFICIAL_MODELS: tuple[str, ...] = (
    "acestep-v15-turbo", "acestep-v15-base", "acestep-v15-sft",
    "acestep-v15-turbo-shift1", "acestep-v15-turbo-shift3", "acestep-v15-turbo-continuous",
    "acestep-v15-xl-base", "acestep-v15-xl-sft", "acestep-v15-xl-turbo",
    "acestep-v15-base-sft-fix-inst", "acestep-v15-turbo-fix-inst-shift3",
    "acestep-v15-turbo-fix-inst-shift-continuous", "acestep-v15-turbo-fix-inst-shift-dynamic",
    "acestep-v15-turbo-rl",
)
VARIANT_ALIASES = {"turbo": "acestep-v15-turbo", "base": "acestep-v15-base", "sft": "acestep-v15-sft",
                   "xl-turbo": "acestep-v15-xl-turbo", "xl-base": "acestep-v15-xl-base",
                   "xl-sft": "acestep-v15-xl-sft"}
BASE_VARIANTS = ("turbo", "base", "sft")
VAE_DIR_NAMES = ("vae",)
TEXT_ENCODER_DIR_NAMES = ("Qwen3-Embedding-0.6B",)
# Every variant known to the code samples training t with these (docs/design.md §2.3).
DEFAULT_TIMESTEP_PARAMS = {"turbo": (-0.4, 1.0), "base": (-0.4, 1.0), "sft": (-0.4, 1.0)}


@dataclass(frozen=True)
class ModelEntry:
    """One trainable model found under a checkpoints root."""

    name: str
    path: Path
    official: bool
    layout: str  # "official" (config.json + model.safetensors) or "diffusers" (pipeline folder)
    is_turbo: bool
    base_variant: str | None  # turbo / base / sft, or None when neither config nor name tells
    timestep_mu: float | None
    timestep_sigma: float | None
    family: str = "2B"  # "2B" or "XL" (an XL config has the four encoder_* fields; docs/design.md §2.4)
    params: int | None = None  # parameter count from the weight files' headers; None when unreadable
    weights_bytes: int | None = None
    encoder_width: int | None = None  # width of the condition encoder's output (encoder_hidden_states)

    @property
    def label(self) -> str:
        return "official" if self.official else "custom"

    @property
    def variant_label(self) -> str | None:
        """turbo / base / sft, prefixed `xl-` for XL models (what --model-variant calls the official ones)."""
        if self.base_variant is None:
            return None
        return f"xl-{self.base_variant}" if self.family == "XL" else self.base_variant

    @property
    def size(self) -> str:
        """"XL 4.99B" / "2B 2.39B": the family and the parameter count of its weights (as far as known)."""
        if self.params is None:
            return self.family
        count = f"{self.params / 1e9:.2f}B" if self.params >= 1e8 else f"{self.params / 1e6:.1f}M"
        return f"{self.family} {count}"


@dataclass(frozen=True)
class TrainingModel:
    """A model with every question answered: what training needs to know about it."""

    entry: ModelEntry
    base_variant: str
    timestep_mu: float
    timestep_sigma: float
    root: Path | None = None  # the checkpoints root it was found in (where its VAE and text encoder are)

    def parts(self, need: tuple[str, ...] = ("vae", "text_encoder", "silence")) -> "CheckpointParts":
        """Where its VAE, text encoder and silence latent are (only those in `need` must exist)."""
        return parts_of(self.root, self.entry, need)


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):  # not JSON, too deep, a number too long
        return None
    return data if isinstance(data, dict) else None


def _variant_from(name: str, config: dict) -> str | None:
    if config.get("is_turbo") is True:
        return "turbo"
    if config.get("model_version") in ("base", "sft") and "is_turbo" in config:
        return config["model_version"]
    tokens = name.lower().replace("_", "-").split("-")
    for variant in ("sft", "base", "turbo"):  # "base-sft-fix-inst" is sft code (docs/design.md §2.1)
        if variant in tokens:
            return variant
    return None


def _safetensors_header(path: Path) -> dict | None:
    """The JSON header of a safetensors file (8-byte length + JSON), without reading any tensor."""
    try:
        with open(path, "rb") as f:
            size = int.from_bytes(f.read(8), "little")
            if not 0 < size < 100_000_000:
                return None
            header = json.loads(f.read(size))
    except (OSError, ValueError, RecursionError):
        return None
    return header if isinstance(header, dict) else None


def _count(files: list[Path]) -> tuple[int | None, int | None]:
    """(parameters, bytes) over safetensors files, from their headers; (None, None) if one is unreadable."""
    params = size = 0
    for path in files:
        header = _safetensors_header(path)
        if header is None:
            return None, None
        for key, info in header.items():
            if key != "__metadata__" and isinstance(info, dict):
                params += math.prod(info.get("shape", []))
                start, end = info.get("data_offsets", (0, 0))
                size += end - start
    return params, size


def weights_size(folder: Path) -> tuple[int | None, int | None]:
    """(parameter count, bytes) of an official DiT folder's weights: one file or the index's shards."""
    if (folder / WEIGHTS_FILE).is_file():
        return _count([folder / WEIGHTS_FILE])
    index = _read_json(folder / INDEX_FILE) if (folder / INDEX_FILE).is_file() else None
    weight_map = (index or {}).get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        return None, None
    return _count([folder / name for name in sorted(set(map(str, weight_map.values())))])


def _diffusers_size(folder: Path) -> tuple[int | None, int | None]:
    """A diffusers pipeline folder: its transformer and condition encoder."""
    files = [p for part in ("transformer", "condition_encoder") for p in sorted((folder / part).glob("*.safetensors"))]
    return _count(files) if files else (None, None)


def inspect_model_folder(path: Path) -> ModelEntry | None:
    """A ModelEntry when `path` holds a DiT config or an ACE-Step diffusers pipeline, else None."""
    index = _read_json(path / "model_index.json") if (path / "model_index.json").is_file() else None
    if index is not None and index.get("_class_name") == "AceStepPipeline":
        config = _read_json(path / "transformer" / "config.json") or {}
        layout = "diffusers"
        width = config.get("encoder_hidden_size")
        family = "XL" if width is not None and width != config.get("hidden_size") else "2B"
        params, size = _diffusers_size(path)
    else:
        config = _read_json(path / "config.json") if (path / "config.json").is_file() else None
        if config is None or not (config.get("model_type") == "acestep" or "audio_acoustic_hidden_dim" in config):
            return None
        layout = "official"
        family = "XL" if is_xl_config(config) else "2B"
        params, size = weights_size(path)
    return ModelEntry(
        name=path.name, path=path, official=path.name in OFFICIAL_MODELS, layout=layout,
        is_turbo=bool(config.get("is_turbo", False)), base_variant=_variant_from(path.name, config),
        timestep_mu=config.get("timestep_mu"), timestep_sigma=config.get("timestep_sigma"),
        family=family, params=params, weights_bytes=size,
        encoder_width=config.get("encoder_hidden_size") or config.get("hidden_size"),
    )


def _check_root(root: Path) -> Path:
    root = Path(root).expanduser()
    if not root.is_dir():
        raise CheckpointError(f"{root}: checkpoint directory not found; pass --checkpoint-dir pointing at the "
                              "folder that holds acestep-v15-turbo/, vae/ and Qwen3-Embedding-0.6B/")
    return root


def scan_models(root: str | Path) -> list[ModelEntry]:
    """Every model folder directly under `root` (official first, then custom, by name)."""
    root = _check_root(Path(root))
    found = [e for p in sorted(root.iterdir()) if p.is_dir() and (e := inspect_model_folder(p))]
    return sorted(found, key=lambda e: (not e.official, e.name))


def fuzzy_find(models: list[ModelEntry], query: str, limit: int = 5) -> list[ModelEntry]:
    """Models whose name contains `query`, else the closest names."""
    q = query.lower()
    hits = [m for m in models if q in m.name.lower()]
    if hits:
        return hits[:limit]
    names = difflib.get_close_matches(q, [m.name.lower() for m in models], n=limit, cutoff=0.3)
    return [m for n in names for m in models if m.name.lower() == n]


def find_model(root: str | Path, variant: str) -> ModelEntry:
    """Resolve `--model-variant` (turbo/base/sft, xl-turbo/xl-base/xl-sft, or any folder name) under `root`."""
    root = _check_root(Path(root))
    folder_name = VARIANT_ALIASES.get(variant, variant)
    folder = root / folder_name
    entry = inspect_model_folder(folder) if folder.is_dir() else None
    if entry is not None:
        return entry
    config = folder / "config.json"
    if folder.is_dir() and not (folder / "model_index.json").is_file() and (
            not config.is_file() or _read_json(config) is None):  # the folder is there, its config is not
        problem = "not found" if not config.is_file() else "not valid JSON"
        raise CheckpointError(f"{config}: {problem}; the model folder is incomplete or damaged, re-download it")
    models = scan_models(root)
    close = fuzzy_find(models, variant)
    hint = f"; did you mean {', '.join(m.name for m in close)}?" if close else (
        f"; models here: {', '.join(m.name for m in models)}" if models else "; no model folders found there")
    raise CheckpointError(f"{root / folder_name}: no ACE-Step model folder for --model-variant '{variant}'{hint}")


def resolve_training_model(entry: ModelEntry, base_model: str | None = None, root: Path | None = None
                           ) -> TrainingModel:
    """Fill in base variant and timestep parameters; `base_model` (turbo/base/sft) overrides for fine-tunes.
    The family (2B or XL) always comes from config.json."""
    variant = base_model or entry.base_variant
    mu, sigma = entry.timestep_mu, entry.timestep_sigma
    if mu is None or sigma is None:
        if variant is None:
            raise CheckpointError(f"{entry.path / 'config.json'}: no timestep_mu/timestep_sigma and no way to "
                                  "tell the base model; pass --base-model turbo|base|sft")
        mu, sigma = DEFAULT_TIMESTEP_PARAMS[variant]
    if variant is None:
        raise CheckpointError(f"{entry.path / 'config.json'}: cannot tell whether '{entry.name}' descends from "
                              "turbo, base or sft; pass --base-model turbo|base|sft")
    return TrainingModel(entry=entry, base_variant=variant, timestep_mu=float(mu), timestep_sigma=float(sigma),
                         root=root)


def model_to_train(config) -> TrainingModel:
    """The one way a config becomes the model to train (or estimate on): `--model-variant` under
    `--checkpoint-dir`, with its base variant and timestep parameters answered (`--base-model`)."""
    if not config.checkpoint_dir:
        raise CheckpointError("pass --checkpoint-dir (the folder holding acestep-v15-turbo/ etc.)")
    return resolve_training_model(find_model(config.checkpoint_dir, config.model_variant), config.base_model,
                                  Path(config.checkpoint_dir))


def find_vae(root: str | Path) -> Path:
    root = Path(root)
    for name in VAE_DIR_NAMES:
        if (root / name / "config.json").is_file():
            return root / name
    raise CheckpointError(f"{root / VAE_DIR_NAMES[0]}: VAE folder not found (needs config.json and "
                          "diffusion_pytorch_model.safetensors); copy vae/ from the released checkpoints")


def find_text_encoder(root: str | Path) -> Path:
    root = Path(root)
    for name in TEXT_ENCODER_DIR_NAMES:
        if (root / name / "config.json").is_file():
            return root / name
    raise CheckpointError(f"{root / TEXT_ENCODER_DIR_NAMES[0]}: text encoder folder not found; copy "
                          "Qwen3-Embedding-0.6B/ from the released checkpoints")


def find_silence_latent(root: str | Path, entry: ModelEntry) -> Path:
    """The root's silence_latent.pt is checked first, then the DiT folder's (docs/design.md §2.1)."""
    for path in (Path(root) / SILENCE_FILE, entry.path / SILENCE_FILE):
        if path.is_file():
            return path
    raise CheckpointError(f"{entry.path / SILENCE_FILE}: silence latent not found (also looked in {root}); "
                          "copy it from the released checkpoint")


@dataclass(frozen=True)
class CheckpointParts:
    """Where each part of one model lives."""

    root: Path
    model: ModelEntry
    vae: Path
    text_encoder: Path
    silence_latent: Path | None


def locate_parts(root: str | Path, variant: str, need: tuple[str, ...] = ("vae", "text_encoder", "silence")
                 ) -> CheckpointParts:
    """Find the model and the parts named in `need`; a missing one is a one-line error."""
    return parts_of(Path(root), find_model(root, variant), need)


def parts_of(root: Path, entry: ModelEntry, need: tuple[str, ...] = ("vae", "text_encoder", "silence")
             ) -> CheckpointParts:
    """The parts of a model already found under `root`."""
    if entry.layout == "diffusers":
        vae, text, silence = entry.path / "vae", entry.path / "text_encoder", None
    else:
        vae = find_vae(root) if "vae" in need else root / VAE_DIR_NAMES[0]
        text = find_text_encoder(root) if "text_encoder" in need else root / TEXT_ENCODER_DIR_NAMES[0]
        silence = find_silence_latent(root, entry) if "silence" in need else None
        if entry.layout == "official" and not has_weights(entry.path):
            raise CheckpointError(f"{entry.path / WEIGHTS_FILE}: not found; the model folder is incomplete, "
                                  "re-download it")
    return CheckpointParts(root=root, model=entry, vae=vae, text_encoder=text, silence_latent=silence)
