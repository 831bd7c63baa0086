r"""Linear CorEx: a modular latent factor model for high-dimensional covariance estimation.

"Fast structure learning with modular regularization" (Ver Steeg, Harutyunyan, Moyer,
Galstyan, NeurIPS 2019). :class:`LinearCorex` is a scikit-learn estimator on the closed-form
math of :mod:`lit_info.info.corex`: ``fit`` learns ``m`` factors, ``transform`` gives them,
``get_covariance`` / ``covariance_low_rank`` the implied covariance (low rank plus diagonal),
``score`` the mean held-out Gaussian log-likelihood.

How it fits (chosen by measurement against L-BFGS on ``W`` with autograd and a natural-gradient
L-BFGS on ``W``: fewer evaluations than the first, cheaper ones than the second; the
resulting speed against ``linearcorex`` is ``benchmarks/corex_speed.py``):

* the weights live in the row space of the standardized samples (nothing else changes the
  objective at ``eps = 0``), in coordinates where the annealed covariance is the identity, so
  full-batch L-BFGS with a strong-Wolfe line search takes the natural-gradient steps of the
  authors' update, with curvature: ``O(n p m)`` per evaluation, ``m x min(n, p)`` unknowns;
* the free parametrization ``W = V / sqrt(1 + v^T C v)`` keeps ``u_j < 1`` without
  constraints; the annealing stages stop at ``anneal_tol``, the last one at ``tol``.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

import numpy as np
import torch
from scipy.special import ndtri
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted
from tqdm.auto import tqdm

from lit_info.info.corex import (
    ANNEAL_SCHEDULE,
    CorexMoments,
    conditional_mean_weights,
    factor_tcs,
    fit_row_space,
    initial_coefs,
    moments_covariance,
    row_space,
    row_space_moments,
    variable_factor_mis,
)
from lit_info.info.low_rank import LowRankPlusDiagonal

__all__ = [
    "GAUSSIANIZE",
    "SMALL_FIT_WORK",
    "CorexEstimator",
    "Gaussianizer",
    "LinearCorex",
    "fit_threads",
]

GAUSSIANIZE = ("standard", "outliers", "empirical", "none")
DTYPES = {"float64": torch.float64, "float32": torch.float32}
_OUTLIER_THRESHOLD = 4.0
_DENSE_LIMIT = 20_000
#: ``n * p * m`` up to which a CPU fit runs on one torch thread by default (``n_threads=None``):
#: below it thread start-up and synchronization cost more than the second core gives
#: (benchmarks/corex_speed.py measures both).
SMALL_FIT_WORK = 2**21


@contextmanager
def fit_threads(n_threads: int | None, work: int, device: str) -> Iterator[None]:
    """Run a block with ``n_threads`` torch intra-op threads on the CPU, then restore them.

    Args:
        n_threads: the thread count; ``None``: 1 when ``work <= SMALL_FIT_WORK``, else as set.
        work: ``n * p * m`` of the fit.
        device: the fit's device (nothing changes off the CPU).
    """
    want = n_threads
    if want is None and work <= SMALL_FIT_WORK:
        want = 1
    before = torch.get_num_threads()
    if want is None or want == before or torch.device(device).type != "cpu":
        yield
        return
    torch.set_num_threads(want)
    try:
        yield
    finally:
        torch.set_num_threads(before)


_ELSEWHERE = {  # name -> module: T-CorEx and the LightningModules live in their own files
    "TCorex": "lit_info.methods.tcorex",
    "CorexModule": "lit_info.methods.corex_module",
    "TCorexModule": "lit_info.methods.tcorex_module",
}


def __getattr__(name: str) -> Any:
    # imported lazily: those modules import this one
    if name in _ELSEWHERE:
        return getattr(importlib.import_module(_ELSEWHERE[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def squash_outliers(z: np.ndarray, threshold: float = _OUTLIER_THRESHOLD) -> np.ndarray:
    """Keep ``|z| <= threshold`` and map the excess through ``tanh`` (bounded tails)."""
    clipped = np.clip(z, -threshold, threshold)
    return clipped + np.tanh(z - clipped)


def unsquash_outliers(z: np.ndarray, threshold: float = _OUTLIER_THRESHOLD) -> np.ndarray:
    """Inverse of :func:`squash_outliers`."""
    clipped = np.clip(z, -threshold, threshold)
    return clipped + np.arctanh(np.clip(z - clipped, -1 + 1e-12, 1 - 1e-12))


class Gaussianizer:
    """Per-column transform towards standard Gaussian marginals, fitted on training data.

    ``standard``: ``(x - mean) / std``. ``outliers``: the same, then tails beyond 4 standard
    deviations squashed (:func:`squash_outliers`) and re-standardized. ``empirical``: the
    normal quantile of each value's mid-rank in the training column (new values by linear
    interpolation between the training order statistics; inverted the same way). ``none``:
    the data are used as given (they should already be standardized). Missing entries
    (``NaN``) are ignored by every statistic and set to zero (the mean) afterwards.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def fit(self, x: np.ndarray) -> Gaussianizer:
        """Learn the per-column statistics of ``x`` (``n x p``, ``NaN`` = missing)."""
        self.mean = np.nanmean(x, axis=0)
        self.std = np.sqrt(np.nanmean((x - self.mean) ** 2, axis=0))
        if self.kind == "none":
            self.mean = np.zeros(x.shape[1])
            self.std = np.ones(x.shape[1])
        elif self.kind == "outliers":
            z = squash_outliers((x - self.mean) / self.std)
            self.mean2 = np.nanmean(z, axis=0)
            self.std2 = np.sqrt(np.nanmean((z - self.mean2) ** 2, axis=0))
        elif self.kind == "empirical":
            self.sorted = np.sort(x, axis=0)  # NaN sort last
            self.n_obs = np.sum(~np.isnan(x), axis=0)
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Map ``x`` to (approximately) standard Gaussian columns; missing entries to 0."""
        if self.kind == "empirical":
            out = np.empty_like(x)
            for i in range(x.shape[1]):
                k = int(self.n_obs[i])
                levels = ndtri((np.arange(k) + 0.5) / k)
                out[:, i] = np.interp(x[:, i], self.sorted[:k, i], levels)
        else:
            out = (x - self.mean) / self.std
            if self.kind == "outliers":
                out = (squash_outliers(out) - self.mean2) / self.std2
        return np.where(np.isnan(out), 0.0, out)

    def inverse(self, z: np.ndarray) -> np.ndarray:
        """Back to the original units (the inverse of :meth:`transform`)."""
        if self.kind == "empirical":
            out = np.empty_like(z)
            for i in range(z.shape[1]):
                k = int(self.n_obs[i])
                levels = ndtri((np.arange(k) + 0.5) / k)
                out[:, i] = np.interp(z[:, i], levels, self.sorted[:k, i])
            return out
        if self.kind == "outliers":
            z = unsquash_outliers(z * self.std2 + self.mean2)
        return z * self.std + self.mean


def _check_choice(owner: str, name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{owner}: {name}={value!r}; choose one of {', '.join(choices)}")


def _missing_mask(x: np.ndarray, missing_values: float | None) -> np.ndarray:
    if missing_values is None or (isinstance(missing_values, float) and np.isnan(missing_values)):
        return np.isnan(x)
    return (x == missing_values) | np.isnan(x)


def validate_samples(
    owner: str,
    x: Any,
    missing_values: float | None,
    gaussianize: str,
    n_features: int | None = None,
    fitting: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """``x`` as a float64 array with ``NaN`` at missing entries, and the missing mask.

    Raises a one-line ``ValueError`` for: not 2-D, complex, fewer than 2 samples (fitting),
    NaN or infinity without ``missing_values``, a column with no observed value or zero
    variance (unless ``gaussianize='none'``), a different number of features than ``fit``.
    """
    if hasattr(x, "toarray") or type(x).__module__.startswith("scipy.sparse"):
        raise TypeError(f"{owner}: sparse input is not supported; pass a dense array")
    arr = np.asarray(x)
    if np.iscomplexobj(arr):
        raise ValueError(f"{owner}: Complex data not supported")
    try:
        arr = arr.astype(np.float64)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{owner}: X must be numeric ({err})") from None
    if arr.ndim != 2:
        raise ValueError(
            f"{owner}: expected a 2-D array (samples x variables), got {arr.ndim}-D. Reshape "
            "your data: x.reshape(-1, 1) for a single variable, x.reshape(1, -1) for a single "
            "sample"
        )
    n, p = arr.shape
    if n_features is not None and p != n_features:
        raise ValueError(
            f"X has {p} features, but {owner.split('.')[0]} is expecting {n_features} "
            "features as input"
        )
    if fitting and n < 2:
        raise ValueError(f"{owner}: X has {n} sample(s); at least 2 samples are needed")
    if p < 1:
        raise ValueError(
            f"{owner}: found array with 0 feature(s) (shape=({n}, 0)) while a minimum of 1 is "
            "required."
        )
    if np.isinf(arr).any():
        raise ValueError(f"{owner}: X contains infinity")
    mask = _missing_mask(arr, missing_values)
    if mask.any() and missing_values is None:
        row, col = np.argwhere(mask)[0]
        raise ValueError(
            f"{owner}: X contains NaN (first at row {row}, column {col}); set "
            "missing_values=float('nan') for mean imputation"
        )
    arr = np.where(mask, np.nan, arr)
    if fitting:
        observed = (~mask).sum(0)
        if (observed == 0).any():
            col = int(np.argmax(observed == 0))
            raise ValueError(f"{owner}: column {col} has no observed value")
        if gaussianize != "none":
            spread = np.nanmax(arr, axis=0) - np.nanmin(arr, axis=0)
            if (spread == 0).any():
                cols = np.flatnonzero(spread == 0)
                shown = ", ".join(map(str, cols[:5])) + (" ..." if len(cols) > 5 else "")
                raise ValueError(
                    f"{owner}: column(s) {shown} are constant (zero variance); drop them or "
                    "use gaussianize='none' on standardized data"
                )
    return arr, mask


def is_number(value: object) -> bool:
    """A real number (int or float, numpy included), not a bool."""
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)


class CorexEstimator(BaseEstimator):
    """What the CorEx estimators share: dtype / device, seeding, the dense-matrix guard.

    Subclasses have the ``dtype``, ``device`` and ``random_state`` parameters and set
    ``n_features_in_`` in ``fit``.
    """

    dtype: str
    device: str
    random_state: Any

    def _torch(self, array: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(array, dtype=DTYPES[self.dtype], device=self.device)

    def _seed(self) -> int:
        """``random_state`` as an integer seed (``None``: fresh entropy)."""
        seed = self.random_state
        if seed is None:
            return int(np.random.SeedSequence().generate_state(1)[0])
        if isinstance(seed, np.random.RandomState):
            return int(seed.randint(2**31))
        return int(seed)

    def _dense_guard(self, what: str, periods: int | None = None) -> None:
        """Refuse dense ``p x p`` results (one, or one per period) above ``_DENSE_LIMIT``."""
        p = self.n_features_in_
        if p > _DENSE_LIMIT:
            many = periods is not None
            made = f"{periods} dense {p} x {p} matrices" if many else f"a dense {p} x {p} matrix"
            them = "them" if many else "it"
            raise ValueError(
                f"{type(self).__name__}.{what}: p = {p} variables would make {made}; use "
                f"covariance_low_rank() (solve, logdet, log_prob without {them})"
            )


class LinearCorex(TransformerMixin, CorexEstimator):
    """Linear CorEx, a scikit-learn estimator (float64 by default, CPU or GPU through torch).

    Args:
        n_hidden: number of latent factors ``m``.
        max_iter: L-BFGS iteration limit per annealing stage.
        tol: convergence tolerance on the change of the objective (nats) in the last stage.
        anneal: anneal the noise ``eps`` through ``0.6^k, k = 1..6`` before ``eps = 0``.
        anneal_tol: tolerance of the intermediate annealing stages. Tighter stages follow the
            annealing path further and avoid more local optima on small problems (planted 4
            modules of 60 variables, n = 400, 30 data sets: 26 recovered at ``1e-2``, all 30
            at ``1e-4``, 29 by the authors' linearcorex) at about 1.3x the time; on the speed
            benchmark's data sets the held-out NLL did not change.
        gaussianize: marginal preprocessing, one of ``standard``, ``outliers``, ``empirical``,
            ``none`` (see :class:`Gaussianizer`).
        missing_values: the value that marks a missing entry (``float('nan')`` for NaN);
            missing entries are imputed with the column mean, each column is standardized
            with its observed count, and the moments average over all rows (as the authors'
            ``linearcorex``; dividing the cross moments by the observed count instead can
            give correlations above one, where the bound is undefined). ``None``: NaN is an
            error.
        device: torch device of the computation (``cpu``, ``cuda``, ``cuda:1``).
        dtype: ``float64`` or ``float32``.
        anneal_dtype: the dtype of the annealing stages (``eps > 0``): ``float32`` (default)
            halves their cost and they only need to get within ``anneal_tol``; the last stage
            (``eps = 0``) always runs in ``dtype``. ``None``: ``dtype`` throughout.
        random_state: seed of the random start (``None``: fresh entropy).
        verbose: show a progress bar over the annealing stages.
        n_threads: torch intra-op threads during ``fit`` on the CPU (restored afterwards);
            ``None``: one thread for small problems (``n p m <= SMALL_FIT_WORK = 2^21``, where a
            second thread costs more than it gives), torch's setting otherwise.

    Attributes:
        components_: ``(m, p)`` weights ``W`` of the factors on the standardized variables.
        tc_: the objective, a lower bound on ``TC(X; Y)`` (nats).
        tcs_: ``(m,)`` TC of each factor, largest first.
        mis_: ``(m, p)`` ``I(X_i; Y_j)``.
        mean_, scale_: the standardization (``gaussianize`` statistics).
        n_iter_: L-BFGS iterations in all (``n_iter_per_stage_``: per annealing stage).
        history_: the objective at every evaluation.
        converged_: whether the last stage met ``tol``.
        n_features_in_: ``p``.
    """

    def __init__(
        self,
        n_hidden: int = 10,
        max_iter: int = 10000,
        tol: float = 1e-5,
        anneal: bool = True,
        anneal_tol: float = 1e-2,
        gaussianize: Literal["standard", "outliers", "empirical", "none"] = "standard",
        missing_values: float | None = None,
        device: str = "cpu",
        dtype: Literal["float64", "float32"] = "float64",
        random_state: int | None = None,
        verbose: bool = False,
        n_threads: int | None = None,
        anneal_dtype: Literal["float64", "float32"] | None = "float32",
    ) -> None:
        self.n_hidden = n_hidden
        self.max_iter = max_iter
        self.tol = tol
        self.anneal = anneal
        self.anneal_tol = anneal_tol
        self.gaussianize = gaussianize
        self.missing_values = missing_values
        self.device = device
        self.dtype = dtype
        self.random_state = random_state
        self.verbose = verbose
        self.n_threads = n_threads
        self.anneal_dtype = anneal_dtype

    # ----------------------------------------------------------------------------- checks
    def _check_params(self) -> None:
        name = type(self).__name__
        threads = self.n_threads
        if threads is not None and (
            not isinstance(threads, int | np.integer) or isinstance(threads, bool) or threads < 1
        ):
            raise ValueError(f"{name}: n_threads={threads!r}; must be an integer >= 1 or None")
        for field in ("n_hidden", "max_iter"):
            value = getattr(self, field)
            if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name}: {field}={value!r}; must be an integer >= 1")
        for field in ("tol", "anneal_tol"):
            value = getattr(self, field)
            if not is_number(value) or not value > 0:
                raise ValueError(f"{name}: {field}={value!r}; must be a positive number")
        _check_choice(name, "gaussianize", self.gaussianize, GAUSSIANIZE)
        _check_choice(name, "dtype", self.dtype, tuple(DTYPES))
        if self.anneal_dtype is not None and self.anneal_dtype not in DTYPES:
            raise ValueError(
                f"{name}: anneal_dtype={self.anneal_dtype!r}; choose one of "
                f"{', '.join(DTYPES)} or None (the dtype of the fit)"
            )

    # -------------------------------------------------------------------------------- fit
    def fit(self, X: Any, y: Any = None) -> LinearCorex:  # noqa: N803 (scikit-learn names)
        """Learn the factors from ``X`` (``n_samples x n_variables``); ``y`` is ignored."""
        self._check_params()
        name = f"{type(self).__name__}.fit"
        x, mask = validate_samples(name, X, self.missing_values, self.gaussianize)
        work = x.shape[0] * x.shape[1] * int(self.n_hidden)
        with fit_threads(self.n_threads, work, self.device):
            return self._fit(x)

    def _fit(self, x: np.ndarray) -> LinearCorex:
        self.gaussianizer_ = Gaussianizer(self.gaussianize).fit(x)
        xs = self._torch(self.gaussianizer_.transform(x))
        space = row_space(xs)
        start = initial_coefs(
            self.n_hidden,
            space.rank,
            torch.Generator().manual_seed(self._seed()),
            xs.dtype,
            str(xs.device),
        )
        bar = tqdm(
            total=len(ANNEAL_SCHEDULE) if self.anneal else 1,
            desc="linear CorEx",
            disable=not self.verbose,
            leave=False,
        )

        def progress(stage: int, eps: float, tc: float) -> None:
            bar.update(1)
            bar.set_postfix(eps=f"{eps:.3f}", tc=f"{tc:.4f}")

        try:
            result = self._fit_space(space, start, progress)
        finally:
            bar.close()
        self._set_fitted(space, result.coefs, xs)
        self.n_iter_ = int(sum(result.n_iter))
        self.n_iter_per_stage_ = result.n_iter
        self.history_ = result.history
        self.converged_ = result.converged
        return self

    def _fit_space(self, space: Any, start: torch.Tensor, progress: Any) -> Any:
        try:
            return fit_row_space(
                space,
                start,
                anneal=self.anneal,
                tol=self.tol,
                anneal_tol=self.anneal_tol,
                max_iter=self.max_iter,
                anneal_dtype=None if self.anneal_dtype is None else DTYPES[self.anneal_dtype],
                progress=progress,
            )
        except FloatingPointError:
            hint = (
                "; with gaussianize='none' the data must be standardized (unit variance)"
                if self.gaussianize == "none"
                else ""
            )
            raise ValueError(
                f"{type(self).__name__}.fit: the objective became non-finite (a correlation "
                f"reached 1: duplicated or perfectly dependent variables?){hint}"
            ) from None

    def _set_fitted(
        self,
        space: Any,
        coefs: torch.Tensor,
        xs: torch.Tensor,
    ) -> None:
        with torch.no_grad():
            moments = row_space_moments(coefs, space, 0.0, with_weights=True)
        self.moments_ = moments
        self.components_ = moments.weights.cpu().numpy()
        self.tc_ = float(moments.tc)
        self.tcs_ = factor_tcs(moments).cpu().numpy()
        self.mis_ = variable_factor_mis(moments).cpu().numpy()
        self.mean_ = self.gaussianizer_.mean
        self.scale_ = self.gaussianizer_.std
        self.n_features_in_ = int(xs.shape[1])

    # -------------------------------------------------------------------------- outputs
    def _standardized(self, X: Any, owner: str) -> np.ndarray:  # noqa: N803
        check_is_fitted(self)
        x, _ = validate_samples(
            f"{type(self).__name__}.{owner}",
            X,
            self.missing_values,
            self.gaussianize,
            n_features=self.n_features_in_,
            fitting=False,
        )
        return self.gaussianizer_.transform(x)

    def transform(self, X: Any) -> np.ndarray:  # noqa: N803
        """The factors ``y = W x`` of the standardized samples (``n x m``, noise-free mean)."""
        return self._standardized(X, "transform") @ self.components_.T

    def inverse_transform(self, Y: Any) -> np.ndarray:  # noqa: N803
        """``E[x | y]`` in the original units for factors ``Y`` (``n x m``)."""
        check_is_fitted(self)
        y = np.asarray(Y, dtype=np.float64)
        if y.ndim != 2 or y.shape[1] != self.components_.shape[0]:
            raise ValueError(
                f"{type(self).__name__}.inverse_transform: Y must be (n, {self.n_hidden}), got "
                f"{y.shape}"
            )
        b = conditional_mean_weights(self.moments_).cpu().numpy()
        return self.gaussianizer_.inverse(y @ b.T)

    def predict(self, X: Any) -> np.ndarray:  # noqa: N803
        """``E[x | y(x)]``: each sample reconstructed from its factors, original units."""
        return self.inverse_transform(self.transform(X))

    def covariance_low_rank(self) -> LowRankPlusDiagonal:
        """The covariance estimate as ``diag + low rank`` torch tensors (any ``p``)."""
        check_is_fitted(self)
        scale = torch.as_tensor(self.scale_, dtype=self.moments_.rho.dtype)
        return moments_covariance(self.moments_).scaled(scale.to(self.moments_.rho.device))

    def get_covariance(self) -> np.ndarray:
        """The dense ``p x p`` covariance estimate in the original units."""
        self._dense_guard("get_covariance")
        return self.covariance_low_rank().dense().cpu().numpy()

    def get_precision(self) -> np.ndarray:
        """The dense ``p x p`` precision (inverse covariance), by Woodbury."""
        self._dense_guard("get_precision")
        return self.covariance_low_rank().precision().cpu().numpy()

    def score_samples(self, X: Any) -> np.ndarray:  # noqa: N803
        """Gaussian log-likelihood of every sample under ``N(mean_, covariance)`` (nats).

        With ``gaussianize='standard'`` (or ``none``) this is the likelihood in the original
        units; with ``outliers`` / ``empirical`` it is that of the transformed data rescaled
        to the original standard deviations (no Jacobian of the marginal transform).
        """
        z = self._standardized(X, "score")
        cov = moments_covariance(self.moments_)
        log_prob = cov.log_prob(self._torch(z)).cpu().numpy()
        return log_prob - np.log(self.scale_).sum()

    def score(self, X: Any, y: Any = None) -> float:  # noqa: N803
        """Mean held-out log-likelihood per sample (nats; higher is better)."""
        return float(np.mean(self.score_samples(X)))

    def clusters(self) -> np.ndarray:
        """The factor each variable informs most about: ``argmax_j I(X_i; Y_j)`` (``p``)."""
        check_is_fitted(self)
        return np.argmax(self.mis_, axis=0)

    @property
    def tcs(self) -> np.ndarray:
        """Alias of ``tcs_`` (the ``linearcorex`` name)."""
        check_is_fitted(self)
        return self.tcs_

    @property
    def mis(self) -> np.ndarray:
        """Alias of ``mis_`` (the ``linearcorex`` name)."""
        check_is_fitted(self)
        return self.mis_

    @property
    def tc(self) -> float:
        """Alias of ``tc_`` (the ``linearcorex`` name)."""
        check_is_fitted(self)
        return self.tc_

    def moments(self) -> CorexMoments:
        """The fitted :class:`~lit_info.info.corex.CorexMoments` (torch tensors)."""
        check_is_fitted(self)
        return self.moments_
