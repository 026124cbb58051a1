"""--ema-decay/--ema-start-step and --lr-self/--lr-cross: exactly their formulas; off is today's run bit for bit."""

import pytest
import torch
from safetensors.torch import load_file

from helpers import train_tiny_lora
from sidestep.model.loader import load_dit
from sidestep.adapters import select_target_modules
from sidestep.adapters.lora import Lora as LoraAdapter
from sidestep.train.ema import AdapterEMA
from sidestep.train.optim import build_optimizer, lr_groups

LORA = "adapter_model.safetensors"


def test_ema_follows_its_definition():
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    ema = AdapterEMA([p], decay=0.9, start_step=2)
    expected = p.detach().clone()
    for step, value in enumerate(([2.0, 0.0], [3.0, 1.0], [5.0, -1.0], [0.0, 4.0]), start=1):
        with torch.no_grad():
            p.copy_(torch.tensor(value))
        ema.update(step)
        expected = torch.tensor(value) if step <= 2 else 0.9 * expected + 0.1 * torch.tensor(value)
        assert torch.allclose(ema.shadow[0], expected, rtol=0, atol=1e-6), step
    with ema.applied():
        assert torch.equal(p.detach(), ema.shadow[0])
    assert torch.equal(p.detach(), torch.tensor([0.0, 4.0]))  # the trained weights are back, exactly


def test_ema_adapter_through_training_and_resume(tiny_root_readonly, tmp_path):
    # batch 2 of the 2 songs: one optimizer step per epoch, a checkpoint after each
    settings = dict(epochs=4, batch_size=2, save_every=1, ema_decay=0.5, ema_start_step=1)
    _, out = train_tiny_lora(tiny_root_readonly, tmp_path / "a", **settings)
    weights = [load_file(out / "checkpoints" / f"epoch_{k}" / LORA) for k in range(1, 5)]
    ema = load_file(out / "ema" / LORA)
    for key in ema:
        expected = weights[0][key]  # step 1 <= start step: the EMA copies the weights
        for w in weights[1:]:
            expected = 0.5 * expected + 0.5 * w[key]
        assert torch.allclose(ema[key], expected, rtol=0, atol=1e-7), key
    assert not torch.equal(ema[next(k for k in ema if "lora_B" in k)],
                           load_file(out / LORA)[next(k for k in ema if "lora_B" in k)])
    _, resumed = train_tiny_lora(tiny_root_readonly, tmp_path / "b", resume_from=str(out / "checkpoints" / "epoch_2"),
                                 **settings)
    for name in (LORA, f"ema/{LORA}"):
        a, b = load_file(out / name), load_file(resumed / name)
        assert all(torch.equal(a[k], b[k]) for k in a), name
    _, plain = train_tiny_lora(tiny_root_readonly, tmp_path / "c", epochs=4, batch_size=2, save_every=1)
    a, b = load_file(out / LORA), load_file(plain / LORA)
    assert all(torch.equal(a[k], b[k]) for k in a)  # the EMA never changes the trained weights
    assert not (plain / "ema").exists()


def test_lr_factors_scale_each_modules_update_exactly(tiny_root_readonly):
    decoder = load_dit(tiny_root_readonly / "acestep-v15-turbo").transformer
    LoraAdapter(decoder, select_target_modules(decoder), 4, 8, 0.0)
    named = [(n, p) for n, p in decoder.named_parameters() if p.requires_grad]
    assert lr_groups(named, 1e-3) == [p for _, p in named]  # factors 1: today's optimizer input
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for _, p in named:
            p.copy_(torch.randn(p.shape, generator=g))
            p.grad = torch.randn(p.shape, generator=g)
    before = {n: p.detach().clone() for n, p in named}
    lr, wd, eps = 1e-3, 0.01, 1e-8
    optimizer = build_optimizer("adamw", lr_groups(named, lr, lr_self=3.0, lr_cross=0.25), lr, wd, torch.device("cpu"))
    optimizer.step()
    kinds = set()
    for name, p in named:
        factor = 3.0 if "self_attn" in name else 0.25 if "cross_attn" in name else 1.0
        kinds.add(factor)
        step = lr * factor
        # AdamW's first step: p <- p * (1 - lr * wd) - lr * g / (|g| + eps)   (m_hat = g, v_hat = g^2)
        expected = before[name] * (1 - step * wd) - step * p.grad / (p.grad.abs() + eps)
        assert torch.allclose(p.detach(), expected, rtol=0, atol=1e-7), name
    assert kinds == {3.0, 0.25}


def test_lr_factors_in_a_run_and_recorded(tiny_root_readonly, tmp_path):
    import json

    _, plain = train_tiny_lora(tiny_root_readonly, tmp_path / "a", epochs=1)
    _, same = train_tiny_lora(tiny_root_readonly, tmp_path / "b", epochs=1, lr_self=1.0, lr_cross=1.0)
    _, scaled = train_tiny_lora(tiny_root_readonly, tmp_path / "c", epochs=1, lr_self=1.0, lr_cross=0.5)
    a, b, c = (load_file(folder / LORA) for folder in (plain, same, scaled))
    assert all(torch.equal(a[k], b[k]) for k in a)
    cross = [k for k in a if "cross_attn" in k and "lora_B" in k]
    assert cross and not any(torch.equal(a[k], c[k]) for k in cross)
    assert json.loads((scaled / "sidestep_run.json").read_text())["config"]["lr_cross"] == 0.5


def test_the_learning_report_judges_the_ema_weights(tiny_root_readonly, tmp_path):
    """With the EMA on, the report's adapter-on loss is the loss of the saved ema/ adapter, not of the trained one."""
    import json

    from torch.utils.data import Subset

    from sidestep.data.dataset import PreprocessedDataset
    from sidestep.adapters import load_adapter
    from sidestep.train.report import REPORT_FRAMES, pick_songs
    from sidestep.train.validation import grid_losses

    _, out = train_tiny_lora(tiny_root_readonly, tmp_path, epochs=2, ema_decay=0.5, report_every=1)
    last = json.loads((out / "learning.json").read_text())["evaluations"][-1]
    dataset = PreprocessedDataset(tmp_path / "ds")
    songs = Subset(dataset, pick_songs(len(dataset), 4))

    def report_loss(folder):
        decoder = load_dit(tiny_root_readonly / "acestep-v15-turbo").transformer
        load_adapter(decoder, folder)
        return grid_losses(decoder, songs, seed=42, max_frames=REPORT_FRAMES)

    assert last["train"]["on"] == pytest.approx(report_loss(out / "ema"), rel=1e-6, abs=0)
    assert last["train"]["on"] != pytest.approx(report_loss(out), rel=1e-6, abs=0)
