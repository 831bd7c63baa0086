import math

import pytest
import torch
from torch import nn

from lit_info.info import (
    empirical_ntk,
    functional_si,
    leave_one_out_coefficients,
    leave_one_out_differences,
    linearized_weights,
    network_jacobian,
    reference_leave_one_out,
    train_coefficients,
    weight_si,
    weight_si_from_jacobian,
)

F64 = torch.float64


def _problem(n: int, k: int, p: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    jac = torch.randn(n, k, p, generator=gen, dtype=F64) / math.sqrt(p)
    jac_val = torch.randn(3, k, p, generator=gen, dtype=F64) / math.sqrt(p)
    f0 = torch.randn(n, k, generator=gen, dtype=F64) * 0.3
    if k > 1:
        y = torch.nn.functional.one_hot(torch.arange(n) % k, k).to(F64)
    else:
        y = (torch.arange(n, dtype=F64) % 2)[:, None] * 2 - 1
    return jac, jac_val, f0 - y


def _gd(jac, r, eta, steps, lam, m):
    """Explicit GD on 1/(2m) sum ||J u + r||^2 + lam/2 ||u||^2 in weight space."""
    jf = jac.reshape(-1, jac.shape[2])
    rf = r.reshape(-1)
    u = torch.zeros(jf.shape[1], dtype=F64)
    for _ in range(steps):
        u = u - eta * (jf.T @ (jf @ u + rf) / m + lam * u)
    return u


def _ridge(jac, r, lam, m):
    jf = jac.reshape(-1, jac.shape[2])
    p = jf.shape[1]
    if lam == 0:
        return -torch.linalg.pinv(jf) @ r.reshape(-1)
    return -torch.linalg.solve(
        jf.T @ jf / m + lam * torch.eye(p, dtype=F64), jf.T @ r.reshape(-1) / m
    )


def _retrain(jac, r, i, eta, t, lam, normalization):
    n = jac.shape[0]
    keep = torch.arange(n) != i
    m = n - 1 if normalization == "remaining" else n
    if t is None:
        return _ridge(jac[keep], r[keep], lam, m)
    return _gd(jac[keep], r[keep], eta, t, lam, m)


@pytest.mark.parametrize("k, p", [(1, 12), (3, 30), (3, 6)])
@pytest.mark.parametrize("lam", [0.0, 0.05])
@pytest.mark.parametrize("normalization", ["remaining", "original"])
def test_discrete_loo_equals_retraining(k, p, lam, normalization):
    n, eta, steps = 5, 0.8, 40
    jac, _, r = _problem(n, k, p, seed=k + p)
    theta = empirical_ntk(jac)
    beta, delta = leave_one_out_differences(
        theta, r, eta=eta, t=steps, lam=lam, loo_normalization=normalization
    )
    u = _gd(jac, r, eta, steps, lam, n)
    torch.testing.assert_close(linearized_weights(jac, beta), u, rtol=0, atol=1e-8)
    loo = leave_one_out_coefficients(
        theta, r, eta=eta, t=steps, lam=lam, loo_normalization=normalization, chunk_size=2
    )
    for i in range(n):
        assert torch.all(loo[i].reshape(n, k)[i] == 0)
        u_i = _retrain(jac, r, i, eta, steps, lam, normalization)
        torch.testing.assert_close(linearized_weights(jac, loo[i]), u_i, rtol=0, atol=1e-8)
        torch.testing.assert_close(linearized_weights(jac, delta[i]), u - u_i, rtol=0, atol=1e-8)


@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("lam", [0.0, 0.1])
def test_infinite_time_loo_schur_eigh_reference_and_ridge_agree(k, lam):
    n, p = 6, 40  # over-parameterized: lam = 0 is min-norm interpolation
    jac, _, r = _problem(n, k, p, seed=7)
    theta = empirical_ntk(jac)
    results = {
        method: leave_one_out_coefficients(theta, r, eta=None, t=math.inf, lam=lam, method=method)
        for method in (["auto", "eigh", "reference"] + (["schur"] if lam > 0 else []))
    }
    for i in range(n):
        u_i = _retrain(jac, r, i, None, None, lam, "remaining")
        for method, loo in results.items():
            torch.testing.assert_close(
                linearized_weights(jac, loo[i]), u_i, rtol=0, atol=1e-8, msg=method
            )


@pytest.mark.parametrize("normalization", ["remaining", "original"])
def test_continuous_loo_equals_reference(normalization):
    n, k = 5, 3
    jac, _, r = _problem(n, k, 20, seed=9)
    theta = empirical_ntk(jac)
    args = dict(eta=0.5, t=7.5, lam=0.02, mode="continuous", loo_normalization=normalization)
    fast = leave_one_out_coefficients(theta, r, **args)
    ref = reference_leave_one_out(theta, r, **args)
    torch.testing.assert_close(fast, ref, rtol=0, atol=1e-10)
    # continuous training = limit of small GD steps
    i = 2
    u_i = _retrain(jac, r, i, 0.5 / 50, int(7.5 * 50), 0.02, normalization)
    err = (linearized_weights(jac, fast[i]) - u_i).abs().max()
    assert err < 2e-3 * u_i.abs().max()


def test_weight_si_kernel_space_equals_materialized():
    n, k, p = 5, 3, 25
    jac, _, r = _problem(n, k, p, seed=11)
    theta = empirical_ntk(jac)
    _, delta = leave_one_out_differences(theta, r, eta=0.6, t=30, lam=0.01)
    dw = torch.stack(
        [
            _gd(jac, r, 0.6, 30, 0.01, n) - _retrain(jac, r, i, 0.6, 30, 0.01, "remaining")
            for i in range(n)
        ]
    )
    expected = (dw**2).sum(dim=1)
    si = weight_si(theta, delta)
    torch.testing.assert_close(si, expected, rtol=1e-8, atol=1e-14)
    assert si.min() > 0
    torch.testing.assert_close(weight_si_from_jacobian(jac, delta), expected, rtol=1e-8, atol=1e-14)
    # Gaussian smoothing: KL(N(w, Sigma) || N(w_-i, Sigma))
    torch.testing.assert_close(
        weight_si(theta, delta, sigma2=0.25), expected / 0.5, rtol=1e-8, atol=0
    )
    torch.testing.assert_close(
        weight_si_from_jacobian(jac, delta, 0.25), expected / 0.5, rtol=1e-8, atol=0
    )
    var = torch.rand(p, dtype=F64, generator=torch.Generator().manual_seed(0)) + 0.1
    kl = torch.stack(
        [
            torch.distributions.kl_divergence(
                torch.distributions.Normal(dw[i], var.sqrt()),
                torch.distributions.Normal(torch.zeros(p, dtype=F64), var.sqrt()),
            ).sum()
            for i in range(n)
        ]
    )
    torch.testing.assert_close(weight_si_from_jacobian(jac, delta, var), kl, rtol=1e-8, atol=1e-14)


@pytest.mark.parametrize("k", [1, 3])
def test_functional_si_equals_retrained_predictions(k):
    n, p = 6, 30
    jac, jac_val, r = _problem(n, k, p, seed=13)
    theta = empirical_ntk(jac)
    _, delta = leave_one_out_differences(theta, r, eta=0.7, t=25, lam=0.0)
    u = _gd(jac, r, 0.7, 25, 0.0, n)
    sigma2 = 0.3
    expected = []
    for i in range(n):
        diff = jac_val @ (u - _retrain(jac, r, i, 0.7, 25, 0.0, "remaining"))  # (v, k)
        expected.append((diff**2).sum(dim=1).mean() / (2 * sigma2))
    fsi = functional_si(empirical_ntk(jac_val, jac), delta, sigma2=sigma2)
    torch.testing.assert_close(fsi, torch.stack(expected), rtol=1e-8, atol=1e-14)


def test_network_end_to_end_with_batchnorm():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2)).double()
    model.train()
    with torch.no_grad():
        model(torch.randn(32, 3, dtype=F64))
    x = torch.randn(5, 3, dtype=F64)
    y = torch.nn.functional.one_hot(torch.tensor([0, 1, 1, 0, 1]), 2).to(F64)
    jac = network_jacobian(model, x)
    model.eval()
    with torch.no_grad():
        f0 = model(x)
    theta = empirical_ntk(jac)
    eta, steps = 0.2, 50
    beta, delta = leave_one_out_differences(theta, f0 - y, eta=eta, t=steps, lam=1e-3)
    torch.testing.assert_close(
        linearized_weights(jac, beta), _gd(jac, f0 - y, eta, steps, 1e-3, 5), rtol=0, atol=1e-8
    )
    si = weight_si(theta, delta)
    u = _gd(jac, f0 - y, eta, steps, 1e-3, 5)
    for i in range(5):
        u_i = _retrain(jac, f0 - y, i, eta, steps, 1e-3, "remaining")
        assert math.isclose(si[i].item(), ((u - u_i) ** 2).sum().item(), rel_tol=1e-7)


