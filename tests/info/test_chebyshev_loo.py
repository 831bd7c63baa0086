"""The Chebyshev leave-one-out (``method="chebyshev"``) against per-sample brute force."""

import math

import numpy as np
import pytest
import torch

from lit_info.info import (
    eigh_kernel,
    leave_one_out_coefficients,
    reference_leave_one_out,
)
from lit_info.info.sample_info import chebyshev_coefficients

F64 = torch.float64


def _problem(n: int, k: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    feats = torch.randn(n * k, 3 * n * k, generator=gen, dtype=F64)
    theta = feats @ feats.T / feats.shape[1]
    r = torch.randn(n, k, generator=gen, dtype=F64)
    return theta, r


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize(
    "setting",
    [
        dict(eta=0.5, t=200, lam=0.0, mode="discrete"),  # expansion truncated well below t
        dict(eta=0.3, t=9, lam=0.05, mode="discrete"),  # exact interpolation (t < 32 points)
        dict(eta=2.5, t=40, lam=0.0, mode="discrete"),  # divergent GD: still the same polynomial
        dict(eta=0.5, t=300.5, lam=0.0, mode="continuous"),
        dict(eta=0.2, t=12.0, lam=0.01, mode="continuous"),
    ],
)
def test_chebyshev_matches_reference(k: int, setting: dict) -> None:
    theta, r = _problem(14 if k == 1 else 6, k)
    fast = leave_one_out_coefficients(theta, r, method="chebyshev", **setting)
    ref = reference_leave_one_out(theta, r, **setting)
    assert fast.shape == ref.shape
    assert _rel(fast, ref) < 1e-10


def test_chebyshev_original_normalization_and_chunks() -> None:
    theta, r = _problem(10, 2, seed=3)
    setting = dict(eta=0.4, t=60, lam=0.02, mode="discrete", loo_normalization="original")
    ref = reference_leave_one_out(theta, r, **setting)
    for chunk in (None, 1, 3):
        fast = leave_one_out_coefficients(theta, r, method="chebyshev", chunk_size=chunk, **setting)
        assert _rel(fast, ref) < 1e-10
        assert torch.all(fast.reshape(10, 10, 2)[torch.arange(10), torch.arange(10)] == 0)


def test_auto_uses_an_exact_method_for_finite_time() -> None:
    theta, r = _problem(12, 1, seed=5)
    setting = dict(eta=0.3, t=500, lam=0.0, mode="discrete")
    auto = leave_one_out_coefficients(theta, r, **setting)
    assert _rel(auto, reference_leave_one_out(theta, r, **setting)) < 1e-10
    # a precomputed eigendecomposition gives the same result
    again = leave_one_out_coefficients(theta, r, eig=eigh_kernel(theta), **setting)
    assert torch.allclose(auto, again, rtol=0, atol=1e-14 * float(auto.abs().max()))


def test_chebyshev_rejects_infinite_time() -> None:
    theta, r = _problem(5, 1)
    with pytest.raises(ValueError, match="finite t"):
        leave_one_out_coefficients(theta, r, eta=None, t=math.inf, lam=0.1, method="chebyshev")


def test_zero_steps_give_zero_coefficients() -> None:
    theta, r = _problem(5, 1)
    out = leave_one_out_coefficients(theta, r, eta=0.1, t=0, method="chebyshev")
    assert torch.count_nonzero(out) == 0


def test_chebyshev_coefficients_of_known_functions() -> None:
    # exp on [0, 3]: the expansion reproduces the function at random points to rounding level
    coef = chebyshev_coefficients(torch.exp, 3.0)
    assert coef is not None and len(coef) < 32
    x = np.random.default_rng(0).uniform(0, 3, 50)
    approx = np.polynomial.chebyshev.chebval(2 * x / 3 - 1, coef.numpy())
    np.testing.assert_allclose(approx, np.exp(x), rtol=1e-14)
    # a cubic on [0, 2] (u = z - 1) is exact with 4 points
    cubic = chebyshev_coefficients(lambda z: 1 + z - 2 * z**3, 2.0, max_size=4)
    assert cubic is not None and len(cubic) == 4
    u = np.linspace(-1, 1, 7)
    z = u + 1.0
    np.testing.assert_allclose(
        np.polynomial.chebyshev.chebval(u, cubic.numpy()), 1 + z - 2 * z**3, atol=1e-13
    )
    # a function that no polynomial of degree < 2^16 resolves is reported as None
    assert chebyshev_coefficients(lambda z: (z > 1).double(), 2.0) is None
