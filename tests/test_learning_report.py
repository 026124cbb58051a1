"""The learning report: adapter off/on losses at fixed timesteps, derived changes, verdicts, resume."""

import json

import pytest
import torch

from helpers import train_tiny_lora, write_tensor_dataset
from sidestep.config import Config
from sidestep.data.dataset import PreprocessedDataset
from sidestep.model.loader import load_dit
from sidestep.adapters import select_target_modules
from sidestep.adapters.lora import Lora as LoraAdapter
from sidestep.train.recipe import train
from sidestep.train.report import (MEASURABLE, REPORT_FILE, LearningReport, pick_songs, relative_change,
                                   verdicts)
from sidestep.train.validation import VAL_GRID, grid_losses


def _series(path):
    """learning.json's evaluations without their timings (the only thing allowed to differ between reruns)."""
    evaluations = json.loads((path / REPORT_FILE).read_text())["evaluations"]
    return [{k: v for k, v in e.items() if k != "seconds"} for e in evaluations]


def test_off_is_the_base_model_and_an_untrained_adapter_changes_nothing(tiny_root_readonly, tmp_path):
    dit = load_dit(tiny_root_readonly / "acestep-v15-turbo")
    decoder = dit.transformer
    dataset = PreprocessedDataset(write_tensor_dataset(tmp_path / "ds", n=3, silence=dit.silence_latent()))
    bare = grid_losses(decoder, torch.utils.data.Subset(dataset, [0, 1, 2]), max_frames=750)
    LoraAdapter(decoder, select_target_modules(decoder), 4, 8, 0.1)  # PEFT init: lora_B = 0
    report = LearningReport(dataset, None, seed=0, songs=4, device="cpu", dtype=torch.float32)
    start = report.measure_base(decoder, 0, 0)
    assert report.base["train"] == bare
    untrained = report.evaluate(decoder, 1, 1)
    assert untrained["train"]["on"] == untrained["train"]["off"]
    assert untrained["train_change"] == 0.0 and set(untrained["train_bands"].values()) == {0.0}
    assert start["train_change"] == 0.0
    with torch.no_grad():
        for name, p in decoder.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(1)) * 0.1)
    trained = report.evaluate(decoder, 2, 2)
    assert trained["train"]["off"] == bare  # the base is measured once and kept
    assert trained["train"]["on"] != bare and trained["train_change"] != 0.0
    # off was measured with the adapter really off: the same evaluation at strength 0 again gives `bare`
    report.base = None
    assert report.measure_base(decoder, 2, 2)["train"]["off"] == bare


def test_relative_change_and_bands_follow_the_definition():
    off = [1.0, 2.0, 3.0, 4.0, 5.0]
    on = [0.5, 2.0, 3.0, 4.0, 4.0]
    assert relative_change(on, off) == pytest.approx((13.5 - 15.0) / 15.0)
    assert relative_change(on, off, (0.1, 0.3)) == pytest.approx((2.5 - 3.0) / 3.0)
    assert relative_change(on, off, (0.5,)) == 0.0
    assert VAL_GRID == (0.1, 0.3, 0.5, 0.7, 0.9)
    assert pick_songs(3, 4) == [0, 1, 2] and pick_songs(9, 3) == [0, 4, 8] and pick_songs(9, 1) == [0]


def test_an_adapter_trained_on_one_song_lowers_that_songs_loss(tiny_root_readonly, tmp_path):
    silence = load_dit(tiny_root_readonly / "acestep-v15-turbo").silence_latent()
    dataset = write_tensor_dataset(tmp_path / "ds", n=1, silence=silence)
    config = Config(checkpoint_dir=str(tiny_root_readonly), dataset_dir=str(dataset), output_dir=str(tmp_path / "out"),
                    epochs=8, rank=4, alpha=8, learning_rate=2e-2, warmup_steps=0, gradient_accumulation=1,
                    dropout=0.0, num_workers=0, save_every=100, scheduler_type="constant", report_every=4)
    result = train(config, "fixed", quiet=True)
    series = _series(tmp_path / "out")
    assert [e["epoch"] for e in series] == [0, 4, 8]  # the start, every 4 epochs, the end
    assert series[0]["train_change"] == 0.0
    assert series[-1]["train_change"] <= -MEASURABLE
    assert sum(series[-1]["train"]["on"]) < sum(series[-1]["train"]["off"])
    assert result.verdicts[0].startswith("learned your songs: loss -")
    from sidestep.cli.train_cmd import learning_rows

    rows = learning_rows(result)  # the closing summary's rows
    assert rows[0][0] == "loss change, training songs" and rows[0][1].startswith("-")
    assert ("verdict", result.verdicts[0]) in rows
    assert (tmp_path / "out" / "loss.png").is_file()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "out" / "runs")).Reload()
    logged = [(e.step, e.value) for e in events.Scalars("learning/train_change_pct")]
    assert logged == [(e["step"], pytest.approx(100 * e["train_change"], rel=1e-6)) for e in series]
    assert "learning/train_change_pct_t_high" in events.Tags()["scalars"]


