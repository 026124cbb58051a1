"""Presets and flags with values Side-Step cannot use: refused before any model is loaded, in one line
naming the preset file (or the flag), the option, and what it accepts; the output folder stays as it was."""

import json

import pytest

from helpers import write_tensor_dataset

from .support import error_line, run_cli, snapshot


@pytest.fixture(scope="module")
def setup(tiny_root_readonly, tmp_path_factory):
    base = tmp_path_factory.mktemp("presets")
    dataset = write_tensor_dataset(base / "ds", n=2)
    out = base / "out"
    out.mkdir()
    (out / "adapter_model.safetensors").write_bytes(b"an earlier adapter")
    args = ["fixed", "--checkpoint-dir", tiny_root_readonly, "--dataset-dir", dataset, "--output-dir", out,
            "--epochs", "1", "--num-workers", "0"]
    return base, out, args


BAD_PRESETS = {  # id -> (preset JSON, message after "<file>: ")
    "unknown key": ({"rnak": 16, "lr": 1e-4}, "unknown option(s) lr, rnak; remove them"),
    "wrong type: text for a number": ({"rank": "16"}, "option 'rank' must be int, got '16'"),
    "wrong type: fraction for a whole number": ({"epochs": 2.5}, "option 'epochs' must be int, got 2.5"),
    "wrong type: switch as text": ({"gradient_checkpointing": "yes"},
                                   "option 'gradient_checkpointing' must be bool, got 'yes'"),
    "wrong type: list for text": ({"optimizer_type": ["adamw"]},
                                  "option 'optimizer_type' must be str, got ['adamw']"),
    "wrong choice": ({"optimizer_type": "sgd"},
                     "option 'optimizer_type' must be one of adamw, adamw8bit, adafactor, prodigy, got 'sgd'"),
    "out of range: rank 0": ({"rank": 0}, "option 'rank' must be in [1, inf), got 0"),
    "out of range: negative lr": ({"learning_rate": -0.001}, "option 'learning_rate' must be in (0, inf), got -0.001"),
    "out of range: cfg ratio 2": ({"cfg_ratio": 2.0}, "option 'cfg_ratio' must be in [0, 1], got 2.0"),
    "out of range: dropout 1.5": ({"dropout": 1.5}, "option 'dropout' must be in [0, 1), got 1.5"),
    "out of range: zero epochs": ({"epochs": 0}, "option 'epochs' must be in [1, inf), got 0"),
    "out of range: NaN lr": ('{"learning_rate": NaN}', "option 'learning_rate' must be in (0, inf), got nan"),
    "not JSON": ('{"rank": 16,', "not valid JSON (line 1: Expecting property name enclosed in double quotes)"),
    "not an object": ("[16, 32]", "a preset is a JSON object of option names and values"),
    "bad description": ({"description": 5}, "option 'description' must be str, got 5"),
}


def _write(path, content):
    path.write_text(content if isinstance(content, str) else json.dumps(content), encoding="utf-8")
    return path


@pytest.mark.parametrize("case", sorted(BAD_PRESETS))
def test_bad_preset_file_is_refused_in_one_line(setup, tmp_path, case):
    _, out, args = setup
    content, message = BAD_PRESETS[case]
    preset = _write(tmp_path / "mine.json", content)
    before = snapshot(out)
    code, text = run_cli(*args, "--preset", preset)
    assert code == 2
    assert error_line(text) == f"{preset}: {message}"
    assert snapshot(out) == before


def test_bad_preset_by_name_names_its_file(setup, tmp_path, monkeypatch):
    _, out, args = setup
    monkeypatch.chdir(tmp_path)  # ./presets/ of the working directory holds the user's presets
    (tmp_path / "presets").mkdir()
    preset = _write(tmp_path / "presets" / "night_run.json", {"rank": -4})
    code, text = run_cli(*args, "--preset", "night_run")
    assert code == 2
    assert error_line(text) == f"{preset}: option 'rank' must be in [1, inf), got -4"


def test_unknown_preset_name_lists_the_choices(setup):
    _, out, args = setup
    code, text = run_cli(*args, "--preset", "recomended")
    assert code == 2
    assert error_line(text).startswith("preset 'recomended' not found; available: recommended, high_quality, ")


def test_missing_preset_file(setup, tmp_path):
    _, out, args = setup
    code, text = run_cli(*args, "--preset", tmp_path / "gone.json")
    assert code == 2 and error_line(text) == f"{tmp_path / 'gone.json'}: preset file not found"


BAD_FLAGS = {  # flags -> message
    ("--rank", "0"): "--rank must be in [1, inf), got 0",
    ("--lr", "-1"): "--learning-rate must be in (0, inf), got -1.0",
    ("--dropout", "1.5"): "--dropout must be in [0, 1), got 1.5",
    ("--cfg-ratio", "2"): "--cfg-ratio must be in [0, 1], got 2.0",
    ("--warmup-steps", "-5"): "--warmup-steps must be in [0, inf), got -5",
    ("--num-workers", "-1"): "--num-workers must be in [0, inf), got -1",
    ("--log-every", "0"): "--log-every must be in [1, inf), got 0",
    ("--max-bad-steps", "0"): "--max-bad-steps must be in [1, inf), got 0",
    ("--save-every", "0"): "--save-every must be in [1, inf), got 0",
}


@pytest.mark.parametrize("flags", list(BAD_FLAGS), ids=[" ".join(f) for f in BAD_FLAGS])
def test_out_of_range_flag_is_refused_in_one_line(setup, flags):
    _, out, args = setup
    before = snapshot(out)
    code, text = run_cli(*args, *flags)
    assert code == 2
    assert error_line(text) == BAD_FLAGS[flags]
    assert snapshot(out) == before


def test_out_of_range_flag_over_a_good_preset_is_refused(setup):
    _, out, args = setup
    code, text = run_cli(*args, "--preset", "quick_test", "--dropout", "-0.1")
    assert code == 2 and error_line(text) == "--dropout must be in [0, 1), got -0.1"


def test_preprocess_max_duration_must_be_positive(tiny_root_readonly, tmp_path):
    code, text = run_cli("preprocess", "--checkpoint-dir", tiny_root_readonly, "--audio-dir", tmp_path,
                         "--tensor-output", tmp_path / "out", "--max-duration", "0")
    assert code == 2 and error_line(text) == "--max-duration must be in (0, 86400], got 0.0"
    assert not (tmp_path / "out").exists()
