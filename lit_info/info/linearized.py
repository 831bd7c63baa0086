r"""Closed-form training of a linearized network by gradient descent.

Conventions (used by all of :mod:`lit_info.info`)
-------------------------------------------------
The linearized network around the initial weights ``w0`` is

    f_w(x) = f_0(x) + J(x) (w - w0),

with ``J(x)`` the ``k x p`` Jacobian at ``w0``. It is trained on ``m`` samples ``(x_i, y_i)`` with
the mean squared loss plus L2 regularization toward ``w0``:

    L(w) = 1/(2m) \sum_i ||f_w(x_i) - y_i||^2 + lam/2 ||w - w0||^2,

by gradient descent with learning rate ``eta`` from ``w = w0``:

* ``mode="discrete"``: ``t`` (integer) steps ``w <- w - eta grad L(w)``;
* ``mode="continuous"``: gradient flow ``dw/dtau = -eta grad L(w)`` for ``tau in [0, t]`` (so
  ``t`` is measured in steps of size ``eta``, and continuous ``t`` matches ``t`` small steps);
* ``mode="infinite"`` (or ``t = math.inf``): the limit ``t -> inf``, i.e. the minimizer of ``L``
  (ridge regression in the tangent features). With ``lam = 0`` and a singular kernel it is the
  minimum-norm minimizer (the limit of gradient descent from ``w0``). The discrete-GD limit only
  equals it when GD converges (``eta * (s_max/m + lam) < 2``); ``eta`` is not used here.

With the residual at initialization ``r0 = f_0(X) - Y`` (flattened sample-major, ``(m k,)``) and
the train NTK ``Theta = J J^T`` (``(m k, m k)``), the iterates stay in the row space of ``J``:
``w_t - w0 = J^T beta_t`` with coefficients

    beta_t = -h_t(A) r0 / m,    A = Theta / m + lam I,

where the spectral filter ``h_t`` acts on the eigenvalues ``a`` of ``A`` (one ``eigh`` of
``Theta``): discrete ``h = (1 - (1 - eta a)^t) / a``, continuous ``h = (1 - exp(-eta t a)) / a``
(both ``eta t`` at ``a = 0``), infinite ``h = 1/a`` (``0`` where ``a = 0``). Predictions are
``f_t(x) = f_0(x) + Theta(x, X) beta_t``; weights ``w_t = w0 + J^T beta_t`` need not be formed.

Everything that is eigendecomposed is computed in float64; results are float64.
"""

from __future__ import annotations

import math
import numbers
from typing import Literal

import torch
from torch import Tensor

from .ntk import flatten_jacobian

__all__ = [
    "Mode",
    "eigh_kernel",
    "linearized_gd",
    "linearized_weights",
    "predict",
    "reference_coefficients",
    "spectral_filter",
    "train_coefficients",
]

Mode = Literal["discrete", "continuous", "infinite"]
_MODES = ("discrete", "continuous", "infinite")


def resolve_mode(mode: str, eta: float | None, t: float | None) -> tuple[str, float, float]:
    """Validate ``mode``, ``eta`` and ``t``; ``t = inf`` selects ``"infinite"``.

    Args:
        mode: One of ``"discrete"``, ``"continuous"``, ``"infinite"``.
        eta: Learning rate (> 0; unused for ``"infinite"``).
        t: Number of steps (integer for ``"discrete"``), time, or ``math.inf``/None for infinite.

    Returns:
        The resolved ``(mode, eta, t)``.

    Raises:
        ValueError: If an argument is invalid.
    """
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
    if t is None or (isinstance(t, numbers.Real) and math.isinf(t) and t > 0):
        return "infinite", math.nan, math.inf
    if mode == "infinite":
        return mode, math.nan, math.inf
    if eta is None or not isinstance(eta, numbers.Real) or not eta > 0 or math.isinf(eta):
        raise ValueError(f"eta must be a positive finite number, got {eta!r}")
    if not isinstance(t, numbers.Real) or isinstance(t, bool) or not t >= 0:
        raise ValueError(f"t must be a non-negative number (or math.inf), got {t!r}")
    if mode == "discrete" and float(t) != int(t):
        raise ValueError(f"t must be an integer number of steps for mode='discrete', got {t!r}")
    return mode, float(eta), float(t)


