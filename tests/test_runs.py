"""Run folders: where a run writes, what it never overwrites, and what each subcommand leaves.

All through :func:`lit_info.cli.main` on the bundled digits data with a tiny MLP and a
checkpointing config like the generated ones (logger named by experiment, no save_dir, no
checkpoint dirpath).
"""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import pytest
import torch
import yaml

from lit_info.checkpoints import CheckpointError
from lit_info.cli import main
from lit_info.runs import find_checkpoint, next_version, run_dir_of_checkpoint

ROOT = Path(__file__).resolve().parents[1]
DEMO_CE = ROOT / "configs" / "demo" / "digits_uniform0.8_ce.yaml"


def _config(tmp_path: Path, epochs: int = 2) -> Path:
    config = {
        "seed_everything": 1,
        "trainer": {
            "max_epochs": epochs,
            "accelerator": "cpu",
            "devices": 1,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "logger": {
                "class_path": "lit_info.loggers.TensorBoardLogger",
                "init_args": {"name": "t/exp"},
            },
            "callbacks": [
                {
                    "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                    "init_args": {
                        "filename": "best",
                        "monitor": "val/acc",
                        "mode": "max",
                        "enable_version_counter": False,
                    },
                },
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
            "init_args": {
                "dataset": "digits",
                "noise_type": "uniform",
                "noise_level": 0.2,
                "train_subset": 300,
                "val_size": 60,
                "batch_size": 60,
            },
        },
    }
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_default_root_dir_moves_logs_config_and_checkpoints_together(in_tmp, capsys):
    config = _config(in_tmp)
    main(["fit", "--config", str(config), "--trainer.default_root_dir", "elsewhere"])
    run = in_tmp / "elsewhere" / "t" / "exp" / "version_0"
    assert (run / "config.yaml").is_file()
    assert (run / "memorization.csv").is_file()
    assert list(run.glob("events.out.tfevents.*"))
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    assert sorted(p.name for p in in_tmp.iterdir()) == ["elsewhere", "exp.yaml"]  # not ./runs
    out = capsys.readouterr().err
    assert f"fit wrote {Path('elsewhere/t/exp/version_0')}/" in out
    assert "best.ckpt, last.ckpt" in out and "memorization.csv" in out


def test_fitting_twice_keeps_the_first_run_intact(in_tmp):
    config = _config(in_tmp)
    main(["fit", "--config", str(config)])
    first = in_tmp / "runs" / "t" / "exp" / "version_0"
    before = _digest(first)
    main(["fit", "--config", str(config), "--trainer.max_epochs=1"])
    assert _digest(first) == before  # checkpoints, config, CSV and events untouched
    second = in_tmp / "runs" / "t" / "exp" / "version_1"
    assert yaml.safe_load((second / "config.yaml").read_text())["trainer"]["max_epochs"] == 1
    assert (second / "checkpoints" / "last.ckpt").is_file()
    assert next_version(in_tmp / "runs" / "t" / "exp") == 2
    # a named version that holds a run is refused before anything is written
    with pytest.raises(ValueError, match="already holds an earlier run"):
        main(["fit", "--config", str(config), "--trainer.logger.init_args.version=version_0"])
    assert _digest(first) == before


