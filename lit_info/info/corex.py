r"""Linear CorEx in closed form: the objective, its moments and the implied covariance.

Linear CorEx (Ver Steeg et al., "Fast structure learning with modular regularization",
NeurIPS 2019) looks for ``m`` linear factors ``y_j = w_j . x + noise`` of standardized
variables ``x`` (``p``) that explain their dependence. In the normalized units used
throughout (``Var y_j = 1``):

* ``u_j = E[(w_j . x)^2] < 1`` is the signal share of ``y_j``; with the annealing noise
  ``x_eps = sqrt(1 - eps^2) x + eps xi``, ``Cov(x_eps) = (1 - eps^2) Sigma + eps^2 I`` and
  ``u_j = (1 - eps^2) E[(w_j . x)^2] + eps^2 |w_j|^2``;
* ``rho_ji = Corr(y_j, x_i) = (1 - eps^2) E[x_i (w_j . x)] + eps^2 w_ji``;
* ``R_y = W Cov(x_eps) W^T`` off the diagonal, ones on it;
* ``I(Y_j; X) = -1/2 log(1 - u_j)`` and ``I(X_i; Y_j) = -1/2 log(1 - rho_ji^2)``.

The *non-synergistic* predictor of ``x_i`` from ``y`` is the posterior mean under the
assumption ``TC(Y | X_i) = 0`` (the ``y_j`` independent given ``x_i``):
``x_hat_i = sum_j a_ji y_j / (1 + S_i)`` with ``a_ji = rho_ji / (1 - rho_ji^2)`` and
``S_i = sum_j rho_ji a_ji``. Its true mean squared error is
``(1 + Q_i - S_i^2) / (1 + S_i)^2`` with ``Q_i = a_i^T R_y a_i``, which lower-bounds
``I(X_i; Y) >= log(1 + S_i) - 1/2 log(1 + Q_i - S_i^2)``. The objective, a lower bound on
``TC(X; Y) = sum_i I(X_i; Y) - sum_j I(Y_j; X)``, is therefore

``TC_bound = sum_i [log(1 + S_i) - 1/2 log(1 + Q_i - S_i^2)] + 1/2 sum_j log(1 - u_j)``,

the quantity the paper and the authors' ``linearcorex`` maximize; everything costs
``O(n p m + p m^2)`` and never forms ``p x p``. The implied covariance of the standardized
variables is ``Z^T Z`` off the diagonal and one on it, ``Z = a / (1 + S)`` (``m x p``): a
:class:`~lit_info.info.low_rank.LowRankPlusDiagonal`.

Parametrization. Optimizing ``W`` directly needs the constraint ``u_j < 1``. The functions
here also accept free weights ``V`` (``free=True``) and use ``W = V / sqrt(1 + v^T C v)``
with ``C = Cov(x_eps)``, so that ``u_j = v^T C v / (1 + v^T C v) < 1`` for every ``V``:
``V`` are the weights of the *unnormalized* factor ``v . x + N(0, 1)``. The map costs nothing
extra (``y`` and ``|w|^2`` rescale with the same factor) and makes the problem unconstrained,
so quasi-Newton methods with line searches apply.

Periods and weights. ``weights`` may carry a leading period axis ``T`` (T-CorEx): all periods
share the sample matrix ``x`` (``N x p``) and differ by their sample weights (``T x N``) and
standardization (``mean``, ``scale``: ``T x p``), applied inside without forming ``T x N x p``.

Sharding. Every sum over variables goes through ``reduce`` (identity by default): with the
columns of ``x`` and ``W`` split across processes and ``reduce`` an all-reduce with gradient
(``lit_info.dist.all_reduce_sum``), each process gets the same objective.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from lit_info.info.lbfgs import minimize_lbfgs
from lit_info.info.low_rank import LowRankPlusDiagonal

__all__ = [
    "ANNEAL_SCHEDULE",
    "CorexMoments",
    "RowSpace",
    "conditional_mean_weights",
    "corex_moments",
    "factor_information",
    "factor_tcs",
    "finish_moments",
    "moments_covariance",
    "row_space",
    "row_space_moments",
    "row_space_objective",
    "variable_factor_mis",
]

ANNEAL_SCHEDULE: tuple[float, ...] = tuple(0.6**k for k in range(1, 7)) + (0.0,)
"""The annealing noise levels of the paper: ``eps = 0.6^k``, ``k = 1..6``, then ``0``."""

Reduce = Callable[[Tensor], Tensor]


def _identity(t: Tensor) -> Tensor:
    return t


@dataclass(frozen=True)
class CorexMoments:
    """The moments of one (or ``T``) linear CorEx models; leading ``T`` axis when batched.

    Attributes:
        weights: ``W`` (``m x p``), normalized weights, ``u_j < 1`` (``None`` when the
            moments were computed in a row space without asking for them).
        u: ``(m,)`` signal share ``E[(w_j . x_eps)^2]`` of each factor.
        rho: ``(m, p)`` correlations ``Corr(y_j, x_i)``.
        ry: ``(m, m)`` correlation matrix of the factors.
        s: ``(p,)`` ``S_i = sum_j rho^2 / (1 - rho^2)``.
        q_minus_s2: ``(p,)`` ``Q_i - S_i^2``.
        tc: the objective, the lower bound on ``TC(X; Y)`` (scalar, or ``(T,)``).
        eps: the annealing noise the moments were computed with.
    """

    weights: Tensor | None
    u: Tensor
    rho: Tensor
    ry: Tensor
    s: Tensor
    q_minus_s2: Tensor
    tc: Tensor
    eps: float


def corex_moments(
    x: Tensor,
    weights: Tensor,
    eps: float = 0.0,
    *,
    free: bool = False,
    sample_weights: Tensor | None = None,
    mean: Tensor | None = None,
    scale: Tensor | None = None,
    observed: Tensor | None = None,
    reduce: Reduce | None = None,
) -> CorexMoments:
    """The closed-form moments and objective of linear CorEx (see the module docstring).

    Args:
        x: ``(N, p)`` samples, standardized unless ``mean``/``scale`` are given.
        weights: ``(m, p)`` or ``(T, m, p)``: ``W`` (``free=False``) or free ``V``.
        eps: annealing noise level in ``[0, 1)``.
        free: interpret ``weights`` as the unconstrained ``V`` (``W = V / sqrt(1 + u_V)``).
        sample_weights: ``(N,)`` or ``(T, N)``, nonnegative, summing to one over ``N``
            (default ``1 / N``).
        mean: ``(p,)`` or ``(T, p)``: standardize ``(x - mean) / scale`` inside.
        scale: ``(p,)`` or ``(T, p)``, positive.
        observed: ``(p,)`` or ``(T, p)``: weighted share of observed entries per column; the
            cross moments ``E[x_i y_j]`` are divided by it (mean imputation with the observed
            count per column; missing entries must sit at the mean). The result need not be a
            valid correlation (``|rho|`` can exceed one), so ``LinearCorex`` does not use it.
        reduce: applied to every partial sum over variables (all-reduce when sharded).

    Returns:
        The :class:`CorexMoments`.
    """
    reduce = reduce or _identity
    n = x.shape[0]
    e2 = eps * eps
    if sample_weights is None:
        sample_weights = x.new_full((n,), 1.0 / n)
    batched = weights.ndim == 3
    omega = sample_weights
    if omega.ndim == 2 and not batched:
        raise ValueError("corex_moments: (T, N) sample_weights need (T, m, p) weights")
    if batched and omega.ndim == 1:
        omega = omega.expand(weights.shape[0], n)

    def project(w: Tensor) -> Tensor:
        """``x_std @ w^T`` (``N x m`` or ``T x N x m``), standardization folded into ``w``."""
        w_eff = w if scale is None else w / scale.unsqueeze(-2)
        y = torch.matmul(x, w_eff.transpose(-1, -2))
        if mean is not None:
            shift = (mean.unsqueeze(-2) * w_eff).sum(-1)  # (m,) or (T, m)
            y = y - shift.unsqueeze(-2)
        return y

    y = reduce(project(weights))
    w2 = reduce((weights * weights).sum(-1))
    second = (omega.unsqueeze(-1) * y * y).sum(-2)  # E[(w.x)^2], (m,) or (T, m)
    u = (1.0 - e2) * second + e2 * w2
    if free:
        factor = torch.rsqrt(1.0 + u)
        weights = weights * factor.unsqueeze(-1)
        y = y * factor.unsqueeze(-2)
        u = u / (1.0 + u)
    # E[x_i y_j] = x_std^T (omega * y): standardization applied after the product.
    wy = omega.unsqueeze(-1) * y
    cross = torch.matmul(x.transpose(0, 1), wy)  # (p, m) or (T, p, m)
    if mean is not None:
        cross = cross - mean.unsqueeze(-1) * wy.sum(-2).unsqueeze(-2)
    if scale is not None:
        cross = cross / scale.unsqueeze(-1)
    if observed is not None:
        cross = cross / observed.unsqueeze(-1)
    rho = (1.0 - e2) * cross.transpose(-1, -2) + e2 * weights
    ry = reduce(torch.matmul(weights, rho.transpose(-1, -2)))
    return finish_moments(weights, u, rho, ry, eps, reduce)


def finish_moments(
    weights: Tensor | None, u: Tensor, rho: Tensor, ry: Tensor, eps: float, reduce: Reduce
) -> CorexMoments:
    """``S``, ``Q - S^2`` and the objective from ``u``, ``rho`` and the raw ``R_y``."""
    eye = torch.eye(ry.shape[-1], dtype=ry.dtype, device=ry.device)
    ry = ry * (1.0 - eye) + eye
    inv = 1.0 / (1.0 - rho * rho)
    a = rho * inv
    s = (rho * a).sum(-2)
    qij = torch.matmul(ry, a)
    q_minus_s2 = (a * (qij - s.unsqueeze(-2) * rho)).sum(-2)
    per_variable = torch.log1p(s).sum(-1) - 0.5 * torch.log1p(q_minus_s2).sum(-1)
    tc = reduce(per_variable) + 0.5 * torch.log1p(-u).sum(-1)
    return CorexMoments(weights, u, rho, ry, s, q_minus_s2, tc, eps)


@dataclass(frozen=True)
class RowSpace:
    """The standardized samples in their row space: ``x = U diag(sqrt(lam)) phi_t``.

    At ``eps = 0`` the objective depends on ``W`` only through ``x W^T``, so the weights can
    be restricted to the span of the samples: ``V = coefs diag(d^-1/2) phi_t`` with
    ``d = (1 - eps^2) lam / n + eps^2``, the eigenvalues of ``Cov(x_eps)`` on that span.
    In the coordinates ``coefs`` (``m x r``, ``r <= min(n, p)``) the annealed covariance is the
    identity, ``V Cov(x_eps) V^T = coefs coefs^T``, so plain gradients are the natural
    gradients of the authors' update and quasi-Newton steps are well conditioned.

    Attributes:
        phi_t: ``(r, p)``, orthonormal rows (the local columns when variables are sharded).
        lam: ``(r,)``, the positive eigenvalues of ``x x^T``.
        n_samples: ``n``.
    """

    phi_t: Tensor
    lam: Tensor
    n_samples: int

    @property
    def rank(self) -> int:
        """``r``, the dimension of the row space."""
        return int(self.lam.shape[0])

    def spectrum(self, eps: float) -> Tensor:
        """``d``, the eigenvalues of ``Cov(x_eps)`` on the row space (``r``)."""
        return (1.0 - eps * eps) * self.lam / self.n_samples + eps * eps

    def weights(self, coefs: Tensor, eps: float = 0.0) -> Tensor:
        """The free weights ``V = coefs diag(d^-1/2) phi_t`` (``m x p``) of ``coefs``."""
        return (coefs * self.spectrum(eps).rsqrt()) @ self.phi_t


def row_space(x: Tensor, rtol: float = 1e-9, reduce: Reduce | None = None) -> RowSpace:
    """The :class:`RowSpace` of standardized samples ``x`` (``n x p``).

    From the eigenvalues of the ``n x n`` Gram matrix (all-reduced over variable shards) when
    ``n <= p``; from the ``p x p`` covariance when there are more samples than variables.
    Directions with eigenvalue below ``rtol`` times the largest are dropped (the centering
    removes one).

    Args:
        x: ``(n, p)`` standardized samples (local columns when sharded).
        rtol: relative eigenvalue threshold.
        reduce: sums over variables (all-reduce when the columns are sharded).
    """
    n, p = x.shape
    if reduce is None and p < n:
        lam, vectors = torch.linalg.eigh(x.T @ x)
        keep = lam > rtol * lam.max()
        return RowSpace(vectors[:, keep].T.contiguous(), lam[keep], n)
    gram = (reduce or _identity)(x @ x.T)
    lam, u = torch.linalg.eigh(gram)
    keep = lam > rtol * lam.max()
    lam, u = lam[keep], u[:, keep]
    return RowSpace(((u * lam.rsqrt()).T @ x).contiguous(), lam, n)


def row_space_moments(
    coefs: Tensor,
    space: RowSpace,
    eps: float = 0.0,
    *,
    observed: Tensor | None = None,
    with_weights: bool = False,
    reduce: Reduce | None = None,
) -> CorexMoments:
    """:func:`corex_moments` of the free weights ``space.weights(coefs, eps)``, in ``O(m r p)``.

    Args:
        coefs: ``(m, r)`` coordinates of the free weights in the row space.
        space: the samples' :class:`RowSpace`.
        eps: annealing noise level in ``[0, 1)``.
        observed: ``(p,)`` share of observed entries per column (see :func:`corex_moments`).
        with_weights: also return the normalized weights ``W`` (one more ``m r p`` product).
        reduce: sums over variables (all-reduce when the columns are sharded).
    """
    reduce = reduce or _identity
    e2 = eps * eps
    d = space.spectrum(eps)
    gram = coefs @ coefs.T  # V Cov(x_eps) V^T
    u_free = gram.diagonal()
    c = torch.rsqrt(1.0 + u_free)
    u = u_free / (1.0 + u_free)
    if observed is None:
        p_free = (coefs * d.sqrt()) @ space.phi_t  # V Cov(x_eps), m x p
        ry = gram * c[:, None] * c[None, :]
    else:
        scaled = coefs * d.rsqrt()
        p_free = ((1.0 - e2) * (scaled * (space.lam / space.n_samples)) @ space.phi_t) / observed
        p_free = p_free + e2 * (scaled @ space.phi_t)
        ry = reduce(p_free @ (scaled @ space.phi_t).T) * c[:, None] * c[None, :]
    rho = p_free * c[:, None]
    weights = space.weights(coefs, eps) * c[:, None] if with_weights else None
    return finish_moments(weights, u, rho, ry, eps, reduce)


def factor_information(moments: CorexMoments) -> Tensor:
    """``I(Y_j; X) = -1/2 log(1 - u_j)`` per factor (nats)."""
    return -0.5 * torch.log1p(-moments.u)


def variable_factor_mis(moments: CorexMoments) -> Tensor:
    """``I(X_i; Y_j) = -1/2 log(1 - rho_ji^2)`` (``m x p``, nats)."""
    return -0.5 * torch.log1p(-moments.rho * moments.rho)


def factor_tcs(moments: CorexMoments) -> Tensor:
    """Each factor's share of TC: ``sum_i I(X_i; Y_j) - I(Y_j; X)`` (they need not add up)."""
    return variable_factor_mis(moments).sum(-1) - factor_information(moments)


