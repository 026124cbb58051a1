"""One training step (data, forward, backward, optimizer), ours vs. the stock and reference paths.

    uv run python bench/train_step.py                                   # medium config, 60 s, batch 1 and 4
    uv run python bench/train_step.py --frames 750,1500 --batches 1 --ratios 0,0.25,0.5,0.75,1
    uv run --with einops --with vector-quantize-pytorch python bench/train_step.py \\
        --reference-code path/to/acestep-v15-turbo                      # adds upstream's own model code
    uv run python bench/train_step.py --config 2b --device cuda --threads 8

Variants (LoRA r64, alpha 128, on q/k/v/o of self and cross attention; AdamW; the fixed-mode loss):
  ours      the decoder as Side-Step trains it: banded sliding attention (flash-attn's window on CUDA
            when installed), Side-Step's adapter, checkpointing through `enable_checkpointing` with
            `--ratios` x `--policies`, fused AdamW on CUDA.
  stock     diffusers' AceStepTransformer1DModel with its default processor (dense sliding mask),
            PEFT's `add_adapter`, diffusers' own gradient checkpointing, torch AdamW defaults.
  reference ACE-Step's upstream modeling code (loaded from --reference-code, never part of Side-Step)
            + PEFT, with upstream's own checkpointing (bench/_reference.py).

Honest timing: every variant runs in its own spawned process with a fixed thread count (`--threads`,
default 1 on the CPU), `--warmup` untimed steps, then `--repeats` (>= 5) timed steps; each step is
split into data (batch assembled and moved), forward (loss), backward and optimizer, synchronised
on CUDA. Reported: median and spread (min, max) of the step, the median of each part, and the CPU
time other processes used during the timed steps (`others_cores`, from /proc/stat) and the time the
hypervisor took from this virtual machine (`steal_cores`: a shared host's other tenants): a run with
`others_cores + steal_cores + threads > cores` is marked `contended` and says nothing about speed. The same
setting measured in two processes can differ by several percent on a shared machine: `--rounds N`
runs every variant N times, interleaved, and reports the median over all rounds' steps, each round's
median, and each round's ours / stock and ours / reference ratios (a round's variants run back to back).
Memory: the peak during the steps and the increment above the loaded, adapter-wrapped model with
its optimizer built (CPU: RSS after a heap trim, peak from VmHWM reset before the first step; CUDA:
memory_allocated and max_memory_allocated). On the CPU glibc's heap keeps freed activations resident,
so the default run's increment includes that slack; `--live-memory` measures with a fixed mmap
threshold, where RSS follows the live tensors (as CUDA's max_memory_allocated does), and its times
are not comparable.
FLOP/s: analytic model FLOPs (matmuls and attention; forward + input-gradient backward; the LoRA
matmuls and checkpointing's recompute are not counted as useful work) over the median step, against
a matmul peak measured here with the same thread count (fp32 2048^3 on CPU, bf16 8192^3 on CUDA).
One JSON line per variant and setting, then one comparison line per setting.
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing as mp
import os
import statistics
import time
from pathlib import Path

import torch

from _common import MEDIUM_CONFIG, current_rss_gib, emit, machine, phase_peak_gib, pick_device, reset_peak, trim_heap

TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]


# -- FLOPs and the machine's matmul peak ------------------------------------------------------------

def analytic_flops(config: dict, batch: int, frames: int, cond: int) -> float:
    """Useful FLOPs of one step: the decoder's forward (2 per multiply-add) and its input-gradient backward."""
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


def matmul_peak_tflops(device: torch.device) -> tuple[float, str]:
    """The best rate of a large square matmul here, with this process's thread count."""
    n, dtype = (8192, torch.bfloat16) if device.type == "cuda" else (2048, torch.float32)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    best = float("inf")
    for i in range(8):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= 2:
            best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e12, f"measured {str(dtype).split('.')[-1]} {n}^3 matmul, {torch.get_num_threads()} threads"


