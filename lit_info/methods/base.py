"""Shared pieces of the image-classification LightningModules (classifier baselines, LIMIT).

The methods differ only in how the training loss is formed; evaluation, metrics, optimizers and
the non-finite-loss guard live here so every method logs the same keys: ``train/loss``,
``train/acc``, ``val/loss``, ``val/acc``, ``test/loss`` and ``test/acc``.

Training steps are cheap to record: the per-step values (loss, predictions, the value that must
stay finite, extra means) stay on the device in a small window and reach the metrics, the logger
and the finite-loss check together, in one host synchronization every
``trainer.log_every_n_steps`` steps and at the last batch of an epoch (see
:meth:`ImageClassificationModule.flush_train_steps`). A ``self.log`` call costs about 0.4 ms per
step in Lightning 2.6 and a host synchronization stalls an accelerator's queue; recording a step
costs a few list appends.
"""

from __future__ import annotations

import abc
import bisect
import itertools
from dataclasses import dataclass, field
from typing import Any, Literal

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from lit_info.nets import build_net

Batch = tuple[Tensor, Tensor, Tensor]

#: Steps between two checks of the recorded training steps when the trainer logs nothing
#: (``log_every_n_steps=0``).
DEFAULT_CHECK_EVERY_N_STEPS = 50


class NonFiniteLossError(RuntimeError):
    """Raised when a training loss becomes NaN or infinite; the message names the step."""


def _non_finite_message(value: float, step: int, epoch: int, batch_idx: int) -> str:
    return (
        f"training loss became {value} at global step {step} (epoch {epoch}, batch "
        f"{batch_idx}); lower the learning rate, check the input data for NaN/inf, or enable "
        "gradient clipping (trainer.gradient_clip_val)"
    )


