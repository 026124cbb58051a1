"""Forward + backward time and peak memory of the DiT decoder at a given config.

    uv run python bench/model_step.py                      # medium config, CPU here
    uv run python bench/model_step.py --config 2b          # released 2B config (GPU)

Prints one JSON line. All decoder weights take gradients (an upper bound for adapter
training, which issue 9's bench/train_step.py measures separately).
"""

from __future__ import annotations

import argparse

import torch

from _common import MEDIUM_CONFIG, emit, peak_rss_gib, pick_device, timed
from sidestep.model.configs import RELEASED_2B_CONFIG, load_config_file
from sidestep.model.loader import build_modules


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--config", default=str(MEDIUM_CONFIG), help="config.json path, or '2b'")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--frames", type=int, default=750, help="latent frames (25 per second)")
    p.add_argument("--cond", type=int, default=300, help="condition tokens")
    p.add_argument("--checkpointing", action="store_true")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto", choices=("auto", "fp32", "bf16"))
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()

    device = pick_device(args.device)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}.get(
        args.dtype, torch.bfloat16 if device.type == "cuda" else torch.float32)
    config = RELEASED_2B_CONFIG if args.config == "2b" else load_config_file(args.config)
    torch.manual_seed(0)
    model = build_modules(config, device="cpu")["transformer"].to(device=device, dtype=dtype).train()
    if args.checkpointing:
        model.enable_gradient_checkpointing()
    B, T, L = args.batch, args.frames, args.cond
    x = torch.randn(B, T, 64, device=device, dtype=dtype)
    ctx = torch.randn(B, T, 128, device=device, dtype=dtype)
    enc = torch.randn(B, L, config.get("encoder_hidden_size", config["hidden_size"]), device=device, dtype=dtype)
    t = torch.rand(B, device=device, dtype=dtype)

    def step():
        model.zero_grad(set_to_none=True)
        out = model(hidden_states=x, timestep=t, timestep_r=t, encoder_hidden_states=enc, context_latents=ctx).sample
        out.float().square().mean().backward()

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    seconds = timed(step, args.warmup, args.repeats, device)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else peak_rss_gib()
    emit(dict(bench="model_step", config=args.config, device=str(device), dtype=str(dtype).split(".")[-1],
              batch=B, frames=T, cond=L, checkpointing=args.checkpointing,
              params=sum(p.numel() for p in model.parameters()), fwd_bwd_s=round(seconds, 4),
              peak_mem_gib=round(peak, 3), peak_kind="cuda_allocated" if device.type == "cuda" else "rss",
              tokens_per_s=round(B * T / seconds, 1)))


if __name__ == "__main__":
    main()
