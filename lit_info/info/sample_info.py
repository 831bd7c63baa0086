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
  principal submatrix has no Woodbury-type update; this is the slow exact method (used for
  infinite time with ``lam = 0``, and to check the others).
* ``method="reference"``: per-sample loop through
  :func:`lit_info.info.linearized.reference_coefficients` (matrix powers/exponentials, no
  eigendecomposition), for tests and benchmarks.
* ``method="secular"`` (one output ``k = 1``, any time, any ``lam``): one ``eigh``
  ``Theta = V diag(s) V^T``. With ``z = V^T e_i`` (row ``i`` of ``V``), the eigenvalues ``mu``
  of the principal submatrix ``Theta_{-i}`` are the roots of the secular function
  ``g_i(mu) = sum_j z_j^2 / (s_j - mu)`` (they interlace the ``s_j``), with zero-padded
  eigenvectors ``V w``, ``w_j = z_j / (s_j - mu)``, so any spectral filter of ``Theta_{-i}`` is
  applied in ``O(n^2)`` per sample: ``O(n^3)`` in all (vectorized over roots and samples).
  Numerics follow Gu & Eisenstat's divide-and-conquer (rank-one modification) eigensolver:
  eigenvalues within ``8 n eps s_max`` are merged into one pole (the in-cluster directions
  orthogonal to ``z`` are eigenvectors of ``Theta_{-i}`` and are filtered directly), poles with
  ``|z| <= 16 eps`` are deflated, each root is found by a bracketed two-pole rational
  (Bunch-Nielsen-Sorensen) iteration in coordinates shifted to its nearer pole, and the
  weights ``z`` are recomputed from the computed roots (Loewner's formula) so that the
  eigenvectors are numerically orthogonal. The result matches ``eigh`` to rounding level
  (relative ``1e-10`` or better on empirical NTKs with fast-decaying spectra, ``n <= 1000``).
  Memory: about 8 work arrays of ``chunk x n x n`` float64 (32 MiB each by default).
* ``method="chebyshev"`` (finite time, any ``k``, any ``lam``; the default): one ``eigh``
  ``Theta = V diag(s) V^T``. In eigen-coordinates the kernel without block ``i`` is
  ``B_i = P_i diag(s) P_i`` with the projector ``P_i = I - W_i W_i^T``, ``W_i = V^T E_i`` (the
  ``k`` rows of ``V`` of block ``i``), so a product ``B_i u`` costs ``O(n k^2)`` instead of
  ``O((nk)^2)``. The filter is expanded in Chebyshev polynomials on ``[0, s_max]``, which
  contains the spectrum of every ``Theta_{-i}`` (interlacing); the coefficients come from a DCT
  at Chebyshev points and are truncated at ``16 eps`` of the largest (a discrete-time filter is
  a polynomial of degree ``t - 1`` in the eigenvalue, represented exactly by ``t`` points if the
  expansion has not converged earlier). The three-term recurrence runs for all samples at once:
  ``O(d n (nk) k)`` for ``d`` coefficients, then one ``(n, nk) x (nk, nk)`` product back to
  kernel space. ``d`` grows like ``sqrt(eta t s_max / m)``: 91 coefficients for the MNIST
  4 vs 9 MLP NTK of ``benchmarks/sui_speed.py`` (``n = 1000``, ``t = 2000``,
  ``eta s_max / m = 0.14``); 28 to 504 on a synthetic ``n = 1000`` kernel for
  ``eta s_max / m`` from 0.01 to 1. The cost is then dominated by the one ``eigh``. Matches
  the per-sample reference to ``1e-12`` relative.
  If ``2^16`` coefficients do not resolve the filter (continuous time with an enormous
  ``eta t s_max / m``), ``auto`` falls back to ``secular``/``eigh`` with a warning.
* ``method="auto"``: ``schur`` when it applies (infinite time, ``lam > 0``), ``chebyshev`` for
  finite ``t``, otherwise (infinite time, ``lam = 0``) ``eigh``.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Callable

import numpy as np
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
    "smooth_unique_information",
    "weight_si",
    "weight_si_from_jacobian",
]

_NORMALIZATIONS = ("remaining", "original")
_METHODS = ("auto", "chebyshev", "eigh", "schur", "secular", "reference")
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


