"""The lean L-BFGS: its compact direction against the two-loop recursion, minima against
closed forms and scipy."""

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from lit_info.info.lbfgs import lbfgs_direction, minimize_lbfgs


def _two_loop(grad, steps, changes, gamma):
    """Nocedal and Wright's Algorithm 7.4, written out: ``-H g``."""
    q = grad.clone()
    alphas = []
    for s, y in zip(reversed(steps), reversed(changes), strict=True):
        alpha = float(s @ q) / float(y @ s)
        q -= alpha * y
        alphas.append(alpha)
    r = gamma * q
    for (s, y), alpha in zip(zip(steps, changes, strict=True), reversed(alphas), strict=True):
        beta = float(y @ r) / float(y @ s)
        r += (alpha - beta) * s
    return -r


@pytest.mark.parametrize("k", [0, 1, 6])
def test_compact_direction_equals_two_loop_recursion(k):
    gen = torch.Generator().manual_seed(k)
    n = 30
    a = torch.randn(n, n, generator=gen, dtype=torch.float64)
    hessian = a @ a.T + n * torch.eye(n, dtype=torch.float64)
    steps = torch.randn(k, n, generator=gen, dtype=torch.float64)
    changes = steps @ hessian  # y = H s: positive curvature
    grad = torch.randn(n, generator=gen, dtype=torch.float64)
    gamma = 0.37
    direct = _two_loop(grad, list(steps), list(changes), gamma)
    assert torch.allclose(lbfgs_direction(grad, steps, changes, gamma), direct, rtol=1e-10)


def test_quadratic_minimum_is_the_linear_solve():
    gen = torch.Generator().manual_seed(3)
    n = 40
    a = torch.randn(n, n, generator=gen, dtype=torch.float64)
    hessian = a @ a.T / n + 0.05 * torch.eye(n, dtype=torch.float64)
    b = torch.randn(n, generator=gen, dtype=torch.float64)
    x0 = torch.zeros(n, dtype=torch.float64)

    def fun(x):
        return 0.5 * x @ hessian @ x - b @ x, hessian @ x - b

    found = minimize_lbfgs(fun, x0, tol=1e-15, max_iter=2000)
    assert found.converged
    assert torch.allclose(found.x, torch.linalg.solve(hessian, b), atol=1e-6)
    assert torch.equal(x0, torch.zeros(n, dtype=torch.float64))  # the start is not modified


def test_rosenbrock_reaches_its_minimum_and_keeps_the_shape():
    def fun(x):
        u, v = x[0, 0], x[0, 1]
        value = (1 - u) ** 2 + 100 * (v - u * u) ** 2
        grad = torch.stack([-2 * (1 - u) - 400 * u * (v - u * u), 200 * (v - u * u)])
        return value, grad.view(1, 2)

    found = minimize_lbfgs(fun, torch.tensor([[-1.2, 1.0]], dtype=torch.float64), tol=1e-14)
    assert found.x.shape == (1, 2)
    assert torch.allclose(found.x, torch.ones(1, 2, dtype=torch.float64), atol=1e-5)
    assert found.n_eval <= 1.25 * found.n_iter + 25


def test_logistic_regression_optimum_equals_scipy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 8))
    y = (x @ rng.normal(size=8) + rng.normal(size=200) > 0).astype(float)
    l2 = 0.1

    def numpy_fun(w):
        z = x @ w
        value = np.logaddexp(0, z).sum() - y @ z + 0.5 * l2 * w @ w
        return value, x.T @ (1 / (1 + np.exp(-z)) - y) + l2 * w

    xt, yt = torch.as_tensor(x), torch.as_tensor(y)

    def fun(w):
        z = xt @ w
        value = torch.nn.functional.softplus(z).sum() - yt @ z + 0.5 * l2 * w @ w
        return value, xt.T @ (torch.sigmoid(z) - yt) + l2 * w

    reference = minimize(numpy_fun, np.zeros(8), jac=True, method="L-BFGS-B", tol=1e-14)
    found = minimize_lbfgs(fun, torch.zeros(8, dtype=torch.float64), tol=1e-13)
    assert found.value == pytest.approx(reference.fun, rel=1e-10)
    assert np.allclose(found.x.numpy(), reference.x, atol=1e-5)


def test_iteration_limit_is_not_convergence():
    def fun(x):
        return (x**4).sum(), 4 * x**3

    start = torch.ones(5, dtype=torch.float64)
    found = minimize_lbfgs(fun, start, tol=1e-300, max_iter=3, max_eval=100)
    assert (found.n_iter, found.converged) == (3, False)
    found = minimize_lbfgs(fun, start, tol=1e-300, max_iter=100, max_eval=4)
    assert found.n_eval == 4 and not found.converged
