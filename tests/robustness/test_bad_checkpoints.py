"""Model folders and training checkpoints that are incomplete, cut short, mismatched or hostile: each is
refused in one line naming the file and the fix, before a step is trained, with the output folder as it was."""

import json
import pathlib
import shutil

import pytest
import torch

from helpers import write_tensor_dataset
from sidestep.config import Config
from sidestep.train.recipe import train

from .support import error_line, run_cli, snapshot, write_song

TURBO = "acestep-v15-turbo"
REDOWNLOAD = "re-download the model folder"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_tensor_dataset(tmp_path_factory.mktemp("ckpt_ds") / "ds", n=2)



def _train(root, dataset, out, *extra):
    return run_cli("fixed", "--checkpoint-dir", root, "--dataset-dir", dataset, "--output-dir", out, "--epochs", "1",
                   "--num-workers", "0", "--rank", "4", "--alpha", "8", *extra)


def _config(root, change):
    path = root / TURBO / "config.json"
    config = json.loads(path.read_text())
    change(config)
    path.write_text(json.dumps(config))
    return path


def _cut(path, keep):
    data = path.read_bytes()
    path.write_bytes(data[:keep(len(data))])
    return path


MODEL_CASES = {  # id -> (break the copied root, message after "<root>/")
    "missing model.safetensors": (lambda r: (r / TURBO / "model.safetensors").unlink(),
                                  f"{TURBO}/model.safetensors: not found; the model folder is incomplete, "
                                  "re-download it"),
    "missing config.json": (lambda r: (r / TURBO / "config.json").unlink(),
                            f"{TURBO}/config.json: not found; the model folder is incomplete or damaged, "
                            "re-download it"),
    "config.json not JSON": (lambda r: (r / TURBO / "config.json").write_text('{"hidden_size": 64,'),
                             f"{TURBO}/config.json: not valid JSON; the model folder is incomplete or damaged, "
                             "re-download it"),
    "truncated safetensors": (lambda r: _cut(r / TURBO / "model.safetensors", lambda n: n // 2),
                              f"{TURBO}/model.safetensors: unreadable safetensors (Error while deserializing header: "
                              "incomplete metadata, file not fully covered); the file is truncated or corrupt, "
                              "re-download it"),
    "safetensors cut inside its header": (lambda r: _cut(r / TURBO / "model.safetensors", lambda n: 50),
                                          f"{TURBO}/model.safetensors: unreadable safetensors (Error while "
                                          "deserializing header: invalid header length); the file is truncated or "
                                          "corrupt, re-download it"),
    "config of another width": (lambda r: _config(r, lambda c: c.update(hidden_size=128)),
                                f"{TURBO}/model.safetensors: key 'decoder.condition_embedder.bias' has shape [64] but "
                                "config.json implies [128]; config.json and model.safetensors do not belong together, "
                                + REDOWNLOAD),
    "config with more layers": (lambda r: _config(r, lambda c: c.update(num_hidden_layers=c["num_hidden_layers"] + 2)),
                                f"{TURBO}/config.json: layer_types lists 4 layers but num_hidden_layers is 6; "
                                f"config.json is damaged or edited, {REDOWNLOAD}"),
    "config with more layers and their types": (
        lambda r: _config(r, lambda c: c.update(num_hidden_layers=6, layer_types=c["layer_types"] * 2)),
        f"{TURBO}/config.json: num_hidden_layers is 6 but model.safetensors holds 4 decoder layers; config.json and "
        f"model.safetensors do not belong together, {REDOWNLOAD}"),
    "config with fewer layers": (
        lambda r: _config(r, lambda c: c.update(num_hidden_layers=2, layer_types=c["layer_types"][:2])),
        f"{TURBO}/model.safetensors: unexpected key 'decoder.layers.2.cross_attn.k_norm.weight' (config.json describes "
        f"no such parameter); config.json and model.safetensors do not belong together, {REDOWNLOAD}"),
    "config with a broken size": (lambda r: _config(r, lambda c: c.update(head_dim="16")),
                                  f"{TURBO}/config.json: head_dim must be a positive whole number, got '16'; "
                                  "config.json is damaged, re-download the model folder"),
    "silence latent not a tensor file": (lambda r: (r / TURBO / "silence_latent.pt").write_bytes(b"not a pickle"),
                                         f"{TURBO}/silence_latent.pt: cannot be read (UnpicklingError); "
                                         "re-download it"),
}


@pytest.mark.parametrize("case", sorted(MODEL_CASES))
def test_broken_model_folder_is_refused_in_one_line(tiny_root, dataset, out, case):
    breaks, message = MODEL_CASES[case]
    breaks(tiny_root)
    before = snapshot(out)
    code, text = _train(tiny_root, dataset, out)
    assert code == 2
    assert error_line(text) == f"{tiny_root}/{message}"
    assert snapshot(out) == before


def test_fine_tune_without_timestep_parameters(tiny_root, dataset, out):
    tune = tiny_root / "my-lofi-tune"
    shutil.copytree(tiny_root / "acestep-v15-base", tune)
    config = json.loads((tune / "config.json").read_text())
    for key in ("timestep_mu", "timestep_sigma", "model_version"):
        config.pop(key, None)
    config["is_turbo"] = False
    (tune / "config.json").write_text(json.dumps(config))
    before = snapshot(out)
    code, text = _train(tiny_root, dataset, out, "--model-variant", "my-lofi-tune")
    assert code == 2
    assert error_line(text) == f"{tune}/config.json: no timestep_mu/timestep_sigma and no way to tell the base " \
                               "model; pass --base-model turbo|base|sft"
    assert snapshot(out) == before
    # the fix the message names works
    code, text = _train(tiny_root, dataset, out, "--model-variant", "my-lofi-tune", "--base-model", "base")
    assert code == 0, text
    run = json.loads((out / "sidestep_run.json").read_text())
    assert run["inference"]["base_model"] == "base" and run["training"]["timestep_mu"] == -0.4


PREPROCESS_PARTS = {  # id -> (break the copied root, message after "<root>/")
    "no vae folder": (lambda r: shutil.rmtree(r / "vae"),
                      "vae: VAE folder not found (needs config.json and diffusion_pytorch_model.safetensors); "
                      "copy vae/ from the released checkpoints"),
    "vae weights not safetensors": (lambda r: (r / "vae" / "diffusion_pytorch_model.safetensors").write_bytes(b"xx"),
                                    "re:vae: cannot load the VAE \\(.*\\); re-download vae/"),
    "text encoder without tokenizer": (lambda r: (r / "Qwen3-Embedding-0.6B" / "tokenizer.json").unlink(),
                                       "re:Qwen3-Embedding-0\\.6B: cannot load the text encoder \\(.*\\); "
                                       "re-download Qwen3-Embedding-0\\.6B/"),
}


@pytest.mark.parametrize("case", sorted(PREPROCESS_PARTS))
def test_broken_preprocessing_parts_are_named(tiny_root, tmp_path, case):
    import re

    breaks, message = PREPROCESS_PARTS[case]
    breaks(tiny_root)
    write_song(tmp_path / "audio" / "song.wav")
    code, text = run_cli("preprocess", "--checkpoint-dir", tiny_root, "--audio-dir", tmp_path / "audio",
                         "--tensor-output", tmp_path / "tensors")
    assert code == 2
    line = error_line(text)
    if message.startswith("re:"):
        assert re.fullmatch(re.escape(str(tiny_root)) + "/" + message[3:], line), line
    else:
        assert line == f"{tiny_root}/{message}"
    assert not list((tmp_path / "tensors").glob("*.pt"))


# ------------------------------------------------------------------------------------------
# Training checkpoints given to --resume-from


@pytest.fixture(scope="module")
def checkpoint(tiny_root_readonly, dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("resume") / "out"
    train(Config(checkpoint_dir=str(tiny_root_readonly), dataset_dir=str(dataset), output_dir=str(out), epochs=1,
                 save_every=1, rank=4, alpha=8, num_workers=0), "fixed", quiet=True)
    return out / "checkpoints" / "epoch_1"


class _Payload:
    """Unpickling this would run code (touch a file): a hostile training_state.pt."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.touch, (pathlib.Path(self.marker),)


def _hostile(folder, tmp_path):
    torch.save({"adapter": _Payload(tmp_path / "pwned")}, folder / "training_state.pt")


RESUME_CASES = {  # id -> (break the copied checkpoint, message after "<checkpoint>/")
    "no training state": (lambda f, t: (f / "training_state.pt").unlink(),
                          "training_state.pt: not found; --resume-from takes a checkpoints/epoch_N folder written by "
                          "Side-Step"),
    "truncated training state": (lambda f, t: _cut(f / "training_state.pt", lambda n: n // 3),
                                 "training_state.pt: unreadable (RuntimeError); resume from an earlier checkpoint"),
    "hostile pickle": (_hostile, "training_state.pt: unreadable (UnpicklingError); resume from an earlier checkpoint"),
    "no run file": (lambda f, t: (f / "sidestep_run.json").unlink(),
                    "sidestep_run.json: missing or unreadable; --resume-from takes a checkpoints/... folder written "
                    "by Side-Step"),
}


@pytest.mark.parametrize("case", sorted(RESUME_CASES))
def test_broken_resume_checkpoint_is_refused(tiny_root_readonly, dataset, checkpoint, out, tmp_path, case):
    folder = tmp_path / "epoch_1"
    shutil.copytree(checkpoint, folder)
    breaks, message = RESUME_CASES[case]
    breaks(folder, tmp_path)
    before = snapshot(out)
    code, text = _train(tiny_root_readonly, dataset, out, "--resume-from", folder)
    assert code == 2
    assert error_line(text) == f"{folder}/{message}"
    assert snapshot(out) == before
    assert not (tmp_path / "pwned").exists()  # nothing in the file ran


def test_resume_without_the_adapter_file_still_resumes(tiny_root_readonly, dataset, checkpoint, tmp_path):
    """The adapter files in a checkpoint are for inference; the training state alone resumes the run."""
    folder = tmp_path / "epoch_1"
    shutil.copytree(checkpoint, folder)
    (folder / "adapter_model.safetensors").unlink()
    code, text = _train(tiny_root_readonly, dataset, tmp_path / "out", "--resume-from", folder, "--epochs", "2")
    assert code == 0, text
    assert (tmp_path / "out" / "adapter_model.safetensors").is_file()
