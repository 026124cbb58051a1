"""The power-user loss options: each changes the loss exactly as its formula says, off is today's loss bit for bit."""

import pytest
import torch

from helpers import write_tensor_dataset
from sidestep.config import Config
from sidestep.data.dataset import PreprocessedDataset, pad_collate
from sidestep.errors import SidestepError
from sidestep.model import discovery
from sidestep.model.loader import load_dit
from sidestep.train.objective import Objective, draw, flow_matching_loss, sample_generators
from sidestep.train.recipe import objective_of, run_info


@pytest.fixture(scope="module")
def fixed_batch(tiny_root_readonly, tmp_path_factory):
    """The tiny decoder and one batch of two songs cropped to one length, with its expected pieces."""
    dit = load_dit(tiny_root_readonly / "acestep-v15-turbo")
    decoder = dit.transformer.eval()
    dataset = PreprocessedDataset(write_tensor_dataset(tmp_path_factory.mktemp("loss") / "ds", n=2,
                                                       silence=dit.silence_latent()))
    batch = pad_collate([dataset[0], dataset[1]])
    frames = min(dataset.lengths)
    batch = {k: v[:, :frames] if k in ("target_latents", "context_latents", "attention_mask") else v
             for k, v in batch.items()}
    return decoder, batch, dit.null_condition_emb.detach()


def _loss(decoder, batch, null, **objective):
    objective = Objective("fixed", **objective)
    loss, t = flow_matching_loss(decoder, dict(batch), objective, sample_generators(0, 0, [0, 1]), null)
    return loss, t


def _error_and_t(decoder, batch, null, **objective):
    """The velocity error and t of the batch, computed here from the draws (the definition of §4.1)."""
    from sidestep.train.objective import cfg_dropout

    objective = Objective("fixed", **objective)
    x0 = batch["target_latents"]
    d = draw(objective, x0, sample_generators(0, 0, [0, 1]))
    x_t = d.t.view(-1, 1, 1) * d.noise + (1 - d.t.view(-1, 1, 1)) * x0
    with torch.no_grad():
        v = decoder(hidden_states=x_t, timestep=d.t, timestep_r=d.t,
                    encoder_hidden_states=cfg_dropout(batch["encoder_hidden_states"], null, d.keep),
                    context_latents=batch["context_latents"]).sample
    return v.float() - (d.noise - x0).float(), d.t.float()


def test_defaults_are_the_models_own_mse_bit_for_bit(fixed_batch):
    decoder, batch, null = fixed_batch
    error, _ = _error_and_t(decoder, batch, null)
    with torch.no_grad():
        loss, _ = _loss(decoder, batch, null)
    assert torch.equal(loss, error.square().mean())


@pytest.mark.parametrize("weighting,gamma", [("min_snr", 0.5), ("min_snr", 0.05), ("flow_snr", 5.0), ("flow_snr", 1.0)])
def test_timestep_weighting_follows_its_formula(fixed_batch, weighting, gamma):
    decoder, batch, null = fixed_batch
    error, t = _error_and_t(decoder, batch, null)
    snr = ((1 - t) / t) ** 2
    w = torch.minimum(snr, torch.tensor(gamma)) / snr if weighting == "min_snr" else \
        t ** 2 * torch.minimum(snr, torch.tensor(gamma))
    expected = (w * error.square().mean(dim=(1, 2))).mean()
    with torch.no_grad():
        loss, _ = _loss(decoder, batch, null, loss_weighting=weighting, snr_gamma=gamma)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert not torch.all(w == 1) and loss.item() != pytest.approx(error.square().mean().item(), rel=1e-3)
    # data-parallel weights keep working: sum_i num_i / den_i * w_i * mean_i
    weighted = dict(batch, weight_num=torch.tensor([1, 3]), weight_den=torch.tensor([2, 2]))
    with torch.no_grad():
        loss, _ = _loss(decoder, weighted, null, loss_weighting=weighting, snr_gamma=gamma)
    per_sample = w * error.square().mean(dim=(1, 2))
    assert loss.item() == pytest.approx((0.5 * per_sample[0] + 1.5 * per_sample[1]).item(), rel=1e-5)


