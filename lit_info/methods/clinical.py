"""The MIMIC-III benchmark baselines as LightningModules (Harutyunyan et al., Sci. Data 2019).

* :class:`ClinicalLSTM`: the standard LSTM or the channel-wise LSTM on one task, with or without
  deep supervision (a loss at every listed hour of a stay).
* :class:`ClinicalMultitask`: the multitask LSTM, losses weighted ``ihm_weight * L_ihm +
  decomp_weight * L_decomp + los_weight * L_los + pheno_weight * L_pheno`` (the authors'
  example: 0.2, 1.0, 1.5, 1.0).
* :class:`ClinicalLinear`: logistic (in-hospital mortality, decompensation, phenotyping: one
  per group) or linear (length of stay) regression on the 714 hand-crafted features, with the
  scikit-learn objective ``C * sum(loss) + ||w||^2 / 2`` minimized by full-batch L-BFGS.

Tasks and their losses / outputs: binary tasks, binary cross-entropy, probabilities;
length of stay, cross-entropy over the paper's 10 classes (``los_partition: custom``; the
estimate in hours is the class's mean stay) or squared error on hours (``none``);
phenotyping, 25 binary cross-entropies. Metrics are logged as ``val/...`` and ``test/...``
(:mod:`~lit_info.methods.clinical_metrics`), gathered over all processes under DDP.
``predict`` returns per sample ``index``, ``y_true`` and ``prediction`` (a probability, an
estimate in hours, or 25 probabilities), written by ``PredictionWriter`` to ``predictions.csv``.
"""

from __future__ import annotations

from typing import Literal

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_info.methods.base import check_finite_loss
from lit_info.methods.clinical_metrics import (
    LOS_BIN_MEANS,
    PredictionStore,
    binary_metrics,
    length_of_stay_metrics,
    los_class,
    phenotyping_metrics,
)
from lit_info.methods.corex_base import require_hints
from lit_info.nets.recurrent import ChannelWiseLSTM, MultitaskLSTM, StandardLSTM

__all__ = ["ClinicalLSTM", "ClinicalLinear", "ClinicalMultitask", "task_metrics"]

Task = Literal["in-hospital-mortality", "decompensation", "length-of-stay", "phenotyping"]
BINARY = ("in-hospital-mortality", "decompensation")


def task_metrics(task: str, predictions: Tensor, targets: Tensor) -> dict[str, Tensor]:
    """The benchmark's metrics of ``task`` (predictions: probabilities or hours)."""
    if task in BINARY:
        return binary_metrics(predictions, targets)
    if task == "length-of-stay":
        return length_of_stay_metrics(predictions, targets)
    return phenotyping_metrics(predictions, targets)


class _TaskHead:
    """Loss and prediction of one task from logits."""

    def __init__(self, task: str, los_partition: str) -> None:
        self.task = task
        self.los_partition = los_partition

    @property
    def outputs(self) -> int:
        if self.task == "phenotyping":
            return 25
        if self.task == "length-of-stay" and self.los_partition == "custom":
            return 10
        return 1

    def loss(self, logits: Tensor, targets: Tensor, mask: Tensor | None = None) -> Tensor:
        """Mean loss over the samples (or the masked bins)."""
        if self.task == "length-of-stay" and self.los_partition == "custom":
            per = F.cross_entropy(
                logits.reshape(-1, 10), los_class(targets.reshape(-1)), reduction="none"
            )
        elif self.task == "length-of-stay":
            per = (F.relu(logits.reshape(-1)) - targets.reshape(-1)) ** 2
        elif self.task == "phenotyping":
            per = F.binary_cross_entropy_with_logits(logits, targets, reduction="none").mean(-1)
        else:
            per = F.binary_cross_entropy_with_logits(
                logits.reshape(-1), targets.reshape(-1), reduction="none"
            )
        if mask is None:
            return per.mean()
        mask = mask.reshape(-1).to(per.dtype)
        return (per * mask).sum() / mask.sum().clamp(min=1.0)

    def predict(self, logits: Tensor) -> Tensor:
        """Probabilities, or the length of stay in hours."""
        if self.task == "length-of-stay" and self.los_partition == "custom":
            means = torch.tensor(LOS_BIN_MEANS, dtype=logits.dtype, device=logits.device)
            return means[logits.argmax(-1)]
        if self.task == "length-of-stay":
            return F.relu(logits).squeeze(-1)
        probabilities = torch.sigmoid(logits)
        return probabilities if self.task == "phenotyping" else probabilities.squeeze(-1)


