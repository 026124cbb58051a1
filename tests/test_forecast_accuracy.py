"""Issue 21.3: the forecast's increment (what training adds above the loaded, adapter-wrapped model) is within
10% of a real run's, on this CPU, for the tiny config at 30/60/120 s of audio and batch 1 and 4 (the medium
config: bench/memory_forecast.py). Each side runs in its own fresh process: a process that has trained (or
forecast) once has already paid the first step's one-off memory."""

import multiprocessing as mp
import sys
from pathlib import Path

import pytest
import torch

from sidestep.model.configs import TINY_DIT_CONFIG
from sidestep.model.tiny import write_dit_folder
from sidestep.train.memory_probe import write_dataset

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="VmHWM and clear_refs are Linux's")
SETTINGS = [(frames, batch) for frames in (750, 1500, 3000) for batch in (1, 4)]
COND = 769  # condition tokens per sample (docs/design.md §5.5)


def _child(settings: dict, part: str) -> float:
    torch.set_num_threads(1)
    from sidestep.config import Config
    from sidestep.train.forecast import forecast
    from sidestep.train.memory_probe import measure_increment

    settings = dict(settings)
    frames = settings.pop("frames_", None)
    config = Config(**settings)
    if part == "measure":
        return measure_increment(config, steps=3)["increment"]
    return forecast(config, TINY_DIT_CONFIG, torch.device("cpu"), "fp32", frames, COND).increment


@pytest.fixture(scope="module")
def ratios(tmp_path_factory):
    root = tmp_path_factory.mktemp("accuracy")
    write_dit_folder(root / "acestep-v15-turbo", TINY_DIT_CONFIG)
    found = {}
    ctx = mp.get_context("spawn")
    for frames, batch in SETTINGS:
        data = write_dataset(root / f"data_{frames}_{batch}", 3 * batch, frames, COND, TINY_DIT_CONFIG["hidden_size"])
        settings = dict(checkpoint_dir=str(root), dataset_dir=str(data), output_dir=str(root / "out"), epochs=1,
                        batch_size=batch, gradient_accumulation=1, num_workers=0, device="cpu", precision="fp32",
                        log_every=1000, log_heavy_every=1000)
        values = {}
        for part in ("forecast", "measure"):
            with ctx.Pool(1) as pool:
                values[part] = pool.apply(_child, ({**settings, "frames_": frames} if part == "forecast" else settings,
                                                   part))
        found[(frames, batch)] = values["forecast"] / values["measure"]
    return found


@pytest.mark.parametrize("frames,batch", SETTINGS)
def test_forecast_increment_within_10_percent(ratios, frames, batch):
    ratio = ratios[(frames, batch)]
    print(f"frames {frames} batch {batch}: forecast / measured increment = {ratio:.3f}")
    assert abs(ratio - 1) <= 0.10, f"{frames} frames, batch {batch}: ratio {ratio:.3f}"
