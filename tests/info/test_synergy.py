"""Gaussian synergy measures against numerical integration, Monte Carlo and identities."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from lit_info.info.synergy import (
    ci_information,
    ci_prediction,
    conditional_total_correlation,
    imax_synergy,
    mutual_information,
    pairwise_mutual_information,
    total_correlation,
    whole_minus_sum_synergy,
)


def joint(p: int = 3, m: int = 2, seed: int = 0) -> torch.Tensor:
    """A random joint covariance of (X_1..X_p, Y_1..Y_m), float64."""
    generator = torch.Generator().manual_seed(seed)
    a = torch.randn(p + m, p + m, generator=generator, dtype=torch.float64)
    return a @ a.T + 0.5 * torch.eye(p + m, dtype=torch.float64)


def parts(cov: torch.Tensor, p: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return cov[p:, p:], cov[:p, p:], torch.diagonal(cov)[:p]


def log_density(points: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """log N(points; 0, cov) for (n, d) points."""
    d = cov.shape[0]
    inverse = np.linalg.inv(cov)
    quadratic = np.einsum("ni,ij,nj->n", points, inverse, points)
    return -0.5 * (quadratic + np.linalg.slogdet(cov)[1] + d * math.log(2 * math.pi))


def gauss_hermite_expectation(function, cov: np.ndarray, order: int = 12) -> float:
    """E[function(Z)] for Z ~ N(0, cov) by tensor-product Gauss-Hermite quadrature."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(order)
    weights = weights / math.sqrt(2 * math.pi)
    d = cov.shape[0]
    chol = np.linalg.cholesky(cov)
    grid = np.array(list(itertools.product(nodes, repeat=d)))
    w = np.prod(np.array(list(itertools.product(weights, repeat=d))), axis=1)
    return float((w * function(grid @ chol.T)).sum())


def test_information_measures_equal_numerical_integration():
    p, m = 3, 2
    cov = joint(p, m)
    cov_y, cross, var_x = parts(cov, p)
    c = cov.numpy()
    for i in range(p):
        idx = [i, p, p + 1]  # (X_i, Y_1, Y_2)
        sub = c[np.ix_(idx, idx)]

        def mi(z, sub=sub):
            return (
                log_density(z, sub)
                - log_density(z[:, :1], sub[:1, :1])
                - log_density(z[:, 1:], sub[1:, 1:])
            )

        integral = gauss_hermite_expectation(mi, sub)
        assert float(mutual_information(cov_y, cross, var_x)[i]) == pytest.approx(
            integral, rel=1e-9
        )

        def tc_given(z, sub=sub):
            # log p(y | x) - sum_j log p(y_j | x): the conditional TC's integrand
            joint_x = log_density(z, sub)
            pairs = [log_density(z[:, [0, k]], sub[np.ix_([0, k], [0, k])]) for k in (1, 2)]
            x_only = log_density(z[:, :1], sub[:1, :1])
            return (joint_x - x_only) - sum(pair - x_only for pair in pairs)

        integral = gauss_hermite_expectation(tc_given, sub)
        assert float(conditional_total_correlation(cov_y, cross, var_x)[i]) == pytest.approx(
            integral, rel=1e-9
        )
        for j in range(m):
            pair = c[np.ix_([i, p + j], [i, p + j])]

            def mi_pair(z, pair=pair):
                return (
                    log_density(z, pair)
                    - log_density(z[:, :1], pair[:1, :1])
                    - log_density(z[:, 1:], pair[1:, 1:])
                )

            integral = gauss_hermite_expectation(mi_pair, pair, order=20)
            assert float(pairwise_mutual_information(cov_y, cross, var_x)[i, j]) == pytest.approx(
                integral, rel=1e-9
            )
    y_cov = c[p:, p:]
    integral = gauss_hermite_expectation(
        lambda z: (
            log_density(z, y_cov)
            - sum(log_density(z[:, [k]], y_cov[k : k + 1, k : k + 1]) for k in range(m))
        ),
        y_cov,
    )
    assert float(total_correlation(cov_y)) == pytest.approx(integral, rel=1e-9)


def test_information_measures_equal_monte_carlo():
    # E[log p(x, y) / (p(x) p(y))] over 16 M samples (in chunks): standard error < 5e-4 relative
    p, m = 2, 3
    cov = joint(p, m, seed=1)
    cov_y, cross, var_x = parts(cov, p)
    c = cov.numpy()
    chol = torch.linalg.cholesky(cov)
    generator = torch.Generator().manual_seed(7)
    sums = np.zeros((p, 2))
    n = 0
    for _ in range(8):
        z = (
            torch.randn(2_000_000, p + m, generator=generator, dtype=torch.float64) @ chol.T
        ).numpy()
        n += len(z)
        for i in range(p):
            idx = [i, *range(p, p + m)]
            sub = c[np.ix_(idx, idx)]
            values = (
                log_density(z[:, idx], sub)
                - log_density(z[:, [i]], sub[:1, :1])
                - log_density(z[:, p:], sub[1:, 1:])
            )
            sums[i] += values.sum(), (values**2).sum()
    for i in range(p):
        estimate = sums[i, 0] / n
        error = math.sqrt(sums[i, 1] / n - estimate**2) / math.sqrt(n)
        closed = float(mutual_information(cov_y, cross, var_x)[i])
        assert error < 5e-4 * closed
        assert closed == pytest.approx(estimate, rel=1e-3)


