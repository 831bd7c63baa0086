"""Empirical neural tangent kernel (all outputs, no trace approximation).

Layout convention used throughout :mod:`lit_info.info`: a Jacobian ``J`` of shape ``(n, k, p)``
is flattened sample-major to ``(n * k, p)``, so row ``i * k + c`` is output ``c`` of sample ``i``.
Kernels are ``(n1 * k, n2 * k)`` matrices in this layout, and vectors over training outputs
(residuals, coefficients) are flattened the same way from ``(n, k)``.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["empirical_ntk", "flatten_jacobian", "kernel_blocks", "unflatten_outputs"]


def flatten_jacobian(jacobian: Tensor) -> Tensor:
    """Reshape a Jacobian ``(n, k, p)`` to ``(n * k, p)`` (row ``i * k + c``).

    Args:
        jacobian: Tensor of shape ``(n, k, p)``.

    Returns:
        A view of shape ``(n * k, p)``.

    Raises:
        ValueError: If ``jacobian`` is not 3-dimensional.
    """
    if not isinstance(jacobian, Tensor) or jacobian.ndim != 3:
        shape = tuple(jacobian.shape) if isinstance(jacobian, Tensor) else type(jacobian).__name__
        raise ValueError(f"jacobian must have shape (n, k, p), got {shape}")
    return jacobian.reshape(jacobian.shape[0] * jacobian.shape[1], jacobian.shape[2])


def unflatten_outputs(values: Tensor, num_outputs: int) -> Tensor:
    """Reshape the last dimension ``n * k`` of ``values`` to ``(n, k)``.

    Args:
        values: Tensor whose last dimension has length ``n * num_outputs``.
        num_outputs: Number of outputs ``k``.

    Returns:
        Tensor of shape ``(..., n, k)``.

    Raises:
        ValueError: If the last dimension is not a multiple of ``num_outputs``.
    """
    if num_outputs < 1 or values.shape[-1] % num_outputs:
        raise ValueError(
            f"last dimension {values.shape[-1]} is not a multiple of num_outputs={num_outputs}"
        )
    return values.reshape(*values.shape[:-1], values.shape[-1] // num_outputs, num_outputs)


def kernel_blocks(theta: Tensor, num_outputs: int) -> Tensor:
    """View a kernel ``(n1 * k, n2 * k)`` as blocks ``(n1, n2, k, k)``.

    Args:
        theta: Kernel matrix in the flattened layout.
        num_outputs: Number of outputs ``k``.

    Returns:
        Tensor ``B`` with ``B[i, j] = theta[i*k:(i+1)*k, j*k:(j+1)*k]``.

    Raises:
        ValueError: If the shape is not compatible with ``num_outputs``.
    """
    if theta.ndim != 2 or theta.shape[0] % num_outputs or theta.shape[1] % num_outputs:
        raise ValueError(
            f"theta of shape {tuple(theta.shape)} is not a (n1*k, n2*k) kernel for k={num_outputs}"
        )
    k = num_outputs
    n1, n2 = theta.shape[0] // k, theta.shape[1] // k
    return theta.reshape(n1, k, n2, k).permute(0, 2, 1, 3)


def empirical_ntk(
    jacobian1: Tensor, jacobian2: Tensor | None = None, dtype: torch.dtype | None = None
) -> Tensor:
    """Empirical NTK ``Theta(X1, X2) = J1 J2^T`` over all outputs.

    Args:
        jacobian1: Jacobian ``(n1, k, p)`` (e.g. test inputs, or the training set).
        jacobian2: Jacobian ``(n2, k, p)`` (e.g. the training set); None uses ``jacobian1``
            and returns the symmetric train kernel (exactly symmetrized).
        dtype: Dtype of the computation and result (e.g. ``torch.float64`` before an
            eigendecomposition); None keeps the Jacobians' dtype.

    Returns:
        Kernel of shape ``(n1 * k, n2 * k)``; entry ``(i*k + c, j*k + d)`` is
        ``<d f_c(x_i)/dw, d f_d(x_j)/dw>``.

    Raises:
        ValueError: If the shapes do not match.
    """
    a = flatten_jacobian(jacobian1)
    if dtype is not None:
        a = a.to(dtype)
    if jacobian2 is None:
        theta = a @ a.T
        return (theta + theta.T) / 2
    b = flatten_jacobian(jacobian2)
    if jacobian2.shape[1:] != jacobian1.shape[1:]:
        raise ValueError(
            "jacobian1 and jacobian2 must agree in outputs and parameters, got "
            f"{tuple(jacobian1.shape)} and {tuple(jacobian2.shape)}"
        )
    if dtype is not None:
        b = b.to(dtype)
    return a @ b.T
