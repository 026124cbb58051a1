"""What a user sees while training: a Rich live progress line (or plain lines) and TensorBoard."""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Column
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from sidestep.memory import peak_rss

log = logging.getLogger("sidestep.train")


def memory_gib(device: torch.device) -> float:
    """Peak memory so far: allocated on CUDA, resident set size elsewhere (NaN when unknown)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    peak = peak_rss()
    return float("nan") if peak is None else peak / 2**30


def memory_text(gib: float) -> str:
    return "? GiB" if math.isnan(gib) else f"{gib:.2f} GiB"


def duration_text(seconds: float) -> str:
    """h:mm:ss ("?" while unknown)."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def line_interval(seconds_per_step: float, target: float = 10.0) -> int:
    """Steps between plain progress lines so one comes about every `target` seconds: 1, 2, 5, 10, 20, 50, ..."""
    if not math.isfinite(seconds_per_step) or seconds_per_step <= 0:
        return 1
    wanted = max(target / seconds_per_step, 1.0)
    nice = 1
    while True:
        for factor in (1, 2, 5):
            if nice * factor * 2 > wanted * 1.5:  # the next one would be too far apart
                return nice * factor
        nice *= 10


# Below this width the bar and the elapsed time go; the numbers stay, most important first.
FULL_WIDTH = 110


