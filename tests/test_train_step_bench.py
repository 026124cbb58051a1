"""bench/train_step.py runs on the CPU with the tiny config, so the figures RESULTS.md quotes cannot rot."""

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_train_step_bench_reports_the_split_spread_and_memory_increment():
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "train_step.py"), "--config", "tiny", "--frames", "96",
                           "--batches", "2", "--variants", "ours,stock", "--checkpointing", "on",
                           "--ratios", "1", "--warmup", "1", "--repeats", "5", "--rounds", "2"],
                          capture_output=True, text=True, timeout=600, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    head, runs, compare = lines[0], lines[1:-1], lines[-1]
    assert head["threads"] == 1 and head["machine_peak_tflops"] > 0  # the peak, measured at the same threads
    assert [r["label"] for r in runs] == ["ours R=1 full", "stock"]
    for r in runs:
        assert r["threads"] == 1 and r["timed_steps"] == 10 and r["batch"] == 2  # 2 rounds x 5 steps
        assert len(r["round_medians"]) == 2
        assert r["step_s_min"] <= r["step_s_median"] <= r["step_s_max"]
        assert set(r["split_s"]) == {"data", "forward", "backward", "optimizer"}
        assert sum(r["split_s"].values()) <= r["step_s_max"] * 1.05
        assert r["peak_gib"] >= r["loaded_gib"] > 0 and abs(r["increment_gib"] - (r["peak_gib"] - r["loaded_gib"])) <= 0.0015
        assert 0 < r["mfu"] and isinstance(r["contended"], bool) and r["steal_cores"] >= 0
    assert runs[0]["trainable_params"] == runs[1]["trainable_params"]  # like for like: the same LoRA
    assert compare["bench"] == "train_step_compare" and compare["full_over_stock"] > 0
    # each round's own ratio (its runs follow each other)
    assert compare["full_over_stock_rounds"] == [round(a / b, 3) for a, b in zip(runs[0]["round_medians"],
                                                                                runs[1]["round_medians"])]
    assert min(compare["full_over_stock_rounds"]) <= compare["full_over_stock_rounds_median"] <= \
        max(compare["full_over_stock_rounds"])
