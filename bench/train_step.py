"""One full training step (forward, backward, optimizer), ours vs. the stock path, same run.

    uv run python bench/train_step.py                       # medium config on this CPU
    uv run python bench/train_step.py --config 2b --frames 1500 --batches 1 --checkpointing on

stock = diffusers' AceStepTransformer1DModel with its default attention processor (dense
sliding mask) + plain PEFT LoRA (`add_adapter`) + torch AdamW defaults.
ours  = the same decoder as Side-Step trains it: banded sliding attention (or flash-attn's window
        on CUDA when installed), Side-Step's LoRA adapter and loss, fused AdamW on CUDA,
        optionally `--compile` (torch.compile of each decoder block).
Each variant runs in its own process so peak memory (RSS on CPU, max_memory_allocated on CUDA)
is its own. LoRA r64 on q/k/v/o of self and cross attention. FLOPs are analytic (matmuls +
attention) for forward + input-gradient backward (frozen base: no weight gradients; recompute
under checkpointing not counted); MFU divides by the device's peak: a measured large-matmul
rate on CPU, the datasheet dense bf16 figure on known GPUs. One JSON line per setting.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import time

import torch

from _common import MEDIUM_CONFIG, emit, machine, peak_rss_gib, pick_device

GPU_PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "4090": 165.0}


def analytic_flops(config: dict, batch: int, frames: int, cond: int) -> float:
    """Forward FLOPs of the decoder (2 per multiply-add), times 2 for the input-gradient backward."""
    D, layers = config["hidden_size"], config["num_hidden_layers"]
    H, KV, hd, I = config["num_attention_heads"], config["num_key_value_heads"], config["head_dim"], \
        config["intermediate_size"]
    Tp = -(-frames // config["patch_size"])
    w = config["sliding_window"]
    q_o = 2 * D * H * hd
    k_v = 2 * D * KV * hd
    per_layer = Tp * (q_o + k_v) + Tp * q_o + cond * k_v + 3 * Tp * D * I  # self, cross (q,o on Tp; k,v on L), MLP
    attn = 0
    for kind in config["layer_types"]:
        keys = min(2 * w + 1, Tp) if kind == "sliding_attention" else Tp
        attn += 4 * Tp * keys * H * hd + 4 * Tp * cond * H * hd
    io = Tp * (config["in_channels"] * config["patch_size"] * D + D * 64 * config["patch_size"]) + cond * D * D
    forward = 2 * (layers * per_layer + io) + attn
    return 2.0 * forward * batch


def peak_tflops(device: torch.device) -> tuple[float, str]:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(0)
        for key, value in GPU_PEAK_TFLOPS.items():
            if key in name:
                return value, "datasheet dense bf16"
    a = torch.randn(2048, 2048)
    b = torch.randn(2048, 2048)
    for _ in range(2):
        a @ b
    start = time.perf_counter()
    for _ in range(5):
        a @ b
    seconds = (time.perf_counter() - start) / 5
    return 2 * 2048**3 / seconds / 1e12, "measured fp32 2048^3 matmul"


def _child(variant: str, args: dict, queue) -> None:
    import sys

    from _common import ROOT
    sys.path.insert(0, str(ROOT))
    from sidestep.model.configs import RELEASED_2B_CONFIG, load_config_file
    from sidestep.model.loader import build_modules
    from sidestep.train.objective import Objective, flow_matching_loss, sample_generators

    device = pick_device(args["device"])
    bf16 = device.type == "cuda"
    dtype = torch.bfloat16 if bf16 else torch.float32
    config = RELEASED_2B_CONFIG if args["config"] == "2b" else load_config_file(args["config"])
    torch.manual_seed(0)
    decoder = build_modules(config, device="cpu")["transformer"].to(device=device, dtype=dtype)
    decoder.requires_grad_(False)
    if variant == "stock":
        from peft import LoraConfig

        decoder.add_adapter(LoraConfig(r=64, lora_alpha=128, lora_dropout=0.0,
                                       target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
        params = [p for n, p in decoder.named_parameters() if "lora_" in n]
        for p in params:
            p.data = p.data.float()
        optimizer = torch.optim.AdamW(params, lr=1e-4)
    else:
        from sidestep.model.attention import use_fast_attention
        from sidestep.adapters import select_target_modules
        from sidestep.adapters.lora import Lora as LoraAdapter

        use_fast_attention(decoder, device)
        adapter = LoraAdapter(decoder, select_target_modules(decoder), rank=64, alpha=128, dropout=0.0)
        params = adapter.parameters()
        optimizer = torch.optim.AdamW(params, lr=1e-4, fused=device.type == "cuda")
        if args["compile"]:
            for layer in decoder.layers:
                layer.compile()
    if args["checkpointing"]:
        decoder.enable_gradient_checkpointing()
    decoder.train()
    B, T, L = args["batch"], args["frames"], args["cond"]
    g = torch.Generator().manual_seed(1)
    batch = {"target_latents": torch.randn(B, T, 64, generator=g).to(device, dtype),
             "encoder_hidden_states": torch.randn(B, L, config["hidden_size"], generator=g).to(device, dtype),
             "context_latents": torch.randn(B, T, 128, generator=g).to(device, dtype)}
    null = torch.zeros(1, 1, config["hidden_size"], device=device, dtype=dtype)
    objective = Objective("fixed")

    def step(i: int) -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss, _ = flow_matching_loss(decoder, batch, objective, sample_generators(0, i, range(B), device), null,
                                         input_requires_grad=args["checkpointing"])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    times = []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for i in range(args["warmup"] + args["repeats"]):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        step(i)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= args["warmup"]:
            times.append(time.perf_counter() - start)
    times.sort()
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else peak_rss_gib()
    queue.put({"seconds": times[len(times) // 2], "peak_gib": peak})


def measure(variant: str, args: dict) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(variant, args, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(MEDIUM_CONFIG), help="config.json path, or '2b'")
    p.add_argument("--batches", default="1,4", help="comma-separated batch sizes")
    p.add_argument("--frames", type=int, default=750, help="latent frames (25 per second)")
    p.add_argument("--cond", type=int, default=300, help="condition tokens")
    p.add_argument("--checkpointing", default="on,off", help="on, off or on,off")
    p.add_argument("--device", default="auto")
    p.add_argument("--compile", action="store_true", help="also measure ours with --compile")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()

    from sidestep.model.configs import RELEASED_2B_CONFIG, load_config_file

    config = RELEASED_2B_CONFIG if args.config == "2b" else load_config_file(args.config)
    device = pick_device(args.device)
    peak, peak_source = peak_tflops(device)
    for ckpt in args.checkpointing.split(","):
        for batch in map(int, args.batches.split(",")):
            common = dict(config=args.config, device=args.device, batch=batch, frames=args.frames, cond=args.cond,
                          checkpointing=ckpt == "on", warmup=args.warmup, repeats=args.repeats, compile=False)
            stock = measure("stock", common)
            ours = measure("ours", common)
            flops = analytic_flops(config, batch, args.frames, args.cond)
            record = dict(bench="train_step", config=args.config.split("/")[-1], batch=batch, frames=args.frames,
                          cond=args.cond, checkpointing=ckpt == "on", device=str(device),
                          stock_s=round(stock["seconds"], 4), ours_s=round(ours["seconds"], 4),
                          ratio_ours_stock=round(ours["seconds"] / stock["seconds"], 3),
                          stock_peak_gib=round(stock["peak_gib"], 3), ours_peak_gib=round(ours["peak_gib"], 3),
                          tokens_per_s_ours=round(batch * args.frames / ours["seconds"], 1),
                          tokens_per_s_stock=round(batch * args.frames / stock["seconds"], 1),
                          model_tflop=round(flops / 1e12, 4), peak_tflops=round(peak, 2), peak_source=peak_source,
                          mfu_ours=round(flops / ours["seconds"] / (peak * 1e12), 4),
                          mfu_stock=round(flops / stock["seconds"] / (peak * 1e12), 4))
            if args.compile:
                compiled = measure("ours", dict(common, compile=True, warmup=max(args.warmup, 2)))
                record.update(ours_compile_s=round(compiled["seconds"], 4),
                              ratio_compile_stock=round(compiled["seconds"] / stock["seconds"], 3))
            emit(record)


if __name__ == "__main__":
    main()