def moments_covariance(moments: CorexMoments) -> LowRankPlusDiagonal:
    """The covariance of the standardized variables implied by the model (low rank + diag).

    ``Cov(x_i, x_k) = z_i . z_k / (1 - eps^2)`` for ``i != k`` and one on the diagonal, with
    ``z = a / (1 + S)``: the covariance of the non-synergistic predictions with independent
    factors, as in the paper. Unbatched moments only.
    """
    if moments.rho.ndim != 2:
        raise ValueError("moments_covariance: give the moments of one period")
    a = moments.rho / (1.0 - moments.rho * moments.rho)
    z = a / (1.0 + moments.s)
    factor = z.T / math.sqrt(1.0 - moments.eps**2)
    diagonal = 1.0 - (factor * factor).sum(1)
    return LowRankPlusDiagonal(diagonal, factor)


def conditional_mean_weights(moments: CorexMoments) -> Tensor:
    """``B`` (``p x m``) with ``E[x | y] = B y`` for jointly Gaussian ``x`` and factors ``y``.

    ``B = rho^T R_y^-1``: the best linear prediction of the standardized variables from the
    normalized factors (``y`` with the model's noise, as returned by ``transform``).
    """
    return torch.linalg.solve(moments.ry, moments.rho).transpose(-1, -2)


