"""Outputs that would destroy an input or a special file, and the modes of what is written.

Every command refuses, before any work and in one line (exit 2), an output that is one of its inputs (or a file
inside an input folder it reads) and an output that is a FIFO, a device or a socket; nothing is touched. Written
files and folders follow the process umask like any Unix tool's (not mkstemp's 0600 / mkdtemp's 0700)."""

import contextlib
import os
import stat

import pytest

from helpers import train_tiny_lora, write_tensor_dataset
from sidestep.errors import SidestepError
from sidestep.io import atomic_dir, atomic_write_bytes, atomic_write_many, atomic_write_text

from .support import error_line, run_cli, snapshot, write_song

TURBO = "acestep-v15-turbo"


@pytest.fixture(scope="module")
def adapter(tiny_root_readonly, tmp_path_factory):
    _, folder = train_tiny_lora(tiny_root_readonly, tmp_path_factory.mktemp("adapter"), epochs=1)
    return folder


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_tensor_dataset(tmp_path_factory.mktemp("outputs_ds") / "ds", n=2)


def _fifo(path):
    os.mkfifo(path)
    return path


def _special(kind, tmp_path):
    """A special file of `kind` in tmp_path (a character device needs root: /dev/null's numbers)."""
    if kind == "fifo":
        return _fifo(tmp_path / "pipe")
    if kind == "link to a fifo":
        target = _fifo(tmp_path / "pipe")
        (tmp_path / "link").symlink_to(target)
        return tmp_path / "link"
    if kind == "device":
        if os.geteuid() != 0:
            pytest.skip("making a device node needs root")
        os.mknod(tmp_path / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        return tmp_path / "null"
    if kind == "socket":
        import socket

        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(tmp_path / "sock"))
        sock.close()
        return tmp_path / "sock"
    raise AssertionError(kind)


def _assert_untouched(path, kind):
    mode = os.stat(path).st_mode
    assert not stat.S_ISREG(mode), f"{path} became a regular file"


# ------------------------------------------------------------------------------------------
# An output that is an input


@pytest.mark.parametrize("name", ["adapter_model.safetensors", "adapter_config.json", "sidestep_run.json"])
def test_export_onto_its_own_adapter_file_is_refused(adapter, name):
    before = snapshot(adapter)
    code, text = run_cli("export", adapter, adapter / name)
    assert code == 2, text
    assert "ADAPTER_DIR input itself" in error_line(text)
    assert snapshot(adapter) == before


def test_export_beside_the_adapter_under_a_new_name_works(adapter, tmp_path):
    code, text = run_cli("export", adapter, tmp_path / "comfy.safetensors")
    assert code == 0, text


@pytest.mark.parametrize("kind", ["fifo", "link to a fifo", "device", "socket"])
def test_export_onto_a_special_file_is_refused(adapter, tmp_path, kind):
    target = _special(kind, tmp_path)
    code, text = run_cli("export", adapter, target)
    assert code == 2, text
    assert "not a regular file" in error_line(text)
    _assert_untouched(target, kind)


@pytest.mark.parametrize("kind", ["fifo", "link to a fifo", "device"])
def test_generate_onto_a_special_file_is_refused_before_loading(tiny_root_readonly, tmp_path, kind):
    target = _special(kind, tmp_path)
    code, text = run_cli("generate", "--checkpoint-dir", tiny_root_readonly, "--prompt", "x", "--duration", "1",
                         "--out", target)
    assert code == 2, text
    assert "not a regular file" in error_line(text)
    assert "Generating" not in text
    _assert_untouched(target, kind)


@pytest.mark.parametrize("inside", [f"{TURBO}/config.json", f"{TURBO}/model.safetensors", "vae/config.json"])
def test_generate_over_a_model_file_is_refused(tiny_root, inside):
    before = snapshot(tiny_root)
    code, text = run_cli("generate", "--checkpoint-dir", tiny_root, "--prompt", "x", "--duration", "1",
                         "--out", tiny_root / inside)
    assert code == 2, text
    assert "--checkpoint-dir folder" in error_line(text)
    assert snapshot(tiny_root) == before


