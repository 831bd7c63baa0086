"""Training metrics and the finite-loss guard of ImageClassificationModule inside a Trainer.

The per-step values are recorded on the device and checked, accumulated and logged in batches
(every ``log_every_n_steps`` steps and at the end of each epoch); these tests check that the
epoch means, the step curve and the non-finite-loss error are what per-step logging gave.
"""

from __future__ import annotations

import math

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import Logger
from torch.utils.data import DataLoader, TensorDataset

from lit_info.methods import LIMIT, Classifier
from lit_info.methods.base import NonFiniteLossError

KW = dict(num_classes=4, input_shape=(1, 4, 4), net="mlp", net_kwargs={"hidden": [16]})
N_SAMPLES, BATCH = 200, 16  # 13 batches per epoch, the last one of 8 samples
STEPS_PER_EPOCH = math.ceil(N_SAMPLES / BATCH)

pytestmark = pytest.mark.filterwarnings("ignore:You defined a `validation_step` but have no")


class MemoryLogger(Logger):
    """Keeps every ``log_metrics`` call as ``(step, metrics)``."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[tuple[int, dict[str, float]]] = []

    @property
    def name(self) -> str:
        return "memory"

    @property
    def version(self) -> int:
        return 0

    def log_hyperparams(self, params, *args, **kwargs) -> None:
        pass

    def log_metrics(self, metrics, step=None) -> None:
        self.rows.append((step, {k: float(v) for k, v in metrics.items()}))


class Recording(Classifier):
    """Classifier that also keeps each step's loss and batch size on the host."""

    def __init__(self, nan_at_step: int | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.nan_at_step = nan_at_step
        self.record: list[tuple[int, int, float, int]] = []  # epoch, global step, loss, n

    def training_step(self, batch, batch_idx):
        x, y, idx = batch
        if self.trainer.global_step == self.nan_at_step:
            x = x * float("nan")
        loss = super().training_step((x, y, idx), batch_idx)
        self.record.append(
            (self.current_epoch, self.trainer.global_step, float(loss.detach()), len(y))
        )
        return loss


def loader(seed: int = 0) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N_SAMPLES, 1, 4, 4, generator=g)
    y = torch.randint(0, 4, (N_SAMPLES,), generator=g)
    data = TensorDataset(x, y, torch.arange(N_SAMPLES))
    return DataLoader(data, batch_size=BATCH, shuffle=True, generator=g)


def trainer(tmp_path, epochs: int = 3, **kwargs) -> pl.Trainer:
    kwargs.setdefault("enable_checkpointing", False)
    return pl.Trainer(
        max_epochs=epochs,
        default_root_dir=tmp_path,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        **kwargs,
    )


def test_epoch_means_and_step_curve_match_per_step_values(tmp_path):
    torch.manual_seed(0)
    model = Recording(**KW)
    logger = MemoryLogger()
    t = trainer(tmp_path, logger=logger, log_every_n_steps=5)
    t.fit(model, loader())
    assert len(model.record) == 3 * STEPS_PER_EPOCH

    step_rows = {step: m["train/loss_step"] for step, m in logger.rows if "train/loss_step" in m}
    epoch_rows = [m for _, m in logger.rows if "train/loss_epoch" in m]
    # the step curve: every 5th step, the loss of that very step
    losses = {step: loss for _, step, loss, _ in model.record}
    assert sorted(step_rows) == [s for s in losses if (s + 1) % 5 == 0]
    for step, value in step_rows.items():
        assert value == pytest.approx(losses[step], rel=1e-6)
    # the epoch means: batch-size weighted loss, micro accuracy, one row per epoch
    assert len(epoch_rows) == 3
    for epoch, row in enumerate(epoch_rows):
        rec = [r for r in model.record if r[0] == epoch]
        n = sum(r[3] for r in rec)
        assert row["train/loss_epoch"] == pytest.approx(sum(r[2] * r[3] for r in rec) / n, 1e-6)
        assert "train/acc" in row and "train/loss" not in row  # train/loss: callbacks only
    metrics = t.callback_metrics
    last = [r for r in model.record if r[0] == 2]
    expected = sum(r[2] * r[3] for r in last) / sum(r[3] for r in last)
    assert float(metrics["train/loss"]) == pytest.approx(expected, rel=1e-6)
    assert float(metrics["train/loss_epoch"]) == float(metrics["train/loss"])
    # the progress bar shows the loss of the last logging step, and the epoch mean
    last_logged = max(step_rows)
    assert t.progress_bar_metrics["train/loss_step"] == pytest.approx(losses[last_logged], 1e-6)
    assert "train/loss_epoch" in t.progress_bar_metrics


