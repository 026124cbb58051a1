"""The training recipe: preprocessed tensors -> adapter files.

`Trainer` reads top to bottom: setup (output folder, model, adapter, data, optimizer, resume),
then per epoch the optimizer steps and the end of the epoch (validation, previews, checkpoint),
then finish (the adapter and the loss plot). `train(config, mode)` runs one.

Modes: "fixed" (docs/design.md §4.1: CFG dropout + the model's own logit-normal t) and "vanilla"
(§4.3: upstream's discrete turbo schedule, no dropout).
"""

from __future__ import annotations

import gc
import json
import logging
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
from sidestep.config import Config
from sidestep.console import get_console
from sidestep.data.batching import LATENT_RATE, BucketBatchSampler
from sidestep.data.dataset import PreprocessedDataset, pad_collate
from sidestep.data.manifest import check_made_for, read_manifest
from sidestep.errors import SidestepError
from sidestep.io import write_error
from sidestep.model import discovery
from sidestep.model.attention import use_fast_attention
from sidestep.model.checkpointing import enable_checkpointing
from sidestep.model.loader import load_model_dit
from sidestep.runtime import make_fabric, resolve_runtime
from sidestep.train import checkpoints
from sidestep.adapters import build_adapter, init_adapter
from sidestep.train.compile import compile_blocks, compile_errors
from sidestep.train.monitor import TrainMonitor, layer_grad_norms
from sidestep.train.objective import Objective, configured_objective, flow_matching_loss, sample_generators
from sidestep.train.ema import AdapterEMA, maybe_applied
from sidestep.train.optim import build_optimizer, build_scheduler, effective_schedule, lr_groups
from sidestep.train.plots import plot_losses
from sidestep.train.previews import log_previews
from sidestep.train.quantize import quantize_base
from sidestep.train.resume import STATE_FORMAT, load_resume_state, resume_command, rng_state, set_rng_state

log = logging.getLogger("sidestep.train")


class TrainingFailed(SidestepError):
    """The run ended without a single optimizer step: never report it as complete."""

    exit_code = 3


class TrainingInterrupted(SidestepError):
    """Ctrl-C (exit 130) or SIGTERM (exit 143: docker stop, SLURM pre-emption): a checkpoint was saved; the
    message holds the resume command."""

    exit_code = 130

    def __init__(self, message: str, signum: int = signal.SIGINT):
        super().__init__(message)
        self.exit_code = 128 + int(signum)


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
    learning: list[dict[str, Any]] = field(default_factory=list)  # the learning report's evaluations (rank 0)
    verdicts: list[str] = field(default_factory=list)  # plain-language conclusions drawn from them
    adapter: Any = None  # the trained adapter (holds the decoder); callers drop it to free memory


def train(config: Config, mode: str, only_modules: list[str] | None = None, quiet: bool = False) -> TrainResult:
    """Train an adapter per `config`; returns where it went. `only_modules` = selective training."""
    return Trainer(config, mode, only_modules, quiet).run()


