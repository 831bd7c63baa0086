"""Shared pieces of the image-classification LightningModules (classifier baselines, LIMIT).

The methods differ only in how the training loss is formed; evaluation, metrics, optimizers and
the non-finite-loss guard live here so every method logs the same keys: ``train/loss``,
``train/acc``, ``val/loss``, ``val/acc``, ``test/loss`` and ``test/acc``.
"""

from __future__ import annotations

import abc
from typing import Any, Literal

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy

from lit_info.nets import build_net

Batch = tuple[Tensor, Tensor, Tensor]


class NonFiniteLossError(RuntimeError):
    """Raised when a training loss becomes NaN or infinite; the message names the step."""


def check_finite_loss(loss: Tensor, module: pl.LightningModule, batch_idx: int) -> None:
    """Stop training with a clear message when ``loss`` is NaN or infinite.

    Args:
        loss: the scalar training loss of the current step.
        module: the LightningModule (its trainer gives the global step and epoch).
        batch_idx: index of the batch within the epoch.

    Raises:
        NonFiniteLossError: naming the global step, epoch and batch, with hints.
    """
    if torch.isfinite(loss).all():
        return
    trainer = module._trainer  # may be None outside a Trainer
    step = trainer.global_step if trainer is not None else -1
    epoch = trainer.current_epoch if trainer is not None else -1
    raise NonFiniteLossError(
        f"training loss became {loss.item()} at global step {step} (epoch {epoch}, batch "
        f"{batch_idx}); lower the learning rate, check the input data for NaN/inf, or enable "
        "gradient clipping (trainer.gradient_clip_val)"
    )


class ImageClassificationModule(pl.LightningModule, abc.ABC):
    """Image classifier on noisy labels; the base of the classifier baselines and LIMIT.

    Args:
        num_classes: number of classes; filled in from the data, leave unset.
        input_shape: size of one input image as [channels, height, width]; filled in from the
            data, leave unset.
        net: network architecture: mnist_cnn, mlp, resnet18, resnet34 or resnet18_imagenet
            ("python -m lit_info list" describes each and its net_kwargs).
        net_kwargs: extra settings of the network, e.g. {hidden: [512, 512]} for mlp (see
            "python -m lit_info list").
        optimizer: adam or sgd.
        lr: learning rate.
        weight_decay: L2 weight decay (0 = none).
        momentum: SGD momentum; not used with adam.
        lr_milestones: epochs at which the learning rate is multiplied by lr_gamma, e.g.
            [40, 80]; unset = constant learning rate.
        lr_gamma: factor applied to the learning rate at each of lr_milestones.
    """

    def __init__(
        self,
        num_classes: int | None = None,
        input_shape: tuple[int, int, int] | None = None,
        net: str = "mnist_cnn",
        net_kwargs: dict[str, Any] | None = None,
        optimizer: Literal["adam", "sgd"] = "adam",
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        momentum: float = 0.9,
        lr_milestones: list[int] | None = None,
        lr_gamma: float = 0.1,
    ) -> None:
        super().__init__()
        if num_classes is None or input_shape is None:
            raise ValueError(
                f"{type(self).__name__} needs num_classes and input_shape; the CLI fills them "
                "from the datamodule (model_hints); in Python pass them explicitly, e.g. "
                "num_classes=dm.num_classes, input_shape=dm.input_shape"
            )
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        if lr <= 0:
            raise ValueError(f"lr must be positive, got {lr}")
        if optimizer not in ("adam", "sgd"):
            raise ValueError(f"optimizer must be 'adam' or 'sgd', got {optimizer!r}")
        self.num_classes = int(num_classes)
        self.input_shape = tuple(int(s) for s in input_shape)
        self.net = self.build_network(net, net_kwargs)
        self.train_acc = MulticlassAccuracy(num_classes=self.num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes=self.num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes=self.num_classes, average="micro")

    def build_network(self, name: str, net_kwargs: dict[str, Any] | None) -> nn.Module:
        """Build one network of the configured architecture."""
        return build_net(name, self.num_classes, self.input_shape, **(net_kwargs or {}))

    @abc.abstractmethod
    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        """The method's training loss of one batch (each method defines it)."""

    def forward(self, x: Tensor) -> Tensor:
        """Class logits of the classifier."""
        return self.net(x)

    # -- evaluation -----------------------------------------------------------------------
    def _eval_step(self, batch: Batch, stage: str, metric: MulticlassAccuracy) -> Tensor:
        x, y, _ = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        metric.update(logits, y)
        self.log(f"{stage}/loss", loss, on_epoch=True, prog_bar=stage == "val", sync_dist=True)
        self.log(f"{stage}/acc", metric, on_epoch=True, prog_bar=stage == "val")
        return loss

    def validation_step(self, batch: Batch, batch_idx: int) -> Tensor:
        """Cross-entropy and accuracy on the validation labels."""
        return self._eval_step(batch, "val", self.val_acc)

    def test_step(self, batch: Batch, batch_idx: int) -> Tensor:
        """Cross-entropy and accuracy on the (clean) test labels."""
        return self._eval_step(batch, "test", self.test_acc)

    def predict_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> dict:
        """Per sample: dataset index, given label, predicted class and softmax probabilities."""
        x, y, index = batch
        probs = torch.softmax(self(x), dim=1)
        return {"index": index, "label": y, "predicted": probs.argmax(dim=1), "probs": probs}

    def log_train_metrics(self, loss: Tensor, logits: Tensor, y: Tensor) -> None:
        """Log the training loss and accuracy against the given (possibly noisy) labels."""
        self.train_acc.update(logits.detach(), y)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, sync_dist=True)
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True)

    # -- optimization ---------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        """Adam or SGD over all parameters, with an optional step schedule."""
        hp = self.hparams
        params = [p for p in self.parameters() if p.requires_grad]
        if hp.optimizer == "adam":
            opt: torch.optim.Optimizer = torch.optim.Adam(
                params, lr=hp.lr, weight_decay=hp.weight_decay
            )
        else:
            opt = torch.optim.SGD(
                params, lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay
            )
        if not hp.lr_milestones:
            return opt
        sched = torch.optim.lr_scheduler.MultiStepLR(
            opt, milestones=list(hp.lr_milestones), gamma=hp.lr_gamma
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}
