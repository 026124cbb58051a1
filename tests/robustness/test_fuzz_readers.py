"""Property-style: every reader of a file from disk gets seeded random malformed input (JSON documents, sample
tensors, training states, model configs, options) and must either succeed or raise one SidestepError with a
one-line message; any other exception is a bug (the CLI would print "error: unexpected ...")."""

import json
import random
import shutil

import pytest
import torch

from helpers import write_tensor_dataset
from sidestep.config import Config
from sidestep.data.dataset import load_sample
from sidestep.data.manifest import read_manifest
from sidestep.data.metadata import read_dataset_json
from sidestep.errors import SidestepError
from sidestep.estimate.sensitivity import read_module_config
from sidestep.model.loader import load_dit, read_dit_config
from sidestep.presets import read_preset
from sidestep.settings import load_settings
from sidestep.train.checkpoints import load_training_state

CASES = 60  # per reader; seeded, so a failure names a reproducible case

ODD_VALUES = [None, True, False, 0, -1, 1, 2**31, 2**64, -2**63, 1e308, -1e308, 0.5, float("nan"), float("inf"),
              "", "x", "é" * 3, "\ud800", [], [1, "a"], {}, {"a": {"b": []}}, "1" * 400, [[[[[]]]]]]


def _odd(rng: random.Random):
    return rng.choice(ODD_VALUES)


