"""Real MNIST images (about 80 s on 2 cores): CE memorizes 80% label noise, LIMIT does not."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_limit_does_not_memorize_where_cross_entropy_does(datasets_dir):
    if not (datasets_dir / "MNIST" / "raw" / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"real MNIST test images not found under {datasets_dir}")
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "mnist_memorization.py"),
            "--epochs",
            "10",
            "--every",
            "10",
            "--methods",
            "CE",
            "LIMIT_L",
            "--threads",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=1800,
        cwd=ROOT,
        env={**os.environ, "LIT_INFO_DATASETS": str(datasets_dir)},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    final = {
        m.group(1): (float(m.group(2)), float(m.group(3)))
        for m in re.finditer(
            r"final (\S+): test acc ([\d.]+), noisy-train acc ([\d.]+)", out.stdout
        )
    }
    ce_test, ce_noisy = final["CE"]
    limit_test, limit_noisy = final["LIMIT_L"]
    assert ce_noisy > 0.5  # CE fits most wrong labels by epoch 10 (measured: 0.82)
    assert limit_noisy < 0.15  # LIMIT fits few of them (measured: 0.03)
    assert limit_test > ce_test + 0.3  # measured: 0.81 vs 0.21