class _EvaluatedModule(pl.LightningModule):
    """Keeps validation / test predictions and logs the task metrics at the epoch end."""

    def _stores(self, names: list[str]) -> None:
        self.stores = nn.ModuleDict(
            {f"{stage}_{name}": PredictionStore() for stage in ("val", "test") for name in names}
        )

    def _log_metrics(self, stage: str, name: str, task: str, prefix: str = "") -> None:
        store = self.stores[f"{stage}_{name}"]
        predictions, targets = store.compute()
        store.reset()
        for metric, value in task_metrics(task, predictions, targets).items():
            self.log(f"{stage}/{prefix}{metric}", value.float(), sync_dist=False)

    def _evaluate(self, batch: dict[str, Tensor], stage: str) -> None:
        """Store the batch's predictions and targets (and log the loss) for ``stage``."""
        raise NotImplementedError

    def _epoch_end(self, stage: str) -> None:
        """Log the metrics of the epoch (one task; the multitask module overrides this)."""
        self._log_metrics(stage, "task", self.task)

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:  # noqa: D102
        self._evaluate(batch, "val")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:  # noqa: D102
        self._evaluate(batch, "test")

    def on_validation_epoch_end(self) -> None:  # noqa: D102
        self._epoch_end("val")

    def on_test_epoch_end(self) -> None:  # noqa: D102
        self._epoch_end("test")


