"""--fit-memory: the fastest forecast setting that fits, from the real forecast of the tiny model."""

import pytest
import torch

from helpers import write_tensor_dataset
from sidestep.cli.main import main
from sidestep.config import Config
from sidestep.errors import SidestepError
from sidestep.model.loader import read_dit_config
from sidestep.train import fit


def test_speed_model_prefers_big_batches_few_recomputes_and_no_nf4():
    assert fit.relative_speed(4, 0.0, "full", "none") > fit.relative_speed(1, 0.0, "full", "none")
    assert fit.relative_speed(2, 0.5, "full", "none") > fit.relative_speed(2, 1.0, "full", "none")
    assert fit.relative_speed(2, 1.0, "selective", "none") > fit.relative_speed(2, 1.0, "full", "none")
    assert fit.relative_speed(2, 1.0, "full", "nf4") < fit.relative_speed(2, 1.0, "full", "none")
    # the documented formula: B / (0.5 + B * (2.4 + share) / 2.4 * q)
    assert fit.relative_speed(4, 0.5, "full", "nf4") == pytest.approx(4 / (0.5 + 4 * 2.9 / 2.4 * 1.15))


def test_the_choice_is_the_fastest_that_fits(tiny_root_readonly, monkeypatch):
    model_config = read_dit_config(tiny_root_readonly / "acestep-v15-turbo")
    config = Config(checkpoint_dir=str(tiny_root_readonly), rank=4, alpha=8)
    options = fit.candidates(config, model_config, torch.device("cpu"), "fp32", frames=400)
    assert len(options) == len(fit.BATCHES) * len(fit.RATIOS)  # no nf4 on the CPU
    by_setting = {(c.batch_size, c.ratio): c for c in options}
    # memory grows with the batch and shrinks with the share of checkpointed blocks
    assert by_setting[(8, 0.0)].gib > by_setting[(1, 0.0)].gib > by_setting[(1, 1.0)].gib
    assert fit.choose(options, 1e6) == by_setting[(8, 0.0)]  # everything fits: the fastest
    budget = by_setting[(2, 1.0)].gib
    chosen = fit.choose(options, budget)
    assert chosen.gib <= budget
    assert all(c.speed <= chosen.speed for c in options if c.fits(budget))
    applied = fit.apply(config, chosen)
    assert (applied.batch_size, applied.gradient_checkpointing) == (chosen.batch_size, chosen.ratio > 0)
    # without the table, forecasting stops at the first setting that fits: the same choice (the process's RSS,
    # which every CPU forecast adds, held still so that the two searches see the same baseline)
    monkeypatch.setattr("sidestep.train.forecast.current_rss", lambda: 0.5 * 2**30)
    options = fit.candidates(config, model_config, torch.device("cpu"), "fp32", frames=400)
    for b in (1e6, budget, budget / 2 + 0.25):
        fast = fit.fastest_fitting(config, model_config, torch.device("cpu"), "fp32", 400, b)
        assert fast == fit.choose(options, b), b
    with pytest.raises(SidestepError, match=r"--fit-memory 0.001: no setting fits \(the smallest, batch 1 with "
                                            r"every block checkpointed, needs [\d.]+ GiB\)"):
        fit.choose(options, 0.001)


def test_dry_run_shows_the_table_and_the_choice(tiny_root_readonly, tmp_path, capsys):
    dataset = write_tensor_dataset(tmp_path / "ds")
    code = main(["--plain", "-y", "fixed", "--checkpoint-dir", str(tiny_root_readonly), "--dataset-dir", str(dataset),
                 "--output-dir", str(tmp_path / "out"), "--rank", "4", "--alpha", "8", "--fit-memory", "1000",
                 "--dry-run"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "Settings forecast for --fit-memory 1000 GiB" in out and "chosen" in out
    assert "--fit-memory 1000 GiB: batch 8, 0% of the blocks checkpointed, base none" in out
    assert "Predicted peak memory" in out and "batch 8 x" in out  # the forecast of the chosen setting
