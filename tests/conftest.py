import os

# Tiny models gain nothing from threads, and OpenMP spin-waits collapse (10x slower) when a test's
# subprocess or another job shares the 2 cores. Set before torch is imported; subprocesses inherit it.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import shutil
import warnings
from pathlib import Path

import pytest

warnings.filterwarnings("ignore", category=FutureWarning)

ROOT = Path(__file__).resolve().parents[1]
# Reference data shipped with the repository (reference/README.md): golden cases, key sets, configs.
REFERENCE = ROOT / "reference"
GOLDEN = REFERENCE / "golden"
KEYS_2B = REFERENCE / "keys-v15-2b.json"
# Optional extra golden cases beside the clone: every folder there is tested too, so a new
# reference case can be dropped in without a code change. Nothing needs it to exist.
EXTRA_GOLDEN = ROOT.parent / "shared" / "acestep15" / "golden"


def golden_cases(kind: str = "golden") -> list:
    """One pytest param per golden case folder: every folder of reference/<kind>/ (id: its name),
    then every folder of ../shared/acestep15/<kind>/ when that exists (id: `shared-<name>`, so a
    case of the same name runs from both places). `kind`: "golden" (2B) or "golden-xl". Hidden
    folders are ignored; an incomplete folder fails."""
    cases = []
    for root, prefix in ((REFERENCE / kind, ""), (EXTRA_GOLDEN.parent / kind, "shared-")):
        if root.is_dir():
            cases += [pytest.param(p, id=prefix + p.name) for p in sorted(root.iterdir())
                      if p.is_dir() and not p.name.startswith(".")]
    return cases


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