# -- contention: CPU time of other processes while we time -----------------------------------------

def _cpu_jiffies() -> tuple[int, int, int]:
    """(busy jiffies of the machine's own processes, jiffies the hypervisor stole, jiffies of this process)."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        steal = fields[7] if len(fields) > 7 else 0
        # user nice system idle iowait irq softirq steal guest guest_nice: guest time is already in user
        busy = sum(fields[:8]) - fields[3] - (fields[4] if len(fields) > 4 else 0) - steal
        own = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        return busy, steal, int(own[11]) + int(own[12])  # utime, stime
    except (OSError, ValueError, IndexError):
        return 0, 0, 0


# -- the variants -----------------------------------------------------------------------------------

def _model_config(name: str) -> dict:
    from sidestep.model.configs import RELEASED_2B_CONFIG, TINY_DIT_CONFIG, load_config_file

    return {"2b": RELEASED_2B_CONFIG, "tiny": TINY_DIT_CONFIG}.get(name) or load_config_file(name)


def _diffusers_decoder(config: dict, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    from sidestep.model.loader import build_modules

    torch.manual_seed(0)
    decoder = build_modules(config, device="cpu")["transformer"].to(device=device, dtype=dtype)
    decoder.requires_grad_(False)
    return decoder


def setup_ours(config, device, dtype, run):
    from sidestep.adapters import select_target_modules
    from sidestep.adapters.lora import Lora
    from sidestep.model.attention import use_fast_attention
    from sidestep.model.checkpointing import enable_checkpointing
    from sidestep.train.objective import Objective, flow_matching_loss, sample_generators

    decoder = _diffusers_decoder(config, device, dtype)
    use_fast_attention(decoder, device)
    params = Lora(decoder, select_target_modules(decoder), rank=64, alpha=128, dropout=0.0).parameters()
    checkpointed = enable_checkpointing(decoder, run["ratio"], run["policy"]) if run["checkpointing"] else 0
    if run["compile"]:  # as `--compile` does it (shapes are fixed here, so static)
        from sidestep.train.compile import compile_blocks

        compile_blocks(decoder, device, static_shapes=True)
    decoder.train()
    null = torch.zeros(1, 1, config["hidden_size"], device=device, dtype=dtype)
    objective = Objective("fixed")

    def loss(batch, step):
        generators = sample_generators(0, step, range(batch["target_latents"].shape[0]), device)
        return flow_matching_loss(decoder, batch, objective, generators, null, input_requires_grad=checkpointed > 0)[0]
    return loss, params


def setup_stock(config, device, dtype, run):
    from peft import LoraConfig

    from sidestep.train.objective import Objective, flow_matching_loss, sample_generators

    decoder = _diffusers_decoder(config, device, dtype)
    decoder.add_adapter(LoraConfig(r=64, lora_alpha=128, lora_dropout=0.0, target_modules=TARGETS))
    params = [p for n, p in decoder.named_parameters() if "lora_" in n]
    for p in params:
        p.data = p.data.float()
    if run["checkpointing"]:
        decoder.enable_gradient_checkpointing()
    decoder.train()
    null = torch.zeros(1, 1, config["hidden_size"], device=device, dtype=dtype)
    objective = Objective("fixed")

    def loss(batch, step):
        generators = sample_generators(0, step, range(batch["target_latents"].shape[0]), device)
        return flow_matching_loss(decoder, batch, objective, generators, null,
                                  input_requires_grad=run["checkpointing"])[0]
    return loss, params


def setup_reference(config, device, dtype, run):
    from _reference import reference_step_parts

    decoder, forward, _ = reference_step_parts(Path(run["reference_code"]), config, device, dtype,
                                               run["checkpointing"])
    params = [p for p in decoder.parameters() if p.requires_grad]  # the LoRA weights only
    decoder.train()

    def loss(batch, step):
        # the same fixed-mode loss as ours: x_t = t * noise + (1 - t) * x0, target noise - x0
        x0 = batch["target_latents"]
        g = torch.Generator(device=device).manual_seed(step)
        noise = torch.randn(x0.shape, generator=g, device=device, dtype=x0.dtype)
        t = torch.rand(x0.shape[0], generator=g, device=device, dtype=x0.dtype)
        x_t = t.view(-1, 1, 1) * noise + (1 - t.view(-1, 1, 1)) * x0
        pred = forward(x_t, t, batch["encoder_hidden_states"], batch["context_latents"])
        return torch.nn.functional.mse_loss(pred.float(), (noise - x0).float())
    return loss, params


SETUPS = {"ours": setup_ours, "stock": setup_stock, "reference": setup_reference}


# -- one measured run (its own process) -------------------------------------------------------------

def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _memory_now(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.memory_allocated() / 2**30
    gc.collect()
    trim_heap()
    return current_rss_gib()


def _child(run: dict, queue) -> None:
    import sys

    from _common import ROOT
    sys.path.insert(0, str(ROOT))
    torch.set_num_threads(run["threads"])
    device = pick_device(run["device"])
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    config = _model_config(run["config"])
    loss_fn, params = SETUPS[run["variant"]](config, device, dtype, run)
    optimizer = torch.optim.AdamW(params, lr=1e-4, fused=device.type == "cuda" and run["variant"] == "ours")
    B, T, L = run["batch"], run["frames"], run["cond"]
    g = torch.Generator().manual_seed(1)
    samples = [{"target_latents": torch.randn(T, 64, generator=g),
                "encoder_hidden_states": torch.randn(L, config["hidden_size"], generator=g),
                "context_latents": torch.randn(T, 128, generator=g)} for _ in range(B)]
    loaded = _memory_now(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    reset_peak()
    parts = {"data": [], "forward": [], "backward": [], "optimizer": [], "step": []}
    busy0 = steal0 = own0 = 0
    wall0 = 0.0
    for i in range(run["warmup"] + run["repeats"]):
        if i == run["warmup"]:
            busy0, steal0, own0 = _cpu_jiffies()
            wall0 = time.perf_counter()
        _sync(device)
        t0 = time.perf_counter()
        batch = {k: torch.stack([s[k] for s in samples]).to(device, dtype, non_blocking=True) for k in samples[0]}
        _sync(device)
        t1 = time.perf_counter()
        loss = loss_fn(batch, i)
        _sync(device)
        t2 = time.perf_counter()
        loss.backward()
        _sync(device)
        t3 = time.perf_counter()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        _sync(device)
        t4 = time.perf_counter()
        if i >= run["warmup"]:
            for name, seconds in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t4 - t0)):
                parts[name].append(seconds)
    busy1, steal1, own1 = _cpu_jiffies()
    wall = time.perf_counter() - wall0
    hz = os.sysconf("SC_CLK_TCK")
    others = max(0.0, ((busy1 - busy0) - (own1 - own0)) / hz / wall) if device.type == "cpu" else 0.0
    stolen = (steal1 - steal0) / hz / wall if device.type == "cpu" else 0.0
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else phase_peak_gib()
    queue.put({"steps": parts["step"], "parts": {k: statistics.median(v) for k, v in parts.items() if k != "step"},
               "loaded_gib": loaded, "peak_gib": max(peak, loaded), "others_cores": others, "steal_cores": stolen,
               "trainable": sum(p.numel() for p in params)})


# glibc raises its mmap threshold to the size of each large block freed, after which a step's activations
# come from the heap, whose freed middle stays resident: the RSS increment then reads up to 3x the live
# tensors and depends on the order of frees. A fixed threshold (glibc's default, 128 KiB) turns that off, so
# RSS follows the live tensors, at a cost in speed (page faults): --live-memory runs are for memory only.
LIVE_MEMORY_ENV = {"MALLOC_MMAP_THRESHOLD_": "131072"}


def measure(run: dict) -> dict:
    os.environ["OMP_NUM_THREADS"] = str(run["threads"])  # the child's OpenMP pool, before torch loads there
    for key, value in LIVE_MEMORY_ENV.items():
        if run["live_memory"]:
            os.environ[key] = value
        else:
            os.environ.pop(key, None)
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(run, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def merged(results: list[dict]) -> dict:
    """One run's rounds as one result: every timed step, the median of each part, the median increment."""
    increments = sorted(r["peak_gib"] - r["loaded_gib"] for r in results)
    loaded = statistics.median(r["loaded_gib"] for r in results)
    return {"steps": [s for r in results for s in r["steps"]],
            "round_medians": [statistics.median(r["steps"]) for r in results],
            "parts": {k: statistics.median(r["parts"][k] for r in results) for k in results[0]["parts"]},
            "loaded_gib": loaded, "peak_gib": loaded + increments[len(increments) // 2],
            "others_cores": max(r["others_cores"] for r in results),
            "steal_cores": max(r["steal_cores"] for r in results), "trainable": results[0]["trainable"]}


def record(run: dict, result: dict, flops: float, peak_tflops: float) -> dict:
    steps = sorted(result["steps"])
    median = statistics.median(steps)
    cores = os.cpu_count() or 1
    busy = result["others_cores"] + result["steal_cores"] + run["threads"]
    contended = pick_device(run["device"]).type == "cpu" and busy > cores + 0.1
    label = run["variant"] if not run["checkpointing"] or run["variant"] != "ours" else \
        f"ours R={run['ratio']:g} {run['policy']}" + (" compiled" if run["compile"] else "")
    return dict(bench="train_step", variant=run["variant"], label=label, config=Path(run["config"]).name,
                batch=run["batch"], frames=run["frames"], seconds_audio=run["frames"] / 25, cond=run["cond"],
                checkpointing=run["checkpointing"], ratio=run["ratio"] if run["checkpointing"] else 0.0,
                policy=run["policy"], compile=run["compile"], threads=run["threads"], device=run["device"],
                step_s_median=round(median, 4), step_s_min=round(steps[0], 4), step_s_max=round(steps[-1], 4),
                spread=round((steps[-1] - steps[0]) / median, 3), timed_steps=len(steps),
                round_medians=[round(m, 4) for m in result.get("round_medians", [median])],
                split_s={k: round(v, 4) for k, v in result["parts"].items()},
                loaded_gib=round(result["loaded_gib"], 3), peak_gib=round(result["peak_gib"], 3),
                increment_gib=round(result["peak_gib"] - result["loaded_gib"], 3),
                trainable_params=result["trainable"], model_tflop=round(flops / 1e12, 4),
                achieved_tflops=round(flops / median / 1e12, 4), peak_tflops=round(peak_tflops, 4),
                mfu=round(flops / median / (peak_tflops * 1e12), 3),
                others_cores=round(result["others_cores"], 2), steal_cores=round(result["steal_cores"], 2),
                contended=contended,
                live_memory=run["live_memory"], timing_comparable=not run["live_memory"])


def comparison(results: list[dict], batch: int, frames: int, threads: int) -> dict:
    """ours / stock and ours / reference: from the medians over all rounds, and per round (runs of one round
    follow each other, so a machine that slows down between rounds shifts both sides of a round's ratio)."""
    by = {(r["label"], r["checkpointing"]): r for r in results}
    summary = dict(bench="train_step_compare", batch=batch, frames=frames, threads=threads,
                   any_contended=any(r["contended"] for r in results))
    for ckpt, mine in ((True, "ours R=1 full"), (True, "ours R=1 selective"), (False, "ours")):
        for other in ("stock", "reference"):
            if (mine, ckpt) in by and (other, ckpt) in by:
                a, b = by[mine, ckpt], by[other, ckpt]
                name = f"{mine.replace('ours R=1 ', '').replace('ours', 'off')}_over_{other}"
                summary[name] = round(a["step_s_median"] / b["step_s_median"], 3)
                if len(a["round_medians"]) > 1:
                    rounds = [x / y for x, y in zip(a["round_medians"], b["round_medians"])]
                    summary[name + "_rounds"] = [round(x, 3) for x in rounds]
                    summary[name + "_rounds_median"] = round(statistics.median(rounds), 3)
    return summary


def runs_for(args, batch: int, frames: int) -> list[dict]:
    base = dict(config=args.config, device=args.device, threads=args.threads, batch=batch, frames=frames,
                cond=args.cond, warmup=args.warmup, repeats=args.repeats, compile=False, ratio=1.0, policy="full",
                reference_code=args.reference_code, live_memory=args.live_memory)
    runs = []
    for ckpt in args.checkpointing.split(","):
        on = ckpt == "on"
        for variant in args.variants.split(","):
            if variant == "reference" and not args.reference_code:
                continue
            if variant == "ours" and on:
                runs += [dict(base, variant=variant, checkpointing=True, ratio=float(r), policy=policy)
                         for policy in args.policies.split(",") for r in args.ratios.split(",")
                         if float(r) > 0 and (policy == "full" or float(r) == 1.0)]
                if args.compile:  # compiling happens in the first steps: warm up past it
                    runs.append(dict(base, variant=variant, checkpointing=True, compile=True,
                                     warmup=max(args.warmup, 3)))
            else:
                runs.append(dict(base, variant=variant, checkpointing=on))
    return runs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(MEDIUM_CONFIG), help="config.json path, '2b' or 'tiny' (the test's)")
    p.add_argument("--batches", default="1,4", help="comma-separated batch sizes")
    p.add_argument("--frames", default="1500", help="comma-separated latent frames (25 per second)")
    p.add_argument("--cond", type=int, default=300, help="condition tokens")
    p.add_argument("--variants", default="ours,stock,reference", help="reference needs --reference-code")
    p.add_argument("--checkpointing", default="on,off", help="on, off or on,off")
    p.add_argument("--ratios", default="1", help="ours: checkpointed share of the blocks, e.g. 0.25,0.5,0.75,1")
    p.add_argument("--policies", default="full", help="ours: full and/or selective (selective at ratio 1 only)")
    p.add_argument("--reference-code", default=None, help="folder with upstream's modeling_acestep_v15_turbo.py")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None, help="torch threads per run (CPU default 1)")
    p.add_argument("--compile", action="store_true", help="also measure ours with --compile")
    p.add_argument("--live-memory", action="store_true",
                   help="CPU: fix glibc's mmap threshold so RSS follows the live tensors (slower: memory only)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--rounds", type=int, default=1,
                   help="measure every variant this many times, interleaved, each in a fresh process (a process's "
                        "speed varies by several percent: the medians and per-round ratios show how much)")
    args = p.parse_args()
    if args.repeats < 5:
        p.error("--repeats must be at least 5: a median and a spread need them")
    device = pick_device(args.device)
    args.device = str(device)
    if args.threads is None:
        args.threads = 1 if device.type == "cpu" else torch.get_num_threads()
    torch.set_num_threads(args.threads)
    config = _model_config(args.config)
    peak, peak_source = matmul_peak_tflops(device)
    emit(dict(bench="train_step", machine_peak_tflops=round(peak, 4), peak_source=peak_source,
              threads=args.threads, cores=os.cpu_count(), loadavg_start=os.getloadavg(), machine=machine()))
    for frames in map(int, args.frames.split(",")):
        for batch in map(int, args.batches.split(",")):
            flops = analytic_flops(config, batch, frames, args.cond)
            runs = runs_for(args, batch, frames)
            rounds = [[] for _ in runs]
            for _ in range(args.rounds):  # interleaved: every variant once per round
                for run, done in zip(runs, rounds):
                    done.append(measure(run))
            results = [record(run, merged(done), flops, peak) for run, done in zip(runs, rounds)]
            for r in results:
                emit(r)
            emit(comparison(results, batch, frames, args.threads))


if __name__ == "__main__":
    main()
