"""Every figure the GPU targets need, in one run, as one JSON file (bench/gpu.sh runs it).

    bash bench/gpu.sh                                 # on a lent GPU: 2B and XL, under 10 minutes
    bash bench/gpu.sh --device cpu --tiny             # the same code on this CPU with tiny models

For each setting a fresh process builds the decoder (random weights, bf16 on CUDA, fp32 on the
CPU) exactly as Side-Step trains it (banded/flash attention, Side-Step's LoRA r64 on q/k/v/o of
both attentions, the checkpointing ratio and policy, optionally nf4 and torch.compile), then
times `--repeats` optimizer steps after `--warmup` ones on a random batch of `--frames` latent
frames. It records the median and spread of the step time, the peak memory and the increment
above the loaded, adapter-wrapped model (max_memory_allocated on CUDA, RSS on the CPU), and the
`--dry-run` forecast of the same setting with measured / forecast. Settings: batch 1 and 4,
checkpointing ratio 1, 0.5 and 0, the selective policy, nf4 (CUDA), --compile (2B), for 2B and
XL (tiny: the tiny 2B and XL test configs).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import time
from pathlib import Path

import torch

from _common import ROOT, machine, peak_rss_gib, pick_device

GIB = 2**30


def settings(device: torch.device, tiny: bool) -> list[dict]:
    cuda = device.type == "cuda"
    runs = []
    for model in ("2b", "xl"):
        runs += [dict(model=model, batch=1, ratio=1.0), dict(model=model, batch=1, ratio=0.5),
                 dict(model=model, batch=1, ratio=1.0, policy="selective"), dict(model=model, batch=4, ratio=1.0)]
        if model == "2b":
            runs += [dict(model=model, batch=1, ratio=0.0), dict(model=model, batch=4, ratio=0.5)]
        if cuda:
            runs.append(dict(model=model, batch=1, ratio=1.0, quantize="nf4"))
    if cuda or tiny:
        runs.append(dict(model="2b", batch=1, ratio=1.0, compile=True))
    return [dict(dict(policy="full", quantize="none", compile=False), **r) for r in runs]


def _model_config(model: str, tiny: bool) -> dict:
    from sidestep.model.configs import RELEASED_2B_CONFIG, RELEASED_XL_CONFIG
    from sidestep.model.tiny import tiny_variant_config

    if tiny:
        return tiny_variant_config("turbo" if model == "2b" else "xl-turbo")
    return RELEASED_2B_CONFIG if model == "2b" else RELEASED_XL_CONFIG


def _memory(device: torch.device) -> float:
    return torch.cuda.max_memory_allocated() / GIB if device.type == "cuda" else peak_rss_gib()


def _child(run: dict, args: dict, queue) -> None:
    import sys

    sys.path.insert(0, str(ROOT))
    from diffusers import AceStepTransformer1DModel

    from sidestep.config import Config
    from sidestep.model.attention import use_fast_attention
    from sidestep.model.checkpointing import enable_checkpointing
    from sidestep.model.loader import transformer_kwargs
    from sidestep.adapters import build_adapter
    from sidestep.train.compile import compile_blocks
    from sidestep.train.forecast import forecast
    from sidestep.train.objective import Objective, flow_matching_loss, sample_generators
    from sidestep.train.quantize import quantize_base

    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()
    device = pick_device(args["device"])
    if device.type == "cpu":
        torch.set_num_threads(args["threads"])  # a fixed thread count: timings comparable between runs
    precision = "bf16" if device.type == "cuda" else "fp32"
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    model_config = _model_config(run["model"], args["tiny"])
    config = Config(rank=64, alpha=128, dropout=0.0, batch_size=run["batch"], gradient_checkpointing=run["ratio"] > 0,
                    gradient_checkpointing_ratio=run["ratio"] or 1.0, checkpointing_policy=run["policy"],
                    quantize_base=run["quantize"], compile=run["compile"])
    predicted = forecast(config, model_config, device, precision, args["frames"], args["cond"])

    torch.manual_seed(0)
    with torch.device(device):
        decoder = AceStepTransformer1DModel(**transformer_kwargs(model_config)).to(dtype)
    decoder.requires_grad_(False)
    use_fast_attention(decoder, device)
    quantize_base(decoder, run["quantize"], device, "lora")
    adapter = build_adapter(config, decoder)
    if run["ratio"] > 0:
        enable_checkpointing(decoder, run["ratio"], run["policy"])
    if run["compile"]:
        compile_blocks(decoder, device, static_shapes=True)
    decoder.train()
    optimizer = torch.optim.AdamW(adapter.parameters(), lr=1e-4, fused=device.type == "cuda")
    # the condition arrives at the condition encoder's width (XL: narrower than the decoder)
    B, T, L, D = run["batch"], args["frames"], args["cond"], model_config.get("encoder_hidden_size",
                                                                                model_config["hidden_size"])
    g = torch.Generator().manual_seed(1)
    batch = {"target_latents": torch.randn(B, T, 64, generator=g).to(device, dtype),
             "encoder_hidden_states": torch.randn(B, L, D, generator=g).to(device, dtype),
             "context_latents": torch.randn(B, T, 128, generator=g).to(device, dtype)}
    null = torch.zeros(1, 1, D, device=device, dtype=dtype)
    objective = Objective("fixed")
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    loaded = torch.cuda.memory_allocated() / GIB if device.type == "cuda" else peak_rss_gib()
    times = []
    for i in range(args["warmup"] + args["repeats"]):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        loss, _ = flow_matching_loss(decoder, batch, objective, sample_generators(0, i, list(range(B)), device),
                                     null, input_requires_grad=run["ratio"] > 0)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= args["warmup"]:
            times.append(time.perf_counter() - start)
    peak = _memory(device)
    parts = predicted.gib()
    predicted_increment = parts["total"] - parts.get("baseline", 0.0) - parts["weights"]
    queue.put(dict(run, frames=T, cond=L, device=str(device), precision=precision,
                   step_s_median=round(statistics.median(times), 4),
                   step_s_spread=round(max(times) - min(times), 4), steps_timed=len(times),
                   samples_per_s=round(B / statistics.median(times), 3),
                   peak_gib=round(peak, 3), loaded_gib=round(loaded, 3), increment_gib=round(peak - loaded, 3),
                   forecast_gib=parts["total"], forecast_increment_gib=round(predicted_increment, 3),
                   measured_over_forecast=round(peak / parts["total"], 3) if parts["total"] else None))


def measure(run: dict, args: dict, device: torch.device) -> dict:
    # CUDA needs a fresh interpreter per setting; on the CPU a fork skips the imports (seconds each)
    ctx = mp.get_context("spawn" if device.type == "cuda" else "fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(run, args, queue))
    proc.start()
    proc.join()
    if proc.exitcode != 0 or queue.empty():
        return dict(run, error=f"the measuring process failed (exit code {proc.exitcode}; out of memory?)")
    return queue.get()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto")
    p.add_argument("--tiny", action="store_true", help="the tiny 2B/XL test configs (a quick check on the CPU)")
    p.add_argument("--frames", type=int, default=None, help="latent frames (default: 1500 = 60 s; tiny: 100)")
    p.add_argument("--cond", type=int, default=None, help="condition tokens (default 300; tiny: 20)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads per measurement (default 1)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", default=str(ROOT / "bench" / "out" / "gpu.json"))
    a = p.parse_args()
    device = pick_device(a.device)
    if device.type != "cuda":  # imported once here, inherited by every forked measurement
        import diffusers  # noqa: F401
        import peft  # noqa: F401
    args = dict(device=a.device, tiny=a.tiny, frames=a.frames or (100 if a.tiny else 1500),
                cond=a.cond or (20 if a.tiny else 300), threads=a.threads, warmup=a.warmup, repeats=a.repeats)
    started = time.perf_counter()
    results = []
    for run in settings(device, a.tiny):
        results.append(measure(run, args, device))
        print(json.dumps(results[-1]), flush=True)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": machine(), "torch": torch.__version__, "seconds": round(
        time.perf_counter() - started, 1), "settings": args, "results": results}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
