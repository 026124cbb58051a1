"""bench/gpu.sh is what a lent GPU runs in one go; here it runs on the CPU with the tiny configs so it cannot rot."""

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))


def test_gpu_suite_runs_every_setting_on_the_cpu(tmp_path):
    import gpu_suite
    import torch

    out = tmp_path / "gpu.json"
    proc = subprocess.run(["bash", str(REPO / "bench" / "gpu.sh"), "--device", "cpu", "--tiny", "--warmup", "1",
                           "--repeats", "1", "--out", str(out)], capture_output=True, text=True, timeout=900,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    report = json.loads(out.read_text())
    expected = gpu_suite.settings(torch.device("cpu"), tiny=True)
    results = report["results"]
    assert [{k: r[k] for k in expected[0]} for r in results] == expected
    assert {r["model"] for r in results} == {"2b", "xl"} and any(r["compile"] for r in results)
    for r in results:
        assert "error" not in r, r
        assert r["step_s_median"] > 0 and r["peak_gib"] >= r["loaded_gib"] > 0 and r["forecast_gib"] > 0, r
    # the CUDA run adds nf4 for both sizes
    cuda = gpu_suite.settings(torch.device("cuda"), tiny=False)
    assert {(r["model"], r["quantize"]) for r in cuda} >= {("2b", "nf4"), ("xl", "nf4")}
