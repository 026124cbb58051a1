"""Peak RSS of each preprocessing pass with full-size random models.

    uv run python bench/preprocess_memory.py [--root /tmp/sidestep-preprocess-bench] [--no-combined]

Writes a checkpoints root with random weights at the released sizes: the Oobleck VAE at
full width (fp32 safetensors, as diffusers saves it), a Qwen3-Embedding-0.6B-shaped Qwen3Model
(bf16 on disk) with the tiny test tokenizer, and the 2B DiT with the released config and key
names (bf16 on disk, `bench/load_rss.py`'s writer; an existing one at --dit-dir is reused).
Then it preprocesses one 30 s stereo clip, each pass in its own subprocess (so each peak is
that pass's alone), and, unless --no-combined, both passes in one process as the CLI runs
them. Models are computed in --precision (default fp32: bf16 convolutions are ~15x slower
on a CPU). Each child lists the big models alive (found with gc) right after its pass
loaded its models. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from _common import ROOT, emit

BIG_MODELS = ("AutoencoderOobleck", "Qwen3Model", "AceStepTransformer1DModel", "AceStepConditionEncoder")
FULL_VAE = dict(encoder_hidden_size=128, downsampling_ratios=[2, 4, 4, 6, 10], channel_multiples=[1, 2, 4, 8, 16],
                decoder_channels=128, decoder_input_channels=64, audio_channels=2, sampling_rate=48000)
QWEN3_EMBEDDING_06B = dict(vocab_size=151669, hidden_size=1024, intermediate_size=3072, num_hidden_layers=28,
                           num_attention_heads=16, num_key_value_heads=8, head_dim=128,
                           max_position_embeddings=32768, rope_theta=1_000_000, tie_word_embeddings=True)


def write_root(root: Path, dit_dir: Path) -> None:
    from diffusers import AutoencoderOobleck
    from transformers import Qwen3Config, Qwen3Model

    from load_rss import write_random_checkpoint
    from sidestep.model.tiny import build_tokenizer

    root.mkdir(parents=True, exist_ok=True)
    if not (root / "vae" / "config.json").is_file():
        torch.manual_seed(0)
        AutoencoderOobleck(**FULL_VAE).save_pretrained(root / "vae")
    text_dir = root / "Qwen3-Embedding-0.6B"
    if not (text_dir / "config.json").is_file():
        tokenizer = build_tokenizer()
        torch.manual_seed(0)
        config = Qwen3Config(**QWEN3_EMBEDDING_06B, pad_token_id=tokenizer.pad_token_id,
                             eos_token_id=tokenizer.eos_token_id)
        Qwen3Model(config).to(torch.bfloat16).save_pretrained(text_dir)
        tokenizer.save_pretrained(text_dir)
    write_random_checkpoint(dit_dir)
    link = root / "acestep-v15-turbo"
    if not link.exists():
        link.symlink_to(dit_dir.resolve())
    if not (root / "silence_latent.pt").is_file():
        torch.save(torch.randn(1, 64, 15000, generator=torch.Generator().manual_seed(0)) * 0.1,
                   root / "silence_latent.pt")
    audio = root / "audio"
    if not (audio / "clip30s.wav").is_file():
        import soundfile as sf

        audio.mkdir(exist_ok=True)
        t = np.arange(48000 * 30) / 48000
        left = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * np.random.default_rng(0).standard_normal(t.size)
        sf.write(audio / "clip30s.wav", np.stack([left, np.roll(left, 300)], 1).astype(np.float32), 48000)


def _alive() -> list[dict]:
    """The big models alive in this process right now."""
    found = []
    for obj in gc.get_objects():
        if isinstance(obj, torch.nn.Module) and type(obj).__name__ in BIG_MODELS:
            found.append(dict(model=type(obj).__name__, params_m=round(sum(p.numel() for p in obj.parameters()) / 1e6,
                                                                         1)))
    return sorted(found, key=lambda m: m["model"])


def _rss_gib() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize() / 2**30


def child(root: Path, passes: tuple[int, ...], precision: str) -> None:
    """Run the given passes; print one JSON line about this process."""
    from rich.console import Console

    from sidestep.config import Config
    from sidestep.data.preprocess import preprocess_dataset

    record: dict = dict(passes=list(passes), rss_after_imports_gib=round(_rss_gib(), 3), resident={}, seconds={})
    started: dict[int, float] = {}

    def on_event(name: str, info: dict) -> None:
        p = info["pass"]
        if name == "pass_start":
            started[p] = time.perf_counter()
            record["resident"][f"pass{p}_start"] = _alive()
        elif name == "loaded":
            record["resident"][f"pass{p}_loaded"] = _alive()
            record[f"pass{p}_rss_after_load_gib"] = round(_rss_gib(), 3)
        elif name == "pass_end":
            record["seconds"][f"pass{p}"] = round(time.perf_counter() - started[p], 1)

    config = Config(checkpoint_dir=str(root), audio_dir=str(root / "audio"), tensor_output=str(root / "out"),
                    device="cpu", precision=precision)
    preprocess_dataset(config, console=Console(file=sys.stderr), on_event=on_event, passes=passes)
    record["peak_rss_gib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3)
    print(json.dumps(record), flush=True)


def measure(root: Path, passes: str, precision: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", passes, "--root", str(root), "--precision", precision],
                         check=True, capture_output=True, text=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default="/tmp/sidestep-preprocess-bench")
    p.add_argument("--dit-dir", default="/tmp/sidestep-2b/acestep-v15-turbo",
                   help="random 2B DiT folder (written if absent; shared with bench/load_rss.py)")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    p.add_argument("--no-combined", action="store_true", help="skip the both-passes-in-one-process run")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    root = Path(args.root)
    if args.child:
        child(root, tuple(int(c) for c in args.child), args.precision)
        return
    write_root(root, Path(args.dit_dir))
    shutil.rmtree(root / "out", ignore_errors=True)
    pass1 = measure(root, "1", args.precision)
    pass2 = measure(root, "2", args.precision)  # picks up pass 1's intermediates
    record = dict(bench="preprocess_memory", clip_seconds=30, precision=args.precision, weights_on_disk=dict(
        vae="fp32", text_encoder="bf16", dit="bf16"),
        pass1_peak_rss_gib=pass1["peak_rss_gib"], pass2_peak_rss_gib=pass2["peak_rss_gib"],
        pass1_resident=[m["model"] for m in pass1["resident"]["pass1_loaded"]],
        pass2_resident=[m["model"] for m in pass2["resident"]["pass2_loaded"]],
        pass1_seconds=pass1["seconds"].get("pass1"), pass2_seconds=pass2["seconds"].get("pass2"),
        rss_after_imports_gib=pass1["rss_after_imports_gib"], details=dict(pass1=pass1, pass2=pass2))
    for p in ("pass1", "pass2"):  # throughput: seconds of audio preprocessed per wall-clock second
        if record[f"{p}_seconds"]:
            record[f"{p}_audio_s_per_s"] = round(30 / record[f"{p}_seconds"], 3)
    if not args.no_combined:
        shutil.rmtree(root / "out", ignore_errors=True)
        both = measure(root, "12", args.precision)
        record.update(combined_peak_rss_gib=both["peak_rss_gib"],
                      combined_resident_at_pass2_start=[m["model"] for m in both["resident"]["pass2_start"]],
                      combined_resident_in_pass2=[m["model"] for m in both["resident"]["pass2_loaded"]])
        record["details"]["combined"] = both
    emit(record)


if __name__ == "__main__":
    main()
