"""An exponential moving average of the adapter weights (`--ema-decay`, `--ema-start-step`).

After optimizer step n (1-based): shadow = p while n <= start_step (it follows the weights), then
shadow = decay * shadow + (1 - decay) * p. The shadow is fp32 like the adapter weights, goes into
every checkpoint (so a resumed run continues it bit for bit) and is written as its own loadable
adapter (`{output-dir}/ema/`). `applied()` swaps it into the adapter for a while (validation, the
learning report, best/, previews) and puts the trained weights back exactly.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch


class AdapterEMA:
    def __init__(self, params: list[torch.nn.Parameter], decay: float, start_step: int = 0):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay {decay}: use a value in (0, 1)")
        self.params, self.decay, self.start_step = list(params), decay, start_step
        self.shadow = [p.detach().clone() for p in self.params]

    @torch.no_grad()
    def update(self, step: int) -> None:
        """After optimizer step `step` (1-based)."""
        for shadow, param in zip(self.shadow, self.params):
            if step <= self.start_step:
                shadow.copy_(param)
            else:
                shadow.mul_(self.decay).add_(param.detach(), alpha=1.0 - self.decay)

    def state_dict(self) -> dict[str, Any]:
        return {"shadow": [s.detach().clone() for s in self.shadow], "decay": self.decay,
                "start_step": self.start_step}

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, Any]) -> None:
        if len(state["shadow"]) != len(self.shadow):
            raise ValueError(f"EMA state holds {len(state['shadow'])} tensors, the adapter {len(self.shadow)}")
        for shadow, saved in zip(self.shadow, state["shadow"]):
            shadow.copy_(saved)

    @contextlib.contextmanager
    def applied(self) -> Iterator[None]:
        """The adapter holds the EMA weights inside the block; the trained ones are restored after."""
        with torch.no_grad():
            trained = [p.detach().clone() for p in self.params]
            for param, shadow in zip(self.params, self.shadow):
                param.copy_(shadow)
        try:
            yield
        finally:
            with torch.no_grad():
                for param, saved in zip(self.params, trained):
                    param.copy_(saved)


def maybe_applied(ema: AdapterEMA | None):
    """`ema.applied()`, or nothing when the EMA is off."""
    return ema.applied() if ema is not None else contextlib.nullcontext()


__all__ = ["AdapterEMA", "maybe_applied"]