class Trainer:
    def __init__(self, config: Config, mode: str, only_modules: list[str] | None = None, quiet: bool = False):
        _check_required(config, mode)
        self.config, self.mode, self.quiet = config, mode, quiet
        self.runtime = resolve_runtime(config.device, config.precision)
        self.model = discovery.model_to_train(config)
        # the training (and validation) datasets' manifests: what they record is checked before any model loads
        manifests = [read_manifest(folder) for folder in (config.dataset_dir, config.val_dataset_dir) if folder]
        for manifest in manifests:
            check_made_for(manifest, self.model.entry, recorded_only=True)
        self.resume = load_resume_state(config, self.model, mode) if config.resume_from else None
        self.fabric = make_fabric(self.runtime, config.devices, config.num_nodes, config.strategy)
        self.fabric.seed_everything(config.seed, verbose=False)
        self.output_dir = _prepare_output(Path(config.output_dir), self.fabric.is_global_zero)
        # Previews first: their encoders run and leave before the decoder loads (the lowest peak).
        self.previews = _preview_sampler(config, self.model, self.runtime, self.output_dir) \
            if self.fabric.is_global_zero else None
        self._setup_model(only_modules)
        # the samples' width after the strict load: a config.json that disagrees with its weights is reported
        # as such, not as a dataset made for another model
        for manifest in manifests:
            check_made_for(manifest, self.model.entry)
        self._setup_data()
        self._setup_optimizer()
        self.report = _learning_report(config, self.dataset, self.val_data, self.runtime) \
            if self.fabric.is_global_zero else None
        self.info = run_info(config, mode, self.model, manifests[0].trigger)
        self.global_step, self.start_epoch, self.samples_done = 0, 0, 0
        self.monitor = TrainMonitor(get_console(), self.total_steps, config.epochs,
                                    Path(config.log_dir) if config.log_dir else self.output_dir / "runs",
                                    self.runtime.device, config.log_every, config.log_heavy_every,
                                    enabled=self.fabric.is_global_zero, show=not quiet)
        self.monitor.note(self.sampler.describe(config.gradient_accumulation))
        self.report_every = self._report_every()
        if self.resume is not None:
            self._restore(self.resume)
        self.result = TrainResult(output_dir=self.output_dir, epochs=self.start_epoch,
                                  optimizer_steps=self.global_step, seconds=0.0, final_loss=float("nan"),
                                  effective_batch=config.batch_size * config.gradient_accumulation *
                                  self.fabric.world_size, frame_share=self.sampler.frame_share())
        self.lrs: list[float] = []
        self.val_points: list[tuple[int, float]] = []
        self.bad_steps = 0

    # -- setup ------------------------------------------------------------------------------------------------

    def _setup_model(self, only_modules: list[str] | None) -> None:
        """The decoder in the compute dtype, frozen, with the adapter injected; the condition encoder
        only lends its learned null embedding (CFG dropout's target)."""
        config, device = self.config, self.runtime.device
        dit = load_model_dit(self.model.entry, device=device, dtype=self.runtime.compute_dtype,
                             with_condition_encoder=False)
        decoder, self.null_condition_emb = dit.transformer, dit.null_condition_emb.detach().clone().to(device)
        del dit
        gc.collect()
        use_fast_attention(decoder, device)
        quantize_base(decoder, config.quantize_base, device, config.adapter_type)
        self.adapter = build_adapter(config, decoder, only=only_modules)
        if config.init_adapter and not config.resume_from:  # a resumed run has its own weights
            init_adapter(self.adapter, config.init_adapter)
        if config.gradient_checkpointing:
            enable_checkpointing(decoder, config.gradient_checkpointing_ratio, config.checkpointing_policy)
        if config.compile:
            compile_blocks(decoder, device, static_shapes=config.chunk_duration > 0)
        decoder.train()
        if self.previews is not None:
            self.previews.decoder = decoder
        self.decoder = decoder
        self.named_trainable = [(n, p) for n, p in decoder.named_parameters() if p.requires_grad]

    def _setup_data(self) -> None:
        """Every process reads its own share of each batch; the order depends only on (seed, epoch)."""
        config, fabric = self.config, self.fabric
        self.dataset, self.val_data = _datasets(config)
        if len(self.dataset) == 0:
            raise TrainingFailed(f"[FAIL] {config.dataset_dir}: the dataset holds no samples, so no training step "
                                 "can run; preprocess some audio into it first")
        chunk = round(config.chunk_duration * LATENT_RATE) if config.chunk_duration > 0 else None
        self.sampler = BucketBatchSampler(self.dataset.lengths, config.batch_size, config.seed, chunk,
                                          fabric.world_size, fabric.global_rank)
        workers = config.effective_num_workers
        self.loader = DataLoader(self.dataset, batch_sampler=self.sampler, collate_fn=pad_collate,
                                 num_workers=workers,
                                 pin_memory=config.pin_memory and self.runtime.device.type == "cuda",
                                 prefetch_factor=config.prefetch_factor if workers > 0 else None,
                                 persistent_workers=config.persistent_workers and workers > 0,
                                 # Its own generator: a new epoch's iterator must not draw from the global RNG,
                                 # which drives LoRA dropout and is restored bit-exactly on resume.
                                 generator=torch.Generator().manual_seed(config.seed))
        self.batches_per_epoch = self.sampler.batches_per_epoch
        self.steps_per_epoch = -(-self.batches_per_epoch // config.gradient_accumulation)
        self.total_steps = self.steps_per_epoch * config.epochs

    def _setup_optimizer(self) -> None:
        config = self.config
        params = self.adapter.parameters() if config.lr_self == config.lr_cross == 1.0 else \
            lr_groups(self.named_trainable, config.learning_rate, config.lr_self, config.lr_cross)
        optimizer = build_optimizer(config.optimizer_type, params, config.learning_rate, config.weight_decay,
                                    self.runtime.device)
        self.scheduler = build_scheduler(optimizer, effective_schedule(config.optimizer_type, config.scheduler_type),
                                         config.warmup_steps, self.total_steps)
        self.decoder, self.optimizer = self.fabric.setup(self.decoder, optimizer)
        self.ema = AdapterEMA(self.adapter.parameters(), config.ema_decay, config.ema_start_step) \
            if config.ema_decay > 0 else None
        self.objective = objective_of(config, self.mode, self.model)

    def _restore(self, state: dict[str, Any]) -> None:
        self.adapter.load_training_state({k: v.to(self.runtime.device) for k, v in state["adapter"].items()})
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])
        if self.report is not None:
            self.report.load_state(state.get("learning"))
        if self.ema is not None and state.get("ema"):
            self.ema.load_state_dict(state["ema"])
        self.start_epoch, self.global_step, self.samples_done = \
            state["epoch"], state["global_step"], state["samples_in_epoch"]
        self.monitor.resume_at(self.global_step)
        self.monitor.note(f"Resuming from {self.config.resume_from}: epoch {self.start_epoch + 1}, "
                          f"optimizer step {self.global_step}")
        log.info("resumed from %s at epoch %d step %d", self.config.resume_from, self.start_epoch, self.global_step)

    # -- the loop ---------------------------------------------------------------------------------------------

    def run(self) -> TrainResult:
        if self.previews is not None and self.resume is None:
            self._render("base", adapter_on=False)  # what the model did before any training, once
            if self.config.sample_at_start:
                self._render("epoch_0")
        self._report_base()
        started = time.perf_counter()
        with _StopFlag(self.monitor.note) as stop:
            try:
                for epoch in range(self.start_epoch, self.config.epochs):
                    self.train_epoch(epoch, stop)
                    self.end_epoch(epoch)
            except TrainingInterrupted:
                self._plot()  # the curve so far, beside the checkpoint
                raise
            finally:
                self.monitor.close()
                if self.previews is not None:
                    self.previews.release()
        return self.finish(time.perf_counter() - started)

    def train_epoch(self, epoch: int, stop: "_StopFlag") -> None:
        """The epoch's optimizer steps, each over `--gradient-accumulation` batches (fewer at the epoch's end)."""
        accumulation = self.config.gradient_accumulation
        global_batch = self.config.batch_size * self.fabric.world_size
        self.sampler.set_epoch(epoch)
        self.sampler.skip = first = self.samples_done // global_batch
        self.epoch_losses: list[float] = []
        group_loss, bad_group = 0.0, False
        for i, batch in enumerate(self.loader, start=first):
            log.debug("rank %d epoch %d batch %d trains samples %s", self.fabric.global_rank, epoch + 1, i,
                      [k for k, w in zip(batch["index"].tolist(), batch["weight_num"].tolist()) if w])  # 0: filler
            group_start = i // accumulation * accumulation
            group_size = min(accumulation, self.batches_per_epoch - group_start)
            is_step = i + 1 == group_start + group_size
            loss, finite = self.forward_backward(batch, epoch, group_size, sync=is_step)
            bad_group |= not finite
            group_loss += loss / group_size
            if not is_step:
                continue
            if self.optimizer_step(epoch, group_loss, bad_group, (i + 1) * global_batch) and \
                    self._stop_requested(stop):
                self._interrupt(epoch, i + 1)
            group_loss, bad_group = 0.0, False
        self.samples_done = 0

    def forward_backward(self, batch: dict[str, torch.Tensor], epoch: int, group_size: int, sync: bool
                         ) -> tuple[float, bool]:
        """One micro-batch: the loss, and its gradient unless the loss is NaN/inf on any process."""
        device, dtype = self.runtime.device, self.runtime.compute_dtype
        generators = sample_generators(self.config.seed, epoch, batch.pop("index").tolist(), device)
        batch = {k: v.to(device, dtype if v.is_floating_point() else None, non_blocking=True)
                 for k, v in batch.items()}
        with self.fabric.no_backward_sync(self.decoder, enabled=not sync), compile_errors(self.config.compile):
            loss, t = flow_matching_loss(self.decoder, batch, self.objective, generators, self.null_condition_emb,
                                         input_requires_grad=self.config.gradient_checkpointing)
            finite = self._all_ranks(bool(torch.isfinite(loss)))
            if finite:  # a NaN/inf loss never reaches the gradients
                self.fabric.backward(loss / group_size)
        self.monitor.on_micro_batch(t)
        return loss.item(), finite

    def optimizer_step(self, epoch: int, loss: float, bad: bool, samples_in_epoch: int) -> bool:
        """Clip and step; a NaN/inf loss or gradient skips the step instead. True when a step was taken."""
        if not bad:
            norm = self.fabric.clip_gradients(self.decoder, self.optimizer, max_norm=self.config.max_grad_norm)
            bad = not self._all_ranks(bool(torch.isfinite(norm)))
        if bad:
            self._skip_step(epoch, samples_in_epoch)
            return False
        self.bad_steps = 0
        norms = layer_grad_norms(self.named_trainable) if self.monitor.wants_grad_norms(self.global_step + 1) \
            else None
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.global_step += 1
        if self.ema is not None:
            self.ema.update(self.global_step)
        self.epoch_losses.append(loss)
        self.result.losses.append(loss)
        self.lrs.append(self.scheduler.get_last_lr()[0])
        self.monitor.on_step(self.global_step, epoch, loss, self.lrs[-1], norms)
        return True

    def _skip_step(self, epoch: int, samples_in_epoch: int) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self.bad_steps += 1
        self.result.skipped_steps += 1
        log.warning("non-finite loss or gradient: optimizer step %d skipped (%d in a row)", self.global_step + 1,
                    self.bad_steps)
        if self.bad_steps < self.config.max_bad_steps:
            return
        folder = checkpoints.checkpoint_dir(self.output_dir, f"step_{self.global_step}_last_good")
        self.save(folder, epoch, samples_in_epoch)
        raise TrainingFailed(f"[FAIL] {self.bad_steps} optimizer steps in a row had a NaN/inf loss or gradient; "
                             f"the last good state is saved to {folder}. Lower --lr (or check the data), then "
                             f"resume with:\n  {resume_command(self.config, self.mode, folder)}")

    def _interrupt(self, epoch: int, batches_done: int) -> None:
        """Ctrl-C: checkpoint where the run stands (the next epoch's start if this one is complete)."""
        folder = checkpoints.checkpoint_dir(self.output_dir, f"step_{self.global_step}")
        if batches_done < self.batches_per_epoch:
            self.save(folder, epoch, batches_done * self.config.batch_size * self.fabric.world_size)
        else:
            self.save(folder, epoch + 1, 0)
        # The command stays one line: printed with soft wrap, it survives copy-paste at any terminal width.
        how = " (terminated by SIGTERM)" if self.stop_signal == signal.SIGTERM else ""
        raise TrainingInterrupted(f"Stopped at step {self.global_step}{how} and saved to {folder}; resume with:\n"
                                  f"{resume_command(self.config, self.mode, folder)}", self.stop_signal)

    def end_epoch(self, epoch: int) -> None:
        """Validation (and the best adapter), the epoch line, previews, the periodic checkpoint."""
        config = self.config
        self.result.epochs = epoch + 1
        with maybe_applied(self.ema):  # validation, the report and best/ judge the EMA weights when it is on
            val = self._evaluate(epoch)
            if val is not None:
                self.val_points.append((self.global_step, val))
                best = min(v for _, v in self.val_points)
                if config.keep_best and self.fabric.is_global_zero and val <= best:
                    checkpoints.save_adapter(self.output_dir / "best", self.adapter,
                                             dict(self.info, best_epoch=epoch + 1, val_loss=val))
                self.result.best_val_loss = best
        if self.epoch_losses:
            self.monitor.on_epoch_end(epoch, self.global_step, sum(self.epoch_losses) / len(self.epoch_losses), val)
        if config.sample_every_n_epochs and (epoch + 1) % config.sample_every_n_epochs == 0:
            self._render(f"epoch_{epoch + 1}")
        if (epoch + 1) % config.save_every == 0:
            self.save(checkpoints.checkpoint_dir(self.output_dir, f"epoch_{epoch + 1}"), epoch + 1, 0)

    def finish(self, seconds: float) -> TrainResult:
        result = self.result
        result.optimizer_steps, result.seconds, result.final_loss = self.global_step, seconds, self.monitor.last_loss
        if self.global_step == 0 and result.skipped_steps:
            raise TrainingFailed(f"[FAIL] every optimizer step had a NaN/inf loss or gradient ({result.skipped_steps} "
                                 "skipped, none applied); lower --lr, try --precision fp32, or check the dataset")
        if self.global_step == 0:
            raise TrainingFailed(f"[FAIL] no optimizer step ran ({len(self.dataset)} samples, batch size "
                                 f"{self.config.batch_size}, {self.config.epochs} epochs); check --dataset-dir and "
                                 "--epochs")
        if self.report is not None:
            from sidestep.train.report import verdicts

            result.learning = self.report.evaluations
            result.verdicts = verdicts(result.learning, self.config.keep_best and self.val_data is not None)
        if self.fabric.is_global_zero:
            checkpoints.save_adapter(self.output_dir, self.adapter, self.info)
            if self.ema is not None:
                with self.ema.applied():
                    checkpoints.save_adapter(self.output_dir / "ema", self.adapter, dict(
                        self.info, ema={"decay": self.config.ema_decay, "start_step": self.config.ema_start_step}))
            self._plot()
        self.fabric.barrier()
        result.adapter = self.adapter
        return result

    # -- helpers ----------------------------------------------------------------------------------------------

    def save(self, folder: Path, epoch: int, samples_in_epoch: int) -> None:
        """A resumable checkpoint (rank 0 writes; every process waits for it)."""
        if self.fabric.is_global_zero:
            state = {"adapter": self.adapter.training_state(), "optimizer": self.optimizer.state_dict(),
                     "scheduler": self.scheduler.state_dict(), "rng": rng_state(), "epoch": epoch,
                     "global_step": self.global_step, "samples_in_epoch": samples_in_epoch,
                     "world_size": self.fabric.world_size, "format": STATE_FORMAT,
                     "learning": self.report.state() if self.report is not None else None,
                     "ema": self.ema.state_dict() if self.ema is not None else None}
            checkpoints.save_checkpoint(folder, self.adapter, self.info, state)
            self.result.checkpoints.append(folder)
            log.info("checkpoint saved: %s", folder)
        self.fabric.barrier()

    def _validate(self) -> float | None:
        """Deterministic validation loss on rank 0 (the others wait)."""
        from sidestep.train.validation import validation_loss

        value = None
        if self.fabric.is_global_zero:
            value = validation_loss(self.decoder, self.val_data, seed=self.config.seed, device=self.runtime.device,
                                    dtype=self.runtime.compute_dtype)
        self.fabric.barrier()
        return value

    def _report_base(self) -> None:
        """The learning report's reference: the base model on the report's songs, once per run (rank 0)."""
        if self.report is not None and self.report.base is None:
            self._learning(self.report.measure_base(self.decoder, self.start_epoch, self.global_step))
        if self.config.learning_report:
            self.fabric.barrier()

    def _report_every(self) -> int:
        """--report-every, or with 0 the interval that keeps the report under report.BUDGET of the training."""
        from sidestep.train.report import BUDGET, auto_every

        config = self.config
        if not config.learning_report or config.report_every > 0:
            return max(config.report_every, 1)
        probe = _learning_report(config, self.dataset, self.val_data, self.runtime)  # the same songs on every rank
        epoch_frames = sum(self.dataset.lengths) * self.sampler.frame_share()
        every = auto_every(probe.frames(), epoch_frames)
        self.monitor.note(f"Learning report every {every} epoch(s) and after the last (under {BUDGET:.0%} of the "
                          "training work; --report-every N to choose)")
        return every

    def _evaluate(self, epoch: int) -> float | None:
        """The learning report when due (its held-out loss is the validation loss), else the validation loss."""
        config = self.config
        due = (epoch + 1) % self.report_every == 0 or epoch + 1 == config.epochs
        if not (config.learning_report and due):
            return self._validate() if self.val_data is not None else None
        val = None
        if self.report is not None:
            entry = self.report.evaluate(self.decoder, epoch + 1, self.global_step)
            self._learning(entry)
            val = sum(entry["val"]["on"]) / len(entry["val"]["on"]) if "val" in entry else None
        self.fabric.barrier()
        return val

    def _learning(self, entry: dict[str, Any]) -> None:
        from sidestep.train.report import describe

        self.monitor.on_learning(entry, describe(entry))

    def _render(self, tag: str, adapter_on: bool = True) -> None:
        if self.previews is not None:
            with maybe_applied(self.ema if adapter_on else None):
                rendered = self.previews.render(tag, adapter_on=adapter_on)
            if self.monitor.writer is not None:
                log_previews(self.monitor.writer, rendered, self.global_step, tag=f"preview/{tag.split('_')[0]}")

    def _plot(self) -> None:
        """loss.png and learning.json beside the adapter: written with it at the end (or at a stop), never before,
        so a run that fails to save leaves the folder's earlier adapter and its report together."""
        from sidestep.io import atomic_write_text
        from sidestep.train.report import REPORT_FILE

        losses = self.result.losses
        if self.fabric.is_global_zero and self.report is not None and self.report.evaluations:
            document = self.report.document(self.config.keep_best and self.val_data is not None)
            atomic_write_text(self.output_dir / REPORT_FILE, json.dumps(document, indent=2))
        if self.fabric.is_global_zero and losses:
            steps = list(range(self.global_step - len(losses) + 1, self.global_step + 1))
            learning = [(e["step"], e["train_change"], e.get("val_change"))
                        for e in (self.report.evaluations if self.report is not None else [])]
            plot_losses(self.output_dir, steps, losses, self.val_points, self.lrs, learning=learning)

    def _all_ranks(self, ok: bool) -> bool:
        """True only when `ok` holds on every process (so all of them skip or step together)."""
        return ok if self.fabric.world_size == 1 else self.fabric.strategy.reduce_boolean_decision(ok, all=True)

    def _stop_requested(self, stop: "_StopFlag") -> bool:
        """A Ctrl-C (or SIGTERM) on any process stops all of them at the same step."""
        self.stop_signal = stop.signum or signal.SIGINT
        if self.fabric.world_size == 1:
            return stop.requested
        return self.fabric.strategy.reduce_boolean_decision(stop.requested, all=False)


