"""Inputs that used to reach the catch-all "error: unexpected ..." (exit 1): seeds, infinities, deep or huge JSON,
sample tensors of the wrong shape or dtype, training states and run files of the wrong types, an adapter of
another size, a NaN loss on every step, and errors outside a wizard flow. Each is one line and exit 2 (3 for a
failed training), naming the file or flag; `--seed -1` picks a seed and records it."""

import json
import os
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from helpers import train_tiny_lora, write_tensor_dataset
from sidestep.cli.main import _guarded
from sidestep.config import Config
from sidestep.console import get_console
from sidestep.errors import SidestepError

from .support import error_line, run_cli, snapshot, write_song

TURBO = "acestep-v15-turbo"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_tensor_dataset(tmp_path_factory.mktemp("bad_inputs_ds") / "ds", n=2)


def _train(root, dataset, out, *extra):
    return run_cli("fixed", "--checkpoint-dir", root, "--dataset-dir", dataset, "--output-dir", out, "--epochs", "1",
                   "--num-workers", "0", "--rank", "4", "--alpha", "8", *extra)


# ------------------------------------------------------------------------------------------
# Seeds and numbers


def test_seed_minus_one_picks_a_seed_and_records_it(tiny_root_readonly, dataset, tmp_path):
    seeds = {Config(seed=-1).seed for _ in range(20)}
    assert all(0 <= s < 2**32 for s in seeds) and len(seeds) > 1
    code, text = _train(tiny_root_readonly, dataset, tmp_path / "out", "--seed", "-1")
    assert code == 0, text
    recorded = json.loads((tmp_path / "out" / "sidestep_run.json").read_text())
    seed = recorded["config"]["seed"]
    assert isinstance(seed, int) and 0 <= seed < 2**32


def test_seed_minus_one_in_preprocessing_is_recorded(tiny_root_readonly, tmp_path):
    write_song(tmp_path / "songs" / "a.wav")
    code, text = run_cli("preprocess", "--checkpoint-dir", tiny_root_readonly, "--audio-dir", tmp_path / "songs",
                         "--tensor-output", tmp_path / "out", "--seed", "-1")
    assert code == 0, text
    seed = json.loads((tmp_path / "out" / "manifest.json").read_text())["settings"]["seed"]
    assert 0 <= seed < 2**32


@pytest.mark.parametrize("command", ["fixed", "preprocess", "estimate", "generate"])
@pytest.mark.parametrize("seed", ["-2", "4294967296", "99999999999999999999999"])
def test_seeds_out_of_range_are_one_line(tmp_path, command, seed):
    code, text = run_cli(command, "--seed", seed)
    assert code == 2, text
    assert error_line(text).startswith("--seed must be in [-1, 4294967295]")


@pytest.mark.parametrize("flag,value", [("--max-duration", "inf"), ("--max-duration", "nan"),
                                        ("--max-duration", "1e400"), ("--max-duration", "-5"),
                                        ("--chunk-duration", "inf"), ("--chunk-duration", "-1"),
                                        ("--chunk-duration", "nan"), ("--sample-duration", "inf"),
                                        ("--shift", "inf"), ("--shift", "nan"), ("--learning-rate", "inf")])
def test_infinite_or_negative_numbers_are_one_line(tmp_path, flag, value):
    code, text = run_cli("fixed", flag, value)
    assert code == 2, text
    assert error_line(text).startswith(f"{flag} must be in ")


# ------------------------------------------------------------------------------------------
# JSON that is deep, huge or of the wrong shape


DEEP = "[" * 100_000 + "]" * 100_000
HUGE_NUMBER = '{"samples": [' + "7" * 10_000 + "]}"


@pytest.mark.parametrize("content", [DEEP, HUGE_NUMBER, '{"samples": [{"filename": "a.wav", "bpm": ' + "9" * 5000
                                     + "}]}"])
def test_dataset_json_deep_or_huge_is_one_line(tiny_root_readonly, tmp_path, content):
    write_song(tmp_path / "songs" / "a.wav")
    (tmp_path / "d.json").write_text(content)
    code, text = run_cli("preprocess", "--checkpoint-dir", tiny_root_readonly, "--audio-dir", tmp_path / "songs",
                         "--tensor-output", tmp_path / "out", "--dataset-json", tmp_path / "d.json")
    assert code == 2, text
    assert str(tmp_path / "d.json") in error_line(text)


@pytest.mark.parametrize("content", [DEEP, HUGE_NUMBER, '{"top_k": ["a"], "modules": {"a": {"score": 1e999}}}',
                                     '{"top_k": ["a"], "modules": []}'])
