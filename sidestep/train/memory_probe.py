"""Measure what a training run adds above its loaded model, on the CPU (Linux): the forecast's check.

`measure_increment(config)` builds the run's `Trainer` (model loaded, adapter attached, data and
optimizer set up), trims the heap (glibc `malloc_trim(0)`, so freed-but-kept heap neither hides nor
fakes growth), reads the resident memory, resets the high-water mark (`5` into /proc/self/clear_refs
resets VmHWM), runs a few optimizer steps through the Trainer's own `forward_backward` and
`optimizer_step`, and returns VmHWM - that resident memory - the file-backed pages (torch's code) RSS
gained meanwhile. Call it in a fresh process per setting
(multiprocessing "spawn"): earlier settings' heap would otherwise be reused.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from sidestep.config import Config
from sidestep.data import manifest
from sidestep.memory import release_freed_tensors, reset_peak, status_bytes, trim_heap


def write_dataset(folder: Path, n: int, frames: int, cond: int, hidden: int, seed: int = 0) -> Path:
    """`n` preprocessed samples of `frames` latent frames and `cond` condition tokens (as preprocessing writes)."""
    g = torch.Generator().manual_seed(seed)
    samples = {f"s{i}.pt": {
        "target_latents": torch.randn(frames, 64, generator=g), "attention_mask": torch.ones(frames),
        "encoder_hidden_states": torch.randn(cond, hidden, generator=g),
        "encoder_attention_mask": torch.ones(cond, dtype=torch.bool),
        "context_latents": torch.randn(frames, 128, generator=g),
        "metadata": {"filename": f"s{i}.wav", "duration": frames / 25}} for i in range(n)}
    return manifest.write_dataset(folder, samples, {"name": "probe", "custom_tag": ""})


def measure_increment(config: Config, mode: str = "fixed", steps: int = 3) -> dict[str, Any]:
    """{"loaded": RSS after setup, "peak": VmHWM during `steps` optimizer steps, "increment": their difference}
    in bytes. The dataset must hold at least `steps` batches."""
    from sidestep.train.recipe import Trainer

    release_freed_tensors()  # this process's RSS then follows its live tensors (sidestep/memory.py)
    trainer = Trainer(config, mode, quiet=True)
    trainer.sampler.set_epoch(0)
    trainer.epoch_losses = []
    batches = iter(trainer.loader)
    # The weights are memory-mapped from their safetensors file (no copy when the file's dtype is the run's)
    # and become resident when first read: in the first step. They are the loaded model's memory, so they
    # are read in here, before the loaded RSS is taken.
    with torch.no_grad():
        for p in trainer.decoder.parameters():
            p.sum()
    trim_heap()
    loaded, code0 = status_bytes("VmRSS"), status_bytes("RssFile")
    reset_peak()
    started = time.perf_counter()
    for _ in range(steps):
        loss, finite = trainer.forward_backward(next(batches), 0, 1, sync=True)
        trainer.optimizer_step(0, loss, not finite, 0)
    peak = status_bytes("VmHWM")
    # File-backed pages (torch's code, run for the first time) count in RSS, but how many of them one fault
    # maps depends on what else the page cache holds (the kernel maps cached neighbours too): the same run
    # read 7.5 MB apart on one machine. They are shared and reclaimable, so the increment leaves them out.
    code = status_bytes("RssFile") - code0
    return {"loaded": loaded, "peak": peak, "increment": peak - loaded - code, "code_pages": code,
            "steps": trainer.global_step,
            "seconds_per_step": (time.perf_counter() - started) / steps}
