"""Peak RSS of loading a random full-size (2B) checkpoint with our loader vs. a naive load.

    uv run python bench/load_rss.py [--dir /tmp/sidestep-2b] [--baseline]

Writes a random `acestep-v15-turbo` folder with the released config and key names in bf16
(about 4.8 GB; kept for reruns), then loads it in a fresh subprocess per method and reports
each child's peak RSS. "ours" builds on meta and assigns the file's tensors; "naive" builds
the modules on the CPU in fp32, reads the whole file and copies it in. One JSON line.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

from _common import ROOT, emit


def write_random_checkpoint(folder: Path) -> None:
    from safetensors.torch import save_file

    from sidestep.model.configs import RELEASED_2B_CONFIG
    from sidestep.model.loader import expected_official_shapes

    if (folder / "model.safetensors").is_file():
        return
    folder.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(0)
    tensors = {k: (torch.randn(s, generator=gen) * 0.02).to(torch.bfloat16)
               for k, s in expected_official_shapes(RELEASED_2B_CONFIG).items()}
    save_file(tensors, str(folder / "model.safetensors"))
    del tensors
    (folder / "config.json").write_text(json.dumps(RELEASED_2B_CONFIG))


CHILD = {
    "ours": "from sidestep.model.loader import load_dit; import torch; "
            "d = load_dit(sys.argv[1], dtype=torch.bfloat16)",
    "naive": "from sidestep.model.loader import build_modules; from sidestep.model.keys import official_to_diffusers; "
             "from safetensors.torch import load_file; import json, torch; "
             "cfg = json.load(open(sys.argv[1] + '/config.json')); m = build_modules(cfg, device='cpu'); "
             "sd = load_file(sys.argv[1] + '/model.safetensors'); "
             "[m[a].load_state_dict({n: sd[k]}, strict=False) for k in list(sd) for a, n in [official_to_diffusers(k)]]",
}


def measure(method: str, folder: Path) -> tuple[float, float]:
    code = f"import sys; sys.path.insert(0, {str(ROOT)!r}); import time; t = time.perf_counter(); " + CHILD[method] \
        + "; import resource; print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, time.perf_counter() - t)"
    out = subprocess.run([sys.executable, "-c", code, str(folder)], check=True, capture_output=True, text=True)
    kib, seconds = out.stdout.split()[-2:]
    return int(kib) / 2**20, float(seconds)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--dir", default="/tmp/sidestep-2b/acestep-v15-turbo")
    p.add_argument("--baseline", action="store_true", help="also measure the naive load")
    args = p.parse_args()
    folder = Path(args.dir)
    write_random_checkpoint(folder)
    file_gib = (folder / "model.safetensors").stat().st_size / 2**30
    record = dict(bench="load_rss", checkpoint_gib=round(file_gib, 3))
    for method in ("ours", "naive") if args.baseline else ("ours",):
        rss, seconds = measure(method, folder)
        record[f"{method}_peak_rss_gib"] = round(rss, 3)
        record[f"{method}_load_s"] = round(seconds, 2)
    if args.baseline:
        record["ratio_ours_naive"] = round(record["ours_peak_rss_gib"] / record["naive_peak_rss_gib"], 3)
    emit(record)


if __name__ == "__main__":
    main()