@dataclass
class CorexFit:
    """What :func:`fit_row_space` returns.

    Attributes:
        coefs: ``(m, r)`` row-space coordinates of the free weights at ``eps = 0``, factors
            sorted by their TC (largest first).
        tc: the objective at the end.
        n_iter: quasi-Newton iterations per annealing stage.
        history: the objective at every evaluation (line-search trials included), in order.
        converged: whether the last stage met ``tol`` before ``max_iter``.
    """

    coefs: Tensor
    tc: float
    n_iter: list[int]
    history: list[float]
    converged: bool


def initial_coefs(
    n_hidden: int, rank: int, generator: torch.Generator, dtype: torch.dtype, device: str
) -> Tensor:
    """Random start: Gaussian directions with ``u_j = 0.01`` (the authors' start)."""
    coefs = torch.randn(n_hidden, rank, generator=generator, dtype=dtype)
    coefs = 0.1 * coefs / coefs.norm(dim=1, keepdim=True).clamp_min(1e-30)
    return coefs.to(device)


def fit_row_space(
    space: RowSpace,
    coefs: Tensor,
    *,
    anneal: bool = True,
    tol: float = 1e-5,
    anneal_tol: float = 1e-2,
    max_iter: int = 10000,
    history_size: int = 10,
    anneal_dtype: torch.dtype | None = None,
    reduce: Reduce | None = None,
    progress: Callable[[int, float, float], None] | None = None,
) -> CorexFit:
    """Maximize the linear CorEx objective over row-space coordinates (L-BFGS, Wolfe search).

    One full-batch L-BFGS run (:func:`~lit_info.info.lbfgs.minimize_lbfgs`) per annealing
    stage (:data:`ANNEAL_SCHEDULE`, or ``eps = 0`` only), each stopping when the objective
    changes by less than the stage's tolerance between iterations (``anneal_tol`` while
    annealing, ``tol`` at ``eps = 0``) or after ``max_iter`` iterations.

    Args:
        space: the samples' :class:`RowSpace`.
        coefs: ``(m, r)`` starting coordinates (:func:`initial_coefs`); not modified.
        anneal: use the annealing schedule.
        tol: convergence tolerance on the change of the objective (nats) at ``eps = 0``.
        anneal_tol: the same for the annealing stages, which only need to get close.
        max_iter: iteration limit per stage.
        history_size: L-BFGS memory.
        anneal_dtype: the dtype of the annealing stages (``eps > 0``), ``None`` for the
            samples' dtype. They only need to get within ``anneal_tol``, far above float32
            rounding, so ``torch.float32`` halves their cost while the last stage still runs
            in the samples' dtype (quality equal to a float64 fit: ``benchmarks/corex_speed.py``).
        reduce: sums over variables (an all-reduce when the columns of ``space`` are
            sharded: every process then takes the same steps).
        progress: called after every stage with ``(stage, eps, objective)``.

    Returns:
        The :class:`CorexFit`.
    """
    schedule = ANNEAL_SCHEDULE if anneal else (0.0,)
    low = anneal_dtype is not None and anneal_dtype != space.phi_t.dtype
    space_low = (
        RowSpace(space.phi_t.to(anneal_dtype), space.lam.to(anneal_dtype), space.n_samples)
        if low
        else space
    )
    history: list[float] = []
    n_iter: list[int] = []
    converged = False

    for stage, eps in enumerate(schedule):
        stage_tol = tol if eps == 0.0 else anneal_tol
        stage_space = space if eps == 0.0 else space_low
        start = coefs.detach().to(stage_space.phi_t.dtype)

        def negated(
            free: Tensor, eps: float = eps, stage_space: RowSpace = stage_space
        ) -> tuple[Tensor, Tensor]:
            tc, grad = row_space_objective(free, stage_space, eps, reduce=reduce)
            if not torch.isfinite(tc):
                raise FloatingPointError("linear CorEx objective is not finite")
            history.append(float(tc))
            return -tc, -grad

        with torch.no_grad():  # closed-form objective and gradient
            found = minimize_lbfgs(
                negated, start, tol=stage_tol, max_iter=max_iter, history_size=history_size
            )
        coefs = found.x
        n_iter.append(found.n_iter)
        converged = found.converged
        if progress is not None:
            progress(stage, eps, -found.value)
    with torch.no_grad():
        final = row_space_moments(coefs, space, 0.0, reduce=reduce)
        tcs = (reduce or _identity)(variable_factor_mis(final).sum(-1)) - factor_information(final)
        order = torch.argsort(tcs, descending=True)
        result = coefs[order].clone()
    return CorexFit(result, float(final.tc), n_iter, history, converged)


