"""Two DDP processes through the command line share one run folder and write each file once.

Lightning starts the second process by re-running the command line; it must land in the run
folder that the first one chose (not a new ``version_<N>``), resolve ``--ckpt_path last`` to the
same file, and no callback may call a collective (``trainer.log_dir``) on rank 0 alone.
"""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import yaml

DDP = ["--trainer.devices=2", "--trainer.strategy=ddp", "--trainer.accelerator=cpu"]


def _config(tmp_path: Path) -> Path:
    config = {
        "seed_everything": 3,
        "trainer": {
            "max_epochs": 2,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "logger": {
                "class_path": "lit_info.loggers.TensorBoardLogger",
                "init_args": {"name": "d"},
            },
            "callbacks": [
                {
                    "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                    "init_args": {"filename": "last", "enable_version_counter": False},
                },
                {
                    "class_path": "lit_info.callbacks.MemorizationMonitor",
                    "init_args": {"log_histograms": False},
                },
            ],
        },
        "model": {
            "class_path": "lit_info.methods.Classifier",
            "init_args": {"net": "mlp", "net_kwargs": {"hidden": [16]}},
        },
        "data": {
            "class_path": "lit_info.data.NoisyImageDataModule",
            "init_args": {"dataset": "digits", "noise_type": "uniform", "noise_level": 0.2},
        },
    }
    path = tmp_path / "ddp.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    out = subprocess.run(
        [sys.executable, "-m", "lit_info", *args, *DDP],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def test_ddp_fit_resume_and_predict_share_one_run_folder(tmp_path):
    config = str(_config(tmp_path))
    _run(tmp_path, "fit", "--config", config)
    _run(tmp_path, "fit", "--config", config, "--ckpt_path", "last", "--trainer.max_epochs=3")
    runs = tmp_path / "runs" / "d"
    assert sorted(p.name for p in runs.iterdir()) == ["version_0"]
    run = runs / "version_0"
    assert (run / "config_resume1.yaml").is_file()
    with open(run / "memorization.csv") as handle:
        assert [float(r["epoch"]) for r in csv.DictReader(handle)] == [0.0, 1.0, 2.0]
    _run(tmp_path, "predict", "--config", config, "--ckpt_path", "last")
    with open(run / "predict_last" / "version_0" / "predictions.csv") as handle:
        index = [int(r["index"]) for r in csv.DictReader(handle)]
    assert index == list(range(360))  # the digits test split, each sample once