@pytest.mark.parametrize("loss_fn,delta", [("huber", 0.5), ("huber", 2.0), ("pseudo_huber", 0.5),
                                           ("pseudo_huber", 2.0)])
def test_robust_losses_follow_their_formula(fixed_batch, loss_fn, delta):
    decoder, batch, null = fixed_batch
    error, _ = _error_and_t(decoder, batch, null)
    if loss_fn == "huber":
        expected = 2 * torch.nn.functional.huber_loss(error, torch.zeros_like(error), delta=delta)  # 2 x Huber
        assert (error.abs() > delta).any() and (error.abs() <= delta).any()  # both branches are exercised
    else:
        expected = (2 * delta**2 * (torch.sqrt(1 + (error / delta) ** 2) - 1)).mean()
    with torch.no_grad():
        loss, _ = _loss(decoder, batch, null, loss_fn=loss_fn, huber_delta=delta)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert loss.item() < error.square().mean().item()  # outliers weigh less than under MSE


def test_timestep_distribution_override(tiny_root_readonly, tmp_path):
    """--timestep-mu/--timestep-sigma replace the config's mu/sigma in t = max of two logit-normal draws."""
    g = sample_generators(0, 0, [7])
    x0 = torch.zeros(1, 4, 64)
    t = draw(Objective("fixed", timestep_mu=0.8, timestep_sigma=0.3), x0, g).t
    g = sample_generators(0, 0, [7])[0]
    torch.rand(1, generator=g), torch.randn(4, 64, generator=g)  # the draw order: dropout, noise, then t
    a, b = (torch.sigmoid(0.8 + 0.3 * torch.randn(1, generator=g)) for _ in range(2))
    assert torch.equal(t, torch.maximum(a, b))

    base = Config(checkpoint_dir=str(tiny_root_readonly), dataset_dir=str(tmp_path), output_dir=str(tmp_path))
    model = discovery.model_to_train(base)
    assert (objective_of(base, "fixed", model).timestep_mu, objective_of(base, "fixed", model).timestep_sigma) == \
        (model.timestep_mu, model.timestep_sigma)
    changed = base.replace(timestep_mu=0.8, timestep_sigma=0.3)
    assert (objective_of(changed, "fixed", model).timestep_mu, objective_of(changed, "fixed", model).timestep_sigma) \
        == (0.8, 0.3)
    info = run_info(changed, "fixed", model, None)
    assert info["training"]["timestep_mu"] == 0.8 and info["config"]["timestep_sigma"] == 0.3


def test_options_are_declared_once_with_bounds():
    from sidestep.cli.parser import build_parser
    from sidestep.cli.commands import commands

    args = build_parser(commands()).parse_args(["fixed", "--timestep-mu", "0.5", "--loss-weighting", "min_snr",
                                               "--snr-gamma", "2", "--loss-fn", "huber", "--huber-delta", "0.1"])
    assert (args.timestep_mu, args.loss_weighting, args.snr_gamma, args.loss_fn) == (0.5, "min_snr", 2.0, "huber")
    preset = Config.from_dict({"timestep_mu": 0.5, "loss_fn": "pseudo_huber", "ema_decay": 0.99, "lr_cross": 2.0})
    assert (preset.timestep_mu, preset.loss_fn, preset.ema_decay, preset.lr_cross) == (0.5, "pseudo_huber", 0.99, 2.0)
    from sidestep.cli.train_cmd import summary_table

    shown = {row for row in summary_table(preset, "fixed").columns[0].cells}
    assert {"timestep-mu", "loss-fn", "ema-decay", "lr-cross"} <= shown and "snr-gamma" not in shown
    for bad in ({"snr_gamma": 0.0}, {"huber_delta": -1.0}, {"timestep_sigma": 0.0}, {"loss_fn": "l1"}):
        with pytest.raises(SidestepError):
            Config(**bad)
