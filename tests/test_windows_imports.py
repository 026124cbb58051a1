"""Windows: no module of the package imports a POSIX-only module (`resource`, `fcntl`, `termios`, `pty`)
at import time, and a training run works without them.

A subprocess refuses those imports when a `sidestep` module asks for them (an `import` statement or
`importlib.import_module`), imports every module of the package, then trains the tiny model through
the CLI. Third-party libraries keep their imports: on Windows they take their own branches, which
this Linux process cannot imitate; what is checked is our code.
"""

import os
import subprocess
import sys
from pathlib import Path

from helpers import write_tensor_dataset
from sidestep.model.loader import load_dit

REPO = Path(__file__).resolve().parents[1]
POSIX_ONLY = ("resource", "fcntl", "termios", "pty")

CHILD = r"""
import builtins, importlib, pkgutil, sys

POSIX_ONLY = {posix_only!r}
refused = []


def _ours(module_globals):
    return (module_globals or {{}}).get("__name__", "").split(".")[0] == "sidestep"


def _refuse(name, module_globals):
    if name.split(".")[0] in POSIX_ONLY and _ours(module_globals):
        refused.append((module_globals["__name__"], name))
        raise ModuleNotFoundError(f"No module named {{name!r}} (POSIX-only, refused as on Windows)", name=name)


_import = builtins.__import__
_import_module = importlib.import_module


def blocking_import(name, globals=None, locals=None, fromlist=(), level=0):
    if level == 0:
        _refuse(name, globals)
    return _import(name, globals, locals, fromlist, level)


def blocking_import_module(name, package=None):
    _refuse(name, sys._getframe(1).f_globals)
    return _import_module(name, package)


builtins.__import__ = blocking_import
importlib.import_module = blocking_import_module

import sidestep

failed = []
for info in pkgutil.walk_packages(sidestep.__path__, "sidestep."):
    try:
        _import_module(info.name)
    except Exception as err:
        failed.append(f"{{info.name}}: {{type(err).__name__}}: {{err}}")
imported_at_start = sorted(set(refused))
print("MODULES", len(list(pkgutil.walk_packages(sidestep.__path__, "sidestep."))))
if failed or imported_at_start:
    print("IMPORT FAILURES", failed, imported_at_start)
    sys.exit(3)

from sidestep.cli.main import main

code = main(sys.argv[1:])
print("REFUSED DURING RUN", sorted(set(refused)))
sys.exit(code)
"""


def test_every_module_imports_and_a_run_trains_without_posix_modules(tiny_root_readonly, tmp_path):
    silence = load_dit(tiny_root_readonly / "acestep-v15-turbo").silence_latent()
    dataset = write_tensor_dataset(tmp_path / "ds", n=2, silence=silence)
    out = tmp_path / "out"
    args = ["--plain", "-y", "fixed", "--checkpoint-dir", str(tiny_root_readonly), "--dataset-dir", str(dataset),
            "--output-dir", str(out), "--epochs", "1", "--rank", "4", "--alpha", "8", "--warmup-steps", "0",
            "--num-workers", "0", "--device", "cpu", "--gradient-accumulation", "1"]
    proc = subprocess.run([sys.executable, "-c", CHILD.format(posix_only=POSIX_ONLY), *args], capture_output=True,
                          text=True, timeout=600, cwd=tmp_path, env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert int(proc.stdout.split("MODULES ")[1].split()[0]) > 50  # the walk saw the whole package
    assert (out / "adapter_model.safetensors").is_file()
    assert "mem " in proc.stdout and "? GiB" not in proc.stdout  # the RSS figure came from the fallback
    assert "'resource'" in proc.stdout.split("REFUSED DURING RUN")[1]  # the lazy import was tried and refused


def test_memory_figures_are_unknown_not_an_error_without_resource_or_psutil():
    code = ("import sys; sys.modules.update(resource=None, psutil=None)\n"
            "from sidestep.memory import current_rss, peak_rss\n"
            "print(peak_rss(), current_rss())")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert proc.returncode == 0 and proc.stdout.split() == ["None", "None"], proc.stdout + proc.stderr
    from sidestep.train.monitor import memory_text

    assert memory_text(float("nan")) == "? GiB" and memory_text(1.5) == "1.50 GiB"
