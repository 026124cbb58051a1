"""Peak RSS of loading a random full-size checkpoint (2B or XL) with our loader vs. a naive load.

    uv run python bench/load_rss.py [--model 2b|xl] [--dir DIR] [--baseline]

Writes a random `acestep-v15-turbo` (2B, one `model.safetensors`, about 4.8 GB) or
`acestep-v15-xl-turbo` folder (XL, 4.99 B parameters in 4 shards + `model.safetensors.index.json`,
about 10 GB) with the released config and key names in bf16 (kept for reruns), then loads it in a
fresh subprocess per method and reports each child's peak RSS. "ours" builds on meta and assigns
the file's tensors; "naive" builds the modules on the CPU in fp32, reads the whole file and copies
it in (2B only: for XL that is about 20 GiB of fp32 modules). One JSON line.
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


XL_SHARDS = 4
DEFAULT_DIRS = {"2b": "/tmp/sidestep-2b/acestep-v15-turbo", "xl": "/tmp/sidestep-xl/acestep-v15-xl-turbo"}


def _random(shape, gen) -> torch.Tensor:
    return (torch.randn(shape, generator=gen) * 0.02).to(torch.bfloat16)


def write_random_checkpoint(folder: Path, model: str = "2b") -> None:
    from safetensors.torch import save_file

    from sidestep.model.configs import RELEASED_2B_CONFIG, RELEASED_XL_CONFIG
    from sidestep.model.loader import expected_official_shapes, has_weights
    from sidestep.model.tiny import shard_name, split_into_shards, write_index

    if has_weights(folder):
        return
    config = RELEASED_XL_CONFIG if model == "xl" else RELEASED_2B_CONFIG
    folder.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(0)
    shapes = expected_official_shapes(config)
    if model == "xl":  # the released layout; one shard's tensors in memory at a time
        groups = split_into_shards(shapes, XL_SHARDS, 2)
        for i, keys in enumerate(groups, 1):
            tensors = {k: _random(shapes[k], gen) for k in keys}
            save_file(tensors, str(folder / shard_name(i, len(groups))), metadata={"format": "pt"})
            del tensors
        write_index(folder, groups, sum(2 * torch.Size(s).numel() for s in shapes.values()))
    else:
        tensors = {k: _random(s, gen) for k, s in shapes.items()}
        save_file(tensors, str(folder / "model.safetensors"))
        del tensors
    (folder / "config.json").write_text(json.dumps(config))


def kept_weights_gib(folder: Path) -> float:
    """bf16 bytes of what `load_dit` keeps (decoder + condition encoder; the audio tokenizers stay on disk)."""
    from sidestep.model.loader import build_modules

    modules = build_modules(json.loads((folder / "config.json").read_text()))
    return sum(p.numel() * 2 for name in ("transformer", "condition_encoder")
               for p in modules[name].parameters()) / 2**30


def weights_gib(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.glob("model*.safetensors")) / 2**30


CHILD = {
    "ours": "from sidestep.model.loader import load_dit; import torch; "
            "d = load_dit(sys.argv[1], dtype=torch.bfloat16)",
    # safetensors may hand out tensors backed by the file's pages, read on first use: touch every
    # weight (as the first forward does) so the figure counts all of them resident.
    "ours_touched": "from sidestep.model.loader import load_dit; import torch; "
                    "d = load_dit(sys.argv[1], dtype=torch.bfloat16); "
                    "[torch.sum(p, dtype=torch.float32) for m in (d.transformer, d.condition_encoder) "
                    "for p in m.parameters()]",
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
    p.add_argument("--model", choices=("2b", "xl"), default="2b")
    p.add_argument("--dir", default=None,
                   help="where the random checkpoint is written (default: /tmp/sidestep-<model>/...)")
    p.add_argument("--baseline", action="store_true", help="also measure the naive load (2B only)")
    args = p.parse_args()
    if args.baseline and args.model == "xl":
        p.error("--baseline needs about 20 GiB of fp32 modules for XL; measure it on 2B")
    folder = Path(args.dir or DEFAULT_DIRS[args.model])
    write_random_checkpoint(folder, args.model)
    record = dict(bench="load_rss", model=args.model, checkpoint_gib=round(weights_gib(folder), 3),
                  files=len(list(folder.glob("model*.safetensors"))))
    record["kept_weights_gib"] = round(kept_weights_gib(folder), 3)
    for method in ("ours", "ours_touched", "naive") if args.baseline else ("ours", "ours_touched"):
        rss, seconds = measure(method, folder)
        record[f"{method}_peak_rss_gib"] = round(rss, 3)
        record[f"{method}_load_s"] = round(seconds, 2)
    if args.baseline:
        record["ratio_ours_naive"] = round(record["ours_peak_rss_gib"] / record["naive_peak_rss_gib"], 3)
    emit(record)


if __name__ == "__main__":
    main()