# Budget (float64 elements) of one (samples, roots, poles) stack in the "secular" method.
_SECULAR_BUDGET = 2**22
# Eigenvalues within _GROUP_TOL * n * eps * s_max form one pole; a root has converged when
# |g| <= eps * (_G_ERR * sum_j |z_j^2 / (s_j - mu)| + 2 |tau| g').
_GROUP_TOL = 8.0
_G_ERR = 8.0


def _pole_groups(s: Tensor) -> tuple[Tensor, Tensor]:
    """Group ascending eigenvalues whose spread is within a tolerance; return labels and means."""
    n = s.shape[0]
    tol = _GROUP_TOL * n * torch.finfo(s.dtype).eps * max(float(s[-1]), torch.finfo(s.dtype).tiny)
    values, groups = s.tolist(), []
    group, first = 0, values[0]
    for val in values:
        if val - first > tol:
            group, first = group + 1, val
        groups.append(group)
    labels = torch.tensor(groups, dtype=torch.long, device=s.device)
    n_groups = group + 1
    sums = torch.zeros(n_groups, dtype=s.dtype, device=s.device).index_add_(0, labels, s)
    counts = torch.bincount(labels, minlength=n_groups).to(s.dtype)
    return labels, sums / counts


def _secular_roots(poles: Tensor, z2: Tensor, nd: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Roots of ``sum_g z2_g / (poles_g - mu)`` between consecutive non-deflated poles.

    Args:
        poles: Distinct ascending poles ``(G,)``.
        z2: Weights ``(b, G)`` (zero where deflated).
        nd: Non-deflated mask ``(b, G)``.

    Returns:
        ``(mu, diff, active, right)``: roots ``(b, G-1)`` (slot ``k`` is the root right of pole
        ``k``), ``diff[b, k, g] = poles_g - mu_k`` computed in shifted coordinates (``inf`` on
        deflated poles), the mask of slots holding a root, and the index of the pole right of
        each root.
    """
    b, n_groups = z2.shape
    eps = torch.finfo(poles.dtype).eps
    slots = n_groups - 1
    ar = torch.arange(n_groups, device=poles.device)
    idx = torch.where(nd, ar, n_groups)
    # next non-deflated pole strictly right of slot k
    nxt = torch.flip(torch.cummin(torch.flip(idx, [1]), dim=1).values, [1])[:, 1:]  # (b, G-1)
    active = nd[:, :-1] & (nxt < n_groups)
    right = torch.where(active, nxt, ar[1:][None, :].expand(b, slots))
    left_p = poles[:-1][None, :].expand(b, slots)
    right_p = poles[right]
    gap = right_p - left_p
    mid = left_p + gap / 2
    # deflated poles: weight 0 -> inf distance so that they contribute nothing
    defl = torch.where(nd, 0.0, math.inf)[:, None, :]
    gmid = (z2[:, None, :] / (poles[None, None, :] - mid[:, :, None] + defl)).sum(-1)
    use_left = gmid > 0  # the root lies left of the midpoint: shift to the left pole
    origin = torch.where(use_left, ar[:-1][None, :].expand(b, slots), right)
    o_val = poles[origin]
    rows = b * slots
    # shifted poles delta[row, g] = poles_g - poles_origin (rows are (sample, slot) pairs)
    delta = (poles[None, None, :] - o_val[:, :, None] + defl).reshape(rows, n_groups)
    d_left = torch.where(use_left, 0.0, -gap).reshape(-1)
    d_right = torch.where(use_left, gap, 0.0).reshape(-1)
    lo = torch.where(use_left, 0.0, -gap / 2).reshape(-1)
    hi = torch.where(use_left, gap / 2, 0.0).reshape(-1)
    # initial guess (fixed weights, cf. LAPACK dlaed4): the two poles of the interval exactly,
    # the other terms frozen at their midpoint value
    zk2, zn2 = z2[:, :-1], z2.gather(1, right)
    c0 = (gmid + 2.0 * (zk2 - zn2) / gap).reshape(-1)
    zk2, zn2 = zk2.reshape(-1), zn2.reshape(-1)
    bb = c0 * (d_left + d_right) + zk2 + zn2
    a0 = zk2 * d_right + zn2 * d_left
    sq = (bb * bb - 4.0 * c0 * a0).clamp(min=0.0).sqrt()
    den = bb + torch.where(bb >= 0, sq, -sq)
    x1 = 2.0 * a0 / torch.where(den == 0, 1.0, den)
    x2 = den / torch.where(c0 == 0, 1.0, 2.0 * c0)
    guess = torch.where((x1 > lo) & (x1 < hi), x1, x2)
    tau = torch.where(use_left, gap / 2, -gap / 2).reshape(-1)
    tau = torch.where((guess > lo) & (guess < hi), guess, tau)
    sample = torch.arange(b, device=poles.device).repeat_interleave(slots)
    # working set of (sample, slot) rows still iterating; compacted as roots converge
    work = torch.nonzero(active.reshape(-1)).reshape(-1)
    d_work, z_work = delta[work], z2[sample[work]]
    live = torch.ones(work.shape[0], dtype=torch.bool, device=poles.device)
    for _ in range(200):
        if work.numel() == 0:
            break
        ta = tau[work]
        inv = 1.0 / (d_work - ta[:, None])
        t1 = z_work * inv
        # poles left of the interval are exactly the negative terms (deflated ones are 0)
        neg = t1.clamp(max=0.0)
        gval, psi = t1.sum(-1), neg.sum(-1)
        gder, dpsi = t1.mul_(inv).sum(-1), neg.mul_(inv).sum(-1)
        del inv, t1, neg
        phi, dphi = gval - psi, gder - dpsi
        dl, dr = d_left[work] - ta, d_right[work] - ta
        # two-pole rational model (Bunch-Nielsen-Sorensen) through the current point
        q, p = dpsi * dl * dl, psi - dpsi * dl
        u, r = dphi * dr * dr, phi - dphi * dr
        c = p + r
        bb = c * (dl + dr) + q + u
        a0 = dl * dr * gval
        sq = (bb * bb - 4.0 * c * a0).clamp(min=0.0).sqrt()
        den = bb + torch.where(bb >= 0, sq, -sq)
        eta1 = 2.0 * a0 / torch.where(den == 0, 1.0, den)
        eta2 = den / torch.where(c == 0, 1.0, 2.0 * c)
        step = torch.where((eta1 > dl) & (eta1 < dr), eta1, eta2)
        la = torch.where(gval <= 0, ta, lo[work])
        ha = torch.where(gval > 0, ta, hi[work])
        new = ta + step
        new = torch.where((new > la) & (new < ha) & torch.isfinite(new), new, (la + ha) / 2)
        # |g| within its rounding error (cf. LAPACK dlaed4; phi - psi = sum |terms|),
        # a negligible step, or a collapsed bracket
        small = gval.abs() <= eps * (_G_ERR * (phi - psi) + 2 * ta.abs() * gder)
        conv = (
            small
            | ((new - ta).abs() <= 2 * eps * ta.abs())
            | ((ha - la) <= 4 * eps * torch.maximum(la.abs(), ha.abs()))
        )
        tau[work] = torch.where(live & ~small, new, ta)
        lo[work], hi[work] = la, ha
        live = live & ~conv
        n_live = int(live.sum())
        if n_live == 0:
            break
        if n_live < 0.6 * work.shape[0]:
            work, d_work, z_work = work[live], d_work[live], z_work[live]
            live = live[live]
    del d_work, z_work
    diff = delta.sub_(tau[:, None]).reshape(b, slots, n_groups)
    tau = tau.reshape(b, slots)
    mu = o_val + tau
    return mu, diff, active, right


def _loo_secular(
    r: Tensor,
    m_loo: int,
    eta: float,
    t: float,
    lam: float,
    mode: str,
    eig: tuple[Tensor, Tensor],
    chunk_size: int | None,
) -> Tensor:
    """Leave-one-out coefficients for one output from the secular equations (``O(n^3)``)."""
    n = r.shape[0]
    s, v = eig
    dtype, dev = v.dtype, v.device
    eps = torch.finfo(dtype).eps
    labels, poles = _pole_groups(s)
    n_groups = poles.shape[0]
    member = torch.zeros(n, n_groups, dtype=dtype, device=dev)
    member[torch.arange(n, device=dev), labels] = 1.0
    rcond = (n - 1) * eps
    big = (s[-1] / m_loo + lam).clamp(min=torch.finfo(dtype).tiny)

    def filt(mu: Tensor) -> Tensor:
        a = mu / m_loo + lam
        if mode == "infinite":
            small = a <= rcond * big
            return torch.where(small, 0.0, 1.0 / torch.where(small, 1.0, a))
        return spectral_filter(a, eta, t, mode)

    f_pole = filt(poles)  # (G,)
    f_j = f_pole[labels]  # (n,)
    c_full = v.T @ r[:, 0]
    z_tol = 16.0 * eps
    if chunk_size is None:
        chunk_size = max(1, _SECULAR_BUDGET // max(n_groups * n_groups, 1))
    out = torch.zeros(n, n, dtype=dtype, device=dev)
    for start in range(0, n, chunk_size):
        rows = torch.arange(start, min(start + chunk_size, n), device=dev)
        z = v[rows]  # (b, n): z[b, j] = V[i, j]
        c = c_full[None, :] - z * r[rows, 0][:, None]  # V^T r with r_i = 0
        z2 = (z * z) @ member  # (b, G)
        zn = z2.sqrt()
        nd = zn > z_tol
        z2 = torch.where(nd, z2, 0.0)
        c_hat = torch.where(nd, ((z * c) @ member) / torch.where(nd, zn, 1.0), 0.0)
        # eigenvalues s_j of Theta_{-i} (deflated poles, in-cluster directions orthogonal to z)
        y = f_j[None, :] * c
        coef = torch.zeros_like(c_hat)  # filtered secular part, in the z direction of a pole
        if n_groups > 1:
            mu, diff, active, right = _secular_roots(poles, z2, nd)
            keep = active[..., None] & nd[:, None, :]
            # Loewner: weights consistent with the computed roots (Gu & Eisenstat), so that the
            # eigenvectors w_k ~ z_hat / (poles - mu_k) are orthogonal to working precision:
            # z_hat_g^2 ~ prod_k |p_g - mu_k| / prod_{g' != g} |p_g - p_g'|, each root paired
            # with one pole so that every ratio lies in (0, 1) (accurate logs, no cancellation)
            slot = torch.arange(n_groups - 1, device=dev)[:, None]
            left_of = slot < torch.arange(n_groups, device=dev)[None, :]  # (K, G): k < g
            ratio = poles[right][:, :, None] - poles[None, None, :]
            ratio = torch.where(left_of, poles[None, :] - poles[:-1, None], ratio)
            ratio = torch.div(diff.abs(), ratio, out=ratio).clamp_(min=1e-300).log_()
            log_z2 = ratio.masked_fill_(~keep, 0.0).sum(1)  # (b, G)
            del ratio
            log_z2 = torch.where(nd, log_z2, -math.inf)
            z_hat = (0.5 * (log_z2 - log_z2.amax(-1, keepdim=True))).exp()
            w = torch.where(keep, z_hat[:, None, :] / diff, 0.0)  # (b, K, G)
            del diff, keep
            scale = w.abs().amax(-1, keepdim=True)
            w = w / torch.where(scale > 0, scale, 1.0)
            norm = torch.linalg.vector_norm(w, dim=-1, keepdim=True)
            w = w / torch.where(norm > 0, norm, 1.0)
            f_mu = torch.where(active, filt(mu), 0.0)
            proj = torch.einsum("bkg,bg->bk", w, c_hat)
            coef = torch.einsum("bkg,bk->bg", w, f_mu * proj)
        corr = torch.where(nd, coef - f_pole[None, :] * c_hat, 0.0)  # (b, G)
        zdir = z / torch.where(nd, zn, 1.0)[:, labels]
        y = y + zdir * corr[:, labels]
        coefs = -(y @ v.T) / m_loo
        coefs[torch.arange(len(rows), device=dev), rows] = 0.0
        out[rows] = coefs
    return out


# Chebyshev method: coefficients below _CHEB_TOL * max|c| are dropped; at most _CHEB_MAX_SIZE
# interpolation points; one (samples, N) work array holds at most _CHEB_BUDGET float64 values.
_CHEB_TOL = 16.0 * 2.0**-52
_CHEB_MAX_SIZE = 2**16
_CHEB_BUDGET = 2**24


def _dct2(values: np.ndarray) -> np.ndarray:
    """Unnormalized DCT-II ``y_j = 2 sum_k x_k cos(pi j (2k + 1) / (2D))`` through one FFT."""
    size = len(values)
    spectrum = np.fft.rfft(np.concatenate([values, values[::-1]]))[:size]
    return (np.exp(-0.5j * np.pi * np.arange(size) / size) * spectrum).real


def chebyshev_coefficients(
    func: Callable[[Tensor], Tensor],
    upper: float,
    max_size: int | None = None,
    tol: float = _CHEB_TOL,
) -> Tensor | None:
    """Chebyshev coefficients of ``func`` on ``[0, upper]``, truncated where they fall below tol.

    Interpolates at ``D`` Chebyshev points (``D = 32, 64, ...``) until the last quarter of the
    coefficients is below ``tol * max|c|``; a polynomial of degree ``< max_size`` is represented
    exactly with ``D = max_size`` points.

    Args:
        func: Vectorized float64 function of ``x in [0, upper]``.
        upper: Right end of the interval (> 0).
        max_size: Number of points that makes the interpolant exact (polynomial degree + 1), or
            None for a function that is not a known polynomial.
        tol: Relative truncation threshold.

    Returns:
        float64 coefficients ``c`` (CPU) with ``func(x) = sum_j c_j T_j(2 x / upper - 1)``, or
        None if ``_CHEB_MAX_SIZE`` points do not resolve ``func``.
    """
    size = 32
    while True:
        exact = max_size is not None and size >= max_size
        if exact:
            size = max(int(max_size), 1)
        nodes = torch.cos(math.pi * (torch.arange(size, dtype=torch.float64) + 0.5) / size)
        values = func(upper * (nodes + 1.0) / 2.0).cpu().numpy()
        coef = torch.from_numpy(_dct2(values)) / size
        coef[0] /= 2.0
        scale = float(coef.abs().max())
        if scale == 0.0:
            return coef[:1]
        if exact:
            return coef
        tail = coef[-max(size // 4, 1) :]
        if float(tail.abs().max()) <= tol * scale:
            keep = int(torch.nonzero(coef.abs() > tol * scale).max()) + 1
            return coef[:keep]
        size *= 2
        if size > _CHEB_MAX_SIZE:
            return None


def _loo_chebyshev(
    r: Tensor,
    m_loo: int,
    eta: float,
    t: float,
    lam: float,
    mode: str,
    eig: tuple[Tensor, Tensor],
    chunk_size: int | None,
) -> Tensor | None:
    """Leave-one-out coefficients from a Chebyshev expansion of the filter in the eigenbasis.

    Returns None when the filter is not resolved by ``_CHEB_MAX_SIZE`` Chebyshev points.
    """
    n, k = r.shape
    s, v = eig
    size = n * k
    dtype, dev = v.dtype, v.device
    upper = max(float(s[-1]), torch.finfo(dtype).tiny)

    def filt(x: Tensor) -> Tensor:
        return spectral_filter(x.clamp(min=0.0) / m_loo + lam, eta, t, mode)

    exact_size = int(t) if mode == "discrete" else None  # h_t is a polynomial of degree t - 1
    if exact_size == 0:
        return torch.zeros(n, size, dtype=dtype, device=dev)
    coef = chebyshev_coefficients(filt, upper, exact_size)
    if coef is None:
        return None
    coef = coef.tolist()
    w_all = v.reshape(n, k, size)  # w_all[i] = V^T E_i: eigen-coordinates of block i
    c_full = v.T @ r.reshape(-1)
    scaled = s * (2.0 / upper)
    if chunk_size is None:
        chunk_size = max(1, _CHEB_BUDGET // size)
    out = torch.empty(n, size, dtype=dtype, device=dev)
    for start in range(0, n, chunk_size):
        rows = torch.arange(start, min(start + chunk_size, n), device=dev)
        w = w_all[rows]  # (c, k, N)

        def project(u: Tensor, w: Tensor = w) -> Tensor:
            return u - torch.einsum("ckN,ck->cN", w, torch.einsum("ckN,cN->ck", w, u))

        def step(u: Tensor) -> Tensor:
            # (2 B / upper - I) u with B = P diag(s) P, P = I - w w^T (sample i left out); the
            # iterates stay in the range of P, so the inner projection is left out (rounding
            # along w stays O(eps) per step and is discarded with block i at the end)
            return project(u * scaled) - u

        prev = project(c_full.expand(len(rows), size))
        acc = coef[0] * prev
        if len(coef) > 1:
            cur = step(prev)
            acc = acc + coef[1] * cur
            for c_j in coef[2:]:
                prev, cur = cur, 2.0 * step(cur) - prev
                acc.add_(cur, alpha=c_j)
        coefs = -(acc @ v.T) / m_loo
        coefs.reshape(len(rows), n, k)[torch.arange(len(rows), device=dev), rows] = 0.0
        out[rows] = coefs
    return out


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
        method: ``"auto"``, ``"chebyshev"`` (finite time), ``"eigh"``, ``"schur"`` (infinite
            time, ``lam > 0``), ``"secular"`` (one output, ``k = 1``) or ``"reference"``.
        chunk_size: Samples per batched ``eigh`` (``"eigh"`` method), per secular batch
            (``"secular"``) or per Chebyshev batch; None picks one from a memory budget of
            about 256 MiB (``eigh``), 32 MiB per work array (``secular``) or 128 MiB per work
            array (``chebyshev``).
        eig: Optional precomputed :func:`~lit_info.info.linearized.eigh_kernel` of ``theta``
            (used by ``"schur"``, ``"secular"`` and ``"chebyshev"``).

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
    k = r.shape[1]
    if method == "chebyshev" and mode == "infinite":
        raise ValueError("method='chebyshev' needs a finite t; use 'schur' (lam > 0) or 'eigh'")
    if method == "chebyshev" or (method == "auto" and mode != "infinite"):
        eig = eig if eig is not None else eigh_kernel(theta)
        out = _loo_chebyshev(r, m_loo, eta, t, lam, mode, eig, chunk_size)
        if out is not None:
            return out
        if method == "chebyshev":
            raise ValueError(
                f"the filter (eta={eta}, t={t}, mode={mode!r}) needs more than "
                f"{_CHEB_MAX_SIZE} Chebyshev coefficients on this kernel; use method='eigh'"
            )
        warnings.warn(
            "leave-one-out: the Chebyshev expansion did not converge; falling back to "
            "the slower exact method",
            stacklevel=2,
        )
    if method == "secular" and k != 1:
        raise ValueError(
            f"method='secular' needs a single output (k = 1), got k = {k}; use method='eigh'"
        )
    if method == "secular" or (method == "auto" and k == 1 and mode != "infinite"):
        eig = eig if eig is not None else eigh_kernel(theta)
        return _loo_secular(r, m_loo, eta, t, lam, mode, eig, chunk_size)
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
    eig: tuple[Tensor, Tensor] | None = None,
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
        eig: Optional precomputed :func:`~lit_info.info.linearized.eigh_kernel` of ``theta``.

    Returns:
        ``(beta, delta)`` of shapes ``(n k,)`` and ``(n, n k)``, float64; ``w - w_{-i} =
        J^T delta[i]`` and ``f(x) - f_{-i}(x) = Theta(x, X) delta[i]``.
    """
    theta = _as_kernel(theta)
    eig = eig if eig is not None else eigh_kernel(theta)
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


def smooth_unique_information(
    theta: Tensor,
    residual0: Tensor,
    theta_val_train: Tensor,
    *,
    eta: float | None,
    t: float | None,
    lam: float = 0.0,
    mode: str = "discrete",
    sigma2: float = 1.0,
    loo_normalization: str = "remaining",
    method: str = "auto",
    eig: tuple[Tensor, Tensor] | None = None,
) -> tuple[Tensor, Tensor]:
    """SI and F-SI of every training sample from the kernels, in one call.

    Composes :func:`leave_one_out_differences`, :func:`weight_si` and :func:`functional_si`:
    ``si[i] = ||w - w_{-i}||^2 / (2 sigma2)`` and
    ``fsi[i] = 1/(2 sigma2) mean_j ||f(x_j) - f_{-i}(x_j)||^2`` over the validation inputs.

    Args:
        theta: Train NTK ``(n k, n k)``.
        residual0: ``f_0(X) - Y`` of shape ``(n, k)`` (or ``(n,)``).
        theta_val_train: Kernel between validation and training inputs ``(v k, n k)``.
        eta: Learning rate.
        t: Steps, time, or ``math.inf``/None.
        lam: L2 regularization toward ``w0``.
        mode: ``"discrete"``, ``"continuous"`` or ``"infinite"``.
        sigma2: Variance of the Gaussian smoothing (weights and predictions).
        loo_normalization: ``"remaining"`` or ``"original"``.
        method: See :func:`leave_one_out_coefficients`.
        eig: Optional precomputed :func:`~lit_info.info.linearized.eigh_kernel` of ``theta``.

    Returns:
        ``(si, fsi)``, float64 tensors of shape ``(n,)``.

    Raises:
        ValueError: If an argument is invalid or the shapes do not match.
    """
    theta = _as_kernel(theta)
    _, delta = leave_one_out_differences(
        theta,
        residual0,
        eta=eta,
        t=t,
        lam=lam,
        mode=mode,
        loo_normalization=loo_normalization,
        method=method,
        eig=eig,
    )
    return weight_si(theta, delta, sigma2), functional_si(theta_val_train, delta, sigma2)


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
