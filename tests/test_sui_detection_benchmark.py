"""benchmarks/sui_detection.py on a small draw of real MNIST 4 vs 9: it runs and its rows agree.

The SUI rows need nothing beyond lit_info; the cleanlab rows (a benchmark-only dependency, the
``bench`` extra) run only where cleanlab is installed. The test itself never imports cleanlab.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--n", "120", "--val", "40", "--hidden", "64", "--steps", "200", "--seeds", "2"]


def _run(datasets_dir: Path, *args: str) -> dict[str, float]:
    raw = datasets_dir / "MNIST" / "raw"
    if not (raw / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"real MNIST test images not found under {raw}")
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "sui_detection.py"), *SMALL, *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
        env={"LIT_INFO_DATASETS": str(datasets_dir), "PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    aucs = {
        m.group(1): float(m.group(2))
        for m in re.finditer(r"^auc (.+) mislabeled: (\S+) ", out.stdout, re.MULTILINE)
    }
    assert "mean +- std over 2 seeds" in out.stdout, out.stdout
    return aucs


def test_sui_rows_without_cleanlab(datasets_dir):
    aucs = _run(datasets_dir, "--baselines", "--threads", "1")
    assert set(aucs) == {
        "F-SI",
        "SI",
        "LOO conf. init",
        "F-SI trained",
        "SI trained",
        "confidence",
        "F-SI init + conf.",
        "F-SI trained + conf.",
    }
    assert all(0.5 < auc <= 1.0 for auc in aucs.values()), aucs  # all better than chance


@pytest.mark.skipif(importlib.util.find_spec("cleanlab") is None, reason="cleanlab not installed")
def test_cleanlab_rows(datasets_dir):
    aucs = _run(datasets_dir, "--baselines", "mlp", "logreg", "--folds", "3", "--threads", "1")
    assert aucs["cleanlab + MLP"] > 0.5 and aucs["cleanlab + LogReg"] > 0.5, aucs
