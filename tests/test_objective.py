"""The training objective: timestep distributions, CFG dropout, and the loss value itself."""

import torch

from sidestep.model.loader import load_dit
from sidestep.train.objective import Objective, cfg_dropout, draw, flow_matching_loss, sample_generators
from sidestep.train.timesteps import TURBO_SHIFT3_TIMESTEPS, sample_discrete, sample_t_r

MU, SIGMA, N = -0.4, 1.0, 20000
KS_CRITICAL = 1.95 / N**0.5  # alpha = 0.001


def _logit_normal_cdf(t):
    return torch.special.ndtr((torch.logit(t.double()) - MU) / SIGMA)


def _ks(samples, cdf):
    x = samples.double().sort().values
    n = len(x)
    f = cdf(x)
    upper = torch.arange(1, n + 1, dtype=torch.float64) / n - f
    lower = f - torch.arange(0, n, dtype=torch.float64) / n
    return max(upper.max().item(), lower.max().item())


def test_t_is_max_of_two_logit_normal_draws_and_r_equals_t():
    t, r = sample_t_r(N, MU, SIGMA, torch.Generator().manual_seed(0))
    assert torch.equal(t, r)
    assert _ks(t, lambda x: _logit_normal_cdf(x) ** 2) < KS_CRITICAL        # max of two draws
    assert _ks(t, _logit_normal_cdf) > 5 * KS_CRITICAL                        # not a single draw


def test_vanilla_draws_only_the_listed_values_uniformly():
    t = sample_discrete(N, torch.Generator().manual_seed(0))
    values, counts = torch.unique(t, return_counts=True)
    assert sorted(values.tolist()) == sorted(torch.tensor(TURBO_SHIFT3_TIMESTEPS).tolist())
    assert (counts - N / 8).abs().max() < 5 * (N * (1 / 8) * (7 / 8)) ** 0.5


def test_vanilla_in_bf16_uses_the_rounded_values():
    t = sample_discrete(1000, torch.Generator().manual_seed(0), dtype=torch.bfloat16)
    assert set(t.float().tolist()) == {1.0, 0.953125, 0.8984375, 0.83203125, 0.75, 0.64453125, 0.5, 0.30078125}


def test_cfg_dropout_rate_and_replacement():
    B, ratio = 10000, 0.15
    hidden = torch.randn(B, 3, 4)
    null = torch.randn(1, 1, 4)
    keep = draw(Objective("fixed", cfg_ratio=ratio), torch.zeros(B, 1, 1), sample_generators(1, 0, range(B))).keep
    out = cfg_dropout(hidden, null, keep)
    dropped = (~keep).sum().item()
    assert abs(dropped - B * ratio) < 4.5 * (B * ratio * (1 - ratio)) ** 0.5
    assert torch.equal(out[keep], hidden[keep])
    assert torch.equal(out[~keep], null.expand(int(dropped), 3, 4))


def test_fixed_loss_equals_independent_computation(tiny_root_readonly):
    dit = load_dit(tiny_root_readonly / "acestep-v15-turbo")
    g = torch.Generator().manual_seed(7)
    B, T, L = 3, 20, 9
    batch = {"target_latents": torch.randn(B, T, 64, generator=g),
             "encoder_hidden_states": torch.randn(B, L, 64, generator=g),
             "context_latents": torch.randn(B, T, 128, generator=g)}
    objective = Objective("fixed", timestep_mu=MU, timestep_sigma=SIGMA, cfg_ratio=0.5)
    with torch.no_grad():
        loss, t = flow_matching_loss(dit.transformer, batch, objective, sample_generators(5, 2, [4, 9, 1]),
                                     dit.null_condition_emb)
        # Independently: per-sample generators, the reference's draw order (rand, randn x0-shape, randn, randn).
        keep, noise, t_ref = [], [], []
        for g in sample_generators(5, 2, [4, 9, 1]):
            keep.append(torch.rand(1, generator=g).item() >= 0.5)
            noise.append(torch.randn(T, 64, generator=g))
            a = torch.sigmoid(torch.randn(1, generator=g) * SIGMA + MU)
            b = torch.sigmoid(torch.randn(1, generator=g) * SIGMA + MU)
            t_ref.append(torch.maximum(a, b))
        keep, noise, t_ref = torch.tensor(keep), torch.stack(noise), torch.cat(t_ref)
        enc = batch["encoder_hidden_states"].clone()
        enc[~keep] = dit.null_condition_emb[0, 0]
        x0 = batch["target_latents"]
        x_t = t_ref[:, None, None] * noise + (1 - t_ref[:, None, None]) * x0
        v = dit.transformer(hidden_states=x_t, timestep=t_ref, timestep_r=t_ref, encoder_hidden_states=enc,
                            context_latents=batch["context_latents"]).sample
        expected = ((v - (noise - x0)) ** 2).mean()
    assert not keep.all() and keep.any()
    assert torch.equal(t, t_ref)
    assert torch.allclose(loss, expected, rtol=1e-6, atol=1e-7)