def test_module_config_deep_or_huge_is_one_line(tiny_root_readonly, dataset, tmp_path, content):
    (tmp_path / "m.json").write_text(content)
    code, text = run_cli("compare-configs", tmp_path / "m.json", tmp_path / "m.json")
    assert code in (0, 2), text
    if code == 2:
        assert str(tmp_path / "m.json") in error_line(text)


@pytest.mark.parametrize("content", [DEEP, '{"hidden_size": ' + "6" * 5000 + "}", "[1, 2]", "1e999"])
def test_model_config_deep_or_huge_is_one_line(tiny_root, dataset, tmp_path, content):
    (tiny_root / TURBO / "config.json").write_text(content)
    code, text = _train(tiny_root, dataset, tmp_path / "out")
    assert code == 2, text
    error_line(text)


@pytest.mark.parametrize("content", [DEEP, HUGE_NUMBER, '{"samples": ["../escape.pt"]}', '{"samples": ["a/b.pt"]}',
                                     '{"samples": ["' + "x" * 400 + '.pt"]}', '{"samples": ["\\u0000.pt"]}',
                                     '{"samples": ["song0.pt"], "sample_info": [{"file": "song0.pt", '
                                     '"latent_frames": 1e999}]}'])
def test_manifest_deep_huge_or_escaping_is_one_line(tiny_root_readonly, tmp_path, content):
    data = write_tensor_dataset(tmp_path / "ds", n=1)
    (data / "manifest.json").write_text(content)
    code, text = _train(tiny_root_readonly, data, tmp_path / "out")
    assert code in (0, 2), text
    if code == 2:
        assert "manifest.json" in error_line(text)


# ------------------------------------------------------------------------------------------
# Sample tensors


def _sample_cases():
    T = 24
    good = lambda: {"target_latents": torch.randn(T, 64), "attention_mask": torch.ones(T),  # noqa: E731
                    "encoder_hidden_states": torch.randn(21, 64), "encoder_attention_mask": torch.ones(21).bool(),
                    "context_latents": torch.randn(T, 128), "metadata": {}}
    cases = {
        "3-d latents": ("target_latents", torch.randn(1, T, 64), "3 dimensions"),
        "integer latents": ("target_latents", torch.ones(T, 64, dtype=torch.int32), "dtype torch.int32"),
        "complex hidden states": ("encoder_hidden_states", torch.ones(21, 64, dtype=torch.complex64), "complex"),
        "short mask": ("attention_mask", torch.ones(T - 1), "frame counts"),
        "narrow context": ("context_latents", torch.randn(T, 64), "twice"),
        "a list": ("context_latents", [1, 2], "not a tensor"),
        "mask length": ("encoder_attention_mask", torch.ones(5).bool(), "differ in length"),
        "empty": ("target_latents", torch.zeros(0, 64), "frame counts"),
    }
    return good, cases


@pytest.mark.parametrize("case", list(_sample_cases()[1]))
def test_samples_of_the_wrong_shape_or_dtype_are_one_line(tiny_root_readonly, tmp_path, out, case):
    good, cases = _sample_cases()
    key, value, words = cases[case]
    data = write_tensor_dataset(tmp_path / "ds", n=2)
    sample = good()
    sample[key] = value
    torch.save(sample, data / "song1.pt")
    before = snapshot(out)
    code, text = _train(tiny_root_readonly, data, out)
    assert code == 2, text
    line = error_line(text)
    assert "song1.pt: not a usable preprocessed sample" in line and words in line, line
    assert snapshot(out) == before


# ------------------------------------------------------------------------------------------
# Training states, run files and adapters


