import os

# Tiny models gain nothing from threads, and OpenMP spin-waits collapse (10x slower) when a test's
# subprocess or another job shares the 2 cores. Set before torch is imported; subprocesses inherit it.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import shutil
import warnings
from pathlib import Path

import pytest

warnings.filterwarnings("ignore", category=FutureWarning)

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "acestep15"
GOLDEN = SHARED / "golden"


@pytest.fixture(scope="session")
def tiny_root_readonly(tmp_path_factory) -> Path:
    """A tiny checkpoints root (turbo + base) in the official layout. Do not modify it."""
    from sidestep.model.tiny import write_tiny_checkpoint_root

    return write_tiny_checkpoint_root(tmp_path_factory.mktemp("ckpt") / "checkpoints", variants=("turbo", "base"))


@pytest.fixture
def tiny_root(tiny_root_readonly, tmp_path) -> Path:
    """A private copy of the tiny root that a test may break."""
    dst = tmp_path / "checkpoints"
    shutil.copytree(tiny_root_readonly, dst)
    return dst
