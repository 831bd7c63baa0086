"""The secular-equation leave-one-out (``method="secular"``, one output) against brute force."""

import math

import pytest
import torch
from torch import nn

from lit_info.info import (
    eigh_kernel,
    empirical_ntk,
    leave_one_out_coefficients,
    leave_one_out_differences,
    network_jacobian,
    reference_leave_one_out,
    weight_si,
)

F64 = torch.float64

SETTINGS = [
    dict(eta=0.5, t=40, lam=0.0, mode="discrete"),
    dict(eta=0.3, t=25, lam=0.05, mode="discrete"),
    dict(eta=0.5, t=300.5, lam=0.0, mode="continuous"),
    dict(eta=0.2, t=12.0, lam=0.01, mode="continuous"),
    dict(eta=None, t=math.inf, lam=0.1, mode="infinite"),
]


def _spectral_kernel(s: torch.Tensor, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(len(s), len(s), generator=gen, dtype=F64))
    return (q * s) @ q.T


def _residual(n: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed + 100)
    return torch.randn(n, 1, generator=gen, dtype=F64)


def _digits_ntk(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Empirical NTK of a small tanh MLP on ``n`` sklearn digits (bundled, no download)."""
    datasets = pytest.importorskip("sklearn.datasets")
    x, y = datasets.load_digits(return_X_y=True)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 1)).double()
    x = torch.tensor(x[:n] / 16.0, dtype=F64)
    target = torch.tensor((y[:n] % 2) * 2 - 1.0, dtype=F64)[:, None]
    jac = network_jacobian(model, x)
    with torch.no_grad():
        f0 = model(x)
    theta = empirical_ntk(jac)
    return theta / theta.diagonal().mean(), f0 - target  # unit mean diagonal: GD is stable


def _kernels() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    n = 60
    ar = torch.arange(n, dtype=F64)
    block = torch.block_diag(
        _spectral_kernel(0.7 ** torch.arange(20, dtype=F64), 3),
        _spectral_kernel(0.5 ** torch.arange(25, dtype=F64), 4),
        _spectral_kernel(torch.full((15,), 0.25, dtype=F64), 5),
    )
    return {
        # fast geometric decay: half of the spectrum is below the rounding level
        "geometric": (_spectral_kernel(0.5**ar, 0), _residual(n, 0)),
        # exactly repeated eigenvalues (several clusters, including a null space)
        "repeated": (_spectral_kernel(torch.round(0.9**ar * 4) / 4, 1), _residual(n, 1)),
        # eigenvectors with exact zeros (block diagonal): deflation of zero weights
        "block": (block, _residual(n, 2)),
    }


def _assert_matches(theta, fast, ref, rtol=1e-8, name=""):
    """Rows of delta = beta - beta_{-i} and V^T delta agree to ``rtol`` relative."""
    n = theta.shape[0]
    _, v = eigh_kernel(theta)
    assert fast.shape == ref.shape == (n, n)
    scale = ref.norm(dim=1, keepdim=True).clamp(min=1e-300)
    assert ((fast - ref) / scale).abs().max() < rtol, name
    assert (((fast - ref) @ v) / scale).abs().max() < rtol, name


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: f"{s['mode']}-lam{s['lam']}")
@pytest.mark.parametrize("normalization", ["remaining", "original"])
def test_secular_equals_eigh_on_hard_spectra(setting, normalization):
    for name, (theta, r) in _kernels().items():
        args = dict(setting, loo_normalization=normalization)
        beta_s, delta_s = leave_one_out_differences(theta, r, method="secular", **args)
        beta_e, delta_e = leave_one_out_differences(theta, r, method="eigh", **args)
        torch.testing.assert_close(beta_s, beta_e, rtol=0, atol=0)
        _assert_matches(theta, delta_s, delta_e, name=name)
        si_s, si_e = weight_si(theta, delta_s), weight_si(theta, delta_e)
        torch.testing.assert_close(si_s, si_e, rtol=1e-8, atol=1e-14 * si_e.max().item())


@pytest.mark.parametrize("setting", SETTINGS[:3], ids=lambda s: f"{s['mode']}-lam{s['lam']}")
def test_secular_equals_eigh_on_digits_ntk(setting):
    theta, r = _digits_ntk(150)
    s = torch.linalg.eigvalsh(theta)
    assert s[-1] / s[s.shape[0] // 2] > 1e3  # a realistic, fast-decaying NTK spectrum
    _, delta_s = leave_one_out_differences(theta, r, method="secular", **setting)
    _, delta_e = leave_one_out_differences(theta, r, method="eigh", **setting)
    _assert_matches(theta, delta_s, delta_e)


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: f"{s['mode']}-lam{s['lam']}")
def test_secular_equals_reference(setting):
    theta, r = _spectral_kernel(0.6 ** torch.arange(12, dtype=F64), 7), _residual(12, 7)
    fast = leave_one_out_coefficients(theta, r, method="secular", **setting)
    ref = reference_leave_one_out(theta, r, **setting)
    torch.testing.assert_close(fast, ref, rtol=0, atol=1e-9 * ref.abs().max().item())


def test_secular_infinite_time_without_regularization():
    # well-conditioned full rank and exactly low rank (min-norm interpolation)
    full = _spectral_kernel(torch.linspace(0.5, 3.0, 20, dtype=F64), 8)
    low = _spectral_kernel(torch.cat([torch.linspace(1.0, 2.0, 6), torch.zeros(14)]).double(), 9)
    for theta in (full, low):
        r = _residual(20, 8)
        args = dict(eta=None, t=math.inf, lam=0.0)
        fast = leave_one_out_coefficients(theta, r, method="secular", **args)
        _assert_matches(theta, fast, leave_one_out_coefficients(theta, r, method="eigh", **args))
        ref = reference_leave_one_out(theta, r, **args)
        assert ((fast - ref) @ theta).abs().max() < 1e-8 * (ref @ theta).abs().max()


def test_secular_small_and_degenerate_cases():
    args = dict(eta=0.4, t=9, lam=0.02)
    # n = 2 (a single 1 x 1 principal submatrix) and a multiple of the identity (no roots)
    for theta in (torch.tensor([[2.0, 0.7], [0.7, 1.0]], dtype=F64), 1.5 * torch.eye(7, dtype=F64)):
        r = _residual(theta.shape[0], 3)
        fast = leave_one_out_coefficients(theta, r, method="secular", **args)
        ref = reference_leave_one_out(theta, r, **args)
        torch.testing.assert_close(fast, ref, rtol=0, atol=1e-12)
    # chunking does not change the result; "auto" (Chebyshev) agrees
    theta, r = _kernels()["repeated"]
    base = leave_one_out_coefficients(theta, r, method="secular", **args)
    for chunk in (1, 7):
        chunked = leave_one_out_coefficients(theta, r, method="secular", chunk_size=chunk, **args)
        torch.testing.assert_close(chunked, base, rtol=0, atol=1e-13)
    auto = leave_one_out_coefficients(theta, r, **args)
    torch.testing.assert_close(auto, base, rtol=0, atol=1e-13)


def test_secular_needs_one_output():
    theta = _spectral_kernel(torch.linspace(0.1, 1.0, 8, dtype=F64), 0)
    r = torch.randn(4, 2, dtype=F64)
    with pytest.raises(ValueError, match="method='secular'"):
        leave_one_out_coefficients(theta, r, eta=0.1, t=3, method="secular")
    # "auto" (Chebyshev) handles several outputs, like the batched eigh
    torch.testing.assert_close(
        leave_one_out_coefficients(theta, r, eta=0.1, t=3),
        leave_one_out_coefficients(theta, r, eta=0.1, t=3, method="eigh"),
        rtol=0,
        atol=1e-13,
    )
