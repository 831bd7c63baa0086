r"""Leave-one-out and smooth unique information (SUI) of training samples, linearized networks.

Smooth unique information (Harutyunyan et al., ICLR 2021) of a training sample ``i`` measures
how much the trained weights (or predictions) change when ``i`` is left out of training. For the
linearized network of :mod:`lit_info.info.linearized` everything is in closed form and in kernel
space.

Leave-one-out convention
------------------------
The problem without sample ``i`` is the same training problem on the ``n - 1`` other samples:
same ``w0``, ``eta``, ``t``, ``lam``, and by default (``loo_normalization="remaining"``) the
loss is the *mean* over the ``m = n - 1`` remaining samples,
``L_{-i}(w) = 1/(2(n-1)) sum_{j != i} ||f_w(x_j) - y_j||^2 + lam/2 ||w - w0||^2``. This is the
convention of the authors' implementation (the per-sample step becomes ``eta / (n - 1)``). With
``loo_normalization="original"`` the factor stays ``1/(2n)`` (equivalently: sample ``i``'s loss
term is dropped and nothing else changes).

The coefficients of the leave-one-out problem are returned *padded*: ``beta_loo[i]`` has length
``n k``, with block ``i`` (entries ``i*k .. i*k+k-1``) equal to zero, so that
``w_{-i} - w0 = J^T beta_loo[i]`` and ``f_{-i}(x) = f_0(x) + Theta(x, X) beta_loo[i]``. The
differences ``delta[i] = beta - beta_loo[i]`` give everything else:

* weight SI ``||w - w_{-i}||^2 = delta_i^T Theta delta_i`` (:func:`weight_si`);
* smoothed weight SI, ``KL(N(w, Sigma) || N(w_{-i}, Sigma)) = 1/2 dw^T Sigma^{-1} dw``
  (:func:`weight_si` for ``Sigma = sigma2 I`` in kernel space, :func:`weight_si_from_jacobian`
  for a diagonal ``Sigma`` with materialized weight differences);
* functional SI on validation inputs ``x_1..x_v``,
  ``1/(2 sigma2) mean_j ||f(x_j) - f_{-i}(x_j)||^2`` with ``f - f_{-i} = Theta(x, X) delta_i``
  (:func:`functional_si`).

Algorithms
----------
* ``method="schur"`` (infinite time, ``lam > 0``): one ``eigh`` of ``Theta`` gives
  ``G = (Theta + m lam I)^{-1}`` spectrally; the solution without block ``i`` is the block
  downdate ``y_{-i} = g - G[:, i] G[i, i]^{-1} g[i]`` with ``g = G r0`` (Schur complement), for
  all ``i`` at once with ``n`` batched ``k x k`` solves: ``O((nk)^3 + n^2 k^3)``.
* ``method="eigh"`` (any time, any ``lam``): exact spectral filter of every principal submatrix
  ``Theta_{-i}`` from a batched ``eigh`` of ``(chunk, (n-1)k, (n-1)k)`` stacks:
  ``O(n (nk)^3)`` flops, vectorized; memory ``chunk (nk)^2``. A finite-time filter of a
  principal submatrix has no Woodbury-type update, so this is the exact fast path used for
  finite ``t``.
* ``method="reference"``: per-sample loop through
  :func:`lit_info.info.linearized.reference_coefficients` (matrix powers/exponentials, no
  eigendecomposition), for tests and benchmarks.
* ``method="auto"``: ``schur`` when it applies, otherwise ``eigh``.
"""

from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor

from .linearized import (
    _as_kernel,
    _check_lam,
    as_residual,
    eigh_kernel,
    reference_coefficients,
    resolve_mode,
    spectral_filter,
    train_coefficients,
)
from .ntk import flatten_jacobian

__all__ = [
    "functional_si",
    "leave_one_out_coefficients",
    "leave_one_out_differences",
    "reference_leave_one_out",
    "weight_si",
    "weight_si_from_jacobian",
]

_NORMALIZATIONS = ("remaining", "original")
_METHODS = ("auto", "eigh", "schur", "reference")
# Default budget (float64 elements) of one batched eigh stack in the "eigh" method.
_EIGH_BUDGET = 2**25


def _loo_size(n: int, loo_normalization: str) -> int:
    if loo_normalization not in _NORMALIZATIONS:
        raise ValueError(
            f"loo_normalization must be one of {_NORMALIZATIONS}, got {loo_normalization!r}"
        )
    return n - 1 if loo_normalization == "remaining" else n


