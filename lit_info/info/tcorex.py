r"""T-CorEx: linear CorEx per time period, fitted jointly (pure functions on tensors).

T-CorEx (Harutyunyan et al., "Efficient covariance estimation from temporal data",
arXiv 1905.13276) learns one linear CorEx model per period ``t = 0..T-1`` and maximizes

``sum_t TC_bound_t(W_t) - l1 sum_t |M_{t+1} - M_t|_1 - l2 sum_t ||M_{t+1} - M_t||_F^2``

where ``M_t`` is the weight matrix (``W``), the matrix ``I(X_i; Y_j)`` (``MI``) or the
standardized implied covariance (``covariance``, ``l2`` only) of period ``t``.

Sample weighting. Period ``t`` may borrow samples of other periods: a sample of period ``t'``
gets the weight ``gamma^|t - t'|``, normalized so that each period's weights sum to one
(:func:`period_mixing`); without ``gamma`` a period only sees its own samples. The weights are
constant within a period, so everything is expressed through the ``T x T`` mixing matrix and
per-period statistics; the ``T x N`` sample weights are the mixing matrix indexed by the
samples' periods (:func:`sample_weights`), and the weighted standardization comes from
per-period sums without a ``T x N x p`` tensor (:func:`weighted_standardization`).

Everything here works on the batched :class:`~lit_info.info.corex.CorexMoments` of
:func:`~lit_info.info.corex.corex_moments` (leading period axis) and costs ``O(T p m^2)`` on
top of them; the covariance penalty never forms ``p x p``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from lit_info.info.corex import CorexMoments, variable_factor_mis
from lit_info.info.low_rank import LowRankPlusDiagonal, inverse_difference_norms

__all__ = [
    "REG_TYPES",
    "batch_sample_weights",
    "change_point_norms",
    "covariance_difference_penalty",
    "difference_penalty",
    "implied_factors",
    "period_covariances",
    "period_mixing",
    "period_moments",
    "regularized_matrices",
    "sample_weights",
    "smooth_abs",
    "temporal_penalty",
    "weighted_batch_standardization",
    "weighted_standardization",
]

REG_TYPES: tuple[str, ...] = ("W", "MI", "covariance")
"""What the temporal penalty compares between neighbouring periods."""


def period_mixing(counts: np.ndarray, gamma: float | None) -> np.ndarray:
    """``c`` (``T x T``): the weight of *one* sample of period ``t'`` in period ``t``'s moments.

    ``c[t, t'] = gamma^|t - t'| / sum_s n_s gamma^|t - s|`` (every row sums to one over the
    samples: ``c @ counts = 1``); ``gamma=None`` gives ``c[t, t] = 1 / n_t`` and zeros.

    Args:
        counts: ``(T,)`` number of samples per period (all >= 1).
        gamma: decay in ``(0, 1]``, or ``None`` for independent periods.
    """
    counts = np.asarray(counts, dtype=np.float64)
    n_periods = counts.shape[0]
    if gamma is None:
        return np.diag(1.0 / counts)
    lag = np.abs(np.arange(n_periods)[:, None] - np.arange(n_periods)[None, :])
    raw = np.power(float(gamma), lag.astype(np.float64))
    return raw / (raw @ counts)[:, None]


def sample_weights(mixing: np.ndarray, period_of_sample: np.ndarray) -> np.ndarray:
    """``(T, N)`` sample weights for :func:`~lit_info.info.corex.corex_moments`."""
    return mixing[:, period_of_sample]


def weighted_standardization(
    periods: list[np.ndarray], mixing: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Weighted mean and standard deviation (``T x p`` each) of every period's moments.

    With the per-period means ``m_s``, centered sums of squares ``SS_s`` and the total weight
    ``C[t, s] = n_s c[t, s]`` of period ``s`` in period ``t``:
    ``mean_t = sum_s C[t, s] m_s`` and
    ``var_t = sum_s c[t, s] SS_s + sum_s C[t, s] (m_s - mean_t)^2``
    (the cross term vanishes because the weights are constant within a period): two sums of
    nonnegative terms, no cancellation, ``O(N p + T^2 p)``.

    Args:
        periods: ``T`` arrays ``(n_t, p)``.
        mixing: ``(T, T)`` from :func:`period_mixing`.
    """
    counts = np.array([x.shape[0] for x in periods], dtype=np.float64)
    means = np.stack([x.mean(0) for x in periods])  # (T, p)
    squares = np.stack([((x - mu) ** 2).sum(0) for x, mu in zip(periods, means, strict=True)])
    total = mixing * counts[None, :]  # (T, T), rows sum to one
    mean = total @ means
    spread = np.einsum("ts,tsp->tp", total, (means[None, :, :] - mean[:, None, :]) ** 2)
    var = mixing @ squares + spread
    return mean, np.sqrt(var)


def smooth_abs(d: Tensor, delta: float) -> Tensor:
    """``|d|`` (``delta = 0``) or its smooth version ``sqrt(d^2 + delta^2) - delta``."""
    if delta == 0.0:
        return d.abs()
    return torch.sqrt(d * d + delta * delta) - delta


def difference_penalty(mats: Tensor, l1: float, l2: float, delta: float = 0.0) -> Tensor:
    """``l1 sum_t |M_{t+1} - M_t|_1 + l2 sum_t ||M_{t+1} - M_t||_F^2`` over the leading axis.

    Args:
        mats: ``(T, ...)`` one matrix per period.
        l1: weight of the (fused lasso) absolute differences.
        l2: weight of the squared differences.
        delta: smoothing of ``|.|`` (:func:`smooth_abs`; 0 = exact).
    """
    out = mats.new_zeros(())
    if mats.shape[0] < 2 or (l1 == 0.0 and l2 == 0.0):
        return out
    diff = mats[1:] - mats[:-1]
    if l1 != 0.0:
        out = out + l1 * smooth_abs(diff, delta).sum()
    if l2 != 0.0:
        out = out + l2 * (diff * diff).sum()
    return out


def implied_factors(moments: CorexMoments) -> Tensor:
    """``F`` (``T x p x m``): the standardized implied covariance is ``offdiag(F F^T) + I``.

    The batched counterpart of :func:`~lit_info.info.corex.moments_covariance`:
    ``F = (a / (1 + S))^T / sqrt(1 - eps^2)`` with ``a = rho / (1 - rho^2)``.
    """
    rho = moments.rho
    a = rho / (1.0 - rho * rho)
    z = a / (1.0 + moments.s).unsqueeze(-2)
    return z.transpose(-1, -2) / math.sqrt(1.0 - moments.eps**2)


def covariance_difference_penalty(factors: Tensor) -> Tensor:
    """``sum_t ||Sigma_{t+1} - Sigma_t||_F^2`` of ``Sigma_t = offdiag(F_t F_t^T) + I``.

    With ``A = F_a F_a^T - F_b F_b^T``: ``||A||_F^2 = |F_a^T F_a|^2 + |F_b^T F_b|^2 -
    2 |F_a^T F_b|^2`` (``m x m`` Gram products) minus the squared diagonal
    ``sum_i (|F_a,i|^2 - |F_b,i|^2)^2``: ``O(T p m^2)``, no ``p x p`` matrix.

    Args:
        factors: ``(T, p, m)`` from :func:`implied_factors`.
    """
    if factors.shape[0] < 2:
        return factors.new_zeros(())
    fa, fb = factors[1:], factors[:-1]
    gaa = fa.transpose(-1, -2) @ fa
    gbb = fb.transpose(-1, -2) @ fb
    gab = fa.transpose(-1, -2) @ fb
    full = (gaa * gaa).sum() + (gbb * gbb).sum() - 2.0 * (gab * gab).sum()
    diag = (fa * fa).sum(-1) - (fb * fb).sum(-1)
    return full - (diag * diag).sum()


def regularized_matrices(moments: CorexMoments, free_weights: Tensor, reg_type: str) -> Tensor:
    """The per-period matrices ``M_t`` that the ``W`` / ``MI`` penalties compare.

    ``W``: the free weights ``V`` (``T x m x p``), the paper's ``W`` of the unnormalized
    factors ``y = W x + N(0, 1)`` (the authors' parameters). ``MI``: ``I(X_i; Y_j)``
    (``T x m x p``). ``covariance``: the implied factors (:func:`implied_factors`).
    """
    if reg_type == "W":
        return free_weights
    if reg_type == "MI":
        return variable_factor_mis(moments)
    if reg_type == "covariance":
        return implied_factors(moments)
    raise ValueError(f"reg_type={reg_type!r}; choose one of {', '.join(REG_TYPES)}")


def period_moments(moments: CorexMoments, t: int) -> CorexMoments:
    """The unbatched :class:`CorexMoments` of period ``t`` of batched moments."""
    return CorexMoments(
        None if moments.weights is None else moments.weights[t],
        moments.u[t],
        moments.rho[t],
        moments.ry[t],
        moments.s[t],
        moments.q_minus_s2[t],
        moments.tc[t],
        moments.eps,
    )


def period_covariances(moments: CorexMoments, scale: Tensor | None) -> list[LowRankPlusDiagonal]:
    """The implied covariance of every period, in original units when ``scale`` (``T x p``)."""
    factors = implied_factors(moments)
    out = []
    for t in range(factors.shape[0]):
        f = factors[t]
        cov = LowRankPlusDiagonal(1.0 - (f * f).sum(1), f)
        out.append(cov if scale is None else cov.scaled(scale[t]))
    return out


def change_point_norms(covariances: Sequence[LowRankPlusDiagonal]) -> dict[str, np.ndarray]:
    """Norms of the differences of neighbouring inverse correlation matrices (``T - 1``).

    The T-CorEx change-point scores (:func:`~lit_info.info.low_rank.inverse_difference_norms`,
    no ``p x p`` matrix for large ``p``).

    Args:
        covariances: the ``T`` periods' covariance estimates, in order.

    Returns:
        ``{"frobenius": ..., "spectral": ...}``: entry ``t`` compares periods ``t`` and
        ``t + 1``.
    """
    fro, spec = [], []
    for first, second in zip(covariances[:-1], covariances[1:], strict=True):
        f, s = inverse_difference_norms(first, second)
        fro.append(float(f))
        spec.append(float(s))
    return {"frobenius": np.array(fro), "spectral": np.array(spec)}


def batch_sample_weights(period: Tensor, n_periods: int, gamma: float | None) -> Tensor:
    """``(T, N)`` sample weights of a batch: ``gamma^|t - period_n|``, each row summing to one.

    The counterpart of ``sample_weights(period_mixing(counts, gamma), period)`` for samples
    given by their periods (a minibatch, a whole split): on the whole training split the two
    agree up to rounding. Without ``gamma`` period ``t`` weighs its own samples equally; a
    period with no weight in the batch (``gamma=None`` and none of its samples) gets a row of
    zeros.

    Args:
        period: ``(N,)`` integer period of every sample, in ``[0, n_periods)``.
        n_periods: ``T``.
        gamma: decay in ``(0, 1]``, or ``None`` for independent periods.
    """
    dtype = torch.float64 if not torch.is_floating_point(period) else period.dtype
    periods = torch.arange(n_periods, device=period.device)
    lag = (periods[:, None] - period.long()[None, :]).abs()
    if gamma is None:
        raw = (lag == 0).to(dtype)
    else:
        raw = torch.pow(torch.tensor(float(gamma), dtype=dtype, device=period.device), lag)
    total = raw.sum(1, keepdim=True)
    return raw / torch.where(total > 0, total, torch.ones_like(total))


def weighted_batch_standardization(
    x: Tensor, period: Tensor, omega: Tensor
) -> tuple[Tensor, Tensor]:
    """Weighted mean and (population) standard deviation, ``T x p`` each, of a batch.

    The torch counterpart of :func:`weighted_standardization` for samples given with their
    periods (a minibatch, a whole split), with the same two sums of nonnegative terms: per
    period ``s`` of the batch its mean ``m_s`` and centered sum of squares, then
    ``mean_t = sum_s C[t, s] m_s`` and ``var_t = sum_n omega_tn (x_n - m_{s(n)})^2 +
    sum_s C[t, s] (m_s - mean_t)^2`` with ``C[t, s]`` the total weight of period ``s`` in
    period ``t``: no cancellation for large offsets between periods, no ``T x N x p`` tensor
    (``T x T x p``, as :func:`weighted_standardization`). A row of ``omega`` summing to zero
    (a period without weight in the batch) gives the placeholders mean 0, standard deviation 1.

    Args:
        x: ``(N, p)`` samples.
        period: ``(N,)`` integer period of every sample, in ``[0, T)``.
        omega: ``(T, N)`` nonnegative weights, rows summing to one (or zero), constant within
            each period (:func:`batch_sample_weights`).
    """
    n_periods = omega.shape[0]
    omega = omega.to(x.dtype)
    period = period.long()
    counts = torch.zeros(n_periods, dtype=x.dtype, device=x.device)
    counts.index_add_(0, period, torch.ones_like(period, dtype=x.dtype))
    sums = torch.zeros(n_periods, x.shape[1], dtype=x.dtype, device=x.device)
    sums.index_add_(0, period, x)
    means = sums / counts.clamp_min(1.0)[:, None]  # (T, p), 0 for periods not in the batch
    xc = x - means[period]
    total = torch.zeros(n_periods, n_periods, dtype=x.dtype, device=x.device)
    total.index_add_(1, period, omega)  # C[t, s]
    mean = total @ means
    spread = torch.einsum("ts,tsp->tp", total, (means[None, :, :] - mean[:, None, :]) ** 2)
    var = omega @ (xc * xc) + spread
    present = omega.sum(1, keepdim=True) > 0
    mean = torch.where(present, mean, torch.zeros_like(mean))
    return mean, torch.where(present, var.sqrt(), torch.ones_like(var))


def temporal_penalty(
    moments: CorexMoments,
    free_weights: Tensor,
    reg_type: str,
    l1: float,
    l2: float,
    delta: float = 0.0,
    reduce: Callable[[Tensor], Tensor] | None = None,
) -> Tensor:
    """The T-CorEx penalty ``l1 sum_t |M_{t+1} - M_t|_1 + l2 sum_t ||M_{t+1} - M_t||_F^2``.

    ``M_t`` by :func:`regularized_matrices` (``W``, ``MI``) or, for ``covariance``, ``l2``
    times :func:`covariance_difference_penalty` of the implied factors (``l1`` must be 0).
    With the variables split across processes (the last axis of ``free_weights`` and of the
    moments), ``reduce`` sums over them: the ``W`` / ``MI`` terms are sums over variables, the
    covariance term needs its ``m x m`` Gram products and its diagonal correction summed.

    Args:
        moments: the batched moments of ``free_weights``.
        free_weights: ``(T, m, p)`` free weights ``V``.
        reg_type: one of :data:`REG_TYPES`.
        l1: weight of the absolute differences.
        l2: weight of the squared differences.
        delta: smoothing of ``|.|`` (:func:`smooth_abs`; 0 = exact).
        reduce: sum over variable shards (None: not sharded).

    Returns:
        The penalty (a scalar, 0 when ``l1 = l2 = 0``).

    Raises:
        ValueError: on an unknown ``reg_type`` or ``l1 > 0`` with ``covariance``.
    """
    if reg_type not in REG_TYPES:
        raise ValueError(f"reg_type={reg_type!r}; choose one of {', '.join(REG_TYPES)}")
    if l1 == 0 and l2 == 0:
        return free_weights.new_zeros(())
    if reg_type != "covariance":
        mats = regularized_matrices(moments, free_weights, reg_type)
        out = difference_penalty(mats, float(l1), float(l2), delta)
        return out if reduce is None else reduce(out)
    if l1 != 0:
        raise ValueError("reg_type='covariance' supports l2 only (l1 must be 0)")
    factors = implied_factors(moments)
    if reduce is None:
        return l2 * covariance_difference_penalty(factors)
    if factors.shape[0] < 2:
        return factors.new_zeros(())
    fa, fb = factors[1:], factors[:-1]
    gaa = reduce(fa.transpose(-1, -2) @ fa)
    gbb = reduce(fb.transpose(-1, -2) @ fb)
    gab = reduce(fa.transpose(-1, -2) @ fb)
    full = (gaa * gaa).sum() + (gbb * gbb).sum() - 2.0 * (gab * gab).sum()
    diag = (fa * fa).sum(-1) - (fb * fb).sum(-1)
    return l2 * (full - reduce((diag * diag).sum()))