class ClinicalLSTM(_EvaluatedModule):
    """A recurrent baseline on one benchmark task.

    Args:
        task: the datamodule's task (a hint from ``model_hints``).
        input_size: features per bin (hint).
        header: the discretizer's column names (hint; the channel-wise net groups by them).
        network: ``lstm`` (standard) or ``channel_wise``.
        hidden: units (the paper: standard LSTM 16 / 128 / 64 / 256 for in-hospital
            mortality / decompensation / length of stay / phenotyping; channel-wise 8 / 16 /
            16 / 16).
        depth: LSTM layers (2 for standard in-hospital mortality, else 1).
        dropout: 0.3 in the paper (0 for decompensation).
        size_coef: channel-wise width factor (4.0; 8.0 for phenotyping).
        deep_supervision: train on every listed hour of a stay (a hint: the datamodule's
            ``deep_supervision``).
        los_partition: ``custom`` (10 classes, the paper) or ``none`` (regression in hours).
        lr: Adam learning rate (1e-3).
    """

    def __init__(
        self,
        task: Task | None = None,
        input_size: int | None = None,
        header: list[str] | None = None,
        network: Literal["lstm", "channel_wise"] = "lstm",
        hidden: int = 16,
        depth: int = 1,
        dropout: float = 0.3,
        size_coef: float = 4.0,
        deep_supervision: bool | None = None,
        los_partition: Literal["custom", "none"] = "custom",
        lr: float = 1e-3,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        require_hints(name, task=task)
        deep_supervision = bool(deep_supervision)
        require_hints(name, input_size=input_size)
        if task == "multitask":
            raise ValueError(f"{name}: task multitask is served by ClinicalMultitask")
        if network not in ("lstm", "channel_wise"):
            raise ValueError(f"{name}: network={network!r}, choose 'lstm' or 'channel_wise'")
        if lr <= 0:
            raise ValueError(f"{name}: lr={lr} must be positive")
        self.save_hyperparameters()
        self.head_spec = _TaskHead(task, los_partition)
        if network == "lstm":
            self.net = StandardLSTM(
                input_size,
                hidden,
                depth,
                dropout,
                self.head_spec.outputs,
                sequence_output=deep_supervision,
            )
        else:
            require_hints(name, header=header)
            self.net = ChannelWiseLSTM(
                header,
                hidden,
                depth,
                size_coef,
                dropout,
                self.head_spec.outputs,
                sequence_output=deep_supervision,
            )
        self.task = task
        self.deep_supervision = deep_supervision
        self.lr = lr
        self._stores(["task"])

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        """Logits (B, outputs) or, with deep supervision, (B, T, outputs)."""
        return self.net(x, lengths)

    def _targets(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor | None]:
        if self.deep_supervision:
            if "mask" not in batch:
                raise ValueError(
                    "deep_supervision=True needs the datamodule's deep_supervision=True"
                )
            return batch["y_seq"], batch["mask"]
        if "mask" in batch:
            raise ValueError(
                "the datamodule serves deep supervision: set model deep_supervision=True"
            )
        return batch["y"], None

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:  # noqa: D102
        targets, mask = self._targets(batch)
        loss = self.head_spec.loss(self(batch["x"], batch["lengths"]), targets, mask)
        check_finite_loss(loss, self, batch_idx)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["x"].shape[0])
        return loss

    def _evaluate(self, batch: dict[str, Tensor], stage: str) -> None:
        targets, mask = self._targets(batch)
        logits = self(batch["x"], batch["lengths"])
        loss = self.head_spec.loss(logits, targets, mask)
        self.log(f"{stage}/loss", loss, batch_size=batch["x"].shape[0], sync_dist=True)
        predictions = self.head_spec.predict(logits)
        if mask is not None:
            keep = mask.reshape(-1) > 0
            predictions, targets = predictions.reshape(-1)[keep], targets.reshape(-1)[keep]
        self.stores[f"{stage}_task"].update(predictions, targets)

    def predict_step(
        self, batch: dict[str, Tensor], batch_idx: int, dataloader_idx: int = 0
    ) -> dict:
        """Per-sample ``index``, ``y_true`` and ``prediction``.

        Raises:
            ValueError: with deep supervision (a stay has many predictions; evaluate with
                ``test``, which scores every listed hour).
        """
        if self.deep_supervision:
            raise ValueError(
                "predict gives one row per sample; with deep_supervision use test "
                "(it scores every listed hour)"
            )
        predictions = self.head_spec.predict(self(batch["x"], batch["lengths"]))
        return {"index": batch["index"], "y_true": batch["y"], "prediction": predictions}

    def configure_optimizers(self) -> torch.optim.Optimizer:  # noqa: D102
        return torch.optim.Adam(self.parameters(), lr=self.lr)


