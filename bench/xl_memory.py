"""A full-size ACE-Step XL training step (random weights) against the `--dry-run` forecast.

    uv run python bench/xl_memory.py --seconds 10                      # this CPU, bf16, checkpointing on
    uv run python bench/xl_memory.py --forecast-only --device cuda --seconds 60          # the 16 GiB target
    uv run python bench/xl_memory.py --forecast-only --device cuda --seconds 60 --quantize-base nf4  # 10 GiB
    uv run python bench/xl_memory.py --device cuda --seconds 60 && \\
        uv run python bench/xl_memory.py --device cuda --seconds 60 --quantize-base nf4   # verify on a GPU

The run being forecast is XL LoRA r64 / alpha 128 on q/k/v/o of self and cross attention (256 modules),
batch 1, 769 condition tokens, Config's defaults otherwise (AdamW, LoRA dropout 0.1). A fresh process
computes `sidestep.train.forecast.forecast` (no weights), then builds the released XL decoder
(`RELEASED_XL_CONFIG`) directly in the compute dtype with random weights and takes `--steps` training
steps the way the Trainer does (fast attention, optional nf4 base, Side-Step's adapter, gradient
checkpointing, `flow_matching_loss` under autocast, the run's optimizer). Measured: peak RSS on the CPU
(so it includes the libraries, as the CPU forecast does), `max_memory_allocated` on CUDA. One JSON line.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import time

import torch

from _common import emit, peak_rss_gib, pick_device

LATENT_RATE = 25


def _config(args: dict):
    from sidestep.config import Config

    return Config(rank=args["rank"], alpha=2 * args["rank"], precision=args["precision"], device=args["device"],
                  gradient_checkpointing=args["checkpointing"], quantize_base=args["quantize_base"], batch_size=1)


def _forecast(args: dict):
    from sidestep.model.configs import RELEASED_XL_CONFIG
    from sidestep.train.forecast import forecast

    frames = round(args["seconds"] * LATENT_RATE)
    return forecast(_config(args), RELEASED_XL_CONFIG, pick_device(args["device"]), args["precision"], frames,
                    args["cond"])


def _child(args: dict, queue) -> None:
    import sys

    from _common import ROOT
    sys.path.insert(0, str(ROOT))
    from sidestep.model.attention import use_fast_attention
    from sidestep.model.configs import RELEASED_XL_CONFIG
    from sidestep.model.loader import build_modules
    from sidestep.runtime import TORCH_DTYPE
    from sidestep.adapters import build_adapter
    from sidestep.train.objective import Objective, flow_matching_loss, sample_generators
    from sidestep.train.optim import build_optimizer
    from sidestep.train.quantize import quantize_base

    predicted = _forecast(args)
    config, device, dtype = _config(args), pick_device(args["device"]), TORCH_DTYPE[args["precision"]]
    started = time.perf_counter()
    torch.manual_seed(0)
    torch.set_default_dtype(dtype)  # built in the compute dtype: no fp32 copy of 4 B weights ever exists
    decoder = build_modules(RELEASED_XL_CONFIG, device=device)["transformer"]
    torch.set_default_dtype(torch.float32)
    decoder.requires_grad_(False)
    use_fast_attention(decoder, device)
    quantize_base(decoder, config.quantize_base, device, config.adapter_type)
    adapter = build_adapter(config, decoder)
    if config.gradient_checkpointing:
        decoder.enable_gradient_checkpointing()
    decoder.train()
    optimizer = build_optimizer(config.optimizer_type, adapter.parameters(), config.learning_rate,
                                config.weight_decay, device)
    build_s = time.perf_counter() - started
    T, L, width = round(args["seconds"] * LATENT_RATE), args["cond"], RELEASED_XL_CONFIG["encoder_hidden_size"]
    g = torch.Generator().manual_seed(1)
    batch = {"target_latents": torch.randn(1, T, 64, generator=g).to(device, dtype),
             "encoder_hidden_states": torch.randn(1, L, width, generator=g).to(device, dtype),
             "context_latents": torch.randn(1, T, 128, generator=g).to(device, dtype)}
    null = torch.zeros(1, 1, width, device=device, dtype=dtype)
    objective = Objective("fixed")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for i in range(args["steps"]):
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=dtype, enabled=args["precision"] != "fp32"):
            loss, _ = flow_matching_loss(decoder, batch, objective, sample_generators(0, i, [0], device), null,
                                         input_requires_grad=config.gradient_checkpointing)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else peak_rss_gib()
    queue.put(dict(forecast=predicted.gib(), notes=predicted.notes, measured_gib=peak, loss=float(loss),
                   build_s=build_s, step_s=times, adapter_modules=len(adapter.modules)))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="bf16", choices=("bf16", "fp32"))
    p.add_argument("--seconds", type=float, default=10.0, help="clip length (25 latent frames per second)")
    p.add_argument("--cond", type=int, default=769, help="condition tokens")
    p.add_argument("--rank", type=int, default=64)
    p.add_argument("--checkpointing", default="on", choices=("on", "off"))
    p.add_argument("--quantize-base", default="none", choices=("none", "nf4"))
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--forecast-only", action="store_true", help="print the forecast; load nothing")
    a = p.parse_args()
    device = pick_device(a.device)
    args = dict(device=str(device), precision=a.precision, seconds=a.seconds, cond=a.cond, rank=a.rank,
                checkpointing=a.checkpointing == "on", quantize_base=a.quantize_base, steps=a.steps)
    record = dict(bench="xl_memory", model="ACE-Step XL (RELEASED_XL_CONFIG), random weights", **args)
    if a.forecast_only:
        predicted = _forecast(args)
        emit(dict(record, forecast_gib=predicted.gib()["total"], parts=predicted.gib(),
                  trainable_params=predicted.notes["trainable_params"], base_params=predicted.notes["base_params"]))
        return
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(args, queue))
    proc.start()
    result = queue.get()
    proc.join()
    total = result["forecast"]["total"]
    emit(dict(record, forecast_gib=total, measured_gib=round(result["measured_gib"], 3),
              ratio_forecast_measured=round(total / result["measured_gib"], 3), parts=result["forecast"],
              adapter_modules=result["adapter_modules"], loss=round(result["loss"], 4),
              build_s=round(result["build_s"], 1), step_s=[round(s, 1) for s in result["step_s"]],
              load_average=[round(x, 1) for x in os.getloadavg()], cpus=os.cpu_count()))


if __name__ == "__main__":
    main()
