"""The fixtures of tests/conftest.py (tiny checkpoints) apply here too; this folder adds its own."""

import shutil
import tempfile
from pathlib import Path

import pytest

from .support import world_readable_copy


@pytest.fixture(scope="session")
def open_area():
    """A folder any user may enter (pytest's temp folders are private to their owner): the permission
    tests run parts of Side-Step as an unprivileged user inside it."""
    base = Path(tempfile.mkdtemp(prefix="sidestep-open-"))
    base.chmod(0o755)
    yield base
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def open_root(tiny_root_readonly, open_area) -> Path:
    """The tiny checkpoints root, readable by any user."""
    return world_readable_copy(tiny_root_readonly, open_area / "checkpoints")


@pytest.fixture
def out(tmp_path):
    """An output folder that already holds an earlier run's adapter: no failing run may touch it."""
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "adapter_model.safetensors").write_bytes(b"last week's adapter")
    return folder