def spectral_filter(
    a: Tensor,
    eta: float | None,
    t: float | None,
    mode: str = "discrete",
    rcond: float | None = None,
) -> Tensor:
    """Evaluate the gradient-descent filter ``h_t(a)`` elementwise (see the module docstring).

    Args:
        a: Eigenvalues of ``A = Theta/m + lam I`` (any shape).
        eta: Learning rate.
        t: Steps/time, or ``math.inf``/None for the infinite-time limit.
        mode: ``"discrete"``, ``"continuous"`` or ``"infinite"``.
        rcond: For the infinite mode, eigenvalues ``a <= rcond * max(a)`` (along the last
            dimension) are treated as zero (``h = 0``); default ``len * eps``.

    Returns:
        ``h_t(a)`` with the same shape and dtype as ``a``.

    Raises:
        ValueError: If an argument is invalid.
    """
    mode, eta, t = resolve_mode(mode, eta, t)
    if mode == "infinite":
        if rcond is None:
            rcond = max(a.shape[-1], 1) * torch.finfo(a.dtype).eps
        top = a.abs().amax(dim=-1, keepdim=True) if a.ndim else a.abs()
        small = a <= rcond * top
        return torch.where(small, torch.zeros_like(a), 1.0 / torch.where(small, 1.0, a))
    zero = a == 0
    safe = torch.where(zero, torch.ones_like(a), a)
    if mode == "continuous":
        h = -torch.expm1(-eta * t * safe) / safe
    else:
        q = 1.0 - eta * safe
        # expm1/log1p avoid cancellation when eta * a is small; q^t directly when q <= 0
        stable = -torch.expm1(t * torch.log1p(-eta * safe.clamp(max=1.0 / eta)))
        direct = 1.0 - q**t
        h = torch.where(q > 0, stable, direct) / safe
    return torch.where(zero, torch.full_like(a, eta * t), h)


def _as_kernel(theta: Tensor, name: str = "theta") -> Tensor:
    if not isinstance(theta, Tensor) or theta.ndim != 2 or theta.shape[0] != theta.shape[1]:
        shape = tuple(theta.shape) if isinstance(theta, Tensor) else type(theta).__name__
        raise ValueError(f"{name} must be a square (n*k, n*k) matrix, got {shape}")
    theta = theta.to(torch.float64)
    if not torch.isfinite(theta).all():
        raise ValueError(f"{name} contains non-finite values")
    return (theta + theta.T) / 2


def as_residual(residual0: Tensor, size: int | None = None, name: str = "residual0") -> Tensor:
    """Validate a residual/target array ``(n, k)`` (or ``(n,)`` for ``k = 1``) as float64 2-D.

    Args:
        residual0: The array.
        size: Expected ``n * k`` (the kernel size), if known.
        name: Argument name for error messages.

    Returns:
        A float64 tensor of shape ``(n, k)``.

    Raises:
        ValueError: If the shape is invalid or does not match ``size``.
    """
    if not isinstance(residual0, Tensor) or residual0.ndim not in (1, 2):
        shape = tuple(residual0.shape) if isinstance(residual0, Tensor) else type(residual0)
        raise ValueError(f"{name} must have shape (n, k) or (n,), got {shape}")
    r = residual0.to(torch.float64)
    if r.ndim == 1:
        r = r[:, None]
    if r.shape[0] < 1 or r.shape[1] < 1:
        raise ValueError(f"{name} must be non-empty, got shape {tuple(residual0.shape)}")
    if size is not None and r.numel() != size:
        raise ValueError(
            f"{name} has shape {tuple(residual0.shape)} ({r.numel()} values) but the kernel is "
            f"{size} x {size}"
        )
    if not torch.isfinite(r).all():
        raise ValueError(f"{name} contains non-finite values")
    return r


def _check_lam(lam: float) -> float:
    if not isinstance(lam, numbers.Real) or not lam >= 0 or math.isinf(lam):
        raise ValueError(f"lam must be a non-negative finite number, got {lam!r}")
    return float(lam)


