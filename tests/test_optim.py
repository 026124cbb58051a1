import pytest
import torch

from sidestep.errors import SidestepError
from sidestep.train.optim import build_optimizer, build_scheduler, effective_schedule, lr_factor


def _lrs(schedule, warmup=4, total=20):
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    sched = build_scheduler(opt, schedule, warmup, total)
    lrs = []
    for _ in range(total):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


@pytest.mark.parametrize("schedule", ["cosine", "cosine_restarts", "linear", "constant_with_warmup"])
def test_warmup_from_ten_percent(schedule):
    lrs = _lrs(schedule)
    assert lrs[:5] == pytest.approx([0.1, 0.325, 0.55, 0.775, 1.0])


def test_schedule_shapes():
    assert _lrs("constant") == [1.0] * 20
    assert _lrs("constant_with_warmup")[4:] == [1.0] * 16
    cosine, linear = _lrs("cosine"), _lrs("linear")
    assert all(a >= b for a, b in zip(cosine[4:], cosine[5:])) and cosine[-1] < 0.05
    assert linear[4:] == pytest.approx([1 - 0.99 * i / 16 for i in range(16)])
    restarts = _lrs("cosine_restarts")
    assert restarts[8] == pytest.approx(1.0) and restarts[7] < 0.5  # a restart every 4 steps after warm-up


def test_prodigy_forces_constant():
    assert effective_schedule("prodigy", "cosine") == "constant"
    assert effective_schedule("adamw", "cosine") == "cosine"


def test_unknown_schedule_is_an_error():
    with pytest.raises(SidestepError, match="--scheduler-type 'wavy'"):
        lr_factor(0, "wavy", 1, 10)


@pytest.mark.parametrize("name", ["adamw", "adafactor", "prodigy"])
def test_optimizers_step(name):
    p = torch.nn.Parameter(torch.ones(4, 4))
    opt = build_optimizer(name, [p], 1.0 if name == "prodigy" else 1e-2, 0.0, torch.device("cpu"))
    before = p.detach().clone()
    (p ** 2).sum().backward()
    opt.step()
    assert not torch.equal(before, p.detach())


def test_adamw8bit_on_cpu_is_a_clear_error():
    with pytest.raises(SidestepError, match="adamw8bit needs a CUDA GPU"):
        build_optimizer("adamw8bit", [torch.nn.Parameter(torch.ones(1))], 1e-4, 0.0, torch.device("cpu"))