def _check_required(config: Config, mode: str) -> None:
    """The paths a run cannot start without (option bounds are Config's own checks)."""
    required = {"--checkpoint-dir": (config.checkpoint_dir, "the folder holding acestep-v15-turbo/ etc."),
                "--dataset-dir": (config.dataset_dir, "preprocessed tensors; see train.py preprocess"),
                "--output-dir": (config.output_dir, "where the adapter is written")}
    for flag, (value, what) in required.items():
        if not value:
            raise SidestepError(f"{mode}: pass {flag} ({what})")


def _prepare_output(output_dir: Path, is_global_zero: bool) -> Path:
    """Create the output folder and prove it is writable before the model loads; drop a killed run's temps."""
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise SidestepError(f"{output_dir}: cannot create the output folder ({err.strerror}); choose a writable "
                            "--output-dir") from None
    try:
        with tempfile.TemporaryFile(dir=output_dir):  # a read-only or full disk fails here
            pass
    except OSError as err:
        raise write_error(output_dir, err, "the adapter", "choose a writable --output-dir") from None
    if is_global_zero:
        _remove_stale_temps(output_dir)
    return output_dir


def _remove_stale_temps(output_dir: Path) -> None:
    """Half-written `.name.*.tmp` files/folders a killed run left behind (atomic writes' leftovers)."""
    for folder in (output_dir, output_dir / checkpoints.CHECKPOINTS):
        for path in folder.glob(".*.tmp") if folder.is_dir() else ():
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)