class ClinicalMultitask(_EvaluatedModule):
    """The multitask LSTM on the benchmark's multitask set.

    Args:
        input_size: features per bin (hint).
        header: the discretizer's columns (hint; the channel-wise variant groups by them).
        network: ``lstm`` (the multitask standard LSTM) or ``channel_wise`` (per-variable
            LSTMs first, the paper's best in-hospital mortality model).
        hidden: LSTM units (512 in the authors' example command), per variable for
            ``channel_wise``.
        depth: LSTM layers (1).
        dropout: 0.3.
        size_coef: the channel-wise variant's shared layers have ``size_coef * hidden`` units.
        ihm_weight, decomp_weight, los_weight, pheno_weight: loss weights (0.2, 1.0, 1.5, 1.0).
        los_partition: ``custom`` (10 classes) or ``none`` (hours).
        lr: Adam learning rate.
    """

    def __init__(
        self,
        input_size: int | None = None,
        task: str | None = None,
        header: list[str] | None = None,
        network: Literal["lstm", "channel_wise"] = "lstm",
        hidden: int = 512,
        depth: int = 1,
        dropout: float = 0.3,
        size_coef: float = 8.0,
        ihm_weight: float = 0.2,
        decomp_weight: float = 1.0,
        los_weight: float = 1.5,
        pheno_weight: float = 1.0,
        los_partition: Literal["custom", "none"] = "custom",
        lr: float = 1e-3,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        require_hints(name, input_size=input_size)
        if task is not None and task != "multitask":
            raise ValueError(f"{name}: the datamodule serves {task}; use task: multitask")
        self.save_hyperparameters()
        self.heads = {
            "ihm": _TaskHead("in-hospital-mortality", los_partition),
            "decomp": _TaskHead("decompensation", los_partition),
            "los": _TaskHead("length-of-stay", los_partition),
            "pheno": _TaskHead("phenotyping", los_partition),
        }
        if network not in ("lstm", "channel_wise"):
            raise ValueError(f"{name}: network={network!r}, choose 'lstm' or 'channel_wise'")
        if network == "channel_wise":
            require_hints(name, header=header)
        channel_header = header if network == "channel_wise" else None
        self.net = MultitaskLSTM(
            input_size,
            hidden,
            depth,
            dropout,
            self.heads["los"].outputs,
            channel_header=channel_header,
            size_coef=size_coef,
        )
        self.weights = {
            "ihm": ihm_weight,
            "decomp": decomp_weight,
            "los": los_weight,
            "pheno": pheno_weight,
        }
        self.lr = lr
        self._stores(list(self.heads))

    def forward(self, x: Tensor, lengths: Tensor) -> dict[str, Tensor]:
        """Per-bin logits of the four heads (:class:`~lit_info.nets.recurrent.MultitaskLSTM`)."""
        return self.net(x, lengths)

    def _parts(self, batch: dict[str, Tensor]) -> dict[str, tuple[Tensor, Tensor, Tensor | None]]:
        """(logits, targets, mask) per task."""
        out = self(batch["x"], batch["lengths"])
        rows = torch.arange(batch["x"].shape[0], device=batch["x"].device)
        ihm_logits = out["ihm"][rows, batch["ihm_pos"]]
        return {
            "ihm": (ihm_logits, batch["ihm_y"], batch["ihm_mask"]),
            "decomp": (out["decomp"], batch["decomp_y"], batch["decomp_mask"]),
            "los": (out["los"], batch["los_y"], batch["los_mask"]),
            "pheno": (out["pheno"], batch["pheno_y"], None),
        }

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:  # noqa: D102
        parts = self._parts(batch)
        losses = {k: self.heads[k].loss(*parts[k]) for k in parts}
        loss = sum(self.weights[k] * losses[k] for k in losses)
        check_finite_loss(loss, self, batch_idx)
        size = batch["x"].shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=size)
        for k, value in losses.items():
            self.log(f"train/{k}_loss", value, batch_size=size)
        return loss

    def _evaluate(self, batch: dict[str, Tensor], stage: str) -> None:
        parts = self._parts(batch)
        size = batch["x"].shape[0]
        total = 0.0
        for k, (logits, targets, mask) in parts.items():
            loss = self.heads[k].loss(logits, targets, mask)
            total = total + self.weights[k] * loss
            predictions = self.heads[k].predict(logits)
            if mask is not None:
                keep = mask.reshape(-1) > 0
                predictions, targets = predictions.reshape(-1)[keep], targets.reshape(-1)[keep]
            self.stores[f"{stage}_{k}"].update(predictions, targets)
        self.log(f"{stage}/loss", total, batch_size=size, sync_dist=True)

    def _epoch_end(self, stage: str) -> None:
        for k, head in self.heads.items():
            self._log_metrics(stage, k, head.task, prefix=f"{k}_")

    def predict_step(
        self, batch: dict[str, Tensor], batch_idx: int, dataloader_idx: int = 0
    ) -> dict:
        """Per stay: ``index``, in-hospital mortality and the 25 phenotype probabilities."""
        parts = self._parts(batch)
        return {
            "index": batch["index"],
            "ihm_mask": batch["ihm_mask"],
            "ihm_prediction": self.heads["ihm"].predict(parts["ihm"][0]),
            "pheno_prediction": self.heads["pheno"].predict(parts["pheno"][0]),
        }

    def configure_optimizers(self) -> torch.optim.Optimizer:  # noqa: D102
        return torch.optim.Adam(self.parameters(), lr=self.lr)