def _keep_indices(rows: Tensor, n: int, k: int) -> Tensor:
    """Flat indices of all blocks except ``rows[c]``: shape ``(len(rows), (n-1) k)``."""
    blocks = torch.arange(n, device=rows.device)
    others = blocks[None, :].expand(len(rows), n)
    others = others[others != rows[:, None]].reshape(len(rows), n - 1)
    return (others[:, :, None] * k + torch.arange(k, device=rows.device)).reshape(len(rows), -1)


def _loo_eigh(
    theta: Tensor,
    r: Tensor,
    m_loo: int,
    eta: float,
    t: float,
    lam: float,
    mode: str,
    chunk_size: int | None,
) -> Tensor:
    n, k = r.shape
    size = n * k
    sub = (n - 1) * k
    if chunk_size is None:
        chunk_size = max(1, _EIGH_BUDGET // max(sub * sub, 1))
    r_flat = r.reshape(-1)
    out = torch.zeros(n, size, dtype=torch.float64, device=theta.device)
    for start in range(0, n, chunk_size):
        rows = torch.arange(start, min(start + chunk_size, n), device=theta.device)
        keep = _keep_indices(rows, n, k)  # (c, sub)
        block = theta[keep[:, :, None], keep[:, None, :]]
        s, v = torch.linalg.eigh(block)
        s = s.clamp(min=0.0)
        h = spectral_filter(s / m_loo + lam, eta, t, mode)
        proj = torch.einsum("cji,cj->ci", v, r_flat[keep])
        coef = -torch.einsum("cij,cj->ci", v, h * proj) / m_loo
        out[rows[:, None], keep] = coef
    return out


def _loo_schur(theta: Tensor, r: Tensor, m_loo: int, lam: float, eig: tuple[Tensor, Tensor]):
    n, k = r.shape
    s, v = eig
    g_mat = (v / (s + m_loo * lam)) @ v.T  # (Theta + m lam I)^{-1}, spectrally
    g = g_mat @ r.reshape(-1)
    idx = torch.arange(n, device=theta.device)
    blocks = g_mat.reshape(n, k, n, k)[idx, :, idx, :]  # (n, k, k) diagonal blocks
    sol = torch.linalg.solve(blocks, g.reshape(n, k, 1))[..., 0]  # G_ii^{-1} g_i
    corr = torch.einsum("pik,ik->ip", g_mat.reshape(n * k, n, k), sol)
    padded = -(g[None, :] - corr)
    padded.reshape(n, n, k)[idx, idx, :] = 0.0
    return padded


def leave_one_out_coefficients(
    theta: Tensor,
    residual0: Tensor,
    *,
    eta: float | None,
    t: float | None,
    lam: float = 0.0,
    mode: str = "discrete",
    loo_normalization: str = "remaining",
    method: str = "auto",
    chunk_size: int | None = None,
    eig: tuple[Tensor, Tensor] | None = None,
) -> Tensor:
    """Padded coefficients ``beta_{-i}`` of the linearized network trained without each sample.

    Exact for the linearized model (see the module docstring for conventions and algorithms).

    Args:
        theta: Train NTK ``(n k, n k)``.
        residual0: ``f_0(X) - Y`` of shape ``(n, k)`` (or ``(n,)`` for one output).
        eta: Learning rate (> 0; ignored for the infinite mode).
        t: Steps (discrete), time (continuous), or ``math.inf``/None (infinite).
        lam: L2 regularization toward ``w0``.
        mode: ``"discrete"``, ``"continuous"`` or ``"infinite"``.
        loo_normalization: ``"remaining"`` (mean over ``n - 1`` samples) or ``"original"``.
        method: ``"auto"``, ``"eigh"``, ``"schur"`` (infinite time, ``lam > 0``) or
            ``"reference"``.
        chunk_size: Samples per batched ``eigh`` (``"eigh"`` method); None picks one from a
            memory budget of about 256 MiB.
        eig: Optional precomputed :func:`~lit_info.info.linearized.eigh_kernel` of ``theta``
            (used by ``"schur"``).

    Returns:
        float64 tensor ``(n, n k)``; row ``i`` is zero on block ``i``.

    Raises:
        ValueError: If an argument is invalid.
    """
    mode, eta, t = resolve_mode(mode, eta, t)
    lam = _check_lam(lam)
    theta = _as_kernel(theta)
    r = as_residual(residual0, theta.shape[0])
    n = r.shape[0]
    if n < 2:
        raise ValueError(f"leave-one-out needs at least 2 training samples, got {n}")
    m_loo = _loo_size(n, loo_normalization)
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
    if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(f"chunk_size must be a positive integer or None, got {chunk_size!r}")
    schur_ok = mode == "infinite" and lam > 0
    if method == "schur" and not schur_ok:
        raise ValueError("method='schur' needs mode='infinite' (t = inf) and lam > 0")
    if method == "reference":
        return reference_leave_one_out(
            theta, r, eta=eta, t=t, lam=lam, mode=mode, loo_normalization=loo_normalization
        )
    if method == "schur" or (method == "auto" and schur_ok):
        return _loo_schur(theta, r, m_loo, lam, eig if eig is not None else eigh_kernel(theta))
    return _loo_eigh(theta, r, m_loo, eta, t, lam, mode, chunk_size)


def leave_one_out_differences(
    theta: Tensor,
    residual0: Tensor,
    *,
    eta: float | None,
    t: float | None,
    lam: float = 0.0,
    mode: str = "discrete",
    loo_normalization: str = "remaining",
    method: str = "auto",
    chunk_size: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Full-data coefficients ``beta`` and differences ``delta[i] = beta - beta_{-i}``.

    Args:
        theta: Train NTK ``(n k, n k)``.
        residual0: ``f_0(X) - Y`` of shape ``(n, k)`` (or ``(n,)``).
        eta: Learning rate.
        t: Steps, time, or ``math.inf``/None.
        lam: L2 regularization toward ``w0``.
        mode: ``"discrete"``, ``"continuous"`` or ``"infinite"``.
        loo_normalization: ``"remaining"`` or ``"original"``.
        method: See :func:`leave_one_out_coefficients`.
        chunk_size: See :func:`leave_one_out_coefficients`.

    Returns:
        ``(beta, delta)`` of shapes ``(n k,)`` and ``(n, n k)``, float64; ``w - w_{-i} =
        J^T delta[i]`` and ``f(x) - f_{-i}(x) = Theta(x, X) delta[i]``.
    """
    theta = _as_kernel(theta)
    eig = eigh_kernel(theta)
    beta = train_coefficients(theta, residual0, eta=eta, t=t, lam=lam, mode=mode, eig=eig)
    loo = leave_one_out_coefficients(
        theta,
        residual0,
        eta=eta,
        t=t,
        lam=lam,
        mode=mode,
        loo_normalization=loo_normalization,
        method=method,
        chunk_size=chunk_size,
        eig=eig,
    )
    return beta, beta[None, :] - loo


def reference_leave_one_out(
    theta: Tensor,
    residual0: Tensor,
    *,
    eta: float | None,
    t: float | None,
    lam: float = 0.0,
    mode: str = "discrete",
    loo_normalization: str = "remaining",
) -> Tensor:
    """Straightforward leave-one-out: per sample, build ``Theta_{-i}`` and solve from scratch.

    Uses :func:`~lit_info.info.linearized.reference_coefficients` (matrix power / matrix
    exponential / solve, no eigendecomposition). For tests and benchmarks.

    Args:
        theta: Train NTK ``(n k, n k)``.
        residual0: ``f_0(X) - Y`` of shape ``(n, k)`` (or ``(n,)``).
        eta: Learning rate.
        t: Steps, time, or ``math.inf``/None.
        lam: L2 regularization toward ``w0``.
        mode: ``"discrete"``, ``"continuous"`` or ``"infinite"``.
        loo_normalization: ``"remaining"`` or ``"original"``.

    Returns:
        float64 tensor ``(n, n k)`` as :func:`leave_one_out_coefficients`.
    """
    mode, eta, t = resolve_mode(mode, eta, t)
    theta = _as_kernel(theta)
    r = as_residual(residual0, theta.shape[0])
    n, k = r.shape
    if n < 2:
        raise ValueError(f"leave-one-out needs at least 2 training samples, got {n}")
    m_loo = _loo_size(n, loo_normalization)
    out = torch.zeros(n, n * k, dtype=torch.float64, device=theta.device)
    for i in range(n):
        keep = _keep_indices(torch.tensor([i], device=theta.device), n, k)[0]
        sub_r = r[torch.arange(n, device=r.device) != i]
        # scale the kernel so that the reference's 1/(n-1) becomes 1/m_loo
        scale = (n - 1) / m_loo
        coef = reference_coefficients(
            theta[keep][:, keep] * scale, sub_r * scale, eta=eta, t=t, lam=lam, mode=mode
        )
        out[i, keep] = coef
    return out


def weight_si(theta: Tensor, delta: Tensor, sigma2: float | None = None) -> Tensor:
    """Weight SI in kernel space: ``||w - w_{-i}||^2 = delta_i^T Theta delta_i``.

    Args:
        theta: Train NTK ``(n k, n k)``.
        delta: Coefficient differences ``(n, n k)`` from :func:`leave_one_out_differences`.
        sigma2: If given, return the Gaussian-smoothed SI
            ``KL(N(w, sigma2 I) || N(w_{-i}, sigma2 I)) = ||w - w_{-i}||^2 / (2 sigma2)``.

    Returns:
        float64 tensor ``(n,)`` (non-negative).

    Raises:
        ValueError: If the shapes do not match or ``sigma2`` is not positive.
    """
    theta = _as_kernel(theta)
    _check_delta(delta, theta.shape[0])
    d = delta.to(torch.float64)
    sq = ((d @ theta) * d).sum(dim=-1).clamp(min=0.0)
    return sq if sigma2 is None else sq / (2.0 * _check_sigma2(sigma2))


def weight_si_from_jacobian(
    jacobian: Tensor, delta: Tensor, covariance: float | Tensor | None = None
) -> Tensor:
    """Weight SI from materialized weight differences ``w - w_{-i} = J^T delta_i``.

    Args:
        jacobian: Train Jacobian ``(n, k, p)``.
        delta: Coefficient differences ``(n, n k)``.
        covariance: None for ``||w - w_{-i}||^2``; a positive scalar ``sigma2`` or a positive
            vector ``(p,)`` (diagonal ``Sigma``) for ``1/2 dw^T Sigma^{-1} dw``, the KL divergence
            between ``N(w, Sigma)`` and ``N(w_{-i}, Sigma)``.

    Returns:
        float64 tensor ``(n,)``.

    Raises:
        ValueError: If the shapes do not match or the covariance is not positive.
    """
    jac = flatten_jacobian(jacobian).to(torch.float64)
    _check_delta(delta, jac.shape[0])
    dw = delta.to(torch.float64) @ jac  # (n, p)
    if covariance is None:
        return (dw * dw).sum(dim=-1)
    if isinstance(covariance, Tensor) and covariance.ndim == 1:
        if covariance.shape[0] != jac.shape[1]:
            raise ValueError(
                f"covariance must have shape ({jac.shape[1]},) (diagonal), got "
                f"{tuple(covariance.shape)}"
            )
        cov = covariance.to(torch.float64)
        if not (cov > 0).all():
            raise ValueError("covariance must be positive")
        return 0.5 * (dw * dw / cov).sum(dim=-1)
    if isinstance(covariance, Tensor) and covariance.ndim != 0:
        raise ValueError(
            f"covariance must be a scalar or a diagonal (p,), got {tuple(covariance.shape)}"
        )
    return (dw * dw).sum(dim=-1) / (2.0 * _check_sigma2(float(covariance)))


def functional_si(theta_val_train: Tensor, delta: Tensor, sigma2: float = 1.0) -> Tensor:
    """Functional SI: ``1/(2 sigma2) mean_j ||f(x_j) - f_{-i}(x_j)||^2`` over validation inputs.

    Args:
        theta_val_train: Kernel between validation and training inputs ``(v k, n k)``.
        delta: Coefficient differences ``(n, n k)``.
        sigma2: Variance of the Gaussian smoothing of the predictions.

    Returns:
        float64 tensor ``(n,)``.

    Raises:
        ValueError: If the shapes do not match or ``sigma2`` is not positive.
    """
    if theta_val_train.ndim != 2:
        raise ValueError(
            f"theta_val_train must be a (v*k, n*k) matrix, got {tuple(theta_val_train.shape)}"
        )
    _check_delta(delta, theta_val_train.shape[1])
    n = delta.shape[0]
    k = delta.shape[1] // n
    if theta_val_train.shape[0] % k:
        raise ValueError(
            f"theta_val_train has {theta_val_train.shape[0]} rows, not a multiple of k={k}"
        )
    diff = delta.to(torch.float64) @ theta_val_train.to(torch.float64).T  # (n, v k)
    per_point = (diff * diff).reshape(n, -1, k).sum(dim=-1)  # (n, v)
    return per_point.mean(dim=-1) / (2.0 * _check_sigma2(sigma2))


def _check_delta(delta: Tensor, size: int) -> None:
    if not isinstance(delta, Tensor) or delta.ndim != 2 or delta.shape[1] != size:
        shape = tuple(delta.shape) if isinstance(delta, Tensor) else type(delta).__name__
        raise ValueError(f"delta must have shape (n, {size}), got {shape}")
    if delta.shape[0] < 1 or size % delta.shape[0]:
        raise ValueError(f"delta of shape {tuple(delta.shape)} is not (n, n*k)")


def _check_sigma2(sigma2: float) -> float:
    if not isinstance(sigma2, numbers.Real) or not sigma2 > 0 or math.isinf(sigma2):
        raise ValueError(f"sigma2 must be a positive finite number, got {sigma2!r}")
    return float(sigma2)
