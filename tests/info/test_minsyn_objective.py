"""The MinSyn objective against the CorEx moments and brute-force Gaussian information."""

import math

import numpy as np
import pytest
import torch

from lit_info.info.corex import corex_moments
from lit_info.info.minsyn import (
    ci_information_bound,
    ci_synergy,
    exact_information,
    minsyn_objective,
    signal_moments,
    standardize_columns,
)
from lit_info.info.synergy import total_correlation

F64 = torch.float64


def _data(n: int = 400, p: int = 6, m: int = 2, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    mixing = torch.randn(p, p, generator=gen, dtype=F64)
    x = standardize_columns(torch.randn(n, p, generator=gen, dtype=F64) @ mixing)
    v = torch.randn(m, p, generator=gen, dtype=F64) * 0.5
    return x, v


def _joint(x: torch.Tensor, v: torch.Tensor):
    """Covariances of (X, Y) for Y = V X + N(0, I) under the sample covariance of x."""
    n = x.shape[0]
    cov_x = x.T @ x / n
    cov_xy = cov_x @ v.T
    cov_y = v @ cov_x @ v.T + torch.eye(v.shape[0], dtype=F64)
    return cov_x, cov_xy, cov_y


def test_signal_moments_of_a_linear_encoder_equal_corex_free_moments():
    x, v = _data()
    ours = signal_moments(x, x @ v.T)
    ref = corex_moments(x, v, 0.0, free=True)
    for name in ("u", "rho", "ry", "s", "q_minus_s2", "tc"):
        torch.testing.assert_close(getattr(ours, name), getattr(ref, name), rtol=1e-12, atol=1e-12)


def test_exact_information_equals_gaussian_log_determinants():
    x, v = _data()
    cov_x, cov_xy, cov_y = _joint(x, v)
    got = exact_information(signal_moments(x, x @ v.T))
    for i in range(x.shape[1]):
        joint = torch.zeros(1 + v.shape[0], 1 + v.shape[0], dtype=F64)
        joint[0, 0] = cov_x[i, i]
        joint[0, 1:] = joint[1:, 0] = cov_xy[i]
        joint[1:, 1:] = cov_y
        brute = 0.5 * (
            torch.log(cov_x[i, i]) + torch.logdet(cov_y) - torch.logdet(joint)
        )  # I(X_i; Y) = H(X_i) + H(Y) - H(X_i, Y)
        assert float(got[i]) == pytest.approx(float(brute), rel=1e-10)


def test_independence_objective_is_tc_x_minus_tc_x_given_y_minus_tc_y():
    x, v = _data(p=5, m=3, seed=3)
    cov_x, cov_xy, cov_y = _joint(x, v)
    cov_x_given_y = cov_x - cov_xy @ torch.linalg.solve(cov_y, cov_xy.T)
    brute = total_correlation(cov_x) - total_correlation(cov_x_given_y) - total_correlation(cov_y)
    got = minsyn_objective(signal_moments(x, x @ v.T), synergy_weight=0.0)
    assert float(got) == pytest.approx(float(brute), rel=1e-10)


def test_minsyn_weight_one_is_the_corex_bound_and_weights_interpolate():
    x, v = _data(seed=5)
    moments = signal_moments(x, x @ v.T)
    assert float(minsyn_objective(moments, 1.0)) == pytest.approx(float(moments.tc), rel=1e-12)
    synergy = ci_synergy(moments).sum()
    for lam in (0.0, 0.3, 1.0):
        expected = minsyn_objective(moments, 0.0) - lam * synergy
        assert float(minsyn_objective(moments, lam)) == pytest.approx(float(expected), rel=1e-12)


def test_ci_bound_is_below_exact_and_tight_for_one_factor():
    x, v = _data(m=1, seed=7)
    one = signal_moments(x, x @ v.T)
    torch.testing.assert_close(
        ci_information_bound(one), exact_information(one), rtol=1e-10, atol=1e-12
    )
    x, v = _data(m=4, seed=8)
    many = signal_moments(x, x @ v.T)
    assert bool((ci_synergy(many) >= -1e-12).all())
    assert float(ci_synergy(many).max()) > 1e-4


def test_synergistic_factors_have_synergy_and_separate_ones_none():
    """x_1 read from (x_1 + z, z) is synergistic; (x_1, x_2) from one factor each is not."""
    gen = torch.Generator().manual_seed(11)
    n = 20000
    raw = torch.randn(n, 3, generator=gen, dtype=F64)  # x_1, x_2, nuisance z
    x = standardize_columns(raw[:, :2])
    big = 30.0  # nearly noise-free factors
    synergistic = torch.stack([big * (raw[:, 0] + 3 * raw[:, 2]), big * raw[:, 2]], 1)
    separate = torch.stack([big * raw[:, 0], big * raw[:, 1]], 1)
    syn = ci_synergy(signal_moments(x, synergistic))
    sep = ci_synergy(signal_moments(x, separate))
    # the pair knows x_1 almost exactly, the CI decoder only what the first factor alone gives
    assert float(exact_information(signal_moments(x, synergistic))[0]) > 2.0
    assert float(syn[0]) > 1.8, float(syn[0])
    assert float(sep.abs().max()) < 1e-3


def test_standardize_columns_zeroes_constant_columns():
    x = torch.tensor([[1.0, 5.0], [3.0, 5.0], [5.0, 5.0]], dtype=F64)
    z = standardize_columns(x)
    assert torch.all(z[:, 1] == 0)
    assert float(z[:, 0].pow(2).mean()) == pytest.approx(1.0)
    v = torch.tensor([[0.3, 0.7]], dtype=F64)
    assert math.isfinite(float(minsyn_objective(signal_moments(z, z @ v.T), 0.0)))
    np.testing.assert_allclose(z[:, 0].numpy(), [-math.sqrt(1.5), 0.0, math.sqrt(1.5)])
