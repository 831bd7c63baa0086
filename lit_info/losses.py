"""Noise-robust classification losses, a transition-matrix estimator and gradient noise.

All losses take ``logits`` of shape ``(N, k)`` and integer ``targets`` of shape ``(N,)`` with
values in ``[0, k)`` and return the scalar batch mean unless stated otherwise. Shapes and
dtypes are always validated; the target range is validated for CPU tensors only (on an
accelerator the check would cost a host sync per step; torch asserts on the device instead).

References:
    * A. Ghosh, H. Kumar, P. S. Sastry, "Robust loss functions under label noise for deep
      neural networks", AAAI 2017 (MAE, MSE).
    * Z. Zhang, M. R. Sabuncu, "Generalized cross entropy loss for training deep neural
      networks with noisy labels", NeurIPS 2018 (GCE).
    * G. Patrini, A. Rozza, A. K. Menon, R. Nock, L. Qu, "Making deep neural networks robust
      to label noise: a loss correction approach", CVPR 2017 (forward correction and the
      transition-matrix estimator).
    * Y. Xu, P. Cao, Y. Kong, Y. Wang, "L_DMI: an information-theoretic noise-robust loss
      function", NeurIPS 2019 (DMI).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "LOSS_NAMES",
    "add_logit_gradient_noise",
    "cross_entropy",
    "dmi_loss",
    "estimate_transition_matrix",
    "forward_corrected_ce",
    "gce_loss",
    "mae_loss",
    "make_loss",
    "mse_loss",
]

#: Names accepted by :func:`make_loss`.
LOSS_NAMES: tuple[str, ...] = ("ce", "mae", "mse", "gce", "fw", "dmi")

_PROB_CLAMP = 1e-12


def _check(logits: Tensor, targets: Tensor) -> None:
    if logits.dim() != 2:
        raise ValueError(f"logits must have shape (N, k), got {tuple(logits.shape)}")
    if targets.dim() != 1 or targets.shape[0] != logits.shape[0]:
        raise ValueError(
            f"targets must have shape (N,) = ({logits.shape[0]},), got {tuple(targets.shape)}"
        )
    if targets.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        raise ValueError(f"targets must be an integer tensor, got dtype {targets.dtype}")
    # Range check on CPU only: on an accelerator it would force a host sync every step
    # (out-of-range targets there trigger torch's own device-side assertion instead).
    if (
        targets.device.type == "cpu"
        and targets.numel()
        and (int(targets.min()) < 0 or int(targets.max()) >= logits.shape[1])
    ):
        raise ValueError(
            f"targets must lie in [0, {logits.shape[1]}), got range "
            f"[{int(targets.min())}, {int(targets.max())}]"
        )


def _target_prob(logits: Tensor, targets: Tensor) -> Tensor:
    return F.softmax(logits, dim=1).gather(1, targets.long().unsqueeze(1)).squeeze(1)


def cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean cross-entropy ``-log softmax(logits)[y]``.

    Args:
        logits: Logits ``(N, k)``.
        targets: Integer labels ``(N,)``.

    Returns:
        Scalar mean loss.
    """
    _check(logits, targets)
    return F.cross_entropy(logits, targets.long())


