"""Named training presets: JSON files whose keys are `Config` field names (plus `name`, `description`).

Built-ins are package data (`sidestep/builtin_presets/`, found with importlib.resources, so an
installed wheel and any working directory work). User presets are saved to `./presets/`;
`~/.config/sidestep/presets/` (or under `$XDG_CONFIG_HOME`) is scanned as a fallback. Every preset
is validated when loaded: an unknown key, a wrong type or an out-of-range value is a one-line error
naming the key and the file. The CLI and the wizard both use this store; it needs only the standard
library (no torch), so listing presets is instant.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from sidestep.config import TRAIN, Config
from sidestep.errors import SidestepError
from sidestep.io import atomic_write_text, read_json_object
from sidestep.settings import config_dir

# A real folder: wheels install unzipped (a zipped package would need Traversable reads throughout).
BUILTIN_DIR = Path(str(resources.files("sidestep") / "builtin_presets"))
BUILTIN_NAMES = ("recommended", "high_quality", "quick_test", "vram_24gb_plus", "vram_16gb", "vram_12gb", "vram_8gb")
META_KEYS = ("name", "description")
# Where a run reads and writes, not how it trains: never stored in a preset saved from the wizard.
RUN_SPECIFIC = ("checkpoint_dir", "model_variant", "base_model", "dataset_dir", "output_dir", "resume_from",
                "init_adapter", "log_dir", "preprocess", "audio_dir", "dataset_json", "tensor_output", "module_config", "device", "devices",
                "num_nodes")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class Preset:
    name: str
    path: Path
    source: str  # "built-in", "user" (./presets) or "global" (~/.config/sidestep/presets)
    description: str
    values: dict[str, Any]  # validated Config field values

    def config(self) -> Config:
        """`Config` defaults with this preset applied."""
        return Config.from_dict(self.values, str(self.path))


def user_dir() -> Path:
    return Path.cwd() / "presets"


def global_dir() -> Path:
    return config_dir() / "presets"


def check_name(name: str) -> str:
    if not _NAME.match(name) or name.endswith(".json"):
        raise SidestepError(f"preset name '{name}': use letters, digits, '_', '-' and '.' (no path, no .json)")
    return name


def read_preset(path: Path, source: str = "file") -> Preset:
    """Load and validate one preset file."""
    data = read_json_object(path, "preset", "a preset is a JSON object of option names and values")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise SidestepError(f"{path}: option 'description' must be str, got {description!r}")
    values = {k: v for k, v in data.items() if k not in META_KEYS}
    Config.from_dict(values, str(path))  # raises the one-line error naming key and file
    return Preset(name=path.stem, path=path, source=source, description=description, values=values)


def _candidates() -> list[tuple[str, Path]]:
    """(source, file) of every preset file: built-ins, then ./presets, then the global folder (each file once)."""
    found = [("built-in", BUILTIN_DIR / f"{n}.json") for n in BUILTIN_NAMES if (BUILTIN_DIR / f"{n}.json").is_file()]
    seen = {path.resolve() for _, path in found}
    for source, folder in (("user", user_dir()), ("global", global_dir())):
        for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            if path.resolve() not in seen:
                seen.add(path.resolve())
                found.append((source, path))
    return found


def list_presets() -> tuple[list[Preset], list[str]]:
    """Every loadable preset (built-ins first, then ./presets, then the global folder) and the errors of the rest."""
    presets, errors, names = [], [], set()
    for source, path in _candidates():
        if path.stem in names:  # an earlier folder wins: built-ins cannot be shadowed
            continue
        try:
            presets.append(read_preset(path, source))
            names.add(path.stem)
        except SidestepError as err:
            errors.append(str(err))
    return presets, errors


def find_preset(name: str) -> Preset:
    """A preset by name (built-ins first, then ./presets, then the global folder) or by path to a JSON file."""
    if name.endswith(".json") or "/" in name or "\\" in name:
        return read_preset(Path(name).expanduser())
    for source, path in _candidates():
        if path.stem == name:
            return read_preset(path, source)
    names = [path.stem for _, path in _candidates()]
    raise SidestepError(f"preset '{name}' not found; available: {', '.join(names) or 'none'}")


def preset_values(config: Config, commands: tuple[str, ...] = TRAIN) -> dict[str, Any]:
    """The training settings of `config` worth storing: every training option except paths and hardware layout."""
    values = {}
    for f in Config.fields():
        if f.name in RUN_SPECIFIC or not set(f.metadata["commands"]) & set(commands):
            continue
        values[f.name] = getattr(config, f.name)
    return values


def _document(name: str, description: str, values: dict[str, Any]) -> str:
    return json.dumps({"name": name, "description": description, **values}, indent=2) + "\n"


def save_preset(name: str, config: Config, description: str = "", folder: Path | None = None) -> Path:
    """Write `config`'s training settings as user preset `name` (./presets/ unless `folder`)."""
    check_name(name)
    if name in BUILTIN_NAMES:
        raise SidestepError(f"preset '{name}' is built-in and read-only; save under another name")
    path = (folder or user_dir()) / f"{name}.json"
    atomic_write_text(path, _document(name, description, preset_values(config)))
    return path


def import_preset(source: Path, name: str | None = None, folder: Path | None = None) -> Path:
    """Validate a preset JSON file and copy it into ./presets/ unless `folder` (under `name`, default its file
    name)."""
    preset = read_preset(Path(source).expanduser())
    name = check_name(name or preset.name)
    if name in BUILTIN_NAMES:
        raise SidestepError(f"preset '{name}' is built-in and read-only; import it under another name")
    path = (folder or user_dir()) / f"{name}.json"
    atomic_write_text(path, _document(name, preset.description, preset.values))
    return path


def export_preset(name: str, destination: Path) -> Path:
    """Write preset `name` to `destination` (a file, or a folder to put `<name>.json` in)."""
    preset = find_preset(name)
    destination = Path(destination).expanduser()
    if destination.is_dir():
        destination = destination / f"{preset.name}.json"
    atomic_write_text(destination, _document(preset.name, preset.description, preset.values))
    return destination


def delete_preset(name: str) -> Path:
    preset = find_preset(name)
    if preset.source == "built-in":
        raise SidestepError(f"preset '{name}' is built-in and cannot be deleted")
    preset.path.unlink()
    return preset.path
