"""SUI on real MNIST 4 vs 9 (shared test images): the paper's configs and benchmark checks.

* The mislabeled-detection config runs through the CLI on 1000 real images, linearizes the
  initial MLP and ranks the 10% flipped labels far above the clean ones by F-SI.
* The speed benchmark's fast path equals its per-sample autograd / matrix-power reference.
* The ground-truth benchmark's SUI estimates correlate with actually retraining the network.
"""

from __future__ import annotations

import csv
import gzip
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from sklearn.metrics import roc_auc_score

from lit_info.cli import main

ROOT = Path(__file__).resolve().parents[1]
MNIST_FILES = ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def _mnist(datasets_dir: Path) -> Path:
    raw = datasets_dir / "MNIST" / "raw"
    if not all((raw / f"{name}.gz").is_file() for name in MNIST_FILES):
        pytest.skip(f"real MNIST test images not found under {raw}")
    return raw


def test_mislabeled_detection_config_on_real_mnist(datasets_dir, tmp_path):
    raw = _mnist(datasets_dir)
    target = tmp_path / "data" / "MNIST" / "raw"
    target.mkdir(parents=True)
    for name in MNIST_FILES:
        with gzip.open(raw / f"{name}.gz") as fin, open(target / name, "wb") as fout:
            shutil.copyfileobj(fin, fout)
    main(
        [
            "fit",
            "--config",
            str(ROOT / "configs" / "sui" / "mnist4v9_mislabeled_detection.yaml"),
            "--trainer.max_epochs=1",
            "--trainer.accelerator=cpu",
            f"--trainer.logger.init_args.save_dir={tmp_path / 'runs'}",
            f"--data.init_args.data_dir={tmp_path / 'data'}",
        ]
    )
    (path,) = (tmp_path / "runs").rglob("sample_information_epoch*.csv")
    with open(path) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1000
    corrupted = [r["corrupted"] == "1" for r in rows]
    assert 70 <= sum(corrupted) <= 130  # 10% flipped
    assert all(r["given_label"] != r["label"] for r, c in zip(rows, corrupted, strict=True) if c)
    fsi = [float(r["fsi"]) for r in rows]
    assert roc_auc_score(corrupted, fsi) > 0.9  # benchmarks/sui_detection.py: 0.98


def _run_benchmark(script: str, args: list[str], datasets_dir: Path) -> str:
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *args, "--threads", "1"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
        env={"LIT_INFO_DATASETS": str(datasets_dir), "PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def test_speed_benchmark_fast_path_equals_reference(datasets_dir):
    _mnist(datasets_dir)
    stdout = _run_benchmark(
        "sui_speed.py", ["--sizes", "40", "--val", "20", "--hidden", "32"], datasets_dir
    )
    match = re.search(r"max rel diff n=40: si (\S+) fsi (\S+)", stdout)
    assert match, stdout
    assert float(match.group(1)) < 1e-9 and float(match.group(2)) < 1e-9
    assert re.search(r"speedup n=40: [\d.]+x", stdout)


def test_ground_truth_benchmark_correlates_with_retraining(datasets_dir):
    _mnist(datasets_dir)
    stdout = _run_benchmark(
        "sui_ground_truth.py",
        ["--n", "60", "--val", "40", "--hidden", "64", "--steps", "200", "--removed", "6"],
        datasets_dir,
    )
    pearson = {
        m.group(1): float(m.group(2))
        for m in re.finditer(r"pearson (F-SI|SI) vs retraining: (\S+)", stdout)
    }
    assert set(pearson) == {"F-SI", "SI"}, stdout
    assert pearson["F-SI"] > 0.9 and pearson["SI"] > 0.9
