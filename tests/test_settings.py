"""settings.json: where it lives (XDG), validation, the first-run walkthrough and the Settings menu."""

import json
import re

import pytest

from sidestep.errors import SidestepError
from sidestep.settings import Settings, config_dir, load_settings, save_settings, settings_path
from wizard_pty import Wizard, main_menu, quit_wizard, settings_file, wizard_env


def test_settings_live_under_xdg_config_home_else_home_config(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert settings_path() == tmp_path / "xdg" / "sidestep" / "settings.json"
    monkeypatch.setenv("XDG_CONFIG_HOME", "relative/dir")  # the XDG spec says: ignore a relative path
    assert config_dir() == tmp_path / "home" / ".config" / "sidestep"
    monkeypatch.delenv("XDG_CONFIG_HOME")
    assert settings_path() == tmp_path / "home" / ".config" / "sidestep" / "settings.json"


def test_save_and_load_round_trip(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert load_settings() is None  # first run
    saved = Settings(checkpoint_dir="/ckpt", output_root="/runs", mode="advanced")
    assert save_settings(saved) == tmp_path / "sidestep" / "settings.json"
    assert load_settings() == saved


@pytest.mark.parametrize("content,expected", [
    ('{"checkpoint_dir": "/c", "colour": 1}', "unknown setting 'colour'"),
    ('{"output_root": 3}', "setting 'output_root' must be a string, got 3"),
    ('{"mode": "expert"}', "setting 'mode' must be basic or advanced"),
    ('{"mode": ', "not valid JSON (line 1"),
    ('[1]', "expected a JSON object"),
])
def test_a_bad_settings_file_is_a_one_line_error_naming_the_file(tmp_path, content, expected):
    path = tmp_path / "settings.json"
    path.write_text(content)
    with pytest.raises(SidestepError) as err:
        load_settings(path)
    assert str(path) in str(err.value) and expected in str(err.value) and "\n" not in str(err.value)


def test_first_run_walkthrough_then_settings_menu(tmp_path, tiny_root_readonly):
    home = tmp_path / "home"
    env = wizard_env(home)
    w = Wizard(tmp_path, env)
    try:
        w.expect("First-time setup")
        w.answer(r"\[Step 1/3\] Checkpoints\n  Checkpoint folder [^\n]*\[\./checkpoints\]: $", str(tmp_path))
        w.expect(r"no ACE-Step model folders found")  # validated by discovery
        w.answer(r"Checkpoint folder [^\n]*: $", str(tiny_root_readonly))
        w.answer(r"\[Step 2/3\] Outputs\n  Folder trained adapters go under \[\./output\]: $", "b")  # go back
        w.answer(r"Checkpoint folder [^\n]*\[" + str(tiny_root_readonly) + r"\]: $", "")
        w.answer(r"Folder trained adapters go under \[\./output\]: $", "runs")
        w.answer(r"Default wizard mode:\n(?:.*\n)*  Choose 1-2 \[1\]: $", "2")
        w.expect(r"Found 2 model\(s\): acestep-v15-base \(official\), acestep-v15-turbo \(official\)")
        quit_wizard(w)
    finally:
        w.close()
    path = settings_file(home)
    # the output root is kept absolute: the same folder whichever folder the wizard starts in next time
    assert json.loads(path.read_text()) == {"checkpoint_dir": str(tiny_root_readonly),
                                            "output_root": str((tmp_path / "runs").resolve()), "mode": "advanced"}

    w = Wizard(tmp_path, env)  # a later session: no setup, the saved values are the defaults
    try:
        main_menu(w, "settings")
        w.expect(r"output root[^\n]* " + re.escape(str((tmp_path / "runs").resolve())) + " ")
        w.answer(r"What would you like to change\?\n(?:.*\n)*  Choose 1-4 \[4\]: $", "3")
        w.answer(r"Default wizard mode:\n(?:.*\n)*  Choose 1-2 \[2\]: $", "basic")
        w.expect(r"Saved to " + str(path))
        w.answer(r"Choose 1-4 \[4\]: $", "")
        main_menu(w, "1")  # the training flow uses the saved mode: said, not asked
        w.expect(r"Wizard mode: basic \(change it in Settings\)\.")
        w.answer(r"Training type:\n(?:.*\n)*  Choose 1-2 \[1\]: $", "")
        w.expect(r"Start from a preset:\n(?:.*\n)*  Choose 1-\d+ \[1\]: $")
        w.ctrl_c()
        quit_wizard(w)
        assert "First-time setup" not in w.text
    finally:
        w.close()
    assert json.loads(path.read_text())["mode"] == "basic"