def objective_of(config: Config, mode: str, model: discovery.TrainingModel) -> Objective:
    """The loss as configured, with the model's own timestep distribution (objective.configured_objective)."""
    return configured_objective(config, mode, model.timestep_mu, model.timestep_sigma)


def run_info(config: Config, mode: str, model: discovery.TrainingModel, trigger: str | None) -> dict[str, Any]:
    """Saved beside every adapter: how to use it, and how it was made."""
    objective = objective_of(config, mode, model)
    return {
        "sidestep_version": __version__,
        "inference": {"model_variant": model.entry.name, "base_model": model.base_variant,
                      "shift": config.shift, "num_inference_steps": config.num_inference_steps,
                      "trigger": trigger, "adapter_type": config.adapter_type},
        "training": {"mode": mode, "timestep_mu": objective.timestep_mu, "timestep_sigma": objective.timestep_sigma,
                     "loss_fn": objective.loss_fn, "loss_weighting": objective.loss_weighting},
        "config": config.to_dict(),
    }


def _learning_report(config: Config, dataset, val_data, runtime):
    """`--learning-report`: evaluated on rank 0 only, like validation."""
    if not config.learning_report:
        return None
    from sidestep.train.report import LearningReport

    return LearningReport(dataset, val_data, seed=config.seed, songs=config.report_songs, device=runtime.device,
                          dtype=runtime.compute_dtype)


