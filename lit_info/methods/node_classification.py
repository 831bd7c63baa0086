"""Shared pieces of the node classifiers (MixHop, GCN) on the graph datamodules.

A batch is a torch-geometric ``Data`` from :mod:`lit_info.data.citation`: the whole graph (the
split's nodes are picked by its mask) or a k-hop subgraph (its first
``batch.batch_size`` nodes are the seeds). Logged keys: ``train/loss`` (cross-entropy plus the
method's penalties), ``train/ce``, ``train/acc``, ``val/loss``, ``val/acc``, ``test/loss``,
``test/acc`` (accuracy over the split's nodes; under DDP every node counted once, see the
datamodule). ``predict`` returns per node its index in the full graph, label, predicted class
and class probabilities (``PredictionWriter`` writes them to ``predictions.csv``).
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from lit_info.methods.base import check_finite_loss
from lit_info.nets.graph import adjacency_matrix


def seed_nodes(batch: Any, split: str) -> Tensor:
    """Indices (within the batch) of the nodes a step is scored on.

    Args:
        batch: A ``Data`` graph: a k-hop subgraph (seeds first, ``batch_size`` of
            them) or the whole graph with ``<split>_mask``.
        split: ``train``, ``val``, ``test`` or ``all``.
    """
    size = getattr(batch, "batch_size", None)
    if size is not None:
        return torch.arange(int(size), device=batch.y.device)
    if split == "all":
        return torch.arange(batch.num_nodes, device=batch.y.device)
    return batch[f"{split}_mask"].nonzero().view(-1)


class NodeClassifier(pl.LightningModule):
    """Base LightningModule: a graph network ``net(x, adjacency)`` scored on the split's nodes.

    Subclasses set ``self.net`` and implement :meth:`penalty` and ``configure_optimizers``.

    Args:
        num_classes: Number of classes C (from the datamodule).
    """

    net: nn.Module

    def __init__(self, num_classes: int):
        super().__init__()
        self.num_classes = num_classes
        self.train_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")
        self.val_loss = MeanMetric()
        self.test_loss = MeanMetric()
        self._adjacency: tuple[tuple, Tensor] | None = None

    def adjacency(self, batch: Any) -> Tensor:
        """The batch's ``Â`` as a sparse CSR matrix, cached for the graph of the last call."""
        edge_index, weight = batch.edge_index, batch.edge_weight
        dtype = next(self.parameters()).dtype
        key = (edge_index, weight, batch.num_nodes, dtype)  # the tensors themselves
        cached = self._adjacency
        fresh = cached is not None and cached[0][0] is edge_index and cached[0][1] is weight
        if not fresh or cached[0][2:] != key[2:]:
            matrix = adjacency_matrix(edge_index, weight.to(dtype), batch.num_nodes)
            self._adjacency = (key, matrix)
        return self._adjacency[1]

    def _average_running_statistics(self) -> None:
        """Under DDP, average the batch norms' running statistics over the processes.

        Each process updates them with its own mini-batches; averaging before an evaluation
        makes every process evaluate the same model (and ``running`` evaluation then equals
        a one-process evaluation of these weights).
        """
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            return
        world = torch.distributed.get_world_size()
        if world < 2:
            return
        for module in self.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats:
                for buffer in (module.running_mean, module.running_var):
                    torch.distributed.all_reduce(buffer)
                    buffer.div_(world)

    def on_validation_epoch_start(self) -> None:
        """Same running statistics on every process (DDP)."""
        self._average_running_statistics()

    def on_test_epoch_start(self) -> None:
        """Same running statistics on every process (DDP)."""
        self._average_running_statistics()

    def on_predict_epoch_start(self) -> None:
        """Same running statistics on every process (DDP)."""
        self._average_running_statistics()

    def forward(self, batch: Any) -> Tensor:
        """Logits ``N x C`` of every node of the batch."""
        return self.net(batch.x, self.adjacency(batch))

    def penalty(self) -> Tensor:
        """Regularization added to the cross-entropy (subclasses)."""
        return torch.zeros((), device=self.device)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        """Cross-entropy on the training seeds plus :meth:`penalty`."""
        nodes = seed_nodes(batch, "train")
        logits = self(batch)[nodes]
        target = batch.y[nodes]
        ce = F.cross_entropy(logits, target)
        loss = ce + self.penalty()
        check_finite_loss(loss, self, batch_idx)  # NonFiniteLossError: one line in the CLI
        self.train_acc(logits.detach(), target)
        size = nodes.numel()
        self.log("train/loss", loss, on_epoch=True, on_step=False, batch_size=size, sync_dist=True)
        self.log("train/ce", ce, on_epoch=True, on_step=False, batch_size=size, sync_dist=True)
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True, batch_size=size)
        return loss

    def _evaluate(self, batch: Any, split: str) -> None:
        nodes = seed_nodes(batch, split)
        logits = self(batch)[nodes]
        target = batch.y[nodes]
        accuracy, mean_loss = (
            (self.val_acc, self.val_loss) if split == "val" else (self.test_acc, self.test_loss)
        )
        accuracy(logits, target)
        mean_loss.update(F.cross_entropy(logits, target, reduction="none"))
        self.log(f"{split}/acc", accuracy, on_epoch=True, prog_bar=split == "val")
        self.log(f"{split}/loss", mean_loss, on_epoch=True)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        """Accuracy and cross-entropy on the validation nodes."""
        self._evaluate(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        """Accuracy and cross-entropy on the test nodes."""
        self._evaluate(batch, "test")

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> dict:
        """Per node: index in the full graph, label, predicted class, probabilities."""
        datamodule = getattr(self.trainer, "datamodule", None)
        split = getattr(datamodule, "predict_split", "all")
        nodes = seed_nodes(batch, split)
        probs = torch.softmax(self(batch)[nodes], dim=1)
        return {
            "index": batch.n_id[nodes],
            "label": batch.y[nodes],
            "predicted": probs.argmax(dim=1),
            "probs": probs,
        }
