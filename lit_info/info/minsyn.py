r"""The MinSyn objective: information kept by factors, with and without the synergy constraint.

MinSyn (Ver Steeg, Brekelmans, Harutyunyan, Galstyan, arXiv 1710.03839) looks for factors
``Y = (Y_1..Y_m)`` of standardized inputs ``X = (X_1..X_p)`` that are informative about every
``X_i`` *without synergy*: each ``X_i`` should be predictable from the factors combined as if
they were independent given ``X_i`` (the "CI" / naive-Bayes decoder), so that no information
about ``X_i`` lives only in a combination of factors. The functions here are the closed forms
behind both faces of the method, in the normalized units of linear CorEx
(:mod:`lit_info.info.corex`: ``Var Y_j = 1``, ``u_j`` the signal share of ``Y_j``,
``rho_ji = Corr(Y_j, X_i)``, ``R_y`` the factor correlations):

* :func:`signal_moments`: those moments for *any* encoder. The factors are ``Y_j = g_j(X) +
  N(0, 1)`` for signals ``g`` computed by a network; ``u_j = Var g_j / (1 + Var g_j)``, and
  ``rho``, ``R_y`` follow from the sample covariances of ``g`` with ``X`` and with itself. For
  a linear encoder ``g = X V^T`` they equal :func:`~lit_info.info.corex.corex_moments` with
  ``free=True`` (tested).
* :func:`exact_information`: ``I(X_i; Y) = -1/2 log(1 - rho_i^T R_y^-1 rho_i)``, what the best
  linear(-Gaussian) decoder keeps: exact for jointly Gaussian variables and a lower bound on
  the information otherwise.
* :func:`ci_information_bound`: ``log(1 + S_i) - 1/2 log(1 + Q_i - S_i^2)``, the lower bound on
  ``I(X_i; Y)`` from the mean squared error of the CI prediction (the bound of linear CorEx).
  It never exceeds :func:`exact_information`; the difference, :func:`ci_synergy`, is the
  information about ``X_i`` that the CI decoder misses: zero when the factors are independent
  given ``X_i`` and positive when they carry it synergistically (tested).
* :func:`minsyn_objective`: ``sum_i [(1 - lam) I(X_i; Y) + lam I_CI(X_i; Y)] - sum_j I(Y_j;
  X)``, with ``I(Y_j; X) = -1/2 log(1 - u_j)`` (an upper bound for a nonlinear ``g``: the
  Gaussian channel capacity at that signal power). Equivalently the information kept minus
  ``lam`` times the synergy penalty ``sum_i ci_synergy_i``. ``lam = 1`` is the MinSyn /
  linear-CorEx objective (the non-synergistic constraint on); ``lam = 0`` is the exact
  ``sum_i I(X_i; Y) - sum_j I(Y_j; X) = TC(X) - TC(X | Y) - TC(Y)`` (for Gaussians), which
  rewards informative factors that are *independent*: the "independence" comparison of the
  paper.

All functions take and return tensors in the caller's dtype and device and are differentiable.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lit_info.info.corex import CorexMoments, finish_moments

__all__ = [
    "ci_information_bound",
    "ci_synergy",
    "exact_information",
    "minsyn_objective",
    "signal_moments",
    "standardize_columns",
]


def standardize_columns(x: Tensor) -> Tensor:
    """``x`` (``n x p``) centred and scaled by its own population standard deviations.

    A column constant within ``x`` becomes 0: it has no correlation with anything and adds
    nothing to any of the measures here (the background pixels of an image, say).
    """
    x = x - x.mean(0)
    return x / x.pow(2).mean(0).sqrt().clamp_min(torch.finfo(x.dtype).tiny)


def signal_moments(x: Tensor, signals: Tensor) -> CorexMoments:
    """The CorEx moments of factors ``Y = signals + N(0, 1)`` of standardized ``x``.

    Args:
        x: ``(n, p)`` standardized inputs (:func:`standardize_columns`).
        signals: ``(n, m)`` the encoder's outputs ``g(x)`` for the same samples.

    Returns:
        The :class:`~lit_info.info.corex.CorexMoments` (``weights`` is ``None``, ``eps`` 0),
        whose ``tc`` is the MinSyn objective with ``lam = 1``.
    """
    n = x.shape[0]
    g = signals - signals.mean(0)
    cov_g = g.T @ g / n  # (m, m)
    var_g = torch.diagonal(cov_g)
    factor = torch.rsqrt(1.0 + var_g)
    u = var_g / (1.0 + var_g)
    rho = factor[:, None] * (g.T @ x / n)  # (m, p)
    ry = factor[:, None] * cov_g * factor[None, :]
    return finish_moments(None, u, rho, ry, 0.0, lambda t: t)


def exact_information(moments: CorexMoments) -> Tensor:
    """``I(X_i; Y) = -1/2 log(1 - rho_i^T R_y^-1 rho_i)`` per input (``p``)."""
    solved = torch.linalg.solve(moments.ry, moments.rho)  # (m, p)
    explained = (moments.rho * solved).sum(0)
    return -0.5 * torch.log1p(-explained)


def ci_information_bound(moments: CorexMoments) -> Tensor:
    """``log(1 + S_i) - 1/2 log(1 + Q_i - S_i^2)`` per input (``p``): the CI decoder's bound."""
    return torch.log1p(moments.s) - 0.5 * torch.log1p(moments.q_minus_s2)


def ci_synergy(moments: CorexMoments) -> Tensor:
    """:func:`exact_information` minus :func:`ci_information_bound` (``p``), never negative."""
    return exact_information(moments) - ci_information_bound(moments)


def minsyn_objective(moments: CorexMoments, synergy_weight: float = 1.0) -> Tensor:
    """``sum_i [(1 - lam) I(X_i; Y) + lam I_CI(X_i; Y)] + 1/2 sum_j log(1 - u_j)``.

    Args:
        moments: from :func:`signal_moments` or :func:`~lit_info.info.corex.corex_moments`.
        synergy_weight: ``lam`` in ``[0, 1]``: 1 = MinSyn (equals ``moments.tc``), 0 = the
            exact, independence-rewarding objective.

    Returns:
        The objective (a scalar, nats), to be maximized.
    """
    compression = 0.5 * torch.log1p(-moments.u).sum(-1)
    ci = ci_information_bound(moments).sum(-1)
    if synergy_weight == 1.0:
        return ci + compression
    exact = exact_information(moments).sum(-1)
    return (1.0 - synergy_weight) * exact + synergy_weight * ci + compression