def _mutate(value, rng: random.Random, depth: int = 0):
    """A copy of a JSON-like value with some leaves replaced by odd values, keys dropped or added."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            roll = rng.random()
            if roll < 0.1:
                continue  # dropped
            out[k] = _odd(rng) if roll < 0.3 else _mutate(v, rng, depth + 1)
        if rng.random() < 0.1:
            out[rng.choice(["extra", "", "\u0000", "samples"])] = _odd(rng)
        return out
    if isinstance(value, list):
        return [_odd(rng) if rng.random() < 0.2 else _mutate(v, rng, depth + 1) for v in value]
    return _odd(rng) if rng.random() < 0.2 else value


def _raw_texts(rng: random.Random, valid: dict) -> list[bytes]:
    """Malformed encodings of a document: deep nesting, huge numbers, NaN literals, bad bytes, truncation."""
    text = json.dumps(valid)
    return [
        b"[" * 200_000 + b"]" * 200_000,
        b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
        ("9" * 100_000).encode(),
        ('{"samples": [' + "1" * 5000 + "]}").encode(),
        b'{"samples": NaN, "metadata": Infinity}',
        text[: rng.randrange(len(text))].encode(),
        text.encode("utf-16"),
        b"\xff\xfe\x00garbage",
        b"",
        b"null",
        b'"just a string"',
        ('{"samples": ["\\ud800x.pt"], "metadata": {"custom_tag": "\\udfff"}}').encode(),
        bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300))),
    ]


def _assert_one_line_or_ok(call):
    try:
        call()
    except SidestepError as err:
        assert "\n" not in str(err).strip(), str(err)
        assert str(err).strip(), "an empty message"


def _documents(seed: int, valid: dict) -> list[bytes]:
    rng = random.Random(seed)
    docs = _raw_texts(rng, valid)
    for _ in range(CASES):
        mutated = _mutate(valid, rng)
        try:
            docs.append(json.dumps(mutated, allow_nan=True).encode("utf-8", "surrogatepass"))
        except (ValueError, TypeError):
            continue
    return docs


MANIFEST = {"metadata": {"name": "x", "custom_tag": "tag", "num_samples": 1}, "samples": ["song0.pt"],
            "num_samples": 1, "sample_info": [{"file": "song0.pt", "latent_frames": 24, "source": "a.wav"}],
            "model": {"variant": "turbo"}}
DATASET_JSON = {"metadata": {"custom_tag": "t", "tag_position": "prepend", "genre_ratio": 10},
                "samples": [{"filename": "a.wav", "caption": "c", "lyrics": "l", "bpm": 120, "keyscale": "C major",
                             "timesignature": "4", "genre": "g", "is_instrumental": False}]}
MODULE_CONFIG = {"top_k": ["layers.0.self_attn.q_proj"], "modules": {"layers.0.self_attn.q_proj": {"score": 1.0}}}
PRESET = {"name": "p", "description": "d", "config": {"rank": 8, "alpha": 16, "learning_rate": 1e-4}}
SETTINGS = {"checkpoint_dir": "/tmp/x", "plain": False}


@pytest.mark.parametrize("seed", range(3))
def test_manifest_reader(tmp_path, seed):
    folder = write_tensor_dataset(tmp_path / "ds", n=1)
    for doc in _documents(seed, MANIFEST):
        (folder / "manifest.json").write_bytes(doc)
        _assert_one_line_or_ok(lambda: read_manifest(folder).files())


@pytest.mark.parametrize("seed", range(3))
def test_dataset_json_reader(tmp_path, seed):
    for doc in _documents(seed, DATASET_JSON):
        (tmp_path / "d.json").write_bytes(doc)
        _assert_one_line_or_ok(lambda: read_dataset_json(tmp_path / "d.json"))


@pytest.mark.parametrize("seed", range(3))
def test_module_config_reader(tmp_path, seed):
    for doc in _documents(seed, MODULE_CONFIG):
        (tmp_path / "m.json").write_bytes(doc)
        _assert_one_line_or_ok(lambda: read_module_config(tmp_path / "m.json"))


@pytest.mark.parametrize("seed", range(2))
def test_preset_and_settings_readers(tmp_path, seed):
    for doc in _documents(seed, PRESET):
        (tmp_path / "p.json").write_bytes(doc)
        _assert_one_line_or_ok(lambda: read_preset(tmp_path / "p.json").config())
    for doc in _documents(seed, SETTINGS):
        (tmp_path / "settings.json").write_bytes(doc)
        _assert_one_line_or_ok(lambda: load_settings(tmp_path / "settings.json"))


@pytest.mark.parametrize("seed", range(2))
def test_options_from_a_dict(seed):
    rng = random.Random(seed)
    names = [f.name for f in Config.fields()]
    for _ in range(CASES * 4):
        data = {rng.choice(names): _odd(rng) for _ in range(rng.randrange(1, 4))}
        _assert_one_line_or_ok(lambda: Config.from_dict(data, "fuzz.json"))


@pytest.mark.parametrize("seed", range(2))
def test_model_config_reader_and_loader(tiny_root_readonly, tmp_path, seed):
    model = tmp_path / "model"
    shutil.copytree(tiny_root_readonly / "acestep-v15-turbo", model)
    valid = json.loads((model / "config.json").read_text())
    rng = random.Random(seed)
    docs = _raw_texts(rng, valid)
    for _ in range(CASES // 2):  # one or two fields changed at a time: each reaches the loader's later checks
        changed = dict(valid)
        for key in rng.sample(sorted(valid), rng.randrange(1, 3)):
            changed[key] = _odd(rng)
        try:
            docs.append(json.dumps(changed, allow_nan=True).encode("utf-8", "surrogatepass"))
        except (ValueError, TypeError):
            continue
    for doc in docs:
        (model / "config.json").write_bytes(doc)
        _assert_one_line_or_ok(lambda: read_dit_config(model))
        _assert_one_line_or_ok(lambda: load_dit(model))


# ------------------------------------------------------------------------------------------
# Tensors


def _odd_tensor(rng: random.Random, like: torch.Tensor):
    choice = rng.randrange(9)
    if choice == 0:
        return like.to(torch.int64)
    if choice == 1:
        return like.unsqueeze(0)
    if choice == 2:
        return like.flatten()
    if choice == 3:
        return torch.full_like(like.float(), float("nan"))
    if choice == 4:
        return like[: max(like.shape[0] - 3, 0)]
    if choice == 5:
        return torch.zeros(0)
    if choice == 6:
        return like.to(torch.complex64) if like.is_floating_point() else like
    if choice == 7:
        return _odd(rng)
    return torch.randn(like.shape[0], 3) if like.ndim == 2 else like


@pytest.mark.parametrize("seed", range(3))
def test_sample_reader(tmp_path, seed):
    folder = write_tensor_dataset(tmp_path / "ds", n=1)
    good = torch.load(folder / "song0.pt", weights_only=True)
    rng = random.Random(seed)
    for _ in range(CASES):
        sample = dict(good)
        for key in rng.sample(sorted(good), rng.randrange(1, 3)):
            sample[key] = _odd_tensor(rng, good[key]) if isinstance(good[key], torch.Tensor) else _odd(rng)
        if rng.random() < 0.1:
            sample = rng.choice([[sample], "a string", None, {"metadata": {}}])
        torch.save(sample, folder / "song0.pt")
        _assert_one_line_or_ok(lambda: load_sample(folder / "song0.pt"))


@pytest.mark.parametrize("seed", range(3))
def test_training_state_reader(tmp_path, seed):
    good = {"adapter": {"a.lora_A.weight": torch.randn(4, 8)}, "optimizer": {"state": {}, "param_groups": []},
            "scheduler": {"last_epoch": 3}, "rng": {"torch": torch.get_rng_state()}, "epoch": 1, "global_step": 3,
            "samples_in_epoch": 0, "world_size": 1, "format": 1}
    rng = random.Random(seed)
    folder = tmp_path / "ckpt"
    folder.mkdir()
    for _ in range(CASES):
        state = dict(good)
        for key in rng.sample(sorted(good), rng.randrange(1, 3)):
            value = good[key]
            if isinstance(value, dict) and value and rng.random() < 0.5:
                inner = dict(value)
                k = rng.choice(sorted(inner))
                inner[k] = _odd_tensor(rng, inner[k]) if isinstance(inner[k], torch.Tensor) else _odd(rng)
                state[key] = inner
            else:
                state[key] = _odd(rng)
        torch.save(state, folder / "training_state.pt")
        _assert_one_line_or_ok(lambda: load_training_state(folder))
