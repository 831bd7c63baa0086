"""Metrics of the MIMIC-III benchmark (Harutyunyan et al. 2019), on torchmetrics.

* in-hospital mortality, decompensation: AUC-ROC, AUC-PR (the trapezoid under the
  precision-recall curve, as the authors compute it) and ``min(Se, P+)`` (the largest, over
  thresholds, of the smaller of sensitivity and precision);
* length of stay: Cohen's kappa with linear weights over the paper's 10 classes (< 1 day, one
  per day up to a week, 8-14 days, > 14 days), the mean absolute deviation in hours (MAD),
  mean squared error and MAPE;
* phenotyping: macro, micro and weighted AUC-ROC over the 25 groups.

:func:`bootstrap` resamples the test samples with replacement (the authors' evaluation
scripts: 10,000 resamples) and reports the mean and the 2.5 / 97.5 percentiles of each metric.
:class:`PredictionStore` keeps predictions and targets as torchmetrics ``cat`` states, so under
DDP the samples of every process are gathered (each once, given disjoint evaluation shards).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.functional.classification import (
    binary_auroc,
    binary_precision_recall_curve,
    multiclass_cohen_kappa,
    multilabel_auroc,
)

__all__ = [
    "LOS_BIN_MEANS",
    "PredictionStore",
    "binary_metrics",
    "bootstrap",
    "length_of_stay_metrics",
    "phenotyping_metrics",
]

#: Mean remaining stay (hours) of each length-of-stay class in the authors' training data;
#: a class prediction becomes this estimate for MAD.
LOS_BIN_MEANS = (
    11.450379,
    35.070846,
    59.206531,
    83.382723,
    107.487817,
    131.579534,
    155.643957,
    179.660558,
    254.306624,
    585.325890,
)
LOS_BIN_EDGES = (24.0, 48.0, 72.0, 96.0, 120.0, 144.0, 168.0, 192.0, 336.0)


def _nan() -> Tensor:
    return torch.tensor(float("nan"), dtype=torch.float64)


def binary_metrics(probabilities: Tensor, targets: Tensor) -> dict[str, Tensor]:
    """``auroc``, ``auprc`` and ``minpse`` of binary predictions (NaN with a single class)."""
    p = probabilities.detach().double().reshape(-1)
    y = targets.detach().long().reshape(-1)
    if y.numel() == 0 or y.min() == y.max():
        return {"auroc": _nan(), "auprc": _nan(), "minpse": _nan()}
    precision, recall, _ = binary_precision_recall_curve(p, y)
    # the curve runs from full recall down to (0, 1): integrate it in that order, as
    # scikit-learn's auc does (sorting would reorder the points of tied recall)
    auprc = torch.trapezoid(precision.double(), recall.double()).abs()
    return {
        "auroc": binary_auroc(p, y).double(),
        "auprc": auprc,
        "minpse": torch.minimum(precision, recall).max().double(),
    }


def los_class(hours: Tensor) -> Tensor:
    """The paper's length-of-stay class (0..9) of remaining stays in hours."""
    edges = torch.tensor(LOS_BIN_EDGES, dtype=torch.float64, device=hours.device)
    return torch.bucketize(hours.double(), edges, right=True)


def length_of_stay_metrics(predicted_hours: Tensor, true_hours: Tensor) -> dict[str, Tensor]:
    """``kappa`` (linear weights over the 10 classes), ``mad``, ``mse``, ``mape`` (hours).

    Negative predictions count as 0, as in the authors' evaluation.
    """
    prediction = predicted_hours.detach().double().reshape(-1).clamp(min=0)
    truth = true_hours.detach().double().reshape(-1)
    if truth.numel() == 0:
        return {k: _nan() for k in ("kappa", "mad", "mse", "mape")}
    predicted_class, true_class = los_class(prediction), los_class(truth)
    if torch.equal(predicted_class, true_class) and true_class.unique().numel() == 1:
        kappa = torch.tensor(1.0, dtype=torch.float64)
    else:
        kappa = multiclass_cohen_kappa(
            predicted_class, true_class, num_classes=10, weights="linear"
        ).double()
    return {
        "kappa": kappa,
        "mad": (prediction - truth).abs().mean(),
        "mse": ((prediction - truth) ** 2).mean(),
        "mape": ((truth - prediction) / (truth + 0.1)).abs().mean() * 100,
    }


def phenotyping_metrics(probabilities: Tensor, targets: Tensor) -> dict[str, Tensor]:
    """``auroc_macro``, ``auroc_micro``, ``auroc_weighted`` over the labels present in both classes.

    Labels with a single class among the targets have no AUC-ROC and are left out (the
    authors' scikit-learn call would fail on them; the full test set has both classes for all).
    """
    p = probabilities.detach().double()
    y = targets.detach().long()
    if y.numel() == 0:
        return {k: _nan() for k in ("auroc_macro", "auroc_micro", "auroc_weighted")}
    usable = (y.min(dim=0).values != y.max(dim=0).values).nonzero().reshape(-1)
    if usable.numel() == 0:
        return {k: _nan() for k in ("auroc_macro", "auroc_micro", "auroc_weighted")}
    p, y = p[:, usable], y[:, usable]
    labels = usable.numel()
    return {
        "auroc_macro": multilabel_auroc(p, y, num_labels=labels, average="macro").double(),
        "auroc_micro": multilabel_auroc(p, y, num_labels=labels, average="micro").double(),
        "auroc_weighted": multilabel_auroc(p, y, num_labels=labels, average="weighted").double(),
    }


def bootstrap(
    metric: Callable[[Tensor, Tensor], dict[str, Tensor]],
    predictions: Tensor,
    targets: Tensor,
    resamples: int = 10_000,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """Mean and 95% interval of each metric over bootstrap resamples of the samples.

    Returns:
        ``{metric: {"value": on all samples, "mean": ..., "low": 2.5 %, "high": 97.5 %}}``.
    """
    generator = torch.Generator().manual_seed(seed)
    n = targets.shape[0]
    full = metric(predictions, targets)
    draws: dict[str, list[float]] = {name: [] for name in full}
    for _ in range(resamples):
        pick = torch.randint(n, (n,), generator=generator)
        for name, value in metric(predictions[pick], targets[pick]).items():
            draws[name].append(float(value))
    out = {}
    for name, values in draws.items():
        array = np.array(values, dtype=np.float64)
        array = array[~np.isnan(array)]
        low, high = np.percentile(array, [2.5, 97.5]) if array.size else (np.nan, np.nan)
        out[name] = {
            "value": float(full[name]),
            "mean": float(array.mean()) if array.size else float("nan"),
            "low": float(low),
            "high": float(high),
        }
    return out


class PredictionStore(Metric):
    """Predictions and targets of an evaluation epoch, gathered across processes."""

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("predictions", default=[], dist_reduce_fx="cat")
        self.add_state("targets", default=[], dist_reduce_fx="cat")

    def update(self, predictions: Tensor, targets: Tensor) -> None:  # noqa: D102
        self.predictions.append(predictions.detach().float())
        self.targets.append(targets.detach().float())

    def compute(self) -> tuple[Tensor, Tensor]:  # noqa: D102
        def joined(state) -> Tensor:
            if isinstance(state, Tensor):
                return state
            return torch.cat(state) if state else torch.zeros(0)

        return joined(self.predictions), joined(self.targets)
