"""Presets: the seven built-ins, validation on load, user/global folders, import/export, CLI --preset, the wheel."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from sidestep import presets
from sidestep.cli.commands import commands
from sidestep.cli.main import main
from sidestep.cli.parser import build_parser, config_from_args
from sidestep.config import Config
from sidestep.errors import SidestepError

SEED = {  # the Side-Step 0.8 seed's tiers: rank, epochs, batch, optimizer, encoder offloading
    "recommended": dict(rank=64, epochs=100, batch_size=1, optimizer_type="adamw", offload_encoder=False),
    "high_quality": dict(rank=128, epochs=1000),
    "quick_test": dict(rank=16, epochs=10),
    "vram_24gb_plus": dict(rank=128, batch_size=2, optimizer_type="adamw", offload_encoder=False),
    "vram_16gb": dict(rank=64, batch_size=1, optimizer_type="adamw", offload_encoder=False),
    "vram_12gb": dict(rank=32, optimizer_type="adamw8bit", offload_encoder=True),
    "vram_8gb": dict(rank=16, optimizer_type="adamw8bit", offload_encoder=True),
}


@pytest.fixture(autouse=True)
def elsewhere(tmp_path, monkeypatch):
    """Run from another folder with a private config home: built-ins must still be found."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))


def parse(argv: list[str]) -> Config:
    return config_from_args(build_parser(commands()).parse_args(argv))


def test_the_seven_builtins_have_the_seed_settings():
    found, errors = presets.list_presets()
    assert errors == [] and [p.name for p in found] == list(SEED)
    for p in found:
        config = p.config()
        assert p.source == "built-in" and p.description
        assert {k: getattr(config, k) for k in SEED[p.name]} == SEED[p.name], p.name
        assert config.adapter_type == "lora" and config.alpha == 2 * config.rank
        assert config.lokr_linear_dim == config.rank and config.lokr_linear_alpha == 2 * config.rank
    vram_8gb = presets.find_preset("vram_8gb").config()
    assert vram_8gb.gradient_accumulation >= 4 * presets.find_preset("vram_16gb").config().gradient_accumulation


@pytest.mark.parametrize("content,key,why", [
    ({"rank": 16, "colour": "red"}, "colour", "unknown option"),
    ({"rank": "sixteen"}, "rank", "must be int"),
    ({"epochs": 0}, "epochs", "must be in [1, inf)"),
    ({"dropout": 1.5}, "dropout", "must be in [0, 1)"),
    ({"optimizer_type": "sgd"}, "optimizer_type", "must be one of"),
    ({"description": 3}, "description", "must be str"),
])
def test_a_bad_preset_is_a_one_line_error_naming_the_key_and_the_file(tmp_path, content, key, why):
    path = tmp_path / "presets" / "bad.json"
    path.parent.mkdir()
    path.write_text(json.dumps(content))
    with pytest.raises(SidestepError) as err:
        presets.find_preset("bad")
    message = str(err.value)
    assert "\n" not in message and str(path) in message and key in message and why in message
    _, errors = presets.list_presets()  # listing skips it and says why
    assert errors == [message]


def test_not_json_and_missing_presets_are_one_line_errors(tmp_path):
    (tmp_path / "presets").mkdir()
    (tmp_path / "presets" / "broken.json").write_text("{rank: 8")
    with pytest.raises(SidestepError, match=r"broken\.json: not valid JSON \(line 1"):
        presets.find_preset("broken")
    with pytest.raises(SidestepError, match=r"preset 'nope' not found; available: recommended, "):
        presets.find_preset("nope")


def test_cli_preset_with_an_explicit_flag_overriding_it():
    config = parse(["fixed", "--preset", "quick_test", "--rank", "8"])
    assert (config.rank, config.epochs, config.alpha) == (8, 10, 32)
    assert parse(["vanilla", "--preset", "vram_12gb"]).optimizer_type == "adamw8bit"
    assert parse(["fixed", "--rank", "8"]).epochs == 100  # no preset: the Config defaults
    assert parse(["fixed", "--preset", "vram_8gb", "--no-offload-encoder"]).offload_encoder is False


def test_cli_bad_preset_exits_2_with_one_line(tmp_path, capsys):
    (tmp_path / "presets").mkdir()
    (tmp_path / "presets" / "typo.json").write_text(json.dumps({"rnak": 8}))
    assert main(["--plain", "fixed", "--preset", "typo", "--checkpoint-dir", "x"]) == 2
    out = capsys.readouterr().out.strip()
    assert out == f"error: {tmp_path / 'presets' / 'typo.json'}: unknown option(s) rnak; remove them"


