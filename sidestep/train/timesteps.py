"""Where on the noise path each training sample sits (docs/design.md §4.1 step 3, §4.3).

Fixed ("corrected") mode draws t as the model's own `sample_t_r` does: two logit-normal
draws with the config's mu/sigma, t = their maximum, and r = t because `use_meanflow` is
off (docs/design.md §8 Q6). Vanilla mode picks uniformly from the upstream trainer's turbo shift-3 list.
"""

from __future__ import annotations

import torch

# Upstream community trainer's discrete schedule (turbo, shift 3), used for every variant.
TURBO_SHIFT3_TIMESTEPS = (1.0, 0.9545454545454546, 0.9, 0.8333333333333334, 0.75, 0.6428571428571429, 0.5, 0.3)


def sample_t_r(batch_size: int, mu: float, sigma: float, generator: torch.Generator,
               device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """(t, r) as the model's `sample_t_r` with use_meanflow=False: t = max of two draws, r = t."""
    a = torch.sigmoid(torch.randn(batch_size, generator=generator, device=device) * sigma + mu)
    b = torch.sigmoid(torch.randn(batch_size, generator=generator, device=device) * sigma + mu)
    t = torch.maximum(a, b)
    # data_proportion is forced to 1.0 without mean-flow, so r = t for every sample.
    return t, t.clone()


def sample_discrete(batch_size: int, generator: torch.Generator, device: torch.device | str = "cpu",
                    dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Uniform over TURBO_SHIFT3_TIMESTEPS; in bf16 the values are rounded as upstream's are on CUDA."""
    values = torch.tensor(TURBO_SHIFT3_TIMESTEPS, device=device, dtype=dtype)
    index = torch.randint(0, len(TURBO_SHIFT3_TIMESTEPS), (batch_size,), generator=generator, device=device)
    return values[index]