def eigh_kernel(theta: Tensor) -> tuple[Tensor, Tensor]:
    """Eigendecomposition of a PSD kernel in float64, eigenvalues clamped at zero.

    Args:
        theta: Symmetric PSD matrix ``(N, N)`` (symmetrized before use).

    Returns:
        ``(s, V)`` with ``theta = V diag(s) V^T``, ascending ``s >= 0``.
    """
    s, v = torch.linalg.eigh(_as_kernel(theta))
    return s.clamp(min=0.0), v


def train_coefficients(
    theta: Tensor,
    residual0: Tensor,
    *,
    eta: float | None,
    t: float | None,
    lam: float = 0.0,
    mode: str = "discrete",
    eig: tuple[Tensor, Tensor] | None = None,
) -> Tensor:
    """Coefficients ``beta_t`` with ``w_t - w0 = J^T beta_t`` (see the module docstring).

    Args:
        theta: Train NTK ``(m k, m k)``.
        residual0: ``f_0(X) - Y`` of shape ``(m, k)`` (or ``(m,)`` for one output).
        eta: Learning rate (> 0; ignored for the infinite mode).
        t: Steps (discrete), time (continuous), or ``math.inf``/None (infinite).
        lam: L2 regularization toward ``w0`` (>= 0).
        mode: ``"discrete"``, ``"continuous"`` or ``"infinite"``.
        eig: Optional precomputed :func:`eigh_kernel` of ``theta``.

    Returns:
        float64 tensor of shape ``(m k,)``.

    Raises:
        ValueError: If an argument is invalid.
    """
    mode, eta, t = resolve_mode(mode, eta, t)
    lam = _check_lam(lam)
    if eig is None:
        theta = _as_kernel(theta)
        s, v = eigh_kernel(theta)
    else:
        s, v = eig
        if v.shape != theta.shape:
            raise ValueError(f"eig does not match theta of shape {tuple(theta.shape)}")
    r = as_residual(residual0, theta.shape[0])
    m = r.shape[0]
    h = spectral_filter(s / m + lam, eta, t, mode)
    return -(v @ (h * (v.T @ r.reshape(-1)))) / m


def predict(theta_xX: Tensor, beta: Tensor, f0_x: Tensor) -> Tensor:
    """Predictions ``f_0(x) + Theta(x, X) beta`` of the linearized network.

    Args:
        theta_xX: Kernel between the evaluation inputs and the training set ``(n_x k, m k)``
            (the train kernel itself for training predictions).
        beta: Coefficients ``(m k,)`` from :func:`train_coefficients` (or a batch ``(b, m k)``).
        f0_x: Outputs at initialization ``(n_x, k)`` (or ``(n_x,)`` for one output).

    Returns:
        float64 predictions ``(n_x, k)`` (or ``(b, n_x, k)`` for batched ``beta``).

    Raises:
        ValueError: If the shapes do not match.
    """
    if theta_xX.ndim != 2 or beta.shape[-1] != theta_xX.shape[1]:
        raise ValueError(
            f"theta_xX {tuple(theta_xX.shape)} and beta {tuple(beta.shape)} do not match"
        )
    f0 = as_residual(f0_x, theta_xX.shape[0], name="f0_x")
    delta = beta.to(torch.float64) @ theta_xX.to(torch.float64).T
    return f0 + delta.reshape(*beta.shape[:-1], *f0.shape)


def linearized_weights(jacobian: Tensor, beta: Tensor, w0: Tensor | None = None) -> Tensor:
    """Materialize ``w = w0 + J^T beta`` (only for models small enough to hold ``J``).

    Args:
        jacobian: Train Jacobian ``(m, k, p)``.
        beta: Coefficients ``(m k,)`` or a batch ``(b, m k)``.
        w0: Initial weights ``(p,)``; None returns ``w - w0``.

    Returns:
        float64 tensor ``(p,)`` (or ``(b, p)``).

    Raises:
        ValueError: If the shapes do not match.
    """
    jac = flatten_jacobian(jacobian).to(torch.float64)
    if beta.shape[-1] != jac.shape[0]:
        raise ValueError(
            f"beta {tuple(beta.shape)} does not match jacobian {tuple(jacobian.shape)}"
        )
    dw = beta.to(torch.float64) @ jac
    if w0 is None:
        return dw
    if w0.shape != (jac.shape[1],):
        raise ValueError(f"w0 must have shape ({jac.shape[1]},), got {tuple(w0.shape)}")
    return w0.to(torch.float64) + dw


