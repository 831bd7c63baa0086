import threading

import numpy as np
import pytest
import torch

from lit_info.info.corex import (
    RowSpace,
    conditional_mean_weights,
    corex_moments,
    factor_information,
    factor_tcs,
    fit_row_space,
    initial_coefs,
    moments_covariance,
    row_space,
    row_space_moments,
    row_space_objective,
    variable_factor_mis,
)


def _standardized(n: int, p: int, seed: int) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 2))
    x = z[:, [0] * (p // 2) + [1] * (p - p // 2)] + rng.normal(size=(n, p))
    x = (x - x.mean(0)) / x.std(0)
    return torch.tensor(x)


def _valid_weights(x: torch.Tensor, m: int, seed: int, eps: float) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(m, x.shape[1], generator=gen, dtype=torch.float64)
    cov = (1 - eps**2) * (x.T @ x) / x.shape[0] + eps**2 * torch.eye(x.shape[1])
    u = ((w @ cov) * w).sum(1)
    return w * (0.7 / u.sqrt())[:, None]  # u_j = 0.49


def _dense_objective(x: torch.Tensor, w: torch.Tensor, eps: float) -> float:
    """TC bound from explicit covariances of (x_eps, y): -1/2 sum log MSE + 1/2 sum log(1-u)."""
    n, p = x.shape
    c = (1 - eps**2) * (x.T @ x) / n + eps**2 * torch.eye(p, dtype=x.dtype)
    u = torch.diagonal(w @ c @ w.T)
    cov_yx = w @ c  # m x p
    cov_y = w @ c @ w.T + torch.diag(1 - u)
    total = 0.0
    for i in range(p):
        rho = cov_yx[:, i]  # Var y = Var x_i = 1
        a = rho / (1 - rho**2)
        k = a / (1 + (rho * a).sum())
        mse = c[i, i] - 2 * k @ cov_yx[:, i] + k @ cov_y @ k
        total += -0.5 * float(torch.log(mse))
    return total + 0.5 * float(torch.log1p(-u).sum())


@pytest.mark.parametrize("eps", [0.0, 0.36])
def test_objective_equals_dense_formula(eps):
    x = _standardized(50, 7, 0)
    w = _valid_weights(x, 3, 1, eps)
    moments = corex_moments(x, w, eps)
    assert float(moments.tc) == pytest.approx(_dense_objective(x, w, eps), rel=1e-12)
    c = (1 - eps**2) * (x.T @ x) / 50 + eps**2 * torch.eye(7, dtype=x.dtype)
    assert torch.allclose(moments.u, torch.diagonal(w @ c @ w.T), rtol=1e-13)
    assert torch.allclose(moments.rho, w @ c, rtol=1e-12)


def test_objective_matches_monte_carlo_over_the_noise():
    """Sample the annealing noise and the factor noise; the predictor's MSE gives the bound."""
    eps = 0.5
    x = _standardized(40, 5, 2)
    w = _valid_weights(x, 2, 3, eps)
    moments = corex_moments(x, w, eps)
    gen = torch.Generator().manual_seed(0)
    draws = 4000
    xe = (1 - eps**2) ** 0.5 * x.repeat(draws, 1) + eps * torch.randn(
        40 * draws, 5, generator=gen, dtype=torch.float64
    )
    y = xe @ w.T + (1 - moments.u).sqrt() * torch.randn(
        40 * draws, 2, generator=gen, dtype=torch.float64
    )
    rho = moments.rho
    a = rho / (1 - rho**2)
    k = a / (1 + moments.s)
    mse = ((xe - y @ k) ** 2).mean(0)
    closed = (1 + moments.q_minus_s2) / (1 + moments.s) ** 2
    # sampling error of an MSE over 160,000 draws is about 0.4 %
    assert torch.allclose(mse, closed, rtol=1.5e-2)
    mc = -0.5 * torch.log(mse).sum() + 0.5 * torch.log1p(-moments.u).sum()
    assert float(mc) == pytest.approx(float(moments.tc), abs=0.02)
    # the sampled moments agree with the closed form too
    assert torch.allclose((y * y).mean(0), torch.ones(2, dtype=torch.float64), atol=2e-2)
    assert torch.allclose((xe.T @ y / len(y)).T, rho, atol=2e-2)


def test_free_parametrization_and_row_space_give_the_same_moments():
    x = _standardized(12, 30, 4)  # n < p: a proper row space
    space = row_space(x)
    assert space.rank == 11  # centering removes one direction
    gen = torch.Generator().manual_seed(5)
    coefs = 0.4 * torch.randn(4, space.rank, generator=gen, dtype=torch.float64)
    for eps in (0.0, 0.6):
        v = space.weights(coefs, eps)
        free = corex_moments(x, v, eps, free=True)
        assert bool((free.u < 1).all())
        w = free.weights
        direct = corex_moments(x, w, eps)
        assert torch.allclose(direct.tc, free.tc, rtol=1e-12)
        rs = row_space_moments(coefs, space, eps, with_weights=True)
        assert torch.allclose(rs.tc, free.tc, rtol=1e-11)
        assert torch.allclose(rs.rho, free.rho, rtol=1e-10, atol=1e-13)
        assert torch.allclose(rs.weights, w, rtol=1e-10, atol=1e-13)
    # more samples than variables: the p x p route
    tall = _standardized(60, 6, 6)
    space = row_space(tall)
    assert space.rank == 6
    coefs = 0.3 * torch.randn(2, 6, generator=gen, dtype=torch.float64)
    assert torch.allclose(
        row_space_moments(coefs, space, 0.2).tc,
        corex_moments(tall, space.weights(coefs, 0.2), 0.2, free=True).tc,
        rtol=1e-11,
    )


def test_observed_counts_divide_the_cross_moments():
    x = _standardized(20, 8, 7)
    observed = torch.linspace(0.5, 1.0, 8, dtype=torch.float64)
    space = row_space(x)
    coefs = 0.3 * torch.randn(
        3, space.rank, generator=torch.Generator().manual_seed(8), dtype=torch.float64
    )
    v = space.weights(coefs, 0.3)
    ref = corex_moments(x, v, 0.3, free=True, observed=observed)
    got = row_space_moments(coefs, space, 0.3, observed=observed)
    assert torch.allclose(got.tc, ref.tc, rtol=1e-11)
    plain = corex_moments(x, v, 0.3, free=True)
    w = plain.weights
    rho = 0.91 * (x.T @ (x @ w.T) / 20).T / observed + 0.09 * w
    assert torch.allclose(ref.rho, rho, rtol=1e-11)


def test_batched_periods_equal_separate_weighted_fits():
    rng = np.random.default_rng(9)
    raw = torch.tensor(rng.normal(size=(30, 6)) * [1, 2, 3, 1, 2, 3] + 5)
    weights = torch.tensor(rng.random((2, 30)))
    weights = weights / weights.sum(1, keepdim=True)
    mean = weights @ raw
    var = torch.stack([(weights[t] @ (raw - mean[t]) ** 2) for t in range(2)])
    scale = var.sqrt()
    w = torch.tensor(rng.normal(size=(2, 3, 6))) * 0.2
    batched = corex_moments(raw, w, 0.4, free=True, sample_weights=weights, mean=mean, scale=scale)
    for t in range(2):
        xs = (raw - mean[t]) / scale[t]
        single = corex_moments(xs, w[t], 0.4, free=True, sample_weights=weights[t])
        assert torch.allclose(batched.tc[t], single.tc, rtol=1e-12)
        assert torch.allclose(batched.rho[t], single.rho, rtol=1e-11)


def test_derived_quantities():
    x = _standardized(80, 6, 10)
    w = _valid_weights(x, 2, 11, 0.0)
    moments = corex_moments(x, w)
    mis = variable_factor_mis(moments)
    assert torch.allclose(mis, -0.5 * torch.log(1 - moments.rho**2))
    assert torch.allclose(factor_information(moments), -0.5 * torch.log(1 - moments.u))
    assert torch.allclose(factor_tcs(moments), mis.sum(1) - factor_information(moments))
    cov = moments_covariance(moments).dense()
    assert torch.allclose(cov.diagonal(), torch.ones(6, dtype=torch.float64))
    assert float(torch.linalg.eigvalsh(cov).min()) > 0
    a = moments.rho / (1 - moments.rho**2)
    z = a / (1 + moments.s)
    off = z.T @ z
    mask = ~torch.eye(6, dtype=torch.bool)
    assert torch.allclose(cov[mask], off[mask])
    # E[x | y] from the joint Gaussian of (x, y) with the model's moments
    b = conditional_mean_weights(moments)
    gen = torch.Generator().manual_seed(12)
    xs = x.repeat(500, 1)
    y = xs @ w.T + (1 - moments.u).sqrt() * torch.randn(len(xs), 2, generator=gen, dtype=x.dtype)
    regression = torch.linalg.lstsq(y, xs).solution.T  # least-squares E[x | y]
    assert torch.allclose(b, regression, atol=0.02)


@pytest.mark.parametrize("eps", [0.0, 0.6])
@pytest.mark.parametrize("n_factors", [5, 20])  # 20 > the rank 14: more factors than samples
def test_closed_form_gradient_equals_autograd(eps, n_factors):
    x = _standardized(15, 40, 13)
    space = row_space(x)
    gen = torch.Generator().manual_seed(14)
    coefs = 0.5 * torch.randn(n_factors, space.rank, generator=gen, dtype=torch.float64)
    coefs.requires_grad_()
    moments = row_space_moments(coefs, space, eps)
    (auto,) = torch.autograd.grad(moments.tc, coefs)
    value, grad = row_space_objective(coefs.detach(), space, eps)
    assert float(value) == pytest.approx(float(moments.tc.detach()), rel=1e-13)
    assert torch.allclose(grad, auto, rtol=1e-10, atol=1e-13)


class _ThreadAllReduce:
    """An all-reduce (sum) between threads, standing in for processes with sharded columns."""

    def __init__(self, world: int) -> None:
        self.barrier = threading.Barrier(world)
        self.slots: list[torch.Tensor | None] = [None] * world

    def for_rank(self, rank: int):
        def reduce(value: torch.Tensor) -> torch.Tensor:
            self.slots[rank] = value
            self.barrier.wait()
            total = sum(self.slots[1:], self.slots[0])  # the same order on every rank
            self.barrier.wait()
            return total

        return reduce


def test_variable_shards_with_an_all_reduce_give_the_unsharded_objective_and_fit():
    x = _standardized(12, 30, 21)
    space = row_space(x)
    coefs = initial_coefs(6, space.rank, torch.Generator().manual_seed(3), x.dtype, "cpu")
    shards = [
        RowSpace(space.phi_t[:, :13], space.lam, 12),
        RowSpace(space.phi_t[:, 13:], space.lam, 12),
    ]
    full_value, full_grad = row_space_objective(coefs, space, 0.3)
    full_fit = fit_row_space(space, coefs, anneal_dtype=torch.float32)
    comm = _ThreadAllReduce(2)
    out: dict[int, tuple] = {}

    def rank_main(rank: int) -> None:
        reduce = comm.for_rank(rank)
        value, grad = row_space_objective(coefs, shards[rank], 0.3, reduce=reduce)
        fit = fit_row_space(shards[rank], coefs, anneal_dtype=torch.float32, reduce=reduce)
        out[rank] = (value, grad, fit)

    threads = [threading.Thread(target=rank_main, args=(rank,)) for rank in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert sorted(out) == [0, 1]
    for value, grad, fit in out.values():
        assert float(value) == pytest.approx(float(full_value), rel=1e-13)
        assert torch.allclose(grad, full_grad, rtol=1e-10, atol=1e-13)
        # the sums run in another order (float32 while annealing): the paths part by rounding,
        # and both stop within the tolerance (1e-5 per iteration) of the same optimum
        assert fit.tc == pytest.approx(full_fit.tc, abs=1e-4)
    assert torch.equal(out[0][2].coefs, out[1][2].coefs)  # every rank took the same steps
