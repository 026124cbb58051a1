"""The training recipe: preprocessed tensors -> adapter files. One linear function, `train`.

Modes: "fixed" (SPEC 3.1: CFG dropout + max-of-two logit-normal t from the model's config)
and "vanilla" (SPEC 3.3: upstream's discrete turbo schedule, no dropout).
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import math
import os
import shutil
import signal
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from sidestep import __version__
from sidestep.cli.console import get_console
from sidestep.config import Config
from sidestep.data.batching import LATENT_RATE, BucketBatchSampler
from sidestep.data.dataset import PreprocessedDataset, pad_collate
from sidestep.errors import SidestepError
from sidestep.io import write_error
from sidestep.model import discovery
from sidestep.model.attention import use_fast_attention
from sidestep.model.loader import load_model_dit
from sidestep.train import checkpoints
from sidestep.train.adapters import build_adapter
from sidestep.train.monitor import TrainMonitor, layer_grad_norms
from sidestep.train.objective import Objective, flow_matching_loss, sample_generators
from sidestep.train.quantize import quantize_base
from sidestep.train.plots import plot_losses
from sidestep.train.previews import log_previews
from sidestep.train.optim import build_optimizer, build_scheduler, effective_schedule
from sidestep.train.runtime import make_fabric, resolve_runtime

log = logging.getLogger("sidestep.train")

# Settings a checkpoint must share with the run resuming from it.
_RESUME_MUST_MATCH = {"lora": ("adapter_type", "rank", "alpha", "attention_type", "target_modules", "bias"),
                      "lokr": ("adapter_type", "lokr_linear_dim", "lokr_linear_alpha", "lokr_factor",
                               "lokr_decompose_both", "lokr_use_tucker", "lokr_use_scalar", "lokr_weight_decompose",
                               "attention_type", "target_modules")}


class TrainingFailed(SidestepError):
    """The run ended without a single optimizer step: never report it as complete."""

    exit_code = 3


class TrainingInterrupted(SidestepError):
    """Ctrl-C: a checkpoint was saved; the message holds the resume command."""

    exit_code = 130


@dataclass
class TrainResult:
    output_dir: Path
    epochs: int
    optimizer_steps: int
    seconds: float
    final_loss: float
    losses: list[float] = field(default_factory=list)
    checkpoints: list[Path] = field(default_factory=list)
    skipped_steps: int = 0  # optimizer steps skipped for a NaN/inf loss or gradient
    best_val_loss: float | None = None
    effective_batch: int = 0  # batch size x gradient accumulation x processes
    frame_share: float = 1.0  # the share of the dataset's audio frames one epoch trains
    adapter: Any = None  # the trained adapter (holds the decoder); callers drop it to free memory


class _StopFlag:
    """First Ctrl-C asks for a clean stop at the next optimizer step; a second one aborts."""

    def __init__(self):
        self.requested = False
        self._previous = None
        self._pid = os.getpid()  # data-loader workers inherit the handler; only the trainer answers

    def __enter__(self):
        try:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread (e.g. a wizard worker): no handler
            self._previous = None
        return self

    def _handle(self, signum, frame):
        if os.getpid() != self._pid:
            return
        self.requested = True
        signal.signal(signal.SIGINT, signal.default_int_handler)
        get_console().print("\nStopping after this optimizer step and saving a checkpoint "
                            "(Ctrl-C again to abort without saving)...")

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def compile_blocks(decoder: torch.nn.Module, device: torch.device, static_shapes: bool) -> None:
    """torch.compile each decoder block's forward in place (module names, and so adapter keys, stay).

    With gradient checkpointing the checkpoint call is compiled together with the block (dynamo
    traces it as one region); compiling only the block inside an eager checkpoint makes the
    recomputation disagree with the forward. On CUDA with static shapes (fixed-length crops)
    the blocks also get CUDA graphs."""
    import functools

    from torch.utils.checkpoint import checkpoint

    mode = "reduce-overhead" if device.type == "cuda" and static_shapes else "default"
    checkpointing = decoder.gradient_checkpointing
    decoder.gradient_checkpointing = False  # the compiled forward checkpoints itself
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 4 * len(decoder.layers))
    for layer in decoder.layers:
        forward = layer.forward
        if checkpointing:
            forward = functools.partial(checkpoint, forward, use_reentrant=False)
        layer.forward = torch.compile(forward, mode=mode, dynamic=False if static_shapes else None)


@contextlib.contextmanager
def _compile_errors(enabled: bool):
    """torch.compile fails at the first call, deep inside inductor: say so in one line."""
    if not enabled:
        yield
        return
    try:
        yield
    except Exception as err:
        if "torch._dynamo" not in type(err).__module__ and "torch._inductor" not in type(err).__module__:
            raise
        first = str(err).strip().splitlines()[-1][:200] if str(err).strip() else type(err).__name__
        raise SidestepError(f"--compile: torch.compile failed on this device ({first}); run without --compile") \
            from None


def validate(config: Config, mode: str) -> None:
    checks = [
        (config.checkpoint_dir, "pass --checkpoint-dir (the folder holding acestep-v15-turbo/ etc.)"),
        (config.dataset_dir, "pass --dataset-dir (preprocessed tensors; see train.py preprocess)"),
        (config.output_dir, "pass --output-dir (where the adapter is written)"),
        (config.epochs >= 1, "--epochs must be at least 1"),
        (config.batch_size >= 1, "--batch-size must be at least 1"),
        (config.gradient_accumulation >= 1, "--gradient-accumulation must be at least 1"),
        (config.learning_rate > 0, "--lr must be positive"),
        (config.rank >= 1 and config.lokr_linear_dim >= 1, "--rank / --lokr-linear-dim must be at least 1"),
        (0.0 <= config.dropout < 1.0, "--dropout must be in [0, 1)"),
        (0.0 <= config.cfg_ratio <= 1.0, "--cfg-ratio must be in [0, 1]"),
        (config.save_every >= 1, "--save-every must be at least 1"),
        (config.max_grad_norm > 0, "--max-grad-norm must be positive"),
    ]
    for ok, message in checks:
        if not ok:
            raise SidestepError(f"{mode}: {message}")


def run_info(config: Config, mode: str, model: discovery.TrainingModel, trigger: str | None) -> dict[str, Any]:
    """Saved beside every adapter: how to use it, and how it was made."""
    return {
        "sidestep_version": __version__,
        "inference": {"model_variant": model.entry.name, "base_model": model.base_variant,
                      "shift": config.shift, "num_inference_steps": config.num_inference_steps,
                      "trigger": trigger, "adapter_type": config.adapter_type},
        "training": {"mode": mode, "timestep_mu": model.timestep_mu, "timestep_sigma": model.timestep_sigma},
        "config": config.to_dict(),
    }


def _trigger_caption(dataset_dir: Path) -> str | None:
    try:
        meta = json.loads((dataset_dir / "manifest.json").read_text(encoding="utf-8")).get("metadata", {})
    except (OSError, ValueError, AttributeError):
        return None
    return (meta.get("custom_tag") or None) if isinstance(meta, dict) else None


def load_resume_state(config: Config, model: discovery.TrainingModel, mode: str) -> dict[str, Any]:
    """The checkpoint's state, after checking it belongs to this run's model and adapter."""
    folder = Path(config.resume_from)
    state = checkpoints.load_training_state(folder)
    try:
        saved = json.loads((folder / checkpoints.RUN_FILE).read_text(encoding="utf-8"))
        saved_config, saved_model = saved["config"], saved["inference"]["model_variant"]
    except (OSError, ValueError, KeyError, TypeError):
        raise SidestepError(f"{folder / checkpoints.RUN_FILE}: missing or unreadable; --resume-from takes a "
                            "checkpoints/... folder written by Side-Step") from None
    if saved_model != model.entry.name:
        raise SidestepError(f"--resume-from {folder}: trained on model '{saved_model}', this run uses "
                            f"'{model.entry.name}'; resume with --model-variant {saved_model}")
    for name in _RESUME_MUST_MATCH[saved_config.get("adapter_type", "lora")]:
        if saved_config.get(name) != getattr(config, name):
            flag = name.replace("_", "-")
            raise SidestepError(f"--resume-from {folder}: checkpoint has {flag} {saved_config.get(name)!r}, this "
                                f"run asks for {getattr(config, name)!r}; pass --{flag} {saved_config.get(name)}")
    if saved.get("training", {}).get("mode") not in (None, mode):
        raise SidestepError(f"--resume-from {folder}: checkpoint is from '{saved['training']['mode']}' training; "
                            f"resume it with train.py {saved['training']['mode']}")
    return state


def _rng_state() -> dict[str, torch.Tensor]:
    """Global RNG (LoRA dropout); the loss's own randomness is derived per sample."""
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.stack(torch.cuda.get_rng_state_all())
    return state


