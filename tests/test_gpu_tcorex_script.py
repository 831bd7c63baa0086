"""benchmarks/gpu_tcorex.py, the prepared script for a lent GPU, on a tiny problem on the CPU.

A device session has minutes in all; this makes sure the script runs and its numbers hold up
before it gets there.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
from scipy.stats import multivariate_normal

from lit_info.data.timeseries import sample_periods, sudden_change_models

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_tcorex_script_fits_and_finds_the_change_on_cpu():
    cmd = [sys.executable, str(ROOT / "benchmarks" / "gpu_tcorex.py"), "--device", "cpu"]
    cmd += ["--p", "64", "--m", "4", "--periods", "4", "--test", "50", "--max-iter", "30"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    assert re.search(r"fit: [\d.]+ s", out.stdout), out.stdout
    nll = re.search(r"test NLL per period: ours ([\d.]+) .* truth ([\d.]+)", out.stdout)
    assert nll is not None, out.stdout
    ours, truth = float(nll.group(1)), float(nll.group(2))
    # the script's data (same seeds): each period's diagonal covariance is the bar to beat
    models = sudden_change_models(64, 4, 4, n_segments=2, seed=0)
    rng = np.random.default_rng(0)
    train, test = sample_periods(models, 16, rng), sample_periods(models, 50, rng)
    diagonal = np.mean(
        [
            -multivariate_normal.logpdf(x_test, cov=np.diag(x.var(0))).mean()
            for x, x_test in zip(train, test, strict=True)
        ]
    )
    assert truth < ours < 0.95 * diagonal
    # four periods in two segments: the change lies between periods 1 and 2
    assert "largest change-point score between periods 1 and 2 (true change: 1 and 2)" in (
        out.stdout
    )
