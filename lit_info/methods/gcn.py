"""GCN (Kipf & Welling, ICLR 2017) as a LightningModule: the baseline of the MixHop experiments.

The network is :class:`lit_info.nets.graph.GCNNet`: 16 hidden units, dropout 0.5 on the
(sum-normalized) input and the hidden layer, biases; Adam at lr 0.01 with weight decay 5e-4 on
the first layer's weights only (their ``5e-4 * l2_loss(W_1)``, i.e. ``5e-4 / 2 * sum(W_1^2)``,
is Adam's ``weight_decay=5e-4``), 200 epochs of full-batch steps; the configs keep the
checkpoint of the best validation accuracy.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from lit_info.methods.corex_base import require_hints
from lit_info.methods.node_classification import NodeClassifier
from lit_info.nets.graph import FeatureNormalization, GCNNet


class GCN(NodeClassifier):
    """Two-layer graph convolutional network (see the module docstring).

    Args:
        in_features: Node feature width; filled in from the data, leave unset.
        num_classes: Number of classes; filled in from the data, leave unset.
        hidden: Hidden widths, one per hidden layer.
        dropout: Dropout on the input and the hidden layers.
        input_normalization: ``sum`` (Kipf & Welling), ``binary_l2``, ``l2`` or ``none``.
        lr: Adam learning rate.
        weight_decay: Adam weight decay on the first layer's weights.
    """

    def __init__(
        self,
        in_features: int | None = None,
        num_classes: int | None = None,
        hidden: Sequence[int] = (16,),
        dropout: float = 0.5,
        input_normalization: FeatureNormalization = "sum",
        lr: float = 0.01,
        weight_decay: float = 5e-4,
    ):
        require_hints("GCN", in_features=in_features, num_classes=num_classes)
        super().__init__(num_classes)
        if lr <= 0 or weight_decay < 0 or not 0 <= dropout < 1:
            raise ValueError(
                f"need lr > 0, weight_decay >= 0, 0 <= dropout < 1; got lr={lr}, "
                f"weight_decay={weight_decay}, dropout={dropout}"
            )
        self.save_hyperparameters()
        self.net = GCNNet(in_features, num_classes, hidden, dropout, input_normalization)

    def configure_optimizers(self) -> Any:
        """Adam; weight decay on the first layer's weights only."""
        first = self.net.layers[0].weight
        rest = [p for p in self.parameters() if p is not first]
        return torch.optim.Adam(
            [
                {"params": [first], "weight_decay": self.hparams.weight_decay},
                {"params": rest, "weight_decay": 0.0},
            ],
            lr=self.hparams.lr,
        )