def check_finite_loss(loss: Tensor, module: pl.LightningModule, batch_idx: int) -> None:
    """Stop training with a clear message when ``loss`` is NaN or infinite (checked now).

    This synchronizes with the device; inside a Trainer the methods use
    :meth:`ImageClassificationModule.guard_finite`, which checks in batches instead.

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
    bad = loss.detach().reshape(-1)
    value = bad[~torch.isfinite(bad)][0].item()
    raise NonFiniteLossError(_non_finite_message(value, step, epoch, batch_idx))


@dataclass
class _StepWindow:
    """Training-step values held on the device until the next flush (plain lists: cheap)."""

    guarded: list[Tensor] = field(default_factory=list)  # flattened values that must be finite
    where: list[tuple[int, int, int]] = field(default_factory=list)  # (step, epoch, batch_idx)
    losses: list[Tensor] = field(default_factory=list)  # scalar train/loss of each step
    batch_sizes: list[int] = field(default_factory=list)
    preds: list[Tensor] = field(default_factory=list)  # predicted classes
    targets: list[Tensor] = field(default_factory=list)
    means: dict[int, tuple[MeanMetric, list[Tensor]]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.guarded or self.losses or self.means)

    def clear(self) -> None:
        """Forget every recorded step."""
        for values in (self.guarded, self.where, self.losses, self.batch_sizes):
            values.clear()
        self.preds.clear()
        self.targets.clear()
        self.means.clear()


class ImageClassificationModule(pl.LightningModule, abc.ABC):
    """Image classifier on noisy labels; the base of the classifier baselines and LIMIT.

    ``train/loss`` and ``train/acc`` are epoch means (``train/loss`` is also logged as
    ``train/loss_epoch``); ``train/loss_step``, the loss of the step averaged over the
    processes, goes to the logger and the progress bar every ``trainer.log_every_n_steps``
    steps (the progress bar also shows ``train/loss_epoch``). A NaN or infinite training loss
    stops training with :class:`NonFiniteLossError` naming the step where it first occurred;
    it is found at the next check (at most ``log_every_n_steps`` steps later, at the latest at
    the epoch's last batch, and always before validation or a checkpoint).

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
        self.train_loss_mean = MeanMetric()  # batch-size weighted, as self.log(on_epoch) did
        self.val_acc = MulticlassAccuracy(num_classes=self.num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes=self.num_classes, average="micro")
        self._steps = _StepWindow()
        self._non_finite: str | None = None  # the error, once found (no checkpoint after it)

    def __setattr__(self, name: str, value: Any) -> None:
        """Set ``_current_fx_name`` directly (skipping ``nn.Module``'s checks).

        The Trainer sets it about 40 times per training step (twice per hook call), and
        ``nn.Module.__setattr__`` costs a few microseconds each time; it is never a parameter,
        buffer or submodule.
        """
        if name == "_current_fx_name":
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

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

    # -- training metrics and the finite-loss guard ---------------------------------------
    def _in_fit(self) -> bool:
        trainer = self._trainer
        return trainer is not None and trainer.training

    def guard_finite(self, value: Tensor, batch_idx: int) -> None:
        """Stop training (at the next check) if ``value`` is NaN or infinite anywhere.

        Inside a Trainer's fit the value is checked with the step's other values in
        :meth:`flush_train_steps`; the error then names this step. Outside, it is checked now.

        Args:
            value: the loss (or any tensor) of this training step.
            batch_idx: index of the batch within the epoch.

        Raises:
            NonFiniteLossError: (outside a fit) naming the step, epoch and batch.
        """
        if not self._in_fit():
            check_finite_loss(value, self, batch_idx)
            return
        trainer = self._trainer
        assert trainer is not None
        self._steps.guarded.append(value.detach().reshape(-1))
        self._steps.where.append((trainer.global_step, trainer.current_epoch, batch_idx))

    def log_train_metrics(self, loss: Tensor, logits: Tensor, y: Tensor) -> None:
        """Record the training loss and accuracy against the given (possibly noisy) labels.

        Args:
            loss: scalar training loss of the step (``train/loss``).
            logits: the classifier's logits ``(N, k)``.
            y: the labels used for ``train/acc`` ``(N,)``.
        """
        if not self._in_fit():
            self.train_loss_mean.update(loss.detach(), y.shape[0])
            self.train_acc.update(logits.detach(), y)
            return
        steps = self._steps
        steps.losses.append(loss.detach())
        steps.batch_sizes.append(int(y.shape[0]))
        steps.preds.append(logits.detach().argmax(dim=1))
        steps.targets.append(y)

    def accumulate_mean(self, metric: MeanMetric, value: Tensor) -> None:
        """Add one step's ``value`` to ``metric`` (an epoch mean), deferred like the others.

        Args:
            metric: a ``MeanMetric`` attribute of this module (logged by the method).
            value: the scalar value of this step.
        """
        if not self._in_fit():
            metric.update(value.detach())
            return
        entry = self._steps.means.setdefault(id(metric), (metric, []))
        entry[1].append(value.detach())

    def _window_end(self) -> tuple[bool, bool]:
        """Whether the step being taken ends a window, and whether it is a logging step.

        Returns ``(check, log)``; ``log`` when Lightning writes step metrics now (a logging
        step, a stop or ``fast_dev_run``). Windows end at those steps, every
        ``DEFAULT_CHECK_EVERY_N_STEPS`` steps when logging is off, at the epoch's last batch
        and at ``max_steps``: the same steps on every process.
        """
        trainer = self._trainer
        assert trainer is not None
        step = trainer.global_step + 1  # the step being taken (global_step counts those done)
        every = trainer.log_every_n_steps
        log = bool((every > 0 and step % every == 0) or trainer.should_stop or trainer.fast_dev_run)
        check = (
            log
            or (every <= 0 and step % DEFAULT_CHECK_EVERY_N_STEPS == 0)
            or trainer.fit_loop.epoch_loop.batch_progress.is_last_batch
            or 0 <= trainer.max_steps <= step
        )
        return check, log

    def on_before_backward(self, loss: Tensor) -> None:
        """Check (and at logging steps log) the recorded steps when a window ends.

        This runs before the step's backward pass and update, so a non-finite loss found here
        never reaches the weights through this step.
        """
        if self._in_fit():
            check, log = self._window_end()
            if check:
                self.flush_train_steps(log_step=log, collective=True)

    def flush_train_steps(self, log_step: bool = False, collective: bool = False) -> None:
        """Check the recorded steps for non-finite values, then feed them to the metrics.

        One host synchronization (a ``.tolist()`` of a few numbers) for the whole window.

        Args:
            log_step: also log ``train/loss_step`` (only from a hook that may log per step).
            collective: combine the check across processes (every process must call this at the
                same point; used at the trainer's fixed steps, not in checkpoint hooks).

        Raises:
            NonFiniteLossError: naming the first step whose guarded value was not finite.
        """
        steps = self._steps
        trainer = self._trainer
        collective = collective and trainer is not None and trainer.world_size > 1
        if not steps and not collective:
            return
        device = self.device
        if steps.guarded:
            flat = torch.cat(steps.guarded)
            bad = ~torch.isfinite(flat)
            n_bad = bad.sum().to(torch.float32)
        else:
            flat = bad = None
            n_bad = torch.zeros((), device=device)
        if steps.losses:
            last, has_loss = steps.losses[-1].to(torch.float32), torch.ones((), device=device)
        else:
            last = has_loss = torch.zeros((), device=device)
        packed = torch.stack([n_bad.to(device), last.to(device), has_loss])
        if collective:
            packed = trainer.strategy.reduce(packed, reduce_op="sum")
        total_bad, loss_sum, n_losses = packed.tolist()  # the one host synchronization
        if total_bad > 0:
            self._raise_non_finite(flat, bad, collective)
        if steps.losses:
            losses = torch.stack([value.reshape(()) for value in steps.losses])
            weights = torch.tensor(steps.batch_sizes, dtype=torch.float32).to(losses.device)
            self.train_loss_mean.update(losses, weights)
            self.train_acc.update(torch.cat(steps.preds), torch.cat(steps.targets))
        for metric, values in steps.means.values():
            metric.update(torch.stack([value.reshape(()) for value in values]))
        steps.clear()
        if log_step and n_losses > 0:
            # a CPU tensor: the progress bar reads it every step without a device sync
            value = torch.tensor(loss_sum / n_losses)
            self.log("train/loss_step", value, on_step=True, on_epoch=False, prog_bar=True)

    def _raise_non_finite(self, flat: Tensor | None, bad: Tensor | None, collective: bool) -> None:
        """Raise :class:`NonFiniteLossError` for the first non-finite guarded value."""
        steps = self._steps
        trainer = self.trainer
        found: tuple[float, int, int, int] | None = None
        if flat is not None and bad is not None and bool(bad.any()):
            first = int(bad.to(torch.uint8).argmax())
            ends = list(itertools.accumulate(len(g) for g in steps.guarded))
            step, epoch, batch_idx = steps.where[bisect.bisect_right(ends, first)]
            found = (float(flat[first]), step, epoch, batch_idx)
        first_step = found[1] if found is not None else torch.iinfo(torch.int64).max
        if collective:
            first_step_t = torch.tensor(first_step, dtype=torch.int64, device=self.device)
            first_step = int(trainer.strategy.reduce(first_step_t, reduce_op="min"))
        steps.clear()
        now = trainer.global_step
        if found is not None and found[1] == first_step:
            message = _non_finite_message(*found)
        else:
            message = (
                f"training loss became non-finite in another process at global step "
                f"{first_step}; lower the learning rate, check the input data for NaN/inf, or "
                "enable gradient clipping (trainer.gradient_clip_val)"
            )
        if now != first_step:
            message += (
                f" [detected at global step {now}: training stops there, and no checkpoint is "
                "saved from these weights]"
            )
        self._non_finite = message
        raise NonFiniteLossError(message)

    def on_train_start(self) -> None:
        """Start a fit with no recorded steps."""
        self._steps.clear()
        self._non_finite = None

    def on_train_epoch_end(self) -> None:
        """Check the epoch's remaining steps and log the epoch means (synchronized)."""
        self.flush_train_steps(collective=True)
        if self.train_loss_mean.update_called:
            self.log("train/loss_epoch", self.train_loss_mean, prog_bar=True)
            self.log("train/loss", self.train_loss_mean, logger=False)
        if self.train_acc.update_called:
            self.log("train/acc", self.train_acc)

    def on_validation_start(self) -> None:
        """Check the recorded steps before validating their weights."""
        self.flush_train_steps()

    def on_train_end(self) -> None:
        """Check any recorded steps left (a stop in the middle of an epoch)."""
        self.flush_train_steps()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuse to save weights trained past a non-finite loss.

        Raises:
            NonFiniteLossError: when a recorded step had a non-finite loss.
        """
        self.flush_train_steps()
        if self._non_finite is not None:
            raise NonFiniteLossError(f"not saving a checkpoint: {self._non_finite}")

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