def linearized_gd(
    jacobian: Tensor, residual0: Tensor, *, eta: float, steps: int, lam: float = 0.0
) -> Tensor:
    """Explicit gradient descent on the linearized model in weight space (a reference).

    Runs ``u <- u - eta * (J^T (J u + r0) / m + lam u)`` from ``u = 0`` for ``steps`` steps, i.e.
    plain GD on ``L`` of the module docstring, with ``u = w - w0``.

    Args:
        jacobian: Train Jacobian ``(m, k, p)``.
        residual0: ``f_0(X) - Y`` of shape ``(m, k)`` (or ``(m,)``).
        eta: Learning rate.
        steps: Number of steps.
        lam: L2 regularization toward ``w0``.

    Returns:
        float64 weight change ``w_t - w0`` of shape ``(p,)``.

    Raises:
        ValueError: If an argument is invalid.
    """
    jac = flatten_jacobian(jacobian).to(torch.float64)
    r = as_residual(residual0, jac.shape[0]).reshape(-1)
    resolve_mode("discrete", eta, steps)
    lam = _check_lam(lam)
    m = jacobian.shape[0]
    u = torch.zeros(jac.shape[1], dtype=torch.float64, device=jac.device)
    for _ in range(int(steps)):
        u = u - eta * (jac.T @ (jac @ u + r) / m + lam * u)
    return u


def reference_coefficients(
    theta: Tensor,
    residual0: Tensor,
    *,
    eta: float | None,
    t: float | None,
    lam: float = 0.0,
    mode: str = "discrete",
) -> Tensor:
    """Straightforward reference for :func:`train_coefficients` without an eigendecomposition.

    The coefficient iteration ``beta <- (I - eta A) beta - eta r0/m`` is affine, so it is written
    as one ``(N+1) x (N+1)`` augmented matrix: discrete GD takes its ``t``-th power
    (``torch.linalg.matrix_power``), gradient flow its exponential (``torch.linalg.matrix_exp``,
    Van Loan's block trick), and the infinite-time limit solves ``A beta = -r0/m`` (a
    pseudo-inverse when ``lam = 0``). Meant for tests and benchmarks.

    Args:
        theta: Train NTK ``(m k, m k)``.
        residual0: ``f_0(X) - Y`` of shape ``(m, k)`` (or ``(m,)``).
        eta: Learning rate.
        t: Steps, time, or ``math.inf``/None.
        lam: L2 regularization toward ``w0``.
        mode: ``"discrete"``, ``"continuous"`` or ``"infinite"``.

    Returns:
        float64 tensor of shape ``(m k,)``.

    Raises:
        ValueError: If an argument is invalid.
    """
    mode, eta, t = resolve_mode(mode, eta, t)
    lam = _check_lam(lam)
    theta = _as_kernel(theta)
    r = as_residual(residual0, theta.shape[0])
    m, size = r.shape[0], theta.shape[0]
    a = theta / m + lam * torch.eye(size, dtype=theta.dtype, device=theta.device)
    b = r.reshape(-1) / m
    if mode == "infinite":
        if lam > 0:
            return -torch.linalg.solve(a, b)
        return -(torch.linalg.pinv(a, hermitian=True) @ b)
    aug = torch.zeros(size + 1, size + 1, dtype=theta.dtype, device=theta.device)
    if mode == "discrete":
        aug[:size, :size] = torch.eye(size, dtype=theta.dtype, device=theta.device) - eta * a
        aug[:size, size] = -eta * b
        aug[size, size] = 1.0
        return torch.linalg.matrix_power(aug, int(t))[:size, size]
    aug[:size, :size] = -eta * t * a
    aug[:size, size] = -eta * t * b
    return torch.linalg.matrix_exp(aug)[:size, size]