def test_resume_continues_in_the_run_it_resumes(in_tmp):
    config = _config(in_tmp)
    main(["fit", "--config", str(config)])
    main(["fit", "--config", str(config)])  # version_1 is now the newest run
    newest = in_tmp / "runs" / "t" / "exp" / "version_1"
    assert (
        find_checkpoint(in_tmp / "runs" / "t" / "exp", "last") == newest / "checkpoints/last.ckpt"
    )
    first_config = (newest / "config.yaml").read_text()
    steps_before = torch.load(newest / "checkpoints/last.ckpt", weights_only=True)["global_step"]
    assert steps_before == 2 * 4  # 240 training samples in batches of 60, two epochs
    cli = main(["fit", "--config", str(config), "--ckpt_path", "last", "--trainer.max_epochs=3"])
    assert cli.trainer.current_epoch == 3
    assert not (in_tmp / "runs" / "t" / "exp" / "version_2").exists()
    assert (newest / "config.yaml").read_text() == first_config
    resumed = yaml.safe_load((newest / "config_resume1.yaml").read_text())
    assert resumed["trainer"]["max_epochs"] == 3
    ckpt = torch.load(newest / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == steps_before * 3 // 2  # a third epoch, in the same folder
    assert run_dir_of_checkpoint(newest / "checkpoints" / "last.ckpt", ckpt) == newest.resolve()
    # the memorization history goes on from the resumed run: epochs 0, 1 and 2
    with open(newest / "memorization.csv") as handle:
        assert [float(r["epoch"]) for r in csv.DictReader(handle)] == [0.0, 1.0, 2.0]


def test_resume_from_a_copied_checkpoint_finds_its_run_folder(in_tmp):
    config = _config(in_tmp)
    main(["fit", "--config", str(config)])
    run = in_tmp / "runs" / "t" / "exp" / "version_0"
    copy = in_tmp / "copy.ckpt"
    copy.write_bytes((run / "checkpoints" / "last.ckpt").read_bytes())
    main(["fit", "--config", str(config), "--ckpt_path", str(copy), "--trainer.max_epochs=3"])
    assert (run / "config_resume1.yaml").is_file()  # recorded in the checkpoint itself
    assert not (in_tmp / "runs" / "t" / "exp" / "version_1").exists()


def test_test_validate_predict_write_next_to_what_they_evaluated(in_tmp):
    config = _config(in_tmp, epochs=3)
    main(["fit", "--config", str(config)])
    run = in_tmp / "runs" / "t" / "exp" / "version_0"
    before = _digest(run)
    main(["test", "--config", str(config), "--ckpt_path", "best", "--trainer.max_epochs=2"])
    main(["validate", "--config", str(config), "--ckpt_path", str(run / "checkpoints/last.ckpt")])
    cli = main(["predict", "--config", str(config), "--ckpt_path", "best"])
    # the training run's files are untouched (test used to rewrite config.yaml)
    assert {k: v for k, v in _digest(run).items() if "/" not in k or k.startswith("check")} == {
        k: v for k, v in before.items() if "/" not in k or k.startswith("check")
    }
    test_dir = run / "test_best" / "version_0"
    record = json.loads((test_dir / "metrics.json").read_text())
    assert record["subcommand"] == "test"
    assert record["ckpt_path"].endswith("best.ckpt")
    assert 0.0 <= record["metrics"][0]["test/acc"] <= 1.0
    assert yaml.safe_load((test_dir / "config.yaml").read_text())["trainer"]["max_epochs"] == 2
    val = json.loads((run / "validate_last" / "version_0" / "metrics.json").read_text())
    assert "val/acc" in val["metrics"][0]
    # predict: one row per test sample, with its index, given label and probabilities
    with open(run / "predict_best" / "version_0" / "predictions.csv") as handle:
        rows = list(csv.DictReader(handle))
    n_test = len(cli.datamodule.test_dataloader().dataset)
    assert [int(r["index"]) for r in rows] == list(range(n_test))
    probs = torch.tensor([[float(r[f"probs_{j}"]) for j in range(10)] for r in rows])
    torch.testing.assert_close(probs.sum(1), torch.ones(n_test, dtype=probs.dtype))
    assert [int(r["predicted"]) for r in rows] == probs.argmax(1).tolist()
    labels = [int(r["label"]) for r in rows]
    assert labels == [int(cli.datamodule.test_dataloader().dataset[i][1]) for i in range(n_test)]
    # testing the same checkpoint again gets a new folder
    main(["test", "--config", str(config), "--ckpt_path", "best"])
    assert (run / "test_best" / "version_1" / "metrics.json").is_file()
    assert (test_dir / "metrics.json").read_text() == json.dumps(record, indent=2) + "\n"


def test_ckpt_path_last_without_checkpoints_is_an_error(in_tmp):
    with pytest.raises(ValueError, match="enable_checkpointing"):
        main(["fit", "--config", str(DEMO_CE), "--ckpt_path", "last"])
    with pytest.raises(FileNotFoundError, match="no best"):
        main(["test", "--config", str(_config(in_tmp)), "--ckpt_path", "best"])
    assert not (in_tmp / "runs").exists()


def test_ckpt_path_last_before_the_first_checkpoint_starts_a_new_run(in_tmp):
    # the SLURM template always passes --ckpt_path last: the first job starts fresh
    cli = main(["fit", "--config", str(_config(in_tmp)), "--ckpt_path", "last"])
    assert cli.trainer.current_epoch == 2
    assert (in_tmp / "runs" / "t" / "exp" / "version_0" / "checkpoints" / "last.ckpt").is_file()


def test_damaged_or_foreign_checkpoints_are_refused_before_anything_is_written(in_tmp):
    config = _config(in_tmp)
    main(["fit", "--config", str(config)])
    last = in_tmp / "runs" / "t" / "exp" / "version_0" / "checkpoints" / "last.ckpt"
    before = _digest(in_tmp / "runs")
    truncated = in_tmp / "truncated.ckpt"
    truncated.write_bytes(last.read_bytes()[:4000])
    with pytest.raises(CheckpointError, match="truncated.ckpt is damaged"):
        main(["test", "--config", str(config), "--ckpt_path", str(truncated)])
    plain = in_tmp / "weights.pt"
    torch.save({"w": torch.zeros(2)}, plain)
    with pytest.raises(ValueError, match="not a Lightning checkpoint"):
        main(["fit", "--config", str(config), "--ckpt_path", str(plain)])
    with pytest.raises(FileNotFoundError, match="nope.ckpt"):
        main(["test", "--config", str(config), "--ckpt_path", str(in_tmp / "nope.ckpt")])
    assert _digest(in_tmp / "runs") == before
