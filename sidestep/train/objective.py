"""The flow-matching training loss (SPEC 3.1 fixed, 3.3 vanilla), one function per step.

x0 = clean latents, x1 = noise, x_t = t*x1 + (1-t)*x0, the decoder predicts v = x1 - x0,
loss = mean((v_pred - v)^2) over every element (Q8: padding included, as upstream).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sidestep.train.timesteps import sample_discrete, sample_t_r


@dataclass(frozen=True)
class Objective:
    mode: str  # "fixed" or "vanilla"
    timestep_mu: float = -0.4
    timestep_sigma: float = 1.0
    cfg_ratio: float = 0.15


def cfg_dropout(encoder_hidden_states: torch.Tensor, null_condition_emb: torch.Tensor, cfg_ratio: float,
                generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace each dropped sample's whole condition sequence by the learned null embedding (Q7)."""
    B = encoder_hidden_states.shape[0]
    keep = torch.rand(B, generator=generator, device=encoder_hidden_states.device) >= cfg_ratio
    null = null_condition_emb.to(encoder_hidden_states.dtype).expand_as(encoder_hidden_states)
    return torch.where(keep.view(B, 1, 1), encoder_hidden_states, null), keep


def flow_matching_loss(decoder: torch.nn.Module, batch: dict[str, torch.Tensor], objective: Objective,
                       generator: torch.Generator, null_condition_emb: torch.Tensor | None = None,
                       input_requires_grad: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Loss of one batch and the timesteps drawn for it. RNG order follows the reference."""
    x0 = batch["target_latents"]
    encoder_hidden_states = batch["encoder_hidden_states"]
    B, device = x0.shape[0], x0.device
    if objective.mode == "fixed":
        encoder_hidden_states, _ = cfg_dropout(encoder_hidden_states, null_condition_emb, objective.cfg_ratio,
                                               generator)
        x1 = torch.randn(x0.shape, generator=generator, device=device, dtype=x0.dtype)
        t, _ = sample_t_r(B, objective.timestep_mu, objective.timestep_sigma, generator, device)
        t = t.to(x0.dtype)  # the model's forward works in the input dtype (Q5)
    else:
        x1 = torch.randn(x0.shape, generator=generator, device=device, dtype=x0.dtype)
        t = sample_discrete(B, generator, device, x0.dtype)
    t_ = t.view(B, 1, 1)
    x_t = t_ * x1 + (1.0 - t_) * x0
    if input_requires_grad:
        # Keeps the graph connected through checkpointed segments (Side-Step 0.8 fix).
        x_t.requires_grad_(True)
    v_pred = decoder(hidden_states=x_t, timestep=t, timestep_r=t, encoder_hidden_states=encoder_hidden_states,
                     context_latents=batch["context_latents"]).sample
    loss = (v_pred.float() - (x1 - x0).float()).square().mean()
    return loss, t.detach().float()