def test_chunking_and_methods_consistent():
    jac, _, r = _problem(7, 2, 15, seed=17)
    theta = empirical_ntk(jac)
    base = leave_one_out_coefficients(theta, r, eta=0.3, t=20, lam=0.1)
    for chunk in (1, 3, 100):
        torch.testing.assert_close(
            leave_one_out_coefficients(theta, r, eta=0.3, t=20, lam=0.1, chunk_size=chunk),
            base,
            rtol=0,
            atol=1e-12,
        )
    # the one-output residual may be given as a vector
    jac1, _, r1 = _problem(4, 1, 10)
    theta1 = empirical_ntk(jac1)
    torch.testing.assert_close(
        leave_one_out_coefficients(theta1, r1[:, 0], eta=0.3, t=5),
        leave_one_out_coefficients(theta1, r1, eta=0.3, t=5),
    )


def test_bad_arguments():
    jac, jac_val, r = _problem(4, 2, 10)
    theta = empirical_ntk(jac)
    with pytest.raises(ValueError, match="at least 2"):
        leave_one_out_coefficients(theta[:2, :2], r[:1], eta=0.1, t=3)
    with pytest.raises(ValueError, match="schur"):
        leave_one_out_coefficients(theta, r, eta=0.1, t=3, lam=0.1, method="schur")
    with pytest.raises(ValueError, match="schur"):
        leave_one_out_coefficients(theta, r, eta=None, t=None, lam=0.0, method="schur")
    with pytest.raises(ValueError, match="method"):
        leave_one_out_coefficients(theta, r, eta=0.1, t=3, method="woodbury")
    with pytest.raises(ValueError, match="loo_normalization"):
        leave_one_out_coefficients(theta, r, eta=0.1, t=3, loo_normalization="mean")
    with pytest.raises(ValueError, match="chunk_size"):
        leave_one_out_coefficients(theta, r, eta=0.1, t=3, chunk_size=0)
    with pytest.raises(ValueError, match="residual0"):
        leave_one_out_coefficients(theta, r[:, :1], eta=0.1, t=3)
    _, delta = leave_one_out_differences(theta, r, eta=0.1, t=3)
    with pytest.raises(ValueError, match="delta"):
        weight_si(theta, delta[:, :5])
    with pytest.raises(ValueError, match="sigma2"):
        weight_si(theta, delta, sigma2=0.0)
    with pytest.raises(ValueError, match="sigma2"):
        functional_si(empirical_ntk(jac_val, jac), delta, sigma2=-1.0)
    with pytest.raises(ValueError, match="covariance"):
        weight_si_from_jacobian(jac, delta, torch.ones(3))
    with pytest.raises(ValueError, match="covariance"):
        weight_si_from_jacobian(jac, delta, -torch.ones(10))
    with pytest.raises(ValueError, match="theta_val_train"):
        functional_si(torch.zeros(3, 8), delta)
    assert train_coefficients(theta, r, eta=0.1, t=0).abs().max() == 0