class TrainMonitor:
    def __init__(self, console: Console, total_steps: int, epochs: int, log_dir: Path, device: torch.device,
                 log_every: int, log_heavy_every: int, enabled: bool = True, plain: bool = False,
                 show: bool = True):
        from torch.utils.tensorboard import SummaryWriter

        self.console, self.device, self.epochs = console, device, epochs
        self.log_every, self.log_heavy_every = max(log_every, 1), max(log_heavy_every, 1)
        self.enabled, self.show = enabled, show
        # A dumb terminal cannot redraw a live line (Rich cuts it to "0:0…"): it gets plain lines too.
        self.plain = plain or not console.is_terminal or console.is_dumb_terminal
        try:
            self.writer = SummaryWriter(str(log_dir)) if enabled else None
        except OSError as err:  # the first write of a run: a read-only or full --output-dir shows here
            from sidestep.io import write_error, write_problem

            full = write_problem(err)[0] == "the disk is full"
            raise write_error(log_dir, err, "the TensorBoard logs",
                              None if full else "choose a writable --output-dir (or --log-dir)") from None
        self.start = time.perf_counter()
        self.timesteps: list[torch.Tensor] = []
        self.last_loss = float("nan")
        self.progress = None
        self.every: int | None = None  # plain lines: steps between two, set from the speed of the first steps
        if enabled and show and not self.plain:
            numbers = "{task.fields[steps]}  loss {task.fields[loss]:.4f}  lr {task.fields[lr]:.2e}  " \
                      "{task.fields[speed]:.2f} it/s  ETA {task.fields[eta]}  mem {task.fields[mem]}"
            if console.width >= FULL_WIDTH:
                columns = [TextColumn("[bold]epoch {task.fields[epoch]}/{task.fields[epochs]}"), BarColumn(),
                           TextColumn(numbers), TimeElapsedColumn()]
            else:  # narrow: no bar, fewer spaces; a still narrower terminal wraps the numbers instead of "…"
                compact = "{task.fields[steps]} loss {task.fields[loss]:.4f} lr {task.fields[lr]:.1e} " \
                          "{task.fields[speed]:.1f}it/s ETA {task.fields[eta]} {task.fields[short_mem]}"
                if console.width >= 80:
                    compact = "epoch {task.fields[epoch]}/{task.fields[epochs]} " + compact
                columns = [TextColumn(compact, table_column=Column(no_wrap=False, overflow="fold"))]
            self.progress = Progress(*columns, console=console, transient=False)
            self.progress.start()
            self.task = self.progress.add_task("train", total=total_steps, epoch=0, epochs=epochs, loss=float("nan"),
                                               lr=0.0, speed=0.0, mem=memory_text(0.0), eta="?", short_mem="?",
                                               steps=f"0/{total_steps}")
        self.total_steps = total_steps
        self.steps_done_at_start = 0

    def resume_at(self, step: int) -> None:
        self.steps_done_at_start = step
        if self.progress:
            self.progress.update(self.task, completed=step)

    def note(self, text: str) -> None:
        """A message between progress updates (resuming, stopping), on rank 0 unless quiet."""
        if self.enabled and self.show:
            (self.progress.console if self.progress else self.console).print(text, highlight=False, markup=False)

    def on_micro_batch(self, timesteps: torch.Tensor) -> None:
        self.timesteps.append(timesteps.detach().cpu())

    def on_step(self, step: int, epoch: int, loss: float, lr: float, grad_norms: dict[str, float] | None) -> None:
        self.last_loss = loss
        if not self.enabled:
            return
        elapsed = time.perf_counter() - self.start
        done = step - self.steps_done_at_start
        speed = done / elapsed if elapsed > 0 else 0.0
        eta = duration_text((self.total_steps - step) / speed if speed > 0 else float("nan"))
        mem = memory_text(memory_gib(self.device))
        if self.progress:
            self.progress.update(self.task, completed=step, epoch=epoch + 1, loss=loss, lr=lr, speed=speed, mem=mem,
                                 eta=eta, steps=f"{step}/{self.total_steps}", short_mem=mem.replace(" ", ""))
        elif self.show and self.plain:
            if self.every is None and done >= 2:  # the first step includes warm-up costs: judge from two
                self.every = line_interval(elapsed / done)
            if done == 1 or step == self.total_steps or (self.every is not None and step % self.every == 0):
                self.console.print(f"epoch {epoch + 1}/{self.epochs}  step {step}/{self.total_steps}  "
                                   f"loss {loss:.4f}  lr {lr:.2e}  {speed:.2f} it/s  ETA {eta}  mem {mem}",
                                   highlight=False, soft_wrap=True)
        if step % self.log_every == 0:
            self.writer.add_scalar("train/loss", loss, step)
            self.writer.add_scalar("train/lr", lr, step)
            if self.timesteps:
                self.writer.add_histogram("train/timestep", torch.cat(self.timesteps), step)
                self.timesteps.clear()
            log.debug("step %d epoch %d loss %.6f lr %.3e", step, epoch + 1, loss, lr)
        if grad_norms:
            for name, value in grad_norms.items():
                self.writer.add_scalar(f"grad_norm/{name}", value, step)

    def on_epoch_end(self, epoch: int, step: int, mean_loss: float, val_loss: float | None = None) -> None:
        val = f"  val {val_loss:.4f}" if val_loss is not None else ""
        if self.enabled and self.show and self.plain:
            mem = memory_text(memory_gib(self.device))
            # the step lines show each step's loss (the summary's "last loss" is the last one); this is the mean
            self.console.print(f"epoch {epoch + 1}/{self.epochs} done  step {step}/{self.total_steps}  "
                               f"epoch mean loss {mean_loss:.4f}{val}  mem {mem}", highlight=False, soft_wrap=True)
        elif self.progress and val:
            self.progress.console.print(f"epoch {epoch + 1}: epoch mean loss {mean_loss:.4f}{val}", highlight=False)
        if self.writer:
            self.writer.add_scalar("train/epoch_loss", mean_loss, step)
            if val_loss is not None:
                self.writer.add_scalar("val/loss", val_loss, step)

    def on_learning(self, entry: dict, line: str) -> None:
        """One learning-report evaluation (sidestep/train/report.py): its line, and TensorBoard's learning/*."""
        log.info(line)
        self.note(line)
        if not self.writer:
            return
        step = entry["step"]
        for split in ("train", "val"):
            if split not in entry:
                continue
            on = entry[split]["on"]
            self.writer.add_scalar(f"learning/{split}_loss_adapter_on", sum(on) / len(on), step)
            self.writer.add_scalar(f"learning/{split}_change_pct", 100 * entry[f"{split}_change"], step)
            for band, value in entry[f"{split}_bands"].items():
                self.writer.add_scalar(f"learning/{split}_change_pct_t_{band}", 100 * value, step)
        if "gap_points" in entry:
            self.writer.add_scalar("learning/gap_points", entry["gap_points"], step)

    def wants_grad_norms(self, step: int) -> bool:
        return self.enabled and step % self.log_heavy_every == 0

    def close(self) -> None:
        if self.progress:
            self.progress.stop()
        if self.writer:
            self.writer.flush()
            self.writer.close()


def layer_grad_norms(parameters: list[tuple[str, torch.nn.Parameter]]) -> dict[str, float]:
    """L2 norm of the adapter gradients grouped per decoder layer."""
    groups: dict[str, list[torch.Tensor]] = {}
    for name, param in parameters:
        if param.grad is None:
            continue
        parts = name.replace("lycoris_layers_", "layers.").split(".")
        key = f"layer_{parts[parts.index('layers') + 1].split('_')[0]}" if "layers" in parts else "other"
        groups.setdefault(key, []).append(param.grad.detach().float().norm())
    return {k: torch.stack(v).norm().item() for k, v in sorted(groups.items())}
