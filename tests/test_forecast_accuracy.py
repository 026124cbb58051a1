"""Issue 21.3: the forecast's increment (what training adds above the loaded, adapter-wrapped model) is within
10% of a real run's, on this CPU, for the tiny config at 30/60/120 s of audio (750/1500/3000 latent frames) and
batch 1 and 4, gradient checkpointing on (the default); at 60 s, batch 1, also with the selective policy, half the
blocks checkpointed, and none. The medium config: bench/memory_forecast.py.

Each measurement runs in a fresh process (spawn): a process that has trained once has already
paid the first step's one-off memory, and an earlier setting's freed memory would hide growth. The forecasts
run together in one more fresh process (what they add to it is not what they predict)."""

import multiprocessing as mp
import sys

import pytest
import torch

from sidestep.model.configs import TINY_DIT_CONFIG
from sidestep.model.tiny import write_dit_folder
from sidestep.train.memory_probe import write_dataset

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="VmHWM and clear_refs are Linux's")
# (frames, batch, checkpointing: (on, ratio, policy))
FULL = (True, 1.0, "full")
SETTINGS = [(frames, batch, FULL) for frames in (750, 1500, 3000) for batch in (1, 4)] + [
    (1500, 1, (True, 1.0, "selective")), (1500, 1, (True, 0.5, "full")), (1500, 1, (False, 1.0, "full"))]
COND = 769  # condition tokens per sample (docs/design.md §5.5)


def _forecasts(configs: list[dict]) -> list[float]:
    torch.set_num_threads(1)
    from sidestep.config import Config
    from sidestep.train.forecast import forecast

    return [forecast(Config(**c), TINY_DIT_CONFIG, torch.device("cpu"), "fp32", frames, COND).increment
            for c, frames in configs]


def _measure(config: dict) -> float:
    torch.set_num_threads(1)
    from sidestep.config import Config
    from sidestep.train.memory_probe import measure_increment

    return measure_increment(Config(**config), steps=2)["increment"]  # step 2 runs with the optimizer's state


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@pytest.fixture(scope="module")
def ratios(tmp_path_factory, monkeypatch_module):
    root = tmp_path_factory.mktemp("accuracy")
    write_dit_folder(root / "acestep-v15-turbo", TINY_DIT_CONFIG)
    configs = []
    for frames, batch, (checkpointing, ratio, policy) in SETTINGS:
        data = root / f"data_{frames}_{batch}"
        if not data.is_dir():
            write_dataset(data, 2 * batch, frames, COND, TINY_DIT_CONFIG["hidden_size"])
        configs.append(dict(checkpoint_dir=str(root), dataset_dir=str(data), output_dir=str(root / "out"), epochs=1,
                            batch_size=batch, gradient_accumulation=1, num_workers=0, device="cpu",
                            gradient_checkpointing=checkpointing, gradient_checkpointing_ratio=ratio,
                            checkpointing_policy=policy, precision="fp32", log_every=1000, log_heavy_every=1000))
    # one thread in every child, as bench/memory_forecast.py measures (set before torch loads there)
    monkeypatch_module.setenv("OMP_NUM_THREADS", "1")
    ctx = mp.get_context("spawn")
    with ctx.Pool(1) as pool:
        predicted = pool.apply(_forecasts, ([(c, frames) for c, (frames, _, _) in zip(configs, SETTINGS)],))
    measured = []
    for config in configs:
        with ctx.Pool(1) as pool:
            measured.append(pool.apply(_measure, (config,)))
    return {s: p / m for s, p, m in zip(SETTINGS, predicted, measured)}


@pytest.mark.parametrize("frames,batch,checkpointing", SETTINGS)
def test_forecast_increment_within_10_percent(ratios, frames, batch, checkpointing):
    ratio = ratios[(frames, batch, checkpointing)]
    what = f"{frames} frames, batch {batch}, checkpointing {checkpointing}"
    print(f"{what}: forecast / measured increment = {ratio:.3f}")
    assert abs(ratio - 1) <= 0.10, f"{what}: forecast / measured increment {ratio:.3f}"