def mae_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean absolute error between softmax probabilities and one-hot labels (Ghosh et al.).

    Per sample ``sum_j |p_j - 1[j = y]| = 2 (1 - p_y)``.

    Args:
        logits: Logits ``(N, k)``.
        targets: Integer labels ``(N,)``.

    Returns:
        Scalar mean loss in ``[0, 2]``.
    """
    _check(logits, targets)
    return (2.0 * (1.0 - _target_prob(logits, targets))).mean()


def mse_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """Squared error between softmax probabilities and one-hot labels.

    Per sample ``sum_j (p_j - 1[j = y])^2`` (summed over classes, averaged over samples).

    Args:
        logits: Logits ``(N, k)``.
        targets: Integer labels ``(N,)``.

    Returns:
        Scalar mean loss in ``[0, 2]``.
    """
    _check(logits, targets)
    probs = F.softmax(logits, dim=1)
    onehot = F.one_hot(targets.long(), logits.shape[1]).to(probs.dtype)
    return ((probs - onehot) ** 2).sum(dim=1).mean()


def _check_q(q: float) -> None:
    if not (0.0 < q <= 1.0):
        raise ValueError(f"GCE q must be in (0, 1], got {q}")


def gce_loss(logits: Tensor, targets: Tensor, q: float = 0.7) -> Tensor:
    """Generalized cross-entropy ``(1 - p_y^q) / q`` (Zhang & Sabuncu 2018).

    Tends to cross-entropy as ``q -> 0`` and equals ``1 - p_y`` (half the MAE) at ``q = 1``.

    Args:
        logits: Logits ``(N, k)``.
        targets: Integer labels ``(N,)``.
        q: Exponent in ``(0, 1]``.

    Returns:
        Scalar mean loss.

    Raises:
        ValueError: If ``q`` is outside ``(0, 1]`` or the inputs are malformed.
    """
    _check_q(q)
    _check(logits, targets)
    # p_y^q = exp(q * log p_y), computed from log-softmax for stability.
    log_py = F.log_softmax(logits, dim=1).gather(1, targets.long().unsqueeze(1)).squeeze(1)
    return ((1.0 - torch.exp(q * log_py)) / q).mean()


def _check_transition(transition: Tensor, k: int) -> None:
    if transition.shape != (k, k):
        raise ValueError(f"transition must have shape ({k}, {k}), got {tuple(transition.shape)}")


def forward_corrected_ce(logits: Tensor, targets: Tensor, transition: Tensor) -> Tensor:
    """Forward-corrected cross-entropy ``-log (softmax(logits) @ T)[y]`` (Patrini et al. 2017).

    ``T[i, j] = P(noisy label = j | clean label = i)`` (rows sum to one); the model's
    softmax estimates the clean posterior and ``softmax @ T`` the noisy one. The corrected
    probability is clamped to at least ``1e-12`` before the log.

    Args:
        logits: Logits ``(N, k)``.
        targets: Integer (noisy) labels ``(N,)``.
        transition: Row-stochastic matrix ``(k, k)``.

    Returns:
        Scalar mean loss.

    Raises:
        ValueError: If ``transition`` does not have shape ``(k, k)`` or inputs are malformed.
    """
    _check(logits, targets)
    _check_transition(transition, logits.shape[1])
    probs = F.softmax(logits, dim=1)
    noisy = probs @ transition.to(device=probs.device, dtype=probs.dtype)
    p_y = noisy.gather(1, targets.long().unsqueeze(1)).squeeze(1)
    return -torch.log(p_y.clamp_min(_PROB_CLAMP)).mean()


def dmi_loss(logits: Tensor, targets: Tensor, num_classes: int, eps: float = 1e-3) -> Tensor:
    """Determinant-based mutual information loss L_DMI (Xu et al. 2019).

    With ``O = softmax(logits)`` ``(N, k)`` and ``Y`` the one-hot labels ``(N, k)``, the
    paper's empirical joint matrix is ``U = Y^T O / N`` (``U[i, j]`` estimates
    ``P(label = i, prediction = j)``) and ``L_DMI = -log |det U|``. For numerical safety the
    epsilon ``eps`` is added to the determinant of the *unnormalised* count matrix
    ``M = Y^T O = N U``, as in the authors' release, and the constant ``k log N`` is added
    back, i.e.::

        loss = -log(|det(Y^T O)| + eps) + k * log(N)
             = -log(|det U| + eps / N^k)

    so the value equals the paper's ``-log |det U|`` whenever ``|det M| >> eps``, and the
    gradient is exactly that of the released implementation. The determinant is computed
    in float64. The loss is a batch-level quantity (not a mean of per-sample terms) and is
    not bounded below by 0.

    Args:
        logits: Logits ``(N, k)`` with ``k == num_classes``.
        targets: Integer labels ``(N,)``.
        num_classes: Number of classes ``k``.
        eps: Positive constant added to ``|det(Y^T O)|``.

    Returns:
        Scalar loss.

    Raises:
        ValueError: If ``num_classes`` does not match the logits, ``eps`` is not positive or
            inputs are malformed.
    """
    _check(logits, targets)
    if logits.shape[1] != num_classes:
        raise ValueError(
            f"num_classes={num_classes} does not match logits with {logits.shape[1]} columns"
        )
    if eps <= 0:
        raise ValueError(f"eps must be positive, got {eps}")
    n = logits.shape[0]
    if n == 0:
        raise ValueError("dmi_loss needs a non-empty batch")
    probs = F.softmax(logits, dim=1).double()
    onehot = F.one_hot(targets.long(), num_classes).double()
    counts = onehot.T @ probs
    loss = -torch.log(torch.linalg.det(counts).abs() + eps) + num_classes * math.log(n)
    return loss.to(torch.promote_types(logits.dtype, torch.float32))


def estimate_transition_matrix(probs: Tensor, quantile: float = 0.97) -> Tensor:
    """Estimate the noise transition matrix from noisy-label posteriors (Patrini et al. 2017).

    ``probs`` are softmax outputs ``p(noisy label | x)`` of a model trained with plain
    cross-entropy on the noisy labels. For each class ``i`` the "anchor" sample ``x*`` is the
    one whose ``p(i | x)`` sits at the given quantile of that column (the paper uses the 97th
    percentile to be robust to outliers; ``quantile=1.0`` takes the argmax), and row ``i`` of
    the estimate is ``p(. | x*)``, renormalised to sum to one. The quantile position is
    rounded up (``ceil(quantile * (N - 1))`` in the ascending order).

    Args:
        probs: Probabilities ``(N, k)``, rows non-negative and summing to one.
        quantile: Quantile in ``[0, 1]``.

    Returns:
        Estimated row-stochastic ``T`` ``(k, k)`` with ``T[i, j] ~ P(noisy = j | clean = i)``.

    Raises:
        ValueError: If ``probs`` is not a non-empty ``(N, k)`` probability matrix or
            ``quantile`` is outside ``[0, 1]``.
    """
    if probs.dim() != 2 or probs.shape[0] == 0:
        raise ValueError(f"probs must have shape (N, k) with N > 0, got {tuple(probs.shape)}")
    if not 0.0 <= quantile <= 1.0:
        raise ValueError(f"quantile must be in [0, 1], got {quantile}")
    if bool((probs < 0).any()) or not torch.allclose(
        probs.sum(dim=1), torch.ones((), dtype=probs.dtype, device=probs.device), atol=1e-3
    ):
        raise ValueError("probs rows must be non-negative and sum to 1 (pass softmax outputs)")
    n, k = probs.shape
    position = min(n - 1, math.ceil(quantile * (n - 1) - 1e-9))
    order = torch.argsort(probs, dim=0, stable=True)  # ascending per column
    anchors = order[position]  # (k,) sample index per class
    rows = probs[anchors]
    return rows / rows.sum(dim=1, keepdim=True)


def make_loss(
    name: str, num_classes: int, gce_q: float = 0.7, transition: Tensor | None = None
) -> Callable[[Tensor, Tensor], Tensor]:
    """Return a loss ``f(logits, targets) -> scalar`` by name.

    Args:
        name: One of :data:`LOSS_NAMES`: ``ce``, ``mae``, ``mse``, ``gce``, ``fw`` (forward
            correction, needs ``transition``), ``dmi``.
        num_classes: Number of classes ``k``.
        gce_q: ``q`` of the GCE loss, in ``(0, 1]``.
        transition: ``(k, k)`` transition matrix for ``fw``.

    Returns:
        The loss function.

    Raises:
        ValueError: For an unknown name, a missing/misshaped transition for ``fw`` or a bad
            ``gce_q``.
    """
    if name not in LOSS_NAMES:
        raise ValueError(f"unknown loss {name!r}; available: {', '.join(LOSS_NAMES)}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if name == "ce":
        return cross_entropy
    if name == "mae":
        return mae_loss
    if name == "mse":
        return mse_loss
    if name == "gce":
        _check_q(gce_q)
        return lambda logits, targets: gce_loss(logits, targets, q=gce_q)
    if name == "fw":
        if transition is None:
            raise ValueError("loss 'fw' (forward correction) needs a transition matrix")
        _check_transition(transition, num_classes)
        t = transition.detach().clone()
        return lambda logits, targets: forward_corrected_ce(logits, targets, t)
    return lambda logits, targets: dmi_loss(logits, targets, num_classes)


def _sample_noise(like: Tensor, kind: str, std: float, generator: torch.Generator | None) -> Tensor:
    if kind == "gaussian":
        noise = torch.randn(like.shape, generator=generator, dtype=like.dtype, device=like.device)
    else:
        # Difference of two Exp(1) variables is Laplace(0, 1), with variance 2.
        e1 = torch.empty_like(like).exponential_(generator=generator)
        e2 = torch.empty_like(like).exponential_(generator=generator)
        noise = (e1 - e2) / math.sqrt(2.0)
    return noise * std


class _LogitGradientNoise(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx,
        logits: Tensor,
        kind: str,
        scale: float,
        generator: torch.Generator | None,
    ) -> Tensor:
        ctx.kind = kind  # type: ignore[attr-defined]
        ctx.scale = scale  # type: ignore[attr-defined]
        ctx.generator = generator  # type: ignore[attr-defined]
        return logits.clone()

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx, grad: Tensor
    ) -> tuple[Tensor, None, None, None]:
        scale: float = ctx.scale  # type: ignore[attr-defined]
        if scale == 0.0:
            return grad, None, None, None
        n = max(1, grad.shape[0])
        noise = _sample_noise(grad, ctx.kind, scale / n, ctx.generator)  # type: ignore[attr-defined]
        return grad + noise, None, None, None


def add_logit_gradient_noise(
    logits: Tensor,
    kind: Literal["gaussian", "laplace"],
    scale: float,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Identity on ``logits`` whose backward pass adds i.i.d. noise to the incoming gradient.

    Used for the "noisy logit gradient" baseline: ``loss = cross_entropy(
    add_logit_gradient_noise(logits, ...), y)``. Convention: every element of the gradient
    w.r.t. ``logits`` gets independent zero-mean noise with **standard deviation**
    ``scale / N`` (``N = logits.shape[0]``), for both kinds (Laplace noise uses scale
    parameter ``b = scale / (N * sqrt(2))``). For a batch-mean loss the clean per-sample
    gradient is ``(softmax - onehot) / N``, so ``scale`` is the noise level relative to the
    per-sample ``softmax - onehot`` term, whose entries lie in ``[-1, 1]``. ``scale = 0``
    leaves the gradient untouched. Fresh noise is drawn at every backward pass.

    Args:
        logits: Tensor of shape ``(N, ...)``.
        kind: ``"gaussian"`` or ``"laplace"``.
        scale: Non-negative noise standard deviation relative to the per-sample gradient.
        generator: Optional random generator (on the device of ``logits``) for
            reproducibility.

    Returns:
        A tensor equal to ``logits``.

    Raises:
        ValueError: If ``kind`` is unknown, ``scale`` is negative or ``logits`` is 0-d.
    """
    if kind not in ("gaussian", "laplace"):
        raise ValueError(f"kind must be 'gaussian' or 'laplace', got {kind!r}")
    if not (scale >= 0.0 and math.isfinite(scale)):
        raise ValueError(f"scale must be a finite number >= 0, got {scale}")
    if logits.dim() == 0:
        raise ValueError("logits must have a batch dimension, got a 0-d tensor")
    return _LogitGradientNoise.apply(logits, kind, float(scale), generator)
