"""Resuming from ``last.ckpt`` after a crash reproduces the uninterrupted run exactly.

Runs go through the command line (:func:`lit_info.cli.main` with a YAML config, ``run=False``),
on the digits data with Adam and a network with BatchNorm (``mnist_cnn``), so the checkpoint
must carry the weights, the BatchNorm running statistics, Adam's moments and step counts, the
loop progress (epoch, global step, the sampler's epoch) and the ``MemorizationMonitor`` history.
A callback raises an exception to simulate the crash, either right after the checkpoint of an
epoch is written (at the start of the next epoch) or in the middle of an epoch (whose partial
updates must then be discarded). A fresh CLI (new model, data and trainer, as after a restart)
resumes with ``trainer.fit(..., ckpt_path=last.ckpt)``.
"""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
import yaml

from lit_info.callbacks import MemorizationMonitor
from lit_info.cli import main as cli_main

MAX_EPOCHS = 4
STEPS_PER_EPOCH = 10  # 320 training images / batch 32

# the restarted run reuses the crashed run's checkpoint folder on purpose
pytestmark = pytest.mark.filterwarnings("ignore:Checkpoint directory .* exists and is not empty")


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Small models: one thread is fastest, and keeps the arithmetic order fixed."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class Crash(RuntimeError):
    """The simulated failure."""


class CrashAt(pl.Callback):
    """Raise :class:`Crash` at the start of training batch ``batch`` of epoch ``epoch``."""

    def __init__(self, epoch: int, batch: int) -> None:
        self.epoch, self.batch = epoch, batch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            raise Crash(f"simulated crash at epoch {self.epoch}, batch {self.batch}")


def _config(root: Path) -> Path:
    config = {
        "seed_everything": 123,
        "trainer": {
            "accelerator": "cpu",
            "devices": 1,
            "max_epochs": MAX_EPOCHS,
            "default_root_dir": str(root),
            "logger": False,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "callbacks": [
                {
                    "class_path": "lit_info.callbacks.MemorizationMonitor",
                    "init_args": {"every_n_epochs": 1, "log_histograms": False},
                },
                {
                    "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                    "init_args": {
                        "dirpath": str(root / "checkpoints"),
                        "save_last": True,
                        "every_n_epochs": 1,
                        "save_top_k": -1,
                    },
                },
            ],
        },
        "model": {
            "class_path": "lit_info.methods.Classifier",
            "init_args": {"net": "mnist_cnn", "loss": "ce", "optimizer": "adam", "lr": 0.003},
        },
        "data": {
            "class_path": "lit_info.data.NoisyImageDataModule",
            "init_args": {
                "dataset": "digits",
                "noise_type": "uniform",
                "noise_level": 0.4,
                "train_subset": 400,
                "val_size": 80,
                "batch_size": 32,
                "eval_batch_size": 200,
            },
        },
    }
    root.mkdir(parents=True, exist_ok=True)
    path = root / "input_config.yaml"  # the CLI itself saves config.yaml in the run folder
    path.write_text(yaml.safe_dump(config))
    return path


def _cli(root: Path):
    return cli_main(["--config", str(_config(root))], run=False)


def _monitor(trainer: pl.Trainer) -> MemorizationMonitor:
    (monitor,) = [cb for cb in trainer.callbacks if isinstance(cb, MemorizationMonitor)]
    return monitor


def _snapshot(cli) -> dict:
    trainer = cli.trainer
    return {
        "state_dict": {k: v.clone() for k, v in cli.model.state_dict().items()},
        "optimizer": trainer.optimizers[0].state_dict(),
        "metrics": {k: float(v) for k, v in trainer.callback_metrics.items()},
        "history": list(_monitor(trainer).history),
        "predictions": _monitor(trainer).last_predictions.clone(),
        "global_step": trainer.global_step,
        "epoch": trainer.current_epoch,
    }


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict:
    cli = _cli(tmp_path_factory.mktemp("uninterrupted"))
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    return _snapshot(cli)


def _assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=1e-6, msg=f"{key} differs")


@pytest.mark.parametrize(
    ("crash_epoch", "crash_batch"),
    [(2, 0), (2, 4)],
    ids=["right-after-checkpoint", "mid-epoch"],
)
def test_resume_from_last_checkpoint_matches_uninterrupted_run(
    tmp_path, uninterrupted, crash_epoch, crash_batch
):
    # first attempt: crashes in epoch `crash_epoch`; last.ckpt holds the end of the epoch before
    first = _cli(tmp_path)
    first.trainer.callbacks.append(CrashAt(crash_epoch, crash_batch))
    with pytest.raises(Crash):
        first.trainer.fit(first.model, datamodule=first.datamodule)
    last = tmp_path / "checkpoints" / "last.ckpt"
    ckpt = torch.load(last, map_location="cpu", weights_only=True)
    assert ckpt["epoch"] == crash_epoch - 1
    assert ckpt["global_step"] == crash_epoch * STEPS_PER_EPOCH
    assert len(_monitor(first.trainer).history) == crash_epoch
    if crash_batch > 0:  # the crashed run went on training after the checkpoint
        assert first.trainer.global_step == crash_epoch * STEPS_PER_EPOCH + crash_batch

    # restart: a fresh model, datamodule and trainer, resumed from last.ckpt
    second = _cli(tmp_path)
    second.trainer.fit(second.model, datamodule=second.datamodule, ckpt_path=str(last))
    resumed = _snapshot(second)

    assert resumed["global_step"] == uninterrupted["global_step"] == MAX_EPOCHS * STEPS_PER_EPOCH
    assert resumed["epoch"] == uninterrupted["epoch"] == MAX_EPOCHS
    # weights and BatchNorm buffers (running stats, num_batches_tracked)
    state = resumed["state_dict"]
    assert any("running_mean" in k for k in state) and any(
        "num_batches_tracked" in k for k in state
    )
    _assert_same_state(uninterrupted["state_dict"], state)
    # Adam's state: the moments, and the step count of the whole run (a fresh optimizer after
    # the restart would count only the resumed steps)
    opt_a, opt_b = uninterrupted["optimizer"], resumed["optimizer"]
    assert opt_a["state"].keys() == opt_b["state"].keys()
    for pid, state_a in opt_a["state"].items():
        assert float(opt_b["state"][pid]["step"]) == MAX_EPOCHS * STEPS_PER_EPOCH
        _assert_same_state(state_a, opt_b["state"][pid])
    # logged metrics of the last epoch, the monitor's per-sample predictions and full history
    assert resumed["metrics"].keys() == uninterrupted["metrics"].keys()
    assert (
        "val/acc" in resumed["metrics"] and "memorization/corrupted_acc_given" in resumed["metrics"]
    )
    for key, value in uninterrupted["metrics"].items():
        assert resumed["metrics"][key] == pytest.approx(value, rel=1e-6, abs=1e-7), key
    assert torch.equal(resumed["predictions"], uninterrupted["predictions"])
    assert [h["epoch"] for h in resumed["history"]] == [float(e) for e in range(MAX_EPOCHS)]
    assert resumed["history"] == uninterrupted["history"]