def _set_rng_state(state: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(list(state["cuda"]))


def _preview_sampler(config: Config, model: discovery.TrainingModel, runtime, output_dir: Path):
    """Audio previews, prepared before the decoder is loaded: the text and condition encoders run
    once, one at a time, and only their outputs are kept (the lowest memory order)."""
    if not (config.sample_every_n_epochs > 0 or config.sample_at_start):
        return None
    from sidestep.train.previews import PreviewSampler

    parts = discovery.locate_parts(config.checkpoint_dir, config.model_variant)
    sampler = PreviewSampler(parts, None, output_dir, prompts=config.sample_prompt or None,
                             lyrics=config.sample_lyrics or None, dataset_dir=config.dataset_dir, seed=config.seed,
                             duration=config.sample_duration, offload=config.offload_encoder,
                             base_variant=model.base_variant, device=runtime.device, dtype=runtime.compute_dtype)
    sampler.prepare()
    return sampler


class _Subset(torch.utils.data.Dataset):
    """Some samples of a PreprocessedDataset, addressable by the bucket sampler's keys."""

    def __init__(self, dataset: PreprocessedDataset, indices: list[int]):
        self.dataset, self.indices = dataset, indices
        self.lengths = [dataset.lengths[i] for i in indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, key):
        if isinstance(key, tuple):
            return self.dataset[(self.indices[key[0]], *key[1:])]
        return self.dataset[self.indices[key]]


def _datasets(config: Config):
    """(training set, validation set or None) per --val-split / --val-dataset-dir."""
    from sidestep.train.validation import split_dataset

    dataset = PreprocessedDataset(config.dataset_dir)
    if config.val_dataset_dir:
        return dataset, PreprocessedDataset(config.val_dataset_dir)
    if config.val_split > 0 and len(dataset) > 1:
        train_idx, val_idx = split_dataset(len(dataset), config.val_split, config.seed)
        return _Subset(dataset, train_idx), _Subset(dataset, val_idx)
    return dataset, None


def _validate(fabric, decoder, data, config: Config, runtime) -> float | None:
    """Deterministic validation loss on rank 0 (the others wait)."""
    from sidestep.train.validation import validation_loss

    value = None
    if fabric.is_global_zero:
        value = validation_loss(decoder, data, seed=config.seed, device=runtime.device, dtype=runtime.compute_dtype)
    fabric.barrier()
    return value


def _remove_stale_temps(output_dir: Path) -> None:
    """Half-written `.name.*.tmp` files/folders a killed run left behind (atomic writes' leftovers)."""
    for folder in (output_dir, output_dir / checkpoints.CHECKPOINTS):
        for path in folder.glob(".*.tmp") if folder.is_dir() else ():
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)


