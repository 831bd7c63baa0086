"""Synergy and related information measures of jointly Gaussian variables, in closed form.

For factors ``Y = (Y_1..Y_m)`` and targets ``X_1..X_p``, jointly Gaussian (means irrelevant),
described by ``cov_y`` (m, m) = Cov(Y), ``cross`` (p, m) = Cov(X_i, Y_j) and ``var_x`` (p,) =
Var(X_i). All functions are batched over the targets ``i`` and work in the dtype given (float64
recommended), on any device. In nats. Used by MinSyn (Ver Steeg et al., arXiv 1710.03839).

* :func:`total_correlation`: ``TC(Y) = sum_j H(Y_j) - H(Y) = (sum_j log S_jj - log det S) / 2``.
* :func:`conditional_total_correlation`: ``TC(Y | X_i)``, the same of ``Cov(Y | X_i) = S - c_i
  c_i^T / var_i``.
* :func:`mutual_information`: ``I(X_i; Y) = -log(1 - R_i^2) / 2`` with ``R_i^2 = c_i^T S^-1 c_i
  / var_i``; :func:`pairwise_mutual_information`: ``I(X_i; Y_j) = -log(1 - rho_ij^2) / 2``.
* :func:`whole_minus_sum_synergy`: ``I(X_i; Y) - sum_j I(X_i; Y_j)``, which equals
  ``TC(Y | X_i) - TC(Y)`` (tested); :func:`imax_synergy`: ``I(X_i; Y) - max_j I(X_i; Y_j)``
  (for Gaussians the minimum-mutual-information redundancy is the largest single ``I``).
* :func:`ci_prediction`: the "naive Bayes" prediction of ``X_i`` from ``Y`` that treats the
  ``Y_j`` as independent given ``X_i`` (each ``Y_j | X_i ~ N(a_j X_i, v_j)``, ``a_j = c_ij /
  var_i``, ``v_j = S_jj - c_ij^2 / var_i``): posterior precision ``1 / var_i + sum_j a_j^2 /
  v_j`` and mean ``(sum_j a_j y_j / v_j) / precision``; :func:`ci_information`: what that
  prediction keeps, ``I(X_i; T_i)`` for the statistic ``T_i = sum_j a_j Y_j / v_j`` under the
  true joint distribution (at most ``I(X_i; Y)``, equal when the ``Y_j`` are conditionally
  independent given ``X_i``).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "ci_information",
    "ci_prediction",
    "conditional_total_correlation",
    "imax_synergy",
    "mutual_information",
    "pairwise_mutual_information",
    "total_correlation",
    "whole_minus_sum_synergy",
]


def total_correlation(cov: Tensor) -> Tensor:
    """``TC`` of a Gaussian with covariance ``cov`` (..., m, m)."""
    diagonal = torch.diagonal(cov, dim1=-2, dim2=-1)
    return 0.5 * (torch.log(diagonal).sum(-1) - torch.linalg.slogdet(cov)[1])


def _conditional_covariance(cov_y: Tensor, cross: Tensor, var_x: Tensor) -> Tensor:
    """``Cov(Y | X_i)`` for every target: (p, m, m)."""
    return cov_y.unsqueeze(0) - cross.unsqueeze(-1) * cross.unsqueeze(-2) / var_x[:, None, None]


def conditional_total_correlation(cov_y: Tensor, cross: Tensor, var_x: Tensor) -> Tensor:
    """``TC(Y | X_i)`` for every target (p,)."""
    return total_correlation(_conditional_covariance(cov_y, cross, var_x))


def mutual_information(cov_y: Tensor, cross: Tensor, var_x: Tensor) -> Tensor:
    """``I(X_i; Y)`` for every target (p,)."""
    solved = torch.linalg.solve(cov_y, cross.T)  # (m, p) = S^-1 c_i
    explained = (cross.T * solved).sum(0) / var_x
    return -0.5 * torch.log1p(-explained)


def pairwise_mutual_information(cov_y: Tensor, cross: Tensor, var_x: Tensor) -> Tensor:
    """``I(X_i; Y_j)`` (p, m)."""
    rho_squared = cross**2 / (var_x[:, None] * torch.diagonal(cov_y)[None, :])
    return -0.5 * torch.log1p(-rho_squared)


def whole_minus_sum_synergy(cov_y: Tensor, cross: Tensor, var_x: Tensor) -> Tensor:
    """``I(X_i; Y) - sum_j I(X_i; Y_j)`` (p,); negative when the factors are redundant."""
    return mutual_information(cov_y, cross, var_x) - pairwise_mutual_information(
        cov_y, cross, var_x
    ).sum(-1)


def imax_synergy(cov_y: Tensor, cross: Tensor, var_x: Tensor) -> Tensor:
    """``I(X_i; Y) - max_j I(X_i; Y_j)`` (p,), never negative."""
    return mutual_information(cov_y, cross, var_x) - pairwise_mutual_information(
        cov_y, cross, var_x
    ).amax(-1)


def _ci_terms(cov_y: Tensor, cross: Tensor, var_x: Tensor) -> tuple[Tensor, Tensor]:
    """``a_ij / v_ij`` (p, m) and the posterior precision (p,) of the CI model."""
    slope = cross / var_x[:, None]
    noise = torch.diagonal(cov_y)[None, :] - cross**2 / var_x[:, None]
    weights = slope / noise
    precision = 1.0 / var_x + (slope * weights).sum(-1)
    return weights, precision


def ci_prediction(y: Tensor, cov_y: Tensor, cross: Tensor, var_x: Tensor) -> tuple[Tensor, Tensor]:
    """The conditionally-independent prediction of every ``X_i`` from centred factors ``y``.

    Args:
        y: (n, m) centred factor values.

    Returns:
        The posterior means (n, p) and variances (p,) of the CI model.
    """
    weights, precision = _ci_terms(cov_y, cross, var_x)
    return (y @ weights.T) / precision, 1.0 / precision


def ci_information(cov_y: Tensor, cross: Tensor, var_x: Tensor) -> Tensor:
    """``I(X_i; T_i)`` (p,), the information about ``X_i`` in its CI prediction."""
    weights, _ = _ci_terms(cov_y, cross, var_x)
    covariance = (weights * cross).sum(-1)  # Cov(X_i, T_i)
    variance = ((weights @ cov_y) * weights).sum(-1)  # Var(T_i)
    return -0.5 * torch.log1p(-(covariance**2) / (var_x * variance))
