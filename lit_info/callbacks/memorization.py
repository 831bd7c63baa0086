"""Memorization monitor: does the network fit the corrupted labels or the true ones.

At the end of every ``every_n_epochs``-th training epoch the callback runs the model (eval mode)
over the whole training set, gathers the per-sample predictions from all ranks (deduplicated by
sample index), and logs

- ``memorization/train_acc``: accuracy against the given (noisy) labels, all samples;
- ``memorization/clean_acc``: accuracy on the samples whose label was not corrupted;
- ``memorization/corrupted_acc_given``: accuracy of the corrupted samples against their given
  (wrong) labels: how much label noise was memorized;
- ``memorization/corrupted_acc_true``: accuracy of the corrupted samples against their true labels;

plus, on rank zero, TensorBoard histograms of the per-sample norms of the cross-entropy gradient
w.r.t. the logits (clean vs corrupted) and, for models with ``predicted_logit_gradient`` (LIMIT),
of the predicted gradients. A CSV with one row per evaluated epoch is written to the run
directory.

The datamodule must provide ``train_eval_dataloader()`` (training set without augmentation,
items ``(x, y, index)``), ``train_noisy_labels`` and ``train_clean_labels``.
"""

from __future__ import annotations

import csv
import math
import os

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import TensorBoardLogger
from torch import Tensor

from lit_info.dist import gather_by_index, local_log_dir, rank_shard_loader


def memorization_stats(pred: Tensor, given: Tensor, clean: Tensor) -> dict[str, float]:
    """Training accuracies split by whether a label was corrupted.

    Args:
        pred: predicted classes ``(n,)``.
        given: the labels used for training ``(n,)`` (noisy).
        clean: the true labels ``(n,)``.

    Returns:
        ``train_acc``, ``clean_acc``, ``corrupted_acc_given``, ``corrupted_acc_true`` and
        ``corrupted_fraction``; an accuracy over an empty group is NaN.
    """
    if not (pred.shape == given.shape == clean.shape):
        raise ValueError(
            f"pred, given and clean must have one shape, got {tuple(pred.shape)}, "
            f"{tuple(given.shape)}, {tuple(clean.shape)}"
        )
    corrupted = given != clean

    def mean(mask: Tensor, hits: Tensor) -> float:
        return float(hits[mask].float().mean()) if bool(mask.any()) else math.nan

    everything = torch.ones_like(corrupted)
    return {
        "train_acc": mean(everything, pred == given),
        "clean_acc": mean(~corrupted, pred == given),
        "corrupted_acc_given": mean(corrupted, pred == given),
        "corrupted_acc_true": mean(corrupted, pred == clean),
        "corrupted_fraction": float(corrupted.float().mean()) if len(corrupted) else math.nan,
    }