def test_generate_over_the_adapter_it_plays_is_refused(tiny_root_readonly, adapter):
    before = snapshot(adapter)
    code, text = run_cli("generate", "--checkpoint-dir", tiny_root_readonly, "--prompt", "x", "--duration", "1",
                         "--adapter", adapter, "--out", adapter / "adapter_model.safetensors")
    assert code == 2, text
    assert "--adapter input itself" in error_line(text)
    assert snapshot(adapter) == before


@pytest.mark.parametrize("target", ["manifest.json", "song0.pt"])
def test_estimate_over_a_dataset_file_is_refused(tiny_root_readonly, dataset, target):
    before = snapshot(dataset)
    code, text = run_cli("estimate", "--checkpoint-dir", tiny_root_readonly, "--dataset-dir", dataset,
                         "--output", dataset / target)
    assert code == 2, text
    assert "--dataset-dir folder" in error_line(text)
    assert snapshot(dataset) == before


def test_estimate_onto_a_fifo_is_refused(tiny_root_readonly, dataset, tmp_path):
    target = _fifo(tmp_path / "pipe")
    code, text = run_cli("estimate", "--checkpoint-dir", tiny_root_readonly, "--dataset-dir", dataset,
                         "--output", target)
    assert code == 2, text
    assert "not a regular file" in error_line(text)
    _assert_untouched(target, "fifo")


def _preprocess(root, audio, out, *extra):
    return run_cli("preprocess", "--checkpoint-dir", root, "--audio-dir", audio, "--tensor-output", out, *extra)


@pytest.mark.parametrize("where", ["parent", "grandparent", "itself"])
def test_preprocess_output_at_or_above_the_songs_is_refused(tiny_root_readonly, tmp_path, where):
    audio = tmp_path / "a" / "songs"
    write_song(audio / "one.wav")
    out = {"parent": tmp_path / "a", "grandparent": tmp_path, "itself": audio}[where]
    code, text = _preprocess(tiny_root_readonly, audio, out)
    assert code == 2, text
    line = error_line(text)
    assert "--audio-dir" in line and "no audio files found" not in line
    assert not (out / "manifest.json").exists()


def test_preprocess_output_inside_the_songs_still_works(tiny_root_readonly, tmp_path):
    audio = tmp_path / "songs"
    write_song(audio / "one.wav")
    code, text = _preprocess(tiny_root_readonly, audio, audio / "tensors")
    assert code == 0, text
    assert (audio / "tensors" / "one.pt").is_file()


def test_preprocess_dataset_json_as_the_manifest_it_writes_is_refused(tiny_root_readonly, tmp_path):
    audio, out = tmp_path / "songs", tmp_path / "out"
    write_song(audio / "one.wav")
    out.mkdir()
    (out / "manifest.json").write_text('{"files": []}')
    before = snapshot(out)
    code, text = _preprocess(tiny_root_readonly, audio, out, "--dataset-json", out / "manifest.json")
    assert code == 2, text
    assert "--dataset-json input" in error_line(text)
    assert snapshot(out) == before


@pytest.mark.parametrize("kind", ["file", "fifo", "checkpoint root"])
def test_preprocess_output_that_cannot_be_a_folder_is_refused(tiny_root, tmp_path, kind):
    audio = tmp_path / "songs"
    write_song(audio / "one.wav")
    out = {"file": tmp_path / "f", "fifo": tmp_path / "pipe", "checkpoint root": tiny_root}[kind]
    if kind == "file":
        out.write_text("mine")
    elif kind == "fifo":
        _fifo(out)
    code, text = _preprocess(tiny_root, audio, out)
    assert code == 2, text
    error_line(text)
    if kind == "file":
        assert out.read_text() == "mine"
    if kind == "fifo":
        _assert_untouched(out, kind)


def _train(root, dataset, out, *extra):
    return run_cli("fixed", "--checkpoint-dir", root, "--dataset-dir", dataset, "--output-dir", out, "--epochs", "1",
                   "--num-workers", "0", "--rank", "4", "--alpha", "8", *extra)


