"""Optional loss shapes and timestep weightings (off by default: `fixed` is exactly the model's objective).

With x_t = t * noise + (1 - t) * x0 the signal-to-noise ratio of step t is SNR(t) = ((1 - t) / t)^2.
The decoder predicts the velocity v = noise - x0, and the errors relate as
|v_hat - v| = |x0_hat - x0| / t = |noise_hat - noise| / (1 - t).

Timestep weightings w(t), multiplying each sample's loss:
  none      w = 1
  min_snr   w = min(SNR, gamma) / SNR = min(1, gamma / SNR): Min-SNR-gamma in its noise-prediction
            form, applied to the velocity loss; it caps the weight of low-noise (small t) steps.
  flow_snr  w = t^2 * min(SNR, gamma) = min((1 - t)^2, gamma * t^2): Min-SNR-gamma's x0-loss weight
            min(SNR, gamma) carried over to the velocity loss through |x0 error| = t * |v error|.

Element losses rho(e) of the velocity error e = v_hat - v (averaged like the squared error):
  mse           e^2
  huber         e^2 where |e| <= delta, else 2 * delta * |e| - delta^2   (2 x Huber: equal to e^2 near 0)
  pseudo_huber  2 * delta^2 * (sqrt(1 + (e / delta)^2) - 1)             (2 x pseudo-Huber: ~e^2 near 0)
"""

from __future__ import annotations

import torch

from sidestep.config import LOSS_FUNCTIONS, LOSS_WEIGHTINGS as WEIGHTINGS


def element_loss(pred: torch.Tensor, target: torch.Tensor, loss_fn: str = "mse", delta: float = 1.0
                 ) -> torch.Tensor:
    """rho(pred - target) per element (fp32 in, fp32 out)."""
    error = pred - target
    if loss_fn == "mse":
        return error.square()
    if loss_fn == "huber":
        magnitude = error.abs()
        return torch.where(magnitude <= delta, error.square(), 2.0 * delta * magnitude - delta * delta)
    if loss_fn == "pseudo_huber":
        return 2.0 * delta * delta * (torch.sqrt(1.0 + (error / delta).square()) - 1.0)
    raise ValueError(f"loss function {loss_fn!r}: use one of {', '.join(LOSS_FUNCTIONS)}")


def snr(t: torch.Tensor) -> torch.Tensor:
    return ((1.0 - t) / t).square()


def timestep_weights(t: torch.Tensor, weighting: str = "none", gamma: float = 5.0) -> torch.Tensor | None:
    """w(t) per sample, in fp32; None for "none" (the loss is left exactly as it is)."""
    t = t.float()
    if weighting == "none":
        return None
    if weighting == "min_snr":
        return torch.clamp(gamma / snr(t), max=1.0)  # t = 1: SNR 0, weight 1
    if weighting == "flow_snr":
        return torch.minimum((1.0 - t).square(), gamma * t.square())
    raise ValueError(f"loss weighting {weighting!r}: use one of {', '.join(WEIGHTINGS)}")


__all__ = ["LOSS_FUNCTIONS", "WEIGHTINGS", "element_loss", "snr", "timestep_weights"]
