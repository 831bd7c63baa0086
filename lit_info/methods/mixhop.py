r"""MixHop (Abu-El-Haija et al., ICML 2019) as a LightningModule, trained as the authors did.

The network is :class:`lit_info.nets.graph.MixHopNet` (see there for the layers). Training
follows the authors' release (``mixhop_trainer.py`` and ``train_<dataset>.sh`` of
samihaija/mixhop):

* loss: mean cross-entropy over the training nodes + ``l2 * sum(W^2)`` over every kernel (Keras'
  ``l2`` regularizer: no factor 1/2) + ``1e-3 * mean(q^2)`` of the psum weights (+ the group
  lasso below, if on);
* plain SGD (no momentum) at ``lr``; the learning rate is *decremented linearly*: after every
  ``lr_decrement_every`` steps it drops by ``lr_decrement * lr`` (1 % of the start value), i.e.
  at step ``s`` it is ``lr * (1 - lr_decrement * floor((s - 1) / lr_decrement_every))``;
  training stops when it reaches 0;
* one full-batch step per epoch, evaluated after every step; the configs keep the checkpoint of
  the best validation accuracy (the first of ties: selection never looks at the test nodes,
  unlike the authors' tie-break on test accuracy) and stop 200 epochs after the last
  improvement (``EarlyStopping(patience=200)``), at most 400 epochs (their default).

Group lasso and the architecture search (the paper's section 4). ``group_lasso: lambda`` adds
``lambda * sum_c ||W[:, c]||_2`` over the output columns ``c`` of every layer (each column is
one unit of one power), which drives whole columns to zero. :meth:`MixHop.searched_widths`
keeps the columns whose norm exceeds ``prune_threshold`` times the largest column norm of their
layer; in the output layer a power keeps its whole width (a multiple of the classes, the psum
blocks) if any of its columns survives. Retrain with those widths and no lasso
(``benchmarks/mixhop_search.py`` runs both stages). At the end of every fit the widths are
printed, logged as text ``mixhop/searched_widths`` and written to ``architecture.json`` in the
run folder.

TensorBoard (rank zero, TensorBoard logger): ``mixhop/column_norms`` (an image: one panel per
layer and power, one bar per column, heights on a common scale per layer; the paper's figure of
the learned widths) every ``figure_every_n_epochs`` epochs and at the end of the fit, and
histograms ``mixhop/l<layer>_p<power>`` of the column norms.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from lit_info.methods.corex_base import require_hints
from lit_info.methods.node_classification import NodeClassifier
from lit_info.nets.graph import BatchNormStatistics, FeatureNormalization, MixHopNet

#: Loss weight of ``mean(q^2)`` of the psum weights (the authors' constant).
PSUM_PENALTY = 1e-3


def linear_decrement(step: int, decrement: float, every: int) -> float:
    """Learning-rate factor at optimizer step ``step`` (0-based) of the authors' schedule.

    ``1 - decrement * floor((step - 1) / every)`` for ``step >= 1``, 1 at step 0, never below 0:
    the rate drops after steps ``every, 2 every, ...``.
    """
    if step <= 0:
        return 1.0
    return max(0.0, 1.0 - decrement * ((step - 1) // every))


def column_norm_image(layers: Sequence[dict[int, Tensor]], height: int = 48) -> Tensor:
    """A ``3 x H x W`` uint8 image of column norms: a row of panels per layer, one per power.

    Each panel has one 3-pixel bar per column (sorted by decreasing norm), its height
    proportional to the norm on a scale shared by the layer's powers; panels are separated by
    a gray line. Drawn with tensors only (no plotting library).

    Args:
        layers: Per layer, ``{power: column norms}``.
        height: Panel height in pixels.
    """
    bar, gap = 3, 6
    rows = []
    colours = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189)]
    width = max(sum(len(n) * bar + gap for n in layer.values()) for layer in layers)
    for layer in layers:
        panel = torch.full((3, height, width), 255, dtype=torch.uint8)
        top = max(float(n.max()) for n in layer.values() if n.numel()) or 1.0
        x = 0
        for k, (_, norms) in enumerate(sorted(layer.items())):
            colour = torch.tensor(colours[k % len(colours)], dtype=torch.uint8).view(3, 1, 1)
            for value in torch.sort(norms.float().cpu(), descending=True).values.tolist():
                h = int(round((height - 2) * value / top))
                if h > 0:
                    panel[:, height - h :, x : x + bar - 1] = colour
                x += bar
            panel[:, :, x + gap // 2] = 160
            x += gap
        rows.append(panel)
        rows.append(torch.full((3, 4, width), 255, dtype=torch.uint8))
    return torch.cat(rows[:-1], dim=1)


class MixHop(NodeClassifier):
    """MixHop node classifier trained with the authors' recipe (see the module docstring).

    Args:
        in_features: Node feature width; filled in from the data, leave unset.
        num_classes: Number of classes; filled in from the data, leave unset.
        powers: Adjacency powers of every layer.
        hidden_widths: Width per power of each hidden layer (one list per layer).
        output_widths: Width per power of the output layer (psum: total a multiple of C).
        output: ``psum`` or ``fc``.
        input_normalization: ``binary_l2`` (the authors'), ``sum``, ``l2`` or ``none``.
        input_dropout: Dropout on the input's non-zero entries.
        dropout: Dropout before every layer after the first.
        batch_norm: ``batch`` (the authors': statistics of the forward pass, also when
            evaluating) or ``running``.
        lr: Start learning rate of SGD.
        lr_decrement: Fraction of ``lr`` subtracted every ``lr_decrement_every`` steps.
        lr_decrement_every: Steps between two decrements.
        l2: Weight of ``sum(W^2)`` over the kernels.
        group_lasso: Weight of the column group lasso (0 = off).
        prune_threshold: Relative column norm below which :meth:`searched_widths` drops a column.
        figure_every_n_epochs: Epochs between two column-norm figures (0 = only at the end).
    """

    def __init__(
        self,
        in_features: int | None = None,
        num_classes: int | None = None,
        powers: Sequence[int] = (0, 1, 2),
        hidden_widths: Sequence[Sequence[int]] = ((24, 18, 18),),
        output_widths: Sequence[int] = (0, 7, 7),
        output: Literal["psum", "fc"] = "psum",
        input_normalization: FeatureNormalization = "binary_l2",
        input_dropout: float = 0.5,
        dropout: float = 0.9,
        batch_norm: BatchNormStatistics = "batch",
        lr: float = 1.0,
        lr_decrement: float = 0.01,
        lr_decrement_every: int = 40,
        l2: float = 5e-3,
        group_lasso: float = 0.0,
        prune_threshold: float = 0.05,
        figure_every_n_epochs: int = 50,
    ):
        require_hints("MixHop", in_features=in_features, num_classes=num_classes)
        super().__init__(num_classes)
        if lr <= 0 or l2 < 0 or group_lasso < 0 or lr_decrement < 0 or lr_decrement_every < 1:
            raise ValueError(
                "need lr > 0, l2 >= 0, group_lasso >= 0, lr_decrement >= 0 and "
                f"lr_decrement_every >= 1; got lr={lr}, l2={l2}, group_lasso={group_lasso}, "
                f"lr_decrement={lr_decrement}, lr_decrement_every={lr_decrement_every}"
            )
        self.save_hyperparameters()
        self.net = MixHopNet(
            in_features,
            num_classes,
            powers=powers,
            hidden_widths=hidden_widths,
            output_widths=output_widths,
            output=output,
            input_normalization=input_normalization,
            input_dropout=input_dropout,
            dropout=dropout,
            batch_norm=batch_norm,
        )

    def penalty(self) -> Tensor:
        """``l2 * sum(W^2) + 1e-3 * mean(q^2) + group_lasso * sum of column norms``."""
        kernels = self.net.kernels()
        total = PSUM_PENALTY * self.net.psum_penalty()
        if self.hparams.l2:
            total = total + self.hparams.l2 * sum(w.pow(2).sum() for w in kernels)
        if self.hparams.group_lasso:
            total = total + self.hparams.group_lasso * sum(
                layer.weight.norm(dim=0).sum() for layer in self.net.layers
            )
        return total

    def configure_optimizers(self) -> dict[str, Any]:
        """SGD with the linear decrement, stepped every optimizer step."""
        optimizer = torch.optim.SGD(self.parameters(), lr=self.hparams.lr)
        decrement, every = self.hparams.lr_decrement, self.hparams.lr_decrement_every
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: linear_decrement(step, decrement, every)
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        """Stop when the linearly decremented learning rate reaches 0 (as the authors)."""
        if self.trainer.optimizers and self.trainer.optimizers[0].param_groups[0]["lr"] <= 0:
            self.trainer.should_stop = True

    # -- architecture search -----------------------------------------------------------------
    def column_norms(self) -> list[dict[int, Tensor]]:
        """Per layer, ``{power: L2 norms of the power's output columns}``."""
        return [layer.column_norms() for layer in self.net.layers]

    def searched_widths(self, threshold: float | None = None) -> dict[str, list]:
        """Widths per power that keep the columns with a relative norm above ``threshold``.

        Args:
            threshold: Fraction of the layer's largest column norm (default
                ``prune_threshold``).

        Returns:
            ``{"hidden_widths": [[...], ...], "output_widths": [...]}`` (the MixHop arguments).
        """
        threshold = self.hparams.prune_threshold if threshold is None else threshold
        powers = list(self.hparams.powers)
        widths: list[list[int]] = []
        for index, layer in enumerate(self.net.layers):
            norms = layer.column_norms()
            top = max(float(n.max()) for n in norms.values())
            kept = {p: int((n > threshold * top).sum()) for p, n in norms.items()}
            if index == len(self.net.layers) - 1:
                kept = {p: (layer.widths[powers.index(p)] if k else 0) for p, k in kept.items()}
            widths.append([kept.get(p, 0) for p in powers])
        return {"hidden_widths": widths[:-1], "output_widths": widths[-1]}

    def _log_column_norms(self) -> None:
        logger = self.logger
        if not self.trainer.is_global_zero or logger is None:
            return
        experiment = getattr(logger, "experiment", None)
        if experiment is None or not hasattr(experiment, "add_image"):
            return
        norms = self.column_norms()
        experiment.add_image(
            "mixhop/column_norms", column_norm_image(norms), self.current_epoch, dataformats="CHW"
        )
        for index, layer in enumerate(norms):
            for power, values in layer.items():
                experiment.add_histogram(
                    f"mixhop/l{index}_p{power}", values.float().cpu(), self.current_epoch
                )

    def on_train_epoch_end(self) -> None:
        """Column-norm figure every ``figure_every_n_epochs`` epochs."""
        every = self.hparams.figure_every_n_epochs
        if every and self.current_epoch % every == 0:
            self._log_column_norms()

    def on_fit_end(self) -> None:
        """Last column-norm figure; the searched widths printed, logged, in architecture.json."""
        self._log_column_norms()
        if not self.trainer.is_global_zero:
            return
        widths = self.searched_widths()
        current = {
            "hidden_widths": [list(w) for w in self.hparams.hidden_widths],
            "output_widths": list(self.hparams.output_widths),
        }
        record = {"powers": list(self.hparams.powers), "trained": current, "searched": widths}
        logger = self.logger
        log_dir = getattr(logger, "log_dir", None) if logger is not None else None
        if log_dir is not None:
            path = Path(log_dir) / "architecture.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name("architecture.json.tmp")
            tmp.write_text(json.dumps(record, indent=2) + "\n")
            os.replace(tmp, path)
            experiment = getattr(logger, "experiment", None)
            if experiment is not None and hasattr(experiment, "add_text"):
                experiment.add_text("mixhop/searched_widths", json.dumps(record), 0)
        if self.hparams.group_lasso:
            print(
                f"lit_info: MixHop widths per power {current} -> searched {widths} "
                f"(columns above {self.hparams.prune_threshold:g} x the layer's largest norm)",
                flush=True,
            )


def parameter_count(widths: dict[str, list], in_features: int) -> int:
    """Number of kernel entries of a MixHop net with these widths (for the search report)."""
    total, width = 0, in_features
    for layer in [*widths["hidden_widths"], widths["output_widths"]]:
        total += width * sum(layer)
        width = sum(layer)
    return total