def row_space_objective(
    coefs: Tensor, space: RowSpace, eps: float = 0.0, reduce: Reduce | None = None
) -> tuple[Tensor, Tensor]:
    """The objective of :func:`row_space_moments` and its gradient in closed form.

    The same value as ``row_space_moments(coefs, space, eps).tc`` and the gradient that
    autograd would give, without autograd's graph and with fewer elementwise passes over
    ``m x p`` (at p = 1024, m = 64 one autograd evaluation took 2.6 ms, its four matrix
    products 0.6 ms: the passes dominate; this one takes 1.1 ms, 13 passes). With ``S``, ``Q``,
    ``M = 1 + Q - S^2`` per variable and ``a = rho / (1 - rho^2)``:

    * ``dF/drho = [2 (1/(1+S) + S/M) rho - (1 + rho^2) (R a) / M] / (1 - rho^2)^2``;
    * ``dF/dR = -1/2 a diag(1/M) a^T`` off the diagonal;
    * then through ``rho = c P``, ``R = c G c``, ``c = (1 + g)^-1/2``, ``u = g / (1 + g)``,
      ``P = coefs Psi`` and ``G = coefs coefs^T``.

    Args:
        coefs: ``(m, r)`` row-space coordinates (no gradient is tracked).
        space: the samples' :class:`RowSpace`.
        eps: annealing noise level.
        reduce: sums over variables (all-reduce when the columns are sharded).

    Returns:
        ``(objective, gradient)``: a scalar and ``(m, r)``.
    """
    reduce = reduce or _identity
    root = space.spectrum(eps).sqrt()  # (r,)
    gram = coefs @ coefs.T
    g = gram.diagonal()
    c = torch.rsqrt(1.0 + g)
    scale = c[:, None] * root  # rho = (coefs * scale) @ phi_t
    rho = (coefs * scale) @ space.phi_t  # (m, p)
    inv = (rho * rho).neg_().add_(1.0).reciprocal_()  # 1 / (1 - rho^2)
    a = rho * inv
    s = inv.sum(0) - rho.shape[0]  # sum_j rho^2 / (1 - rho^2) = sum_j (inv - 1)
    ry = gram * c[:, None] * c[None, :]
    ry.diagonal().fill_(1.0)
    ra = ry @ a
    q = (a * ra).sum(0)
    big_m = 1.0 + q - s * s
    objective = reduce(torch.log1p(s).sum() - 0.5 * torch.log(big_m).sum())
    objective = objective - 0.5 * torch.log1p(g).sum()  # 1/2 log(1 - u) = -1/2 log(1 + g)
    inv_m = 1.0 / big_m
    alpha = 1.0 / (1.0 + s) + s * inv_m
    ra_m = ra * inv_m
    # dF/drho = inv * (2 alpha a - (2 inv - 1) ra / M), as (1 + rho^2) inv^2 = (2 inv - 1) inv
    g_rho = torch.addcmul(a * (2.0 * alpha) + ra_m, inv, ra_m, value=-2.0).mul_(inv)
    g_r = reduce(-0.5 * (a * inv_m) @ a.T)
    g_r.diagonal().fill_(0.0)
    g_scaled = reduce(g_rho @ space.phi_t.T)  # dF / d(coefs * scale), (m, r)
    g_c = (g_scaled * coefs * root).sum(1) + 2.0 * (g_r * gram * c[None, :]).sum(1)
    g_g = -0.5 / (1.0 + g) - 0.5 * g_c * c**3
    g_gram = g_r * c[:, None] * c[None, :]
    g_gram.diagonal().copy_(g_g)
    grad = g_scaled * scale + (g_gram + g_gram.T) @ coefs
    return objective, grad