def test_identical_across_reruns_and_continued_on_resume(tiny_root_readonly, tmp_path):
    settings = dict(epochs=3, val_split=0.5, save_every=1, report_every=1)
    a, out_a = train_tiny_lora(tiny_root_readonly, tmp_path / "a", **settings)
    b, out_b = train_tiny_lora(tiny_root_readonly, tmp_path / "b", **settings)
    series = _series(out_a)
    assert len(series) == 4 and "val" in series[-1] and series == _series(out_b)
    assert a.best_val_loss == min(sum(e["val"]["on"]) / len(VAL_GRID) for e in series[1:])
    _, out_c = train_tiny_lora(tiny_root_readonly, tmp_path / "c", resume_from=str(out_a / "checkpoints" / "epoch_1"),
                               **settings)
    assert _series(out_c) == series  # the resumed run continues the same series (no second base)


def test_auto_interval_keeps_the_report_under_its_budget(tiny_root_readonly, tmp_path):
    from sidestep.train.report import BUDGET, auto_every

    # 4 songs x 750 frames x 5 timesteps against epochs of 20 songs x 4500 frames x 3: 5.6% -> every epoch
    assert auto_every(4 * 750, 20 * 4500) == 1
    # the demo's size: 4 x 75 x 5 = 1500 frame passes against 6 x 75 x 3 = 1350 per epoch -> every 12 epochs
    assert auto_every(4 * 75, 6 * 75) == 12 and 1500 / (12 * 1350) <= BUDGET < 1500 / (11 * 1350)
    # 2 tiny songs (24 + 30 frames, evaluated whole): 270 against 162 per epoch -> every 17 epochs: start and end
    result, out = train_tiny_lora(tiny_root_readonly, tmp_path, epochs=3)
    assert [e["epoch"] for e in _series(out)] == [0, 3]


def test_learning_report_off_writes_nothing(tiny_root_readonly, tmp_path):
    result, out = train_tiny_lora(tiny_root_readonly, tmp_path, epochs=1, learning_report=False)
    assert not (out / REPORT_FILE).exists() and result.learning == [] and result.verdicts == []


def _entry(train, val=None, val_loss=None):
    entry = {"train_change": train, "train": {"on": [1.0], "off": [1.0]}}
    if val is not None:
        entry.update(val_change=val, gap_points=100 * (val - train), val={"on": [val_loss], "off": [1.0]})
    return entry


def test_verdicts_and_their_thresholds():
    start = _entry(0.0, 0.0, 1.0)
    learned = verdicts([start, _entry(-0.18, -0.09, 0.91)])
    assert learned[0] == "learned your songs: loss -18.0% on training songs, -9.0% on held-out songs"
    assert learned[1] == "learned the style: held-out songs improved too (-9.0%)"
    assert verdicts([start, _entry(-0.019)])[0].startswith("no measurable change: loss -1.9% on training songs")
    assert "raise the learning rate or the epochs" in verdicts([start, _entry(0.01)])[0]
    assert verdicts([start, _entry(0.05)])[0].startswith("worse on your songs")
    rising = [start, _entry(-0.1, -0.05, 0.80), _entry(-0.2, -0.04, 0.81), _entry(-0.3, -0.03, 0.82),
              _entry(-0.4, -0.02, 0.83)]
    assert verdicts(rising, keep_best=True)[1] == "memorising: the held-out loss rose for 3 evaluations; the best " \
                                                  "adapter is in best/"
    assert "pass --keep-best" in verdicts(rising[:-1] + [_entry(-0.4, -0.02, 0.84)])[1]
    assert not any("rose" in v for v in verdicts(rising[:-1]))  # 2 rises: not yet
    gap = verdicts([start, _entry(-0.2, -0.05, 0.9)])
    assert gap[1].startswith("memorising: training songs improved 15.0 points more than held-out ones")
    assert verdicts([start]) == []