@pytest.mark.parametrize("which", ["dataset", "checkpoint root", "model folder"])
def test_training_into_an_input_folder_is_refused(tiny_root, tmp_path, which):
    data = write_tensor_dataset(tmp_path / "ds", n=2)
    out = {"dataset": data, "checkpoint root": tiny_root, "model folder": tiny_root / TURBO}[which]
    before = snapshot(out)
    code, text = _train(tiny_root, data, out)
    assert code == 2, text
    assert "folder itself" in error_line(text) or "holds the" in error_line(text)
    assert snapshot(out) == before


def test_training_into_the_checkpoint_it_resumes_is_refused(tiny_root_readonly, tmp_path):
    _, out = train_tiny_lora(tiny_root_readonly, tmp_path, epochs=1, save_every=1)
    resume = out / "checkpoints" / "epoch_1"
    before = snapshot(resume)
    code, text = _train(tiny_root_readonly, tmp_path / "ds", resume, "--resume-from", resume)
    assert code == 2, text
    assert "--resume-from folder itself" in error_line(text)
    assert snapshot(resume) == before


@pytest.mark.parametrize("kind", ["file", "fifo"])
def test_training_output_that_is_not_a_folder_is_refused(tiny_root_readonly, dataset, tmp_path, kind):
    out = tmp_path / "out"
    if kind == "file":
        out.write_text("mine")
    else:
        _fifo(out)
    code, text = _train(tiny_root_readonly, dataset, out)
    assert code == 2, text
    assert "not a folder" in error_line(text)
    if kind == "file":
        assert out.read_text() == "mine"
    else:
        _assert_untouched(out, kind)


def test_selective_module_config_that_training_would_overwrite_is_refused(tiny_root_readonly, dataset, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    config = out / "adapter_config.json"
    config.write_text('{"top_k": []}')
    code, text = run_cli("selective", "--checkpoint-dir", tiny_root_readonly, "--dataset-dir", dataset,
                         "--output-dir", out, "--module-config", config, "--epochs", "1", "--num-workers", "0")
    assert code == 2, text
    assert "--module-config input" in error_line(text)
    assert config.read_text() == '{"top_k": []}'


@pytest.mark.parametrize("write", ["text", "bytes", "many"])
@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_atomic_writes_never_replace_a_special_file(tmp_path, write, kind):
    target = _special(kind, tmp_path)
    with pytest.raises(SidestepError, match="not a regular file"):
        if write == "text":
            atomic_write_text(target, "x")
        elif write == "bytes":
            atomic_write_bytes(target, b"x")
        else:
            atomic_write_many(tmp_path, {"fine.json": b"{}", target.name: b"x"})
    _assert_untouched(target, kind)
    assert not (tmp_path / "fine.json").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


# ------------------------------------------------------------------------------------------
# Modes follow the umask


@contextlib.contextmanager
def umask(mask):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077, 0o027])
def test_atomic_writes_follow_the_umask(tmp_path, mask):
    with umask(mask):
        atomic_write_text(tmp_path / "a.json", "{}")
        atomic_write_bytes(tmp_path / "b.bin", b"x")
        atomic_write_many(tmp_path / "many", {"c.json": b"{}"})
        with atomic_dir(tmp_path / "folder") as tmp:
            (tmp / "inner.txt").write_text("x")
    for name in ("a.json", "b.bin", "many/c.json", "folder/inner.txt"):
        assert _mode(tmp_path / name) == 0o666 & ~mask, name
    assert _mode(tmp_path / "folder") == 0o777 & ~mask


def test_adapters_checkpoints_exports_follow_the_umask(tiny_root_readonly, tmp_path):
    with umask(0o022):
        _, out = train_tiny_lora(tiny_root_readonly, tmp_path, epochs=1, save_every=1)
        code, text = run_cli("export", out, tmp_path / "comfy.safetensors")
    assert code == 0, text
    for path in (out / "adapter_model.safetensors", out / "adapter_config.json", tmp_path / "comfy.safetensors",
                 out / "checkpoints" / "epoch_1" / "training_state.pt"):
        assert _mode(path) == 0o644, path
    assert _mode(out / "checkpoints" / "epoch_1") == 0o755