def _preview_sampler(config: Config, model: discovery.TrainingModel, runtime, output_dir: Path):
    """Audio previews, prepared before the decoder is loaded: the text and condition encoders run
    once, one at a time, and only their outputs are kept (the lowest memory order)."""
    if not (config.sample_every_n_epochs > 0 or config.sample_at_start):
        return None
    from sidestep.train.previews import PreviewSampler

    sampler = PreviewSampler(model.parts(), None, output_dir, prompts=config.sample_prompt or None,
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


class _StopFlag:
    """First Ctrl-C or SIGTERM asks for a clean stop at the next optimizer step; a second one aborts."""

    SIGNALS = tuple(s for s in (signal.SIGINT, getattr(signal, "SIGTERM", None)) if s is not None)

    def __init__(self, note):
        self.requested = False
        self.signum: int | None = None
        self._note = note
        self._previous: dict[int, Any] = {}
        self._pid = os.getpid()  # data-loader workers inherit the handler; only the trainer answers

    def __enter__(self):
        for signum in self.SIGNALS:
            try:
                self._previous[signum] = signal.signal(signum, self._handle)
            except (ValueError, OSError):  # not the main thread (e.g. a wizard worker): no handler
                pass
        return self

    def _handle(self, signum, frame):
        if os.getpid() != self._pid:
            if signum != signal.SIGINT:  # a worker told to end ends (Ctrl-C reaches the trainer too)
                signal.signal(signum, signal.SIG_DFL)
                os.kill(os.getpid(), signum)
            return
        self.requested, self.signum = True, signum
        for sig in self._previous:  # the second signal of either kind aborts at once
            signal.signal(sig, signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL)
        what = "SIGTERM received: stopping" if signum != signal.SIGINT else "Stopping"
        self._note(f"\n{what} after this optimizer step and saving a checkpoint (Ctrl-C again to abort without "
                   "saving)...")

    def __exit__(self, *exc):
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