@pytest.fixture(scope="module")
def trained(tiny_root_readonly, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bad_inputs_run")
    _, out = train_tiny_lora(tiny_root_readonly, tmp, epochs=1, save_every=1)
    return tmp, out


STATE_CHANGES = {
    "epoch as text": lambda s: s.update(epoch="3"),
    "negative step": lambda s: s.update(global_step=-4),
    "adapter a list": lambda s: s.update(adapter=[1, 2]),
    "NaN adapter tensor": lambda s: s["adapter"].update({k: torch.full_like(v, float("nan"))
                                                          for k, v in list(s["adapter"].items())[:1]}),
    "no rng": lambda s: s.pop("rng"),
    "not a dict": None,
}


@pytest.mark.parametrize("case", list(STATE_CHANGES))
def test_a_training_state_of_the_wrong_types_is_one_line(tiny_root_readonly, trained, tmp_path, case):
    tmp, out = trained
    ckpt = tmp_path / "epoch_1"
    shutil.copytree(out / "checkpoints" / "epoch_1", ckpt)
    state = torch.load(ckpt / "training_state.pt", weights_only=True)
    if STATE_CHANGES[case] is None:
        state = [state]
    else:
        STATE_CHANGES[case](state)
    torch.save(state, ckpt / "training_state.pt")
    code, text = _train(tiny_root_readonly, tmp / "ds", tmp_path / "resumed", "--resume-from", ckpt, "--epochs", "2",
                        "--lr", "0.01", "--warmup-steps", "0", "--gradient-accumulation", "1", "--dropout", "0",
                        "--save-every", "100", "--scheduler-type", "constant")
    assert code == 2, text
    assert "training_state.pt: not a Side-Step training state" in error_line(text)


@pytest.mark.parametrize("content", ["[]", '{"config": [], "inference": {"model_variant": "x"}}',
                                     '{"config": {}, "inference": {"model_variant": 5}}', DEEP,
                                     '{"config": {}, "inference": {"model_variant": "acestep-v15-turbo"}, '
                                     '"training": []}'])
def test_a_run_file_of_the_wrong_types_is_one_line(tiny_root_readonly, trained, tmp_path, content):
    tmp, out = trained
    ckpt = tmp_path / "epoch_1"
    shutil.copytree(out / "checkpoints" / "epoch_1", ckpt)
    (ckpt / "sidestep_run.json").write_text(content)
    code, text = _train(tiny_root_readonly, tmp / "ds", tmp_path / "resumed", "--resume-from", ckpt, "--epochs", "2")
    assert code == 2, text
    assert "sidestep_run.json" in error_line(text)


def test_an_adapter_of_another_size_is_one_line(tiny_root_readonly, trained, tmp_path):
    """Widths that only the tensors tell (no record): the size mismatch is said in one line, not 49."""
    _, out = trained
    adapter = tmp_path / "adapter"
    shutil.copytree(out, adapter, ignore=shutil.ignore_patterns("checkpoints", "runs"))
    tensors = load_file(adapter / "adapter_model.safetensors")
    tensors = {k: torch.zeros(v.shape[0] + 8, v.shape[1]) if "lora_B" in k else v for k, v in tensors.items()}
    save_file(tensors, adapter / "adapter_model.safetensors")
    (adapter / "sidestep_run.json").unlink()
    code, text = run_cli("generate", "--checkpoint-dir", tiny_root_readonly, "--prompt", "x", "--duration", "1",
                         "--adapter", adapter, "--out", tmp_path / "song.wav")
    assert code == 2, text
    line = error_line(text)
    assert "does not fit this model" in line and "size mismatch" in line
    assert len(text.splitlines()) < 6, text


@pytest.mark.parametrize("damage", ["config list", "config deep", "weights garbage"])
def test_a_damaged_adapter_is_one_line_for_export_and_generate(tiny_root_readonly, trained, tmp_path, damage):
    _, out = trained
    adapter = tmp_path / "adapter"
    shutil.copytree(out, adapter, ignore=shutil.ignore_patterns("checkpoints", "runs"))
    if damage == "config list":
        (adapter / "adapter_config.json").write_text("[1]")
    elif damage == "config deep":
        (adapter / "adapter_config.json").write_text(DEEP)
    else:
        (adapter / "adapter_model.safetensors").write_bytes(os.urandom(64))
    code, text = run_cli("export", adapter, tmp_path / "c.safetensors")
    assert code == 2, text
    error_line(text)
    code, text = run_cli("generate", "--checkpoint-dir", tiny_root_readonly, "--prompt", "x", "--duration", "1",
                         "--adapter", adapter, "--out", tmp_path / "song.wav")
    assert code == 2, text
    error_line(text)


# ------------------------------------------------------------------------------------------
# Misleading messages and the wizard


def test_a_nan_loss_on_every_step_says_so(tiny_root_readonly, tmp_path):
    data = write_tensor_dataset(tmp_path / "ds", n=2)
    for name in ("song0.pt", "song1.pt"):  # finite, but the squared error overflows: every loss is inf
        sample = torch.load(data / name, weights_only=True)
        sample["target_latents"] = torch.full_like(sample["target_latents"], 3e38)
        torch.save(sample, data / name)
    code, text = _train(tiny_root_readonly, data, tmp_path / "out", "--gradient-accumulation", "1")
    assert code == 3, text
    line = error_line(text)
    assert "NaN/inf" in line and "check --dataset-dir and --epochs" not in line


@pytest.mark.parametrize("error,code", [(SidestepError("settings.json: broken; fix it"), 2), (KeyError("x"), 1),
                                        (RecursionError("deep"), 1)])
def test_the_wizard_front_end_has_the_one_line_contract(capsys, error, code):
    def front_end():
        raise error

    assert _guarded(get_console(plain=True), False, front_end) == code
    text = capsys.readouterr().out
    assert error_line(text)
    assert "Traceback" not in text
