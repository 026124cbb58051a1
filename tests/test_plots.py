"""loss.png: a real PNG with train, smoothed, validation and learning-rate curves."""

import math

import numpy as np
import pytest

from sidestep.train.plots import ema, plot_losses

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _read(path):
    from matplotlib.image import imread

    assert path.read_bytes()[:8] == PNG_MAGIC
    return imread(path)


def test_loss_png(tmp_path):
    steps = list(range(1, 201))
    losses = [1.0 / math.sqrt(s) + 0.1 * math.sin(s) for s in steps]
    losses[50] = float("nan")  # a diverged step is a gap, not a crash
    lrs = [1e-4 * min(1.0, s / 20) for s in steps]
    path = plot_losses(tmp_path, steps, losses, [(50, 0.4), (100, 0.3), (150, 0.35)], lrs)
    assert path == tmp_path / "loss.png"
    image = _read(path)
    assert image.shape[0] > 300 and image.shape[1] > 600 and image[..., :3].std() > 0.05
    assert sorted(p.name for p in tmp_path.iterdir()) == ["loss.png"]  # written atomically, nothing left over
    # the curves are drawn: the same plot without any data looks different
    empty = _read(plot_losses(tmp_path / "empty.png", [], [], [], None))
    assert empty.shape == image.shape and not np.array_equal(empty, image)


def test_loss_png_without_validation_or_lr(tmp_path):
    path = plot_losses(tmp_path / "run" / "loss.png", [1, 2, 3], [0.5, 0.4, 0.45])
    assert _read(path).ndim == 3
    with pytest.raises(ValueError, match="one entry per step"):
        plot_losses(tmp_path / "x.png", [1, 2], [0.5])


def test_ema_is_debiased_and_skips_gaps():
    assert ema([2.0, 2.0, 2.0]) == pytest.approx([2.0, 2.0, 2.0])
    smoothed = ema([1.0, float("nan"), 3.0], weight=0.5)
    assert smoothed[0] == 1.0 and smoothed[1] == 1.0 and 1.0 < smoothed[2] < 3.0
    assert math.isnan(ema([float("nan")])[0])


def test_learning_report_panel(tmp_path):
    """With learning-report points, a second panel below draws the training and held-out loss changes."""
    steps, losses = [1, 2, 3, 4], [0.5, 0.4, 0.45, 0.41]
    single = _read(plot_losses(tmp_path / "one.png", steps, losses))
    learning = [(0, 0.0, 0.0), (2, -0.1, -0.05), (4, -0.2, -0.04)]
    double = _read(plot_losses(tmp_path / "two.png", steps, losses, learning=learning))
    assert double.shape[0] > single.shape[0] * 1.4 and double.shape[1] == single.shape[1]
    no_val = _read(plot_losses(tmp_path / "three.png", steps, losses, learning=[(s, c, None) for s, c, _ in learning]))
    lower = slice(double.shape[0] * 6 // 10, None)  # the panel's curves differ: the held-out one is drawn
    assert not np.array_equal(no_val[lower], double[lower])