def test_synergy_identities_and_signs():
    for seed in range(5):
        p, m = 4, 3
        cov_y, cross, var_x = parts(joint(p, m, seed=seed), p)
        wms = whole_minus_sum_synergy(cov_y, cross, var_x)
        torch.testing.assert_close(
            wms,
            conditional_total_correlation(cov_y, cross, var_x) - total_correlation(cov_y),
            rtol=1e-10,
            atol=1e-12,
        )
        assert bool((imax_synergy(cov_y, cross, var_x) >= -1e-12).all())
        assert bool((imax_synergy(cov_y, cross, var_x) >= wms - 1e-12).all())
    # independent factors, each informative about X: redundancy-free, so WMS >= 0 (synergy)
    cov = torch.eye(3, dtype=torch.float64)
    cov[0, 1] = cov[1, 0] = cov[0, 2] = cov[2, 0] = 0.5
    cov_y, cross, var_x = parts(cov, 1)
    assert float(whole_minus_sum_synergy(cov_y, cross, var_x)[0]) > 0
    # two copies of one factor: pure redundancy, WMS = -I(X; Y_1), I_max synergy 0
    cov = torch.tensor(
        [[1.0, 0.6, 0.6], [0.6, 1.0, 1 - 1e-9], [0.6, 1 - 1e-9, 1.0]], dtype=torch.float64
    )
    cov_y, cross, var_x = parts(cov, 1)
    single = float(pairwise_mutual_information(cov_y, cross, var_x)[0, 0])
    assert float(whole_minus_sum_synergy(cov_y, cross, var_x)[0]) == pytest.approx(
        -single, rel=1e-4
    )
    assert float(imax_synergy(cov_y, cross, var_x)[0]) == pytest.approx(0.0, abs=1e-6)


def test_ci_prediction_equals_a_numerical_posterior_and_its_information():
    p, m = 2, 3
    cov = joint(p, m, seed=3)
    cov_y, cross, var_x = parts(cov, p)
    y = torch.tensor([[0.3, -1.2, 0.8], [2.0, 0.1, -0.4]], dtype=torch.float64)
    means, variances = ci_prediction(y, cov_y, cross, var_x)
    grid = np.linspace(-40, 40, 400_001)
    for i in range(p):
        a = (cross[i] / var_x[i]).numpy()
        v = (torch.diagonal(cov_y) - cross[i] ** 2 / var_x[i]).numpy()
        for row in range(2):
            log_post = -0.5 * grid**2 / float(var_x[i])
            for j in range(m):
                log_post = log_post - 0.5 * (float(y[row, j]) - a[j] * grid) ** 2 / v[j]
            weights = np.exp(log_post - log_post.max())
            weights /= weights.sum()
            mean = (weights * grid).sum()
            assert float(means[row, i]) == pytest.approx(mean, rel=1e-8, abs=1e-10)
            assert float(variances[i]) == pytest.approx(
                (weights * (grid - mean) ** 2).sum(), rel=1e-6
            )
    # the information kept: Monte Carlo of the Gaussian I(X_i; T_i) from samples' correlation
    kept = ci_information(cov_y, cross, var_x)
    full = mutual_information(cov_y, cross, var_x)
    assert bool((kept <= full + 1e-12).all())
    generator = torch.Generator().manual_seed(2)
    samples = (
        torch.randn(1_000_000, p + m, generator=generator, dtype=torch.float64)
        @ torch.linalg.cholesky(cov).T
    )
    predicted, _ = ci_prediction(samples[:, p:], cov_y, cross, var_x)
    for i in range(p):
        rho = torch.corrcoef(torch.stack([samples[:, i], predicted[:, i]]))[0, 1]
        assert float(kept[i]) == pytest.approx(float(-0.5 * torch.log1p(-(rho**2))), rel=1e-2)
    # conditionally independent factors: the CI prediction keeps everything
    x_loadings = torch.tensor([0.9, -0.5, 0.3], dtype=torch.float64)
    noise = torch.tensor([0.2, 0.5, 0.7], dtype=torch.float64)
    cov_y = torch.outer(x_loadings, x_loadings) + torch.diag(noise)
    cross, var_x = x_loadings[None, :], torch.ones(1, dtype=torch.float64)
    torch.testing.assert_close(
        ci_information(cov_y, cross, var_x), mutual_information(cov_y, cross, var_x)
    )