def test_train_acc_is_the_accuracy_of_the_step_logits(tmp_path):
    torch.manual_seed(0)
    model = Classifier(**KW)
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    original = model.log_train_metrics

    def spy(loss, logits, y):
        seen.append((logits.detach().argmax(1).clone(), y.clone()))
        original(loss, logits, y)

    model.log_train_metrics = spy
    t = trainer(tmp_path, epochs=1, logger=False)
    t.fit(model, loader())
    preds = torch.cat([p for p, _ in seen])
    targets = torch.cat([y for _, y in seen])
    expected = (preds == targets).double().mean().item()
    assert float(t.callback_metrics["train/acc"]) == pytest.approx(expected, abs=1e-7)


def test_nan_is_named_at_its_step_and_no_checkpoint_follows_it(tmp_path):
    torch.manual_seed(0)
    model = Recording(nan_at_step=7, **KW)
    checkpoints = ModelCheckpoint(
        dirpath=tmp_path / "ckpt", every_n_train_steps=3, save_top_k=-1, filename="{step}"
    )
    t = trainer(
        tmp_path,
        logger=False,
        log_every_n_steps=50,
        callbacks=[checkpoints],
        enable_checkpointing=True,
    )
    with pytest.raises(NonFiniteLossError, match=r"nan at global step 7 \(epoch 0, batch 7\)"):
        t.fit(model, loader())
    saved = sorted(p.name for p in (tmp_path / "ckpt").glob("*.ckpt"))
    assert saved == ["step=3.ckpt", "step=6.ckpt"]  # the save after step 7 was refused
    for name in saved:
        state = torch.load(tmp_path / "ckpt" / name, weights_only=True)["state_dict"]
        assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
    # and later saves of these weights are refused too
    with pytest.raises(NonFiniteLossError, match="not saving a checkpoint"):
        t.save_checkpoint(tmp_path / "after.ckpt")
    assert not (tmp_path / "after.ckpt").exists()


def test_nan_in_the_last_steps_of_an_epoch_stops_before_the_epoch_ends(tmp_path):
    torch.manual_seed(0)
    last = STEPS_PER_EPOCH - 1
    model = Recording(nan_at_step=last, **KW)
    t = trainer(tmp_path, logger=False, log_every_n_steps=50)
    with pytest.raises(NonFiniteLossError, match=rf"global step {last} \(epoch 0"):
        t.fit(model, loader())
    assert t.current_epoch == 0 and t.global_step == last  # this step's update never ran


def test_limit_logs_its_epoch_means(tmp_path):
    torch.manual_seed(0)
    model = LIMIT(**KW, beta=0.1)
    penalties: list[float] = []
    original = model.accumulate_mean

    def spy(metric, value):
        if metric is model.info_penalty_mean:
            penalties.append(float(value.detach()))
        original(metric, value)

    model.accumulate_mean = spy
    t = trainer(tmp_path, epochs=1, logger=False, log_every_n_steps=4)
    t.fit(model, loader())
    metrics = t.callback_metrics
    assert len(penalties) == STEPS_PER_EPOCH
    assert float(metrics["train/info_penalty"]) == pytest.approx(sum(penalties) / len(penalties))
    for key in ("train/loss", "train/acc", "train/grad_norm_sq", "train/loss_step"):
        assert key in metrics


def test_outside_a_trainer_the_guard_checks_at_once():
    torch.manual_seed(0)
    model = Classifier(**KW)
    x = torch.randn(8, 1, 4, 4)
    y = torch.randint(0, 4, (8,))
    loss = model.training_step((x, y, torch.arange(8)), 0)
    assert torch.isfinite(loss)
    assert model.train_loss_mean.compute() == pytest.approx(float(loss.detach()))
    assert float(model.train_acc.compute()) == pytest.approx(
        (model(x).argmax(1) == y).float().mean().item()
    )
    with pytest.raises(NonFiniteLossError, match="global step -1 .*batch 5"):
        model.training_step((x * float("nan"), y, torch.arange(8)), 5)
    assert F.cross_entropy(model(x), y).isfinite()