class MemorizationMonitor(pl.Callback):
    """Log training accuracy on corrupted vs clean samples, against given and true labels.

    Args:
        every_n_epochs: evaluate the whole training set every this many epochs (>= 1).
        log_histograms: write histograms of the per-sample gradient norms, clean vs corrupted
            samples (and, for LIMIT, of the predicted gradients), to TensorBoard.
        filename: name of a CSV file, in the run folder, with one row of accuracies per
            evaluated epoch (written only when the run has a logger); null = no file.
    """

    def __init__(
        self,
        every_n_epochs: int = 1,
        log_histograms: bool = True,
        filename: str | None = "memorization.csv",
    ) -> None:
        super().__init__()
        if every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be >= 1, got {every_n_epochs}")
        self.every_n_epochs = every_n_epochs
        self.log_histograms = log_histograms
        self.filename = filename
        self.history: list[dict[str, float]] = []
        self.last_predictions: Tensor | None = None

    @staticmethod
    def _check_datamodule(trainer: pl.Trainer) -> object:
        dm = trainer.datamodule
        needed = ("train_eval_dataloader", "train_noisy_labels", "train_clean_labels")
        if dm is None or any(not hasattr(dm, name) for name in needed):
            raise RuntimeError(
                "MemorizationMonitor needs a datamodule with "
                f"{', '.join(needed)} (e.g. lit_info.data.NoisyImageDataModule); got "
                f"{type(dm).__name__}"
            )
        return dm

    @torch.no_grad()
    def evaluate_training_set(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule
    ) -> dict[str, Tensor]:
        """Per-sample predictions and gradient norms on the whole training set, all ranks.

        Returns:
            ``pred`` ``(n,)``, ``grad_norm`` ``(n,)`` and, for LIMIT-like models,
            ``predicted_grad_norm`` ``(n,)``, ordered by training-sample index.
        """
        dm = self._check_datamodule(trainer)
        base_loader = dm.train_eval_dataloader()
        dataset = base_loader.dataset
        loader = rank_shard_loader(
            dataset,
            trainer.world_size,
            trainer.global_rank,
            base_loader.batch_size,
            base_loader.num_workers,
        )
        predicts_gradient = hasattr(pl_module, "predicted_logit_gradient")
        was_training = pl_module.training
        pl_module.eval()
        indices, preds, grad_norms, pred_grad_norms = [], [], [], []
        try:
            for x, y, index in loader:
                x, y = x.to(pl_module.device), y.to(pl_module.device)
                x = trainer.precision_plugin.convert_input(x)  # e.g. float64 under "64-true"
                logits = pl_module(x)
                probs = torch.softmax(logits, dim=1)
                grad = probs - F.one_hot(y, probs.shape[1]).to(probs.dtype)
                indices.append(index.to(pl_module.device))
                preds.append(logits.argmax(dim=1))
                grad_norms.append(grad.norm(dim=1))
                if predicts_gradient:
                    g_hat = pl_module.predicted_logit_gradient(x, logits=logits)
                    pred_grad_norms.append(g_hat.norm(dim=1))
        finally:
            pl_module.train(was_training)
        index = torch.cat(indices)
        n = len(dataset)
        out = {
            "pred": gather_by_index(index, torch.cat(preds), n),
            "grad_norm": gather_by_index(index, torch.cat(grad_norms), n),
        }
        if predicts_gradient:
            out["predicted_grad_norm"] = gather_by_index(index, torch.cat(pred_grad_norms), n)
        return out

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Evaluate, log and record the memorization statistics."""
        if trainer.sanity_checking or (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        dm = self._check_datamodule(trainer)
        result = self.evaluate_training_set(trainer, pl_module)
        pred = result["pred"].cpu()
        given = torch.as_tensor(dm.train_noisy_labels).cpu()
        clean = torch.as_tensor(dm.train_clean_labels).cpu()
        stats = memorization_stats(pred, given, clean)
        self.last_predictions = pred
        finite = {f"memorization/{k}": v for k, v in stats.items() if not math.isnan(v)}
        # identical on every rank; sync_dist only keeps Lightning from warning under DDP
        pl_module.log_dict(finite, on_step=False, on_epoch=True, sync_dist=True)
        self.history.append({"epoch": float(trainer.current_epoch), **stats})
        if trainer.is_global_zero:
            if self.log_histograms:
                self._log_histograms(trainer, result, given != clean)
            self._write_csv(trainer)

    def _log_histograms(
        self, trainer: pl.Trainer, result: dict[str, Tensor], corrupted: Tensor
    ) -> None:
        loggers = [lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]
        if not loggers:
            return
        writer = loggers[0].experiment
        step = trainer.current_epoch
        for key in ("grad_norm", "predicted_grad_norm"):
            if key not in result:
                continue
            values = result[key].float().cpu()
            for group, mask in (("clean", ~corrupted), ("corrupted", corrupted)):
                if bool(mask.any()):
                    writer.add_histogram(f"memorization/{key}_{group}", values[mask], step)

    def _write_csv(self, trainer: pl.Trainer) -> None:
        log_dir = local_log_dir(trainer)
        if self.filename is None or log_dir is None:
            return  # no logger: nothing is written (not even into the working directory)
        path = log_dir / self.filename
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(self.history[0]))
            writer.writeheader()
            writer.writerows(self.history)
        os.replace(tmp, path)

    def state_dict(self) -> dict:
        """History travels with checkpoints so a resumed run keeps the full curve."""
        return {"history": self.history}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore the history saved by :meth:`state_dict`."""
        self.history = list(state_dict.get("history", []))