def _all_ranks(fabric, ok: bool) -> bool:
    """True only when `ok` holds on every process (so all of them skip or step together)."""
    return ok if fabric.world_size == 1 else fabric.strategy.reduce_boolean_decision(ok, all=True)


def resume_command(config: Config, mode: str, folder: Path) -> str:
    from sidestep.cli.parser import config_to_argv

    return "python train.py " + " ".join(config_to_argv(config.replace(resume_from=str(folder)), mode))


def train(config: Config, mode: str, only_modules: list[str] | None = None, quiet: bool = False) -> TrainResult:
    """Train an adapter per `config`; returns where it went. `only_modules` = selective training."""
    validate(config, mode)
    console = get_console()
    runtime = resolve_runtime(config.device, config.precision)
    model = discovery.resolve_training_model(discovery.find_model(config.checkpoint_dir, config.model_variant),
                                             config.base_model)
    resume = load_resume_state(config, model, mode) if config.resume_from else None
    fabric = make_fabric(runtime, config.devices, config.num_nodes, config.strategy)
    fabric.seed_everything(config.seed, verbose=False)
    output_dir = Path(config.output_dir)
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise SidestepError(f"{output_dir}: cannot create the output folder ({err.strerror}); choose a writable "
                            "--output-dir") from None
    try:
        with tempfile.TemporaryFile(dir=output_dir):  # a read-only or full disk fails here, before the model loads
            pass
    except OSError as err:
        raise write_error(output_dir, err, "the adapter", "choose a writable --output-dir") from None
    if fabric.is_global_zero:
        _remove_stale_temps(output_dir)

    previews = _preview_sampler(config, model, runtime, output_dir) if fabric.is_global_zero else None

    # Model: the decoder in the compute dtype, frozen; the condition encoder only lends its null embedding.
    dit = load_model_dit(model.entry, device=runtime.device, dtype=runtime.compute_dtype,
                         with_condition_encoder=False)
    decoder, null_condition_emb = dit.transformer, dit.null_condition_emb.detach().clone()
    del dit
    gc.collect()
    use_fast_attention(decoder, runtime.device)
    quantize_base(decoder, config.quantize_base, runtime.device, config.adapter_type)
    adapter = build_adapter(config, decoder, only=only_modules)
    if config.gradient_checkpointing:
        decoder.enable_gradient_checkpointing()
    if config.compile:
        compile_blocks(decoder, runtime.device, static_shapes=config.chunk_duration > 0)
    decoder.train()
    if previews is not None:
        previews.decoder = decoder

    # Data: every process sees its own shard; the order per epoch depends only on (seed, epoch).
    dataset, val_data = _datasets(config)
    if len(dataset) == 0:
        raise TrainingFailed(f"[FAIL] {config.dataset_dir}: the dataset holds no samples, so no training step "
                             "can run; preprocess some audio into it first")
    chunk = round(config.chunk_duration * LATENT_RATE) if config.chunk_duration > 0 else None
    sampler = BucketBatchSampler(dataset.lengths, config.batch_size, config.seed, chunk, fabric.world_size,
                                 fabric.global_rank)
    workers = config.effective_num_workers
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=pad_collate,
                        num_workers=workers, pin_memory=config.pin_memory and runtime.device.type == "cuda",
                        prefetch_factor=config.prefetch_factor if workers > 0 else None,
                        persistent_workers=config.persistent_workers and workers > 0,
                        # Its own generator: a new epoch's iterator must not draw from the global RNG, which
                        # drives LoRA dropout and is restored bit-exactly on resume.
                        generator=torch.Generator().manual_seed(config.seed))
    batches_per_epoch = sampler.batches_per_epoch
    steps_per_epoch = math.ceil(batches_per_epoch / config.gradient_accumulation)
    if not quiet and fabric.is_global_zero:
        console.print(sampler.describe(config.gradient_accumulation), highlight=False)
    total_steps = steps_per_epoch * config.epochs

    optimizer = build_optimizer(config.optimizer_type, adapter.parameters(), config.learning_rate,
                                config.weight_decay, runtime.device)
    scheduler = build_scheduler(optimizer, effective_schedule(config.optimizer_type, config.scheduler_type),
                                config.warmup_steps, total_steps)
    decoder, optimizer = fabric.setup(decoder, optimizer)
    objective = Objective(mode=mode, timestep_mu=model.timestep_mu, timestep_sigma=model.timestep_sigma,
                          cfg_ratio=config.cfg_ratio)
    null_condition_emb = null_condition_emb.to(runtime.device)
    info = run_info(config, mode, model, _trigger_caption(Path(config.dataset_dir)))

    start_epoch, global_step, samples_done = 0, 0, 0
    if resume is not None:
        adapter.load_training_state({k: v.to(runtime.device) for k, v in resume["adapter"].items()})
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        _set_rng_state(resume["rng"])
        start_epoch, global_step, samples_done = resume["epoch"], resume["global_step"], resume["samples_in_epoch"]
        if not quiet:
            console.print(f"Resuming from {config.resume_from}: epoch {start_epoch + 1}, optimizer step {global_step}")
        log.info("resumed from %s at epoch %d step %d", config.resume_from, start_epoch, global_step)

    monitor = TrainMonitor(console, total_steps, config.epochs,
                           Path(config.log_dir) if config.log_dir else output_dir / "runs", runtime.device,
                           config.log_every, config.log_heavy_every, enabled=fabric.is_global_zero, show=not quiet)
    monitor.resume_at(global_step)
    lrs: list[float] = []
    val_points: list[tuple[int, float]] = []

    def render(tag: str, adapter_on: bool = True) -> None:
        if previews is not None:
            rendered = previews.render(tag, adapter_on=adapter_on)
            if monitor.writer is not None:
                log_previews(monitor.writer, rendered, global_step, tag=f"preview/{tag.split('_')[0]}")

    def plot() -> None:
        if fabric.is_global_zero and result.losses:
            steps = list(range(global_step - len(result.losses) + 1, global_step + 1))
            plot_losses(output_dir, steps, result.losses, val_points, lrs)

    if previews is not None and resume is None:
        render("base", adapter_on=False)  # what the model did before any training, once
        if config.sample_at_start:
            render("epoch_0")
    named_trainable = [(n, p) for n, p in decoder.named_parameters() if p.requires_grad]
    result = TrainResult(output_dir=output_dir, epochs=start_epoch, optimizer_steps=global_step, seconds=0.0,
                         final_loss=float("nan"),
                         effective_batch=config.batch_size * config.gradient_accumulation * fabric.world_size,
                         frame_share=sampler.frame_share())
    started = time.perf_counter()
    bad_steps = 0

    def state_at(epoch: int, samples_in_epoch: int) -> dict[str, Any]:
        return {"adapter": adapter.training_state(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "rng": _rng_state(), "epoch": epoch,
                "global_step": global_step, "samples_in_epoch": samples_in_epoch, "world_size": fabric.world_size,
                "format": 1}

    def save(folder: Path, epoch: int, samples_in_epoch: int) -> None:
        if fabric.is_global_zero:
            checkpoints.save_checkpoint(folder, adapter, info, state_at(epoch, samples_in_epoch))
            result.checkpoints.append(folder)
            log.info("checkpoint saved: %s", folder)
        fabric.barrier()

    with _StopFlag() as stop:
        try:
            for epoch in range(start_epoch, config.epochs):
                sampler.set_epoch(epoch)
                skip_batches = samples_done // (config.batch_size * fabric.world_size)
                sampler.skip = skip_batches
                epoch_losses: list[float] = []
                group_loss, bad_group = 0.0, False
                for i, batch in enumerate(loader, start=skip_batches):
                    indices = batch.pop("index").tolist()
                    log.debug("rank %d epoch %d batch %d trains samples %s", fabric.global_rank, epoch + 1, i,
                              [k for k, w in zip(indices, batch["weight_num"].tolist()) if w])
                    generators = sample_generators(config.seed, epoch, indices, runtime.device)
                    batch = {k: v.to(runtime.device, runtime.compute_dtype if v.is_floating_point() else None,
                                     non_blocking=True) for k, v in batch.items()}
                    group_start = (i // config.gradient_accumulation) * config.gradient_accumulation
                    group_size = min(config.gradient_accumulation, batches_per_epoch - group_start)
                    is_step = i + 1 == group_start + group_size
                    with fabric.no_backward_sync(decoder, enabled=not is_step), _compile_errors(config.compile):
                        loss, t = flow_matching_loss(decoder, batch, objective, generators, null_condition_emb,
                                                     input_requires_grad=config.gradient_checkpointing)
                        finite = _all_ranks(fabric, bool(torch.isfinite(loss)))
                        if finite:  # a NaN/inf loss never reaches the gradients
                            fabric.backward(loss / group_size)
                    bad_group |= not finite
                    monitor.on_micro_batch(t)
                    group_loss += loss.item() / group_size
                    if not is_step:
                        continue
                    if not bad_group:
                        norm = fabric.clip_gradients(decoder, optimizer, max_norm=config.max_grad_norm)
                        bad_group = not _all_ranks(fabric, bool(torch.isfinite(norm)))
                    if bad_group:
                        optimizer.zero_grad(set_to_none=True)
                        bad_steps += 1
                        result.skipped_steps += 1
                        log.warning("non-finite loss or gradient: optimizer step %d skipped (%d in a row)",
                                    global_step + 1, bad_steps)
                        bad_group, group_loss = False, 0.0
                        if bad_steps >= config.max_bad_steps:
                            folder = checkpoints.checkpoint_dir(output_dir, f"step_{global_step}_last_good")
                            save(folder, epoch, (i + 1) * config.batch_size * fabric.world_size)
                            raise TrainingFailed(
                                f"[FAIL] {bad_steps} optimizer steps in a row had a NaN/inf loss or gradient; the "
                                f"last good state is saved to {folder}. Lower --lr (or check the data), then "
                                f"resume with:\n  {resume_command(config, mode, folder)}")
                        continue
                    bad_steps = 0
                    norms = layer_grad_norms(named_trainable) if monitor.wants_grad_norms(global_step + 1) else None
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                    global_step += 1
                    epoch_losses.append(group_loss)
                    result.losses.append(group_loss)
                    lrs.append(scheduler.get_last_lr()[0])
                    monitor.on_step(global_step, epoch, group_loss, lrs[-1], norms)
                    group_loss = 0.0
                    stop_now = stop.requested if fabric.world_size == 1 else \
                        fabric.strategy.reduce_boolean_decision(stop.requested, all=False)
                    if stop_now:
                        folder = checkpoints.checkpoint_dir(output_dir, f"step_{global_step}")
                        if i + 1 < batches_per_epoch:
                            save(folder, epoch, (i + 1) * config.batch_size * fabric.world_size)
                        else:  # the epoch was complete: resume at the start of the next one
                            save(folder, epoch + 1, 0)
                        raise TrainingInterrupted(f"interrupted at optimizer step {global_step}; checkpoint saved "
                                                  f"to {folder}. Resume with:\n  "
                                                  f"{resume_command(config, mode, folder)}")
                samples_done = 0
                result.epochs = epoch + 1
                val = _validate(fabric, decoder, val_data, config, runtime) if val_data is not None else None
                if val is not None:
                    val_points.append((global_step, val))
                    if config.keep_best and fabric.is_global_zero and val <= min(v for _, v in val_points):
                        checkpoints.save_adapter(output_dir / "best", adapter, dict(info, best_epoch=epoch + 1,
                                                                                    val_loss=val))
                    result.best_val_loss = min(v for _, v in val_points)
                if epoch_losses:
                    monitor.on_epoch_end(epoch, global_step, sum(epoch_losses) / len(epoch_losses), val)
                if config.sample_every_n_epochs and (epoch + 1) % config.sample_every_n_epochs == 0:
                    render(f"epoch_{epoch + 1}")
                if (epoch + 1) % config.save_every == 0:
                    save(checkpoints.checkpoint_dir(output_dir, f"epoch_{epoch + 1}"), epoch + 1, 0)
        except TrainingInterrupted:
            plot()  # the curve so far, beside the checkpoint
            raise
        finally:
            monitor.close()
            if previews is not None:
                previews.release()

    result.optimizer_steps = global_step
    result.seconds = time.perf_counter() - started
    result.final_loss = monitor.last_loss
    if global_step == 0:
        raise TrainingFailed(f"[FAIL] no optimizer step ran ({len(dataset)} samples, batch size "
                             f"{config.batch_size}, {config.epochs} epochs); check --dataset-dir and --epochs")
    if fabric.is_global_zero:
        checkpoints.save_adapter(output_dir, adapter, info)
        plot()
    fabric.barrier()
    result.adapter = adapter
    return result