class ClinicalLinear(_EvaluatedModule):
    """Logistic / linear regression on the hand-crafted features, the paper's linear baseline.

    Minimizes scikit-learn's objective ``C * sum_i loss_i + ||w||^2 / 2`` (bias not penalized)
    over the whole training set with L-BFGS (strong Wolfe line search) at every training
    step: use ``batch_size`` >= the training set and ``max_epochs: 1`` (the configs do).

    Args:
        task: the datamodule's task (hint).
        input_size: features (hint; 714).
        C: inverse regularization strength (the paper: 0.001 for in-hospital mortality and
            decompensation).
        max_iter: L-BFGS iterations.
    """

    def __init__(
        self,
        task: Task | None = None,
        input_size: int | None = None,
        header: list[str] | None = None,
        C: float = 1e-3,  # noqa: N803 (scikit-learn's name)
        max_iter: int = 500,
        los_partition: Literal["none"] = "none",
    ) -> None:
        super().__init__()
        name = type(self).__name__
        require_hints(name, task=task)
        require_hints(name, input_size=input_size)
        if task == "multitask":
            raise ValueError(f"{name}: the linear baselines are single-task")
        if C <= 0:
            raise ValueError(f"{name}: C={C} must be positive")
        self.save_hyperparameters()
        self.task = task
        self.head_spec = _TaskHead(task, "none")
        self.linear = nn.Linear(input_size, self.head_spec.outputs, dtype=torch.float64)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)
        self.C = C
        self.max_iter = max_iter
        self.automatic_optimization = False
        self._stores(["task"])

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """Logits (or hours for length of stay)."""
        return self.linear(x.double())

    def objective(self, x: Tensor, y: Tensor) -> Tensor:
        """``C * sum(loss) + ||w||^2 / 2`` on the given samples."""
        logits = self(x)
        if self.task == "length-of-stay":
            per = 0.5 * (logits.reshape(-1) - y.double().reshape(-1)) ** 2
        else:
            per = F.binary_cross_entropy_with_logits(
                logits.reshape(y.shape), y.double(), reduction="none"
            )
        return self.C * per.sum() + 0.5 * (self.linear.weight**2).sum()

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:  # noqa: D102
        optimizer = self.optimizers()
        x, y = batch["x"], batch["y"]

        def closure() -> Tensor:
            optimizer.zero_grad()
            value = self.objective(x, y)
            self.manual_backward(value)
            return value

        value = optimizer.step(closure=closure)
        check_finite_loss(value, self, batch_idx)
        self.log("train/loss", value.float() / x.shape[0], batch_size=x.shape[0])
        return value

    def _prediction(self, logits: Tensor) -> Tensor:
        if self.task == "length-of-stay":
            return logits.squeeze(-1).clamp(min=0)
        probabilities = torch.sigmoid(logits)
        return probabilities if self.task == "phenotyping" else probabilities.squeeze(-1)

    def _evaluate(self, batch: dict[str, Tensor], stage: str) -> None:
        predictions = self._prediction(self(batch["x"]))
        self.stores[f"{stage}_task"].update(predictions.float(), batch["y"])

    def predict_step(
        self, batch: dict[str, Tensor], batch_idx: int, dataloader_idx: int = 0
    ) -> dict:
        """Per-sample ``index``, ``y_true`` and ``prediction``."""
        return {
            "index": batch["index"],
            "y_true": batch["y"],
            "prediction": self._prediction(self(batch["x"])),
        }

    def configure_optimizers(self) -> torch.optim.Optimizer:  # noqa: D102
        return torch.optim.LBFGS(
            self.parameters(),
            lr=1.0,
            max_iter=self.max_iter,
            tolerance_grad=1e-9,
            tolerance_change=1e-12,
            history_size=20,
            line_search_fn="strong_wolfe",
        )
