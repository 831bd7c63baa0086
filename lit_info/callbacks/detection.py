"""Helpers for mislabeled-sample detection: ranks, rank means, AUC-ROC, leave-one-out margins.

Used by :class:`lit_info.callbacks.SampleInformation` for its ``detection_score`` and its
printed summary. Ranks are average ranks (ties share the mean of their positions), so the
results do not depend on the order of tied samples.
"""

from __future__ import annotations

import math

import torch
from scipy.stats import rankdata
from torch import Tensor

__all__ = ["auroc", "leave_one_out_margin", "normalized_ranks", "rank_mean"]


def normalized_ranks(score: Tensor) -> Tensor:
    """Average ranks of ``score`` divided by its length: in ``(0, 1]``, 1 for the largest.

    Args:
        score: 1-D tensor.

    Returns:
        float64 tensor of the same shape (on the CPU).
    """
    values = score.detach().double().cpu().numpy()
    return torch.from_numpy(rankdata(values) / len(values))


def rank_mean(*scores: Tensor) -> Tensor:
    """The mean of the :func:`normalized_ranks` of several scores of the same samples.

    Args:
        *scores: 1-D tensors of equal length (higher = more suspicious).

    Returns:
        float64 tensor in ``(0, 1]``; a sample ranked first by every score gets 1.

    Raises:
        ValueError: If no score is given or the lengths differ.
    """
    if not scores:
        raise ValueError("rank_mean needs at least one score")
    if len({s.numel() for s in scores}) != 1:
        raise ValueError(f"scores of different lengths: {[s.numel() for s in scores]}")
    return torch.stack([normalized_ranks(s) for s in scores]).mean(dim=0)


def auroc(score: Tensor, positive: Tensor) -> float:
    """Area under the ROC curve of ``score`` for flagging the ``positive`` samples.

    The Mann-Whitney statistic: the probability that a random positive scores above a random
    negative, ties counting one half (exact, no thresholds).

    Args:
        score: 1-D tensor (higher = more likely positive).
        positive: Boolean 1-D tensor of the same length.

    Returns:
        The AUC in ``[0, 1]``, or NaN if there are no positives or no negatives.
    """
    positive = positive.detach().bool().cpu()
    n_pos = int(positive.sum())
    n_neg = positive.numel() - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = rankdata(score.detach().double().cpu().numpy())
    pos_rank_sum = float(ranks[positive.numpy()].sum())
    return (pos_rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def leave_one_out_margin(
    theta: Tensor, f0: Tensor, targets: Tensor, beta: Tensor, delta: Tensor
) -> Tensor:
    """Margin of each training sample's given label under the model trained without it.

    For the linearized network (conventions of :mod:`lit_info.info.linearized`) trained on all
    samples, ``f_t(x_i) = f_0(x_i) + (Theta beta)_i``, and without sample ``i``,
    ``f_{-i}(x_i) = f_t(x_i) - (Theta delta_i)_i`` (``delta_i = beta - beta_{-i}`` from
    :func:`lit_info.info.leave_one_out_differences`). The margin is
    ``f_{-i}(x_i)[y_i] - max_{c != y_i} f_{-i}(x_i)[c]`` for ``k > 1`` outputs (``y_i`` the
    argmax of the one-hot target) and ``sign(target_i) f_{-i}(x_i)`` for one output with
    targets +-1. Negative: the other samples predict another label.

    Args:
        theta: Train kernel ``(n k, n k)``.
        f0: Outputs ``(n, k)`` at the linearization point.
        targets: Targets ``(n, k)`` (one-hot, or +-1 for ``k = 1``).
        beta: Coefficients ``(n k,)`` of the model trained on all samples.
        delta: Differences ``(n, n k)``.

    Returns:
        float64 tensor ``(n,)``.
    """
    n, k = f0.shape
    theta = theta.to(torch.float64)
    f_t = f0.to(torch.float64) + (theta @ beta.to(torch.float64)).view(n, k)
    own = torch.einsum("ikm,im->ik", theta.view(n, k, n * k), delta.to(torch.float64))
    f_loo = f_t - own
    if k == 1:
        return torch.sign(targets[:, 0].to(torch.float64)) * f_loo[:, 0]
    given = targets.argmax(dim=1)
    own_label = f_loo.gather(1, given[:, None])[:, 0]
    others = f_loo.scatter(1, given[:, None], -math.inf)
    return own_label - others.max(dim=1).values
