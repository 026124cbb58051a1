"""Persistent user settings: `settings.json` under `$XDG_CONFIG_HOME/sidestep/` (else `~/.config/sidestep/`).

Kept outside the wizard package: the CLI and lower layers never import the UI. They are defaults
only: the checkpoint folder asked on first run, where outputs go and the wizard mode last chosen.
Every training option still lives in `Config`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path

from sidestep.errors import SidestepError
from sidestep.io import atomic_write_text, read_json_object

MODES = ("basic", "advanced")


def config_dir() -> Path:
    """`$XDG_CONFIG_HOME/sidestep` when that is an absolute path (XDG spec), else `~/.config/sidestep`."""
    xdg = os.environ.get("XDG_CONFIG_HOME", "")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".config"
    return base / "sidestep"


def settings_path() -> Path:
    return config_dir() / "settings.json"


@dataclass
class Settings:
    checkpoint_dir: str | None = None
    output_root: str = "./output"
    mode: str = "basic"

    @classmethod
    def from_dict(cls, data: dict, source: str) -> "Settings":
        """Validate like presets: an unknown key or a wrong type is a one-line error naming key and file."""
        known = {f.name: f for f in dataclasses.fields(cls)}
        for key, value in data.items():
            if key not in known:
                raise SidestepError(f"{source}: unknown setting '{key}'; remove it")
            if key == "checkpoint_dir" and value is None:
                continue
            if not isinstance(value, str):
                raise SidestepError(f"{source}: setting '{key}' must be a string, got {value!r}")
        if data.get("mode", "basic") not in MODES:
            raise SidestepError(f"{source}: setting 'mode' must be basic or advanced, got {data['mode']!r}")
        return cls(**data)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def load_settings(path: Path | None = None) -> Settings | None:
    """The saved settings, or None on first run (no file yet)."""
    path = path or settings_path()
    if not path.is_file():
        return None
    return Settings.from_dict(read_json_object(path, "settings", "expected a JSON object of settings", "fix or delete it"), str(path))


def save_settings(settings: Settings, path: Path | None = None) -> Path:
    path = path or settings_path()
    atomic_write_text(path, json.dumps(settings.to_dict(), indent=2) + "\n")
    return path


def check_checkpoint_dir(path: str) -> str | None:
    """None when discovery finds at least one model under `path`; otherwise what is wrong."""
    from sidestep.model.discovery import scan_models

    try:
        models = scan_models(path)
    except SidestepError as err:
        return str(err)
    if not models:
        return (f"{path}: no ACE-Step model folders found (a model folder holds a config.json with "
                "model_type 'acestep'); pick the folder that holds acestep-v15-turbo/")
    return None
