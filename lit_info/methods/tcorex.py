r"""T-CorEx: time-varying covariance estimation with one linear CorEx per period.

"Efficient covariance estimation from temporal data" (Harutyunyan, Moyer, Hoang, Galstyan,
arXiv 1905.13276). :class:`TCorex` is a scikit-learn style estimator on the closed-form math
of :mod:`lit_info.info.corex` and :mod:`lit_info.info.tcorex`: ``fit`` takes ``T`` periods of
samples (``n_t x p`` each) and learns ``m`` factors per period by maximizing

``sum_t TC_bound_t - l1 sum_t |M_{t+1} - M_t|_1 - l2 sum_t ||M_{t+1} - M_t||_F^2``

(``M_t``: the weights, the matrix of ``I(X_i; Y_j)`` or the implied covariance of period
``t``), with period ``t``'s moments computed from all samples weighted by ``gamma^|t - t'|``
when ``gamma`` is given. ``covariance_low_rank`` gives each period's covariance as low rank
plus diagonal, ``change_point_scores`` the norms of the differences of neighbouring inverse
correlation matrices, ``score`` / ``nll`` held-out Gaussian likelihoods.

How it fits:

* all periods share one ``N x p`` sample matrix and differ by their ``T x N`` sample weights
  and ``T x p`` standardization, so one batched :func:`~lit_info.info.corex.corex_moments`
  call gives every period's objective: ``O(T N p m)`` per evaluation (``N = sum_t n_t``),
  never a ``T x N x p`` tensor;
* the unknowns are the free weights ``V`` (``W = V / sqrt(1 + u_V)``, so ``u_j < 1`` for every
  ``V``), in the variable space (the penalties couple periods coordinate by coordinate);
* ``init=True`` starts every period from a linear CorEx fitted on all periods pooled;
* ``optimizer='adam'`` (default): Adam on the exact penalty, the authors' choice and
  settings (``lr=1e-3``, ``max_iter=500`` steps per annealing stage, one Adam state across
  the stages); ``optimizer='lbfgs'``: full-batch L-BFGS with a strong-Wolfe line search per
  stage, ``|.|`` of the ``l1`` term smoothed to ``sqrt(d^2 + delta^2) - delta``.

Why Adam by default (measured on sudden-change data, ``l1`` and ``gamma`` selected on 16
validation samples per period, test NLL under ``N(0, Sigma_t)``): with 2 segments of 3 periods
(``p = 32, 64``, ``m = 4``, 16 samples per period, 6 draws) Adam's test NLL was lower in every
draw, by 0.43 nats on average (0.14 to 0.97); with the authors' ``p = 128, m = 8, T = 10``
(2 draws) the two tie (L-BFGS 0.19 nats lower on average). L-BFGS reaches a higher objective
in a third to a half of the time: Adam's advantage is that of stopping early near the pooled
start, an implicit regularization. Prefer ``lbfgs`` for speed or when the penalty alone
should decide the fit.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted
from tqdm.auto import tqdm

from lit_info.info.corex import (
    ANNEAL_SCHEDULE,
    CorexMoments,
    corex_moments,
    factor_tcs,
    variable_factor_mis,
)
from lit_info.info.low_rank import LowRankPlusDiagonal
from lit_info.info.tcorex import (
    REG_TYPES,
    change_point_norms,
    period_covariances,
    period_mixing,
    sample_weights,
    temporal_penalty,
    weighted_standardization,
)
from lit_info.methods.corex import (
    DTYPES,
    CorexEstimator,
    Gaussianizer,
    LinearCorex,
    is_number,
    validate_samples,
)

__all__ = ["OPTIMIZERS", "TCorex"]

OPTIMIZERS = ("lbfgs", "adam")
_GAUSSIANIZE = ("standard", "outliers", "empirical", "none")
_ADAM_WINDOW = 50
_LBFGS_CHUNK = 10


class TCorex(CorexEstimator):
    """T-CorEx, a scikit-learn style estimator over ``T`` periods (float64 by default).

    Args:
        n_hidden: number of latent factors ``m`` (the same in every period).
        max_iter: iteration limit per annealing stage (L-BFGS iterations or Adam steps).
        tol: convergence tolerance on the change of the objective per period (nats) in the
            last stage (Adam: of its mean over windows of 50 steps).
        anneal: anneal the noise ``eps`` through ``0.6^k, k = 1..6`` before ``eps = 0``.
        anneal_tol: tolerance of the intermediate annealing stages.
        l1: weight of ``sum_t |M_{t+1} - M_t|_1`` (``0``: none).
        l2: weight of ``sum_t ||M_{t+1} - M_t||_F^2`` (``0``: none).
        reg_type: ``M_t``: ``W`` the paper's weights of the unnormalized factors
            ``y = W x + N(0, 1)`` (the free weights ``V``, as the authors penalize them),
            ``MI`` the matrix ``I(X_i; Y_j)``, ``covariance`` the standardized implied
            covariance (``l2`` only).
        gamma: decay of the weight ``gamma^|t - t'|`` of the samples of period ``t'`` in
            period ``t`` (in ``(0, 1]``); ``None``: every period uses its own samples only.
        init: start every period from a linear CorEx fitted on all periods pooled (each
            period standardized by its own statistics; kept in ``init_``), else a random start
            (the same for every period, seeded by ``random_state``).
        smoothing: ``delta`` of the smoothed ``|d| ~ sqrt(d^2 + delta^2) - delta`` of the
            ``l1`` term under L-BFGS (Adam uses the exact ``|.|``).
        gaussianize: ``standard`` (each period standardized by its weighted mean and standard
            deviation), ``outliers`` or ``empirical`` (first the marginal transform of
            :class:`~lit_info.methods.corex.Gaussianizer`, fitted on all periods pooled, so that
            one transform serves every period and no ``T x N x p`` copy is needed; then the
            weighted standardization of ``standard``; covariances and likelihoods are those of
            the transformed data, in their standard deviations, as for ``LinearCorex``) or
            ``none`` (the data are already standardized).
        device: torch device of the computation (``cpu``, ``cuda``).
        dtype: ``float64`` or ``float32``.
        random_state: seed of the random start and of the pooled linear CorEx.
        verbose: show a progress bar over the annealing stages.
        optimizer: ``adam`` (default, see the module docstring) or ``lbfgs``.
        lr: Adam's learning rate.

    Attributes:
        components_: ``(T, m, p)`` normalized weights ``W_t`` on the standardized variables.
        free_components_: ``(T, m, p)`` the free weights ``V_t`` (the ``W`` penalty's matrices).
        tc_: ``(T,)`` the objective of each period, a lower bound on its ``TC(X; Y)``.
        tcs_: ``(T, m)`` TC of each factor (factors ordered by their mean TC, largest first).
        mis_: ``(T, m, p)`` ``I(X_i; Y_j)``.
        objective_: ``sum_t tc_t`` minus the exact penalty.
        penalty_: the exact penalty at the end.
        mean_, scale_: ``(T, p)`` each period's (weighted) standardization.
        mixing_: ``(T, T)`` weight of one sample of period ``t'`` in period ``t``.
        n_iter_: iterations per annealing stage.
        history_: the objective (smoothed penalty) at every evaluation, in order.
        converged_: whether the last stage met ``tol`` before ``max_iter``.
        n_features_in_: ``p``.
        n_periods_: ``T``.
    """

    def __init__(
        self,
        n_hidden: int = 10,
        max_iter: int = 500,
        tol: float = 1e-5,
        anneal: bool = True,
        anneal_tol: float = 1e-2,
        l1: float = 0.0,
        l2: float = 0.0,
        reg_type: Literal["W", "MI", "covariance"] = "W",
        gamma: float | None = None,
        init: bool = True,
        smoothing: float = 1e-3,
        gaussianize: Literal["standard", "outliers", "empirical", "none"] = "standard",
        device: str = "cpu",
        dtype: Literal["float64", "float32"] = "float64",
        random_state: int | None = None,
        verbose: bool = False,
        optimizer: Literal["lbfgs", "adam"] = "adam",
        lr: float = 1e-3,
    ) -> None:
        self.n_hidden = n_hidden
        self.max_iter = max_iter
        self.tol = tol
        self.anneal = anneal
        self.anneal_tol = anneal_tol
        self.l1 = l1
        self.l2 = l2
        self.reg_type = reg_type
        self.gamma = gamma
        self.init = init
        self.smoothing = smoothing
        self.gaussianize = gaussianize
        self.device = device
        self.dtype = dtype
        self.random_state = random_state
        self.verbose = verbose
        self.optimizer = optimizer
        self.lr = lr

    # ----------------------------------------------------------------------------- checks
    def _check_params(self) -> None:
        name = type(self).__name__
        for field in ("n_hidden", "max_iter"):
            value = getattr(self, field)
            if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name}: {field}={value!r}; must be an integer >= 1")
        for field in ("tol", "anneal_tol", "lr"):
            value = getattr(self, field)
            if not is_number(value) or not 0 < value < math.inf:
                raise ValueError(f"{name}: {field}={value!r}; must be a positive number")
        for field in ("l1", "l2", "smoothing"):
            value = getattr(self, field)
            if not is_number(value) or not 0 <= value < math.inf:
                raise ValueError(f"{name}: {field}={value!r}; must be a finite number >= 0")
        if self.gamma is not None and (not is_number(self.gamma) or not 0 < self.gamma <= 1):
            raise ValueError(
                f"{name}: gamma={self.gamma!r}; must lie in (0, 1] (or None for independent "
                "periods)"
            )
        for field, choices in (
            ("reg_type", REG_TYPES),
            ("gaussianize", _GAUSSIANIZE),
            ("dtype", tuple(DTYPES)),
            ("optimizer", OPTIMIZERS),
        ):
            value = getattr(self, field)
            if value not in choices:
                raise ValueError(f"{name}: {field}={value!r}; choose one of {', '.join(choices)}")
        if self.reg_type == "covariance" and self.l1 > 0:
            raise ValueError(
                f"{name}: l1={self.l1!r} with reg_type='covariance' would need the p x p "
                "differences of the covariances; use l2 (computed from m x m Gram products)"
            )

    def _periods(self, X: Any, owner: str, fitting: bool) -> list[np.ndarray]:  # noqa: N803
        """``X`` as ``T`` float64 arrays ``(n_t, p)``, with one-line errors naming the period."""
        if hasattr(X, "toarray") or type(X).__module__.startswith("scipy.sparse"):
            raise TypeError(f"{owner}: sparse input is not supported; pass dense arrays")
        if isinstance(X, torch.Tensor):
            X = X.detach().cpu().numpy()  # noqa: N806
        if isinstance(X, np.ndarray):
            if X.ndim != 3:
                raise ValueError(
                    f"{owner}: X must be a sequence of T arrays (n_t x p) or a 3-D array "
                    f"(T, n, p), got a {X.ndim}-D array; wrap a single period as [X]"
                )
            items: Sequence[Any] = list(X)
        elif isinstance(X, Sequence) and not isinstance(X, str | bytes):
            items = list(X)
        else:
            raise ValueError(
                f"{owner}: X must be a sequence of T arrays (n_t x p) or a 3-D array (T, n, p), "
                f"got {type(X).__name__}"
            )
        if len(items) == 0:
            raise ValueError(f"{owner}: X has no periods; give at least one (n_t x p) array")
        if not fitting and len(items) != self.n_periods_:
            raise ValueError(
                f"{owner}: X has {len(items)} periods, but the model was fitted on "
                f"{self.n_periods_}"
            )
        periods = []
        width = self.n_features_in_ if not fitting else None
        for t, item in enumerate(items):
            if isinstance(item, torch.Tensor):
                item = item.detach().cpu().numpy()
            where = f"{owner}: period {t}"
            arr, mask = validate_samples(where, item, float("nan"), "none", fitting=False)
            if mask.any():
                row, col = np.argwhere(mask)[0]
                raise ValueError(
                    f"{where} contains NaN (first at row {row}, column {col}); T-CorEx has no "
                    "missing-value support: impute or drop the missing entries first"
                )
            n, p = arr.shape
            if width is None:
                width = p
            elif p != width:
                reference = "the fitted model" if not fitting else "period 0"
                raise ValueError(
                    f"{where} has {p} variables, but {reference} has {width}; every period "
                    "needs the same variables"
                )
            if fitting and n < 2:
                raise ValueError(f"{where} has {n} sample(s); every period needs at least 2")
            if not fitting and n < 1:
                raise ValueError(f"{where} has no samples")
            periods.append(arr)
        return periods

    def _check_constant(self, periods: list[np.ndarray], mixing: np.ndarray, owner: str) -> None:
        """Error when a column is constant over the samples that a period's moments use."""
        lows = np.stack([x.min(0) for x in periods])
        highs = np.stack([x.max(0) for x in periods])
        for t in range(len(periods)):
            used = mixing[t] > 0
            spread = highs[used].max(0) - lows[used].min(0)
            if (spread == 0).any():
                cols = np.flatnonzero(spread == 0)
                shown = ", ".join(map(str, cols[:5])) + (" ..." if len(cols) > 5 else "")
                raise ValueError(
                    f"{owner}: column(s) {shown} are constant in the (weighted) data of period "
                    f"{t} (zero variance); drop them, set gamma, or use gaussianize='none' on "
                    "standardized data"
                )

    def fit(self, X: Any, y: Any = None) -> TCorex:  # noqa: N803 (scikit-learn names)
        """Learn the factors of every period from ``X`` (``T`` arrays ``n_t x p``).

        Args:
            X: a sequence of ``T`` arrays (``n_t x p``, ``n_t >= 2``) or a ``(T, n, p)`` array.
            y: ignored.

        Returns:
            ``self``.
        """
        self._check_params()
        owner = f"{type(self).__name__}.fit"
        periods = self._periods(X, owner, fitting=True)
        counts = np.array([x.shape[0] for x in periods])
        mixing = period_mixing(counts, self.gamma)
        self.marginal_ = None
        if self.gaussianize != "none":
            self._check_constant(periods, mixing, owner)
        if self.gaussianize in ("outliers", "empirical"):
            self.marginal_ = Gaussianizer(self.gaussianize).fit(np.concatenate(periods, 0))
            periods = self._marginal(periods)
        if self.gaussianize != "none":
            mean, scale = weighted_standardization(periods, mixing)
        else:
            p = periods[0].shape[1]
            mean, scale = np.zeros((len(periods), p)), np.ones((len(periods), p))
        self.mixing_, self.mean_, self.scale_ = mixing, mean, scale
        self.n_periods_ = len(periods)
        self.n_features_in_ = int(periods[0].shape[1])
        seed = self._seed()

        x = self._torch(np.concatenate(periods, 0))
        period_of_sample = np.repeat(np.arange(len(periods)), counts)
        omega = self._torch(sample_weights(mixing, period_of_sample))
        mean_t, scale_t = self._torch(mean), self._torch(scale)
        start = self._start(periods, seed)

        def evaluate(v: torch.Tensor, eps: float, delta: float) -> tuple[torch.Tensor, Any]:
            moments = corex_moments(
                x, v, eps, free=True, sample_weights=omega, mean=mean_t, scale=scale_t
            )
            return moments.tc.sum() - self._penalty(moments, v, delta), moments

        bar = tqdm(
            total=len(ANNEAL_SCHEDULE) if self.anneal else 1,
            desc="T-CorEx",
            disable=not self.verbose,
            leave=False,
        )
        try:
            v, n_iter, history, converged = self._optimize(evaluate, start, bar)
        finally:
            bar.close()
        self._set_fitted(evaluate, v)
        self.n_iter_ = n_iter
        self.history_ = history
        self.converged_ = converged
        return self

    def _start(self, periods: list[np.ndarray], seed: int) -> torch.Tensor:
        """The starting free weights ``V`` (``T x m x p``)."""
        n_periods, p = len(periods), periods[0].shape[1]
        if self.init:
            pooled = np.concatenate(
                [(x - mu) / sd for x, mu, sd in zip(periods, self.mean_, self.scale_, strict=True)]
            )
            corex = LinearCorex(
                n_hidden=self.n_hidden,
                max_iter=self.max_iter,
                tol=self.tol,
                anneal=self.anneal,
                anneal_tol=self.anneal_tol,
                gaussianize="none" if self.gaussianize == "none" else "standard",
                device=self.device,
                dtype=self.dtype,
                random_state=seed,
            ).fit(pooled)
            self.init_ = corex
            # W = V / sqrt(1 + u_V) and 1 - u = 1 / (1 + u_V); fold the pooled standardization.
            u = corex.moments_.u.detach().cpu().numpy()
            free = corex.components_ / np.sqrt(1.0 - u)[:, None] / corex.scale_[None, :]
        else:
            self.init_ = None
            gen = torch.Generator().manual_seed(seed)
            g = torch.randn(self.n_hidden, p, generator=gen, dtype=torch.float64).numpy()
            free = 0.1 * g / np.linalg.norm(g, axis=1, keepdims=True)
        return self._torch(np.broadcast_to(free, (n_periods, *free.shape)).copy())

    def _penalty(self, moments: CorexMoments, v: torch.Tensor, delta: float) -> torch.Tensor:
        """:func:`~lit_info.info.tcorex.temporal_penalty` of ``v`` (that of TCorexModule)."""
        return temporal_penalty(moments, v, self.reg_type, self.l1, self.l2, delta)

    def _optimize(
        self,
        evaluate: Callable[[torch.Tensor, float, float], tuple[torch.Tensor, Any]],
        start: torch.Tensor,
        bar: Any,
    ) -> tuple[torch.Tensor, list[int], list[float], bool]:
        schedule = ANNEAL_SCHEDULE if self.anneal else (0.0,)
        v = start.detach().clone().requires_grad_(True)
        n_periods = v.shape[0]
        history: list[float] = []
        n_iter: list[int] = []
        converged = False
        adam = torch.optim.Adam([v], lr=self.lr) if self.optimizer == "adam" else None
        delta = float(self.smoothing) if adam is None else 0.0

        def loss_of(eps: float) -> torch.Tensor:
            objective, _ = evaluate(v, eps, delta)
            if not torch.isfinite(objective):
                raise FloatingPointError("T-CorEx objective is not finite")
            history.append(float(objective.detach()))
            return -objective / n_periods

        for eps in schedule:
            stage_tol = self.tol if eps == 0.0 else self.anneal_tol
            if adam is None:
                iters = self._lbfgs_stage(loss_of, v, eps, stage_tol)
            else:
                iters, window = 0, []
                for iters in range(1, self.max_iter + 1):  # noqa: B007 (iters is used below)
                    adam.zero_grad()
                    loss = loss_of(eps)
                    loss.backward()
                    adam.step()
                    window.append(float(loss.detach()))
                    if len(window) >= 2 * _ADAM_WINDOW:
                        prev = np.mean(window[-2 * _ADAM_WINDOW : -_ADAM_WINDOW])
                        cur = np.mean(window[-_ADAM_WINDOW:])
                        if abs(prev - cur) < stage_tol:
                            break
            n_iter.append(iters)
            converged = iters < self.max_iter
            bar.update(1)
            bar.set_postfix(eps=f"{eps:.3f}", objective=f"{history[-1]:.4f}")
        return v.detach(), n_iter, history, converged

    def _lbfgs_stage(
        self, loss_of: Callable[[float], torch.Tensor], v: torch.Tensor, eps: float, tol: float
    ) -> int:
        """One annealing stage of L-BFGS; returns the number of iterations.

        torch's L-BFGS stops when the objective *or any coordinate* changes by less than
        ``tolerance_change`` in one iteration; the second test stops far too early in the
        variable space (weights of size ~0.1), so the stage runs in chunks of
        ``_LBFGS_CHUNK`` iterations (the optimizer's state carries over) and stops when the
        objective per period changes by less than ``tol`` over a chunk.
        """
        lbfgs = torch.optim.LBFGS(
            [v],
            lr=1.0,
            max_iter=_LBFGS_CHUNK,
            tolerance_grad=0.0,
            tolerance_change=1e-14,
            history_size=10,
            line_search_fn="strong_wolfe",
        )

        def closure() -> torch.Tensor:
            lbfgs.zero_grad()
            loss = loss_of(eps)
            loss.backward()
            return loss

        previous = math.inf
        iters = 0
        while iters < self.max_iter:
            chunk = min(_LBFGS_CHUNK, self.max_iter - iters)
            lbfgs.param_groups[0].update(max_iter=chunk, max_eval=int(chunk * 1.25) + 1)
            before = int(lbfgs.state[v].get("n_iter", 0)) if lbfgs.state else 0
            lbfgs.step(closure)
            done = int(lbfgs.state[v].get("n_iter", 0)) - before
            iters += done
            with torch.no_grad():
                current = float(loss_of(eps))
            if abs(previous - current) < tol or done < chunk:
                break
            previous = current
        return iters

    def _set_fitted(
        self,
        evaluate: Callable[[torch.Tensor, float, float], tuple[torch.Tensor, Any]],
        v: torch.Tensor,
    ) -> None:
        with torch.no_grad():
            _, moments = evaluate(v, 0.0, 0.0)
            order = torch.argsort(factor_tcs(moments).mean(0), descending=True)
            v = v[:, order].contiguous()
            objective, moments = evaluate(v, 0.0, 0.0)
            penalty = self._penalty(moments, v, 0.0)
        self.moments_ = moments
        self.free_components_ = v.cpu().numpy()
        self.components_ = moments.weights.cpu().numpy()
        self.tc_ = moments.tc.cpu().numpy()
        self.tcs_ = factor_tcs(moments).cpu().numpy()
        self.mis_ = variable_factor_mis(moments).cpu().numpy()
        self.objective_ = float(objective)
        self.penalty_ = float(penalty)

    # -------------------------------------------------------------------------- outputs
    def _marginal(self, periods: list[np.ndarray]) -> list[np.ndarray]:
        """The periods through the fitted marginal transform (``outliers`` / ``empirical``)."""
        if getattr(self, "marginal_", None) is None:
            return periods
        return [self.marginal_.transform(x) for x in periods]

    def transform(self, X: Any) -> list[np.ndarray]:  # noqa: N803
        """The factors ``y_t = W_t x`` of every period's standardized samples (``n_t x m``)."""
        check_is_fitted(self)
        periods = self._periods(X, f"{type(self).__name__}.transform", fitting=False)
        periods = self._marginal(periods)
        return [
            ((x - self.mean_[t]) / self.scale_[t]) @ self.components_[t].T
            for t, x in enumerate(periods)
        ]

    def covariance_low_rank(self) -> list[LowRankPlusDiagonal]:
        """Every period's covariance estimate (original units) as ``diag + low rank``."""
        check_is_fitted(self)
        return period_covariances(self.moments_, self._torch(self.scale_))

    def get_covariance(self) -> list[np.ndarray]:
        """The dense ``p x p`` covariance estimate of every period, original units."""
        self._dense_guard("get_covariance", self.n_periods_)
        return [cov.dense().cpu().numpy() for cov in self.covariance_low_rank()]

    def get_precision(self) -> list[np.ndarray]:
        """The dense ``p x p`` precision of every period, by Woodbury."""
        self._dense_guard("get_precision", self.n_periods_)
        return [cov.precision().cpu().numpy() for cov in self.covariance_low_rank()]

    def _log_likelihoods(self, X: Any, owner: str, center: bool) -> list[float]:  # noqa: N803
        check_is_fitted(self)
        periods = self._marginal(self._periods(X, f"{type(self).__name__}.{owner}", fitting=False))
        out = []
        for t, cov in enumerate(self.covariance_low_rank()):
            mean = self._torch(self.mean_[t]) if center else None
            out.append(float(cov.log_prob(self._torch(periods[t]), mean).mean()))
        return out

    def score(self, X: Any, y: Any = None) -> float:  # noqa: N803
        """Mean over periods of the mean held-out log-likelihood under ``N(mean_t, Sigma_t)``."""
        return float(np.mean(self._log_likelihoods(X, "score", center=True)))

    def nll(self, X: Any, center: bool = False) -> float:  # noqa: N803
        """Mean over periods of the mean negative log-likelihood per sample (nats).

        Args:
            X: ``T`` arrays of held-out samples.
            center: use each period's fitted mean; ``False`` (default) evaluates
                ``N(0, Sigma_t)``, the authors' metric for zero-mean data.
        """
        return -float(np.mean(self._log_likelihoods(X, "nll", center=center)))

    def clusters(self) -> np.ndarray:
        """``(T, p)``: the factor each variable informs most about, ``argmax_j I(X_i; Y_j)``."""
        check_is_fitted(self)
        return np.argmax(self.mis_, axis=1)

    def change_point_scores(self) -> dict[str, np.ndarray]:
        """Norms of the differences of neighbouring inverse correlation matrices (``T - 1``).

        Returns:
            ``{"frobenius": ..., "spectral": ...}``: entry ``t`` compares periods ``t`` and
            ``t + 1`` (:func:`~lit_info.info.low_rank.inverse_difference_norms`, no ``p x p``
            matrix for large ``p``).
        """
        return change_point_norms(self.covariance_low_rank())

    def moments(self) -> CorexMoments:
        """The fitted batched :class:`~lit_info.info.corex.CorexMoments` (torch tensors)."""
        check_is_fitted(self)
        return self.moments_