def test_save_stores_adapter_type_and_lokr_fields_but_no_paths(tmp_path):
    config = Config(adapter_type="lokr", lokr_linear_dim=8, lokr_linear_alpha=16, lokr_use_tucker=True,
                    epochs=7, checkpoint_dir="/ckpt", dataset_dir="/data", output_dir="/out")
    path = presets.save_preset("mine", config, "my LoKR")
    assert path == tmp_path / "presets" / "mine.json"
    data = json.loads(path.read_text())
    assert data["name"] == "mine" and data["description"] == "my LoKR"
    assert data["adapter_type"] == "lokr" and data["lokr_use_tucker"] is True and data["lokr_linear_dim"] == 8
    assert not {"checkpoint_dir", "dataset_dir", "output_dir", "device"} & set(data)
    loaded = presets.find_preset("mine")
    assert loaded.source == "user" and loaded.config() == Config(**{k: v for k, v in config.to_dict().items()
                                                                     if k not in presets.RUN_SPECIFIC})
    assert not list((tmp_path / "presets").glob(".*.tmp"))  # written atomically: no temp file left


def test_builtin_names_are_read_only_and_bad_names_are_refused(tmp_path):
    for call in (lambda: presets.save_preset("recommended", Config()),
                 lambda: presets.delete_preset("quick_test")):
        with pytest.raises(SidestepError, match="built-in"):
            call()
    with pytest.raises(SidestepError, match="preset name '../x'"):
        presets.save_preset("../x", Config())
    assert presets.find_preset("recommended").source == "built-in"


def test_global_folder_is_a_fallback_and_import_export_round_trip(tmp_path):
    global_dir = tmp_path / "xdg" / "sidestep" / "presets"
    global_dir.mkdir(parents=True)
    (global_dir / "shared.json").write_text(json.dumps({"description": "global", "rank": 4, "alpha": 8}))
    assert presets.find_preset("shared").source == "global"
    presets.save_preset("shared", Config(rank=12, alpha=24))  # ./presets/ wins over the global folder
    assert presets.find_preset("shared").config().rank == 12

    exported = presets.export_preset("vram_12gb", tmp_path)  # a folder: <name>.json inside
    assert exported == tmp_path / "vram_12gb.json"
    imported = presets.import_preset(exported, "my_12gb")
    assert presets.find_preset("my_12gb").config() == presets.find_preset("vram_12gb").config()
    assert imported == tmp_path / "presets" / "my_12gb.json"
    with pytest.raises(SidestepError, match="built-in and read-only"):
        presets.import_preset(exported)  # its own name is a built-in's
    presets.delete_preset("my_12gb")
    assert not imported.exists()
    names = [p.name for p in presets.list_presets()[0]]
    assert names == list(SEED) + ["shared"]  # listed once, user before global


LIST_PRESETS = """
import sys, sidestep
from sidestep.presets import list_presets
found, errors = list_presets()
print(sidestep.__file__)
print(",".join(p.name for p in found if p.source == "built-in"), errors, "torch" in sys.modules)
"""


def test_an_installed_wheel_lists_the_seven_builtins(tmp_path):
    """`uv build` a wheel and install it alone (no dependencies: the store needs only the standard library)
    into a fresh venv; run from elsewhere, it lists the seven built-ins from its own package data."""
    uv = os.environ.get("UV") or shutil.which("uv")  # `uv run` names itself in $UV
    assert uv, "uv not found: run the tests with `uv run pytest` (README)"
    repo = Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "UV_PROJECT_ENVIRONMENT")}

    def run(*cmd, cwd=tmp_path):
        proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc.stdout

    run(uv, "build", "--wheel", "--out-dir", str(tmp_path / "dist"), str(repo))
    (wheel,) = (tmp_path / "dist").glob("side_step-*.whl")
    run(uv, "venv", "--quiet", str(tmp_path / "venv"))
    python = tmp_path / "venv" / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    run(uv, "pip", "install", "--quiet", "--no-deps", "--python", str(python), str(wheel))
    home = tmp_path / "elsewhere"
    home.mkdir()
    env["XDG_CONFIG_HOME"] = str(home / "xdg")
    location, listing = run(str(python), "-c", LIST_PRESETS, cwd=home).splitlines()
    assert Path(location).is_relative_to(tmp_path / "venv")  # the installed copy, not the repository
    assert listing == ",".join(SEED) + " [] False"
