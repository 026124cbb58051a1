"""The flow-matching training loss (docs/design.md §4.1 fixed, §4.3 vanilla), one function per step.

x0 = clean latents, x1 = noise, x_t = t*x1 + (1-t)*x0, the decoder predicts v = x1 - x0,
loss = mean((v_pred - v)^2) over every element (optional element losses and timestep weights:
sidestep/train/losses.py) (docs/design.md §8 Q8: padding included, as upstream). A batch
from `BucketBatchSampler` carries integer loss weights instead: loss = sum_i num_i * mean_i / den_i
(mean_i over sample i's elements), which is the plain mean for one process and makes the DDP
gradient average equal the global batch's mean for several (see data/batching.py).

Randomness is drawn per sample from its own generator, seeded from (run seed, epoch, sample
index): a sample gets the same dropout, noise and t whatever batch, process count or resume
point it lands in. That is what makes an interrupted run resume bit-identically and a
2-process run equal a 1-process run with twice the batch. Within a sample the draw order is
the reference's: fixed = dropout `rand`, noise `randn`, two `randn` for t; vanilla = noise,
then the timestep index.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch

from sidestep.config import Config
from sidestep.train.losses import element_loss, timestep_weights
from sidestep.train.timesteps import sample_discrete, sample_t_r


@dataclass(frozen=True)
class Objective:
    mode: str  # "fixed" or "vanilla"
    timestep_mu: float = -0.4
    timestep_sigma: float = 1.0
    cfg_ratio: float = 0.15
    loss_fn: str = "mse"           # element loss (sidestep/train/losses.py); mse = the model's own
    huber_delta: float = 1.0
    loss_weighting: str = "none"   # timestep weighting w(t) of each sample's loss; none = the model's own
    snr_gamma: float = 5.0


def configured_objective(config: Config, mode: str, model_mu: float = Objective.timestep_mu,
                         model_sigma: float = Objective.timestep_sigma) -> Objective:
    """The loss as a run's `Config` sets it: the model's timestep distribution (`model_mu`, `model_sigma`)
    unless --timestep-mu/--timestep-sigma."""
    mu = model_mu if config.timestep_mu is None else config.timestep_mu
    sigma = model_sigma if config.timestep_sigma is None else config.timestep_sigma
    return Objective(mode=mode, timestep_mu=mu, timestep_sigma=sigma, cfg_ratio=config.cfg_ratio,
                     loss_fn=config.loss_fn, huber_delta=config.huber_delta, loss_weighting=config.loss_weighting,
                     snr_gamma=config.snr_gamma)


def sample_generators(seed: int, epoch: int, indices: list[int], device: torch.device | str = "cpu"
                      ) -> list[torch.Generator]:
    """One generator per sample occurrence, independent of batching and process layout."""
    gens = []
    for index in indices:
        digest = hashlib.blake2b(f"{seed}:{epoch}:{index}".encode(), digest_size=8).digest()
        gens.append(torch.Generator(device=device).manual_seed(int.from_bytes(digest, "little") >> 1))
    return gens


def cfg_dropout(encoder_hidden_states: torch.Tensor, null_condition_emb: torch.Tensor,
                keep: torch.Tensor) -> torch.Tensor:
    """Replace each dropped sample's whole condition sequence by the learned null embedding (docs/design.md §8 Q7)."""
    B = encoder_hidden_states.shape[0]
    null = null_condition_emb.to(encoder_hidden_states.dtype).expand_as(encoder_hidden_states)
    return torch.where(keep.view(B, 1, 1), encoder_hidden_states, null)


@dataclass
class Draws:
    keep: torch.Tensor   # [B] bool, False = condition dropped (fixed mode only)
    noise: torch.Tensor  # [B, T, C]
    t: torch.Tensor      # [B]


def draw(objective: Objective, x0: torch.Tensor, generators: list[torch.Generator]) -> Draws:
    """All randomness of one training step, per sample, in the reference's order."""
    keeps, noises, ts = [], [], []
    device, shape = x0.device, x0.shape[1:]
    for g in generators:
        if objective.mode == "fixed":
            keeps.append(torch.rand(1, generator=g, device=device) >= objective.cfg_ratio)
            noises.append(torch.randn(shape, generator=g, device=device, dtype=x0.dtype))
            ts.append(sample_t_r(1, objective.timestep_mu, objective.timestep_sigma, g, device)[0])
        else:
            keeps.append(torch.ones(1, dtype=torch.bool, device=device))
            noises.append(torch.randn(shape, generator=g, device=device, dtype=x0.dtype))
            ts.append(sample_discrete(1, g, device, x0.dtype))
    # The model's forward works in the input dtype (docs/design.md §8 Q5); vanilla values are already rounded to it.
    return Draws(keep=torch.cat(keeps), noise=torch.stack(noises), t=torch.cat(ts).to(x0.dtype))


def flow_matching_loss(decoder: torch.nn.Module, batch: dict[str, torch.Tensor], objective: Objective,
                       generators: list[torch.Generator], null_condition_emb: torch.Tensor | None = None,
                       input_requires_grad: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Loss of one batch and the timesteps drawn for it."""
    d = draw(objective, batch["target_latents"], generators)
    loss = loss_from_draws(decoder, batch, objective, d, null_condition_emb, input_requires_grad)
    return loss, d.t.detach().float()


def loss_from_draws(decoder: torch.nn.Module, batch: dict[str, torch.Tensor], objective: Objective, d: Draws,
                    null_condition_emb: torch.Tensor | None = None, input_requires_grad: bool = False
                    ) -> torch.Tensor:
    """The loss once the step's randomness is drawn (the memory forecast runs it on meta tensors)."""
    x0 = batch["target_latents"]
    encoder_hidden_states = batch["encoder_hidden_states"]
    if objective.mode == "fixed":
        encoder_hidden_states = cfg_dropout(encoder_hidden_states, null_condition_emb, d.keep)
    t_ = d.t.view(-1, 1, 1)
    x_t = t_ * d.noise + (1.0 - t_) * x0
    if input_requires_grad:
        # Keeps the graph connected through checkpointed segments (Side-Step 0.8 fix).
        x_t.requires_grad_(True)
    v_pred = decoder(hidden_states=x_t, timestep=d.t, timestep_r=d.t, encoder_hidden_states=encoder_hidden_states,
                     context_latents=batch["context_latents"]).sample
    error = element_loss(v_pred.float(), (d.noise - x0).float(), objective.loss_fn, objective.huber_delta)
    weights = timestep_weights(d.t, objective.loss_weighting, objective.snr_gamma)
    if "weight_num" in batch or weights is not None:
        per_sample = error.mean(dim=tuple(range(1, error.ndim)))
        if weights is not None:
            per_sample = per_sample * weights
        if "weight_num" in batch:
            return (per_sample * batch["weight_num"].float() / batch["weight_den"].float()).sum()
        return per_sample.mean()
    return error.mean()
