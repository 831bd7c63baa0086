import math

import pytest
import torch

from lit_info.info import (
    empirical_ntk,
    linearized_gd,
    linearized_weights,
    predict,
    reference_coefficients,
    spectral_filter,
    train_coefficients,
)

F64 = torch.float64


def _problem(n: int, k: int, p: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    jac = torch.randn(n, k, p, generator=gen, dtype=F64) / math.sqrt(p)
    jac_test = torch.randn(4, k, p, generator=gen, dtype=F64) / math.sqrt(p)
    f0 = torch.randn(n, k, generator=gen, dtype=F64) * 0.3
    y = (
        torch.nn.functional.one_hot(torch.arange(n) % k, k).to(F64)
        if k > 1
        else ((torch.arange(n, dtype=F64) % 2)[:, None] * 2 - 1)
    )
    return jac, jac_test, f0, y


# (n, k, p): over-parameterized (Theta invertible) and under-parameterized (Theta singular)
SHAPES = [(6, 1, 20), (5, 3, 40), (6, 3, 8)]


@pytest.mark.parametrize("n, k, p", SHAPES)
@pytest.mark.parametrize("lam", [0.0, 0.05])
def test_discrete_closed_form_equals_explicit_gd(n, k, p, lam):
    jac, jac_test, f0, y = _problem(n, k, p)
    theta = empirical_ntk(jac)
    eta, steps = 0.7, 60
    beta = train_coefficients(theta, f0 - y, eta=eta, t=steps, lam=lam, mode="discrete")
    u = linearized_gd(jac, f0 - y, eta=eta, steps=steps, lam=lam)
    torch.testing.assert_close(linearized_weights(jac, beta), u, rtol=0, atol=1e-8)
    w0 = torch.randn(p, dtype=F64)
    torch.testing.assert_close(linearized_weights(jac, beta, w0), w0 + u, rtol=0, atol=1e-8)
    # predictions on train and test inputs
    f0_test = torch.randn(4, k, dtype=F64)
    pred_test = predict(empirical_ntk(jac_test, jac), beta, f0_test)
    torch.testing.assert_close(pred_test, f0_test + jac_test @ u, rtol=0, atol=1e-8)
    pred_train = predict(theta, beta, f0)
    torch.testing.assert_close(pred_train, f0 + jac @ u, rtol=0, atol=1e-8)
    # the training loss decreased
    assert ((pred_train - y) ** 2).sum() < ((f0 - y) ** 2).sum()


@pytest.mark.parametrize("mode, t", [("discrete", 37), ("continuous", 5.5), ("infinite", None)])
@pytest.mark.parametrize("lam", [0.0, 0.1])
def test_eigh_closed_form_equals_reference(mode, t, lam):
    jac, _, f0, y = _problem(5, 3, 40, seed=2)
    theta = empirical_ntk(jac)
    args = dict(eta=0.5, t=t, lam=lam, mode=mode)
    torch.testing.assert_close(
        train_coefficients(theta, f0 - y, **args),
        reference_coefficients(theta, f0 - y, **args),
        rtol=0,
        atol=1e-10,
    )


@pytest.mark.parametrize("k", [1, 3])
def test_continuous_is_limit_of_small_steps(k):
    jac, _, f0, y = _problem(5, k, 30, seed=3)
    theta = empirical_ntk(jac)
    eta, t = 0.5, 8.0
    cont = train_coefficients(theta, f0 - y, eta=eta, t=t, lam=0.02, mode="continuous")
    errors = []
    for refine in (10, 100):
        disc = train_coefficients(
            theta, f0 - y, eta=eta / refine, t=int(t * refine), lam=0.02, mode="discrete"
        )
        errors.append((disc - cont).abs().max().item())
    assert errors[1] < 1e-3 * cont.abs().max()
    assert errors[1] < errors[0] / 5  # first-order convergence


@pytest.mark.parametrize("lam", [0.0, 0.05])
def test_infinite_time_is_limit_of_long_training(lam):
    jac, _, f0, y = _problem(5, 3, 40, seed=4)
    theta = empirical_ntk(jac)
    inf = train_coefficients(theta, f0 - y, eta=None, t=math.inf, lam=lam)
    for mode, t in (("discrete", 20000), ("continuous", 20000.0)):
        long = train_coefficients(theta, f0 - y, eta=1.0, t=t, lam=lam, mode=mode)
        torch.testing.assert_close(long, inf, rtol=0, atol=1e-8)
    # ridge solution in weight space
    r = (f0 - y).reshape(-1)
    m, p = 5, jac.shape[2]
    jf = jac.reshape(-1, p)
    if lam > 0:
        u = -torch.linalg.solve(jf.T @ jf / m + lam * torch.eye(p, dtype=F64), jf.T @ r / m)
    else:  # interpolation with minimum norm
        u = -torch.linalg.pinv(jf) @ r
    torch.testing.assert_close(linearized_weights(jac, inf), u, rtol=0, atol=1e-8)


def test_infinite_time_singular_kernel_is_minimum_norm_least_squares():
    jac, _, f0, y = _problem(6, 3, 8, seed=5)  # 18 outputs, 8 parameters: Theta singular
    theta = empirical_ntk(jac)
    beta = train_coefficients(theta, f0 - y, eta=None, t=None, lam=0.0)
    jf = jac.reshape(-1, 8)
    u_ls = torch.linalg.lstsq(jf, -(f0 - y).reshape(-1, 1)).solution[:, 0]
    torch.testing.assert_close(linearized_weights(jac, beta), u_ls, rtol=0, atol=1e-8)
    # GD converges to the same weights
    u = linearized_gd(jac, f0 - y, eta=1.0, steps=4000)
    torch.testing.assert_close(u, u_ls, rtol=0, atol=1e-8)


def test_spectral_filter_values():
    a = torch.tensor([0.0, 1e-300, 1e-12, 0.3, 1.5, 3.0], dtype=F64)
    eta, t = 0.9, 25
    h = spectral_filter(a, eta, t, "discrete")
    assert torch.isfinite(h).all()
    assert h[0] == eta * t and abs(h[1] - eta * t) < 1e-12
    torch.testing.assert_close(h[2], torch.tensor(eta * t, dtype=F64), rtol=1e-9, atol=0)
    for j in (3, 4, 5):  # 1 - eta a < 0 for the last two (oscillating / diverging GD)
        expected = (1 - (1 - eta * a[j].item()) ** t) / a[j].item()
        assert math.isclose(h[j].item(), expected, rel_tol=1e-12)
    hc = spectral_filter(a, eta, 4.0, "continuous")
    assert hc[0] == eta * 4.0
    assert math.isclose(hc[3].item(), (1 - math.exp(-eta * 4 * 0.3)) / 0.3, rel_tol=1e-12)
    hi = spectral_filter(a, None, math.inf, "discrete")  # t = inf selects the infinite mode
    assert hi[0] == 0 and hi[1] == 0  # below rcond: pseudo-inverse
    torch.testing.assert_close(hi[2:], 1 / a[2:])
    hi = spectral_filter(a, None, None, "infinite", rcond=1e-6)
    assert hi[2] == 0 and hi[3] == 1 / a[3]
    assert torch.equal(spectral_filter(a, eta, 0, "discrete"), torch.zeros_like(a))


def test_bad_arguments():
    jac, _, f0, y = _problem(4, 2, 10)
    theta = empirical_ntk(jac)
    r = f0 - y
    with pytest.raises(ValueError, match="mode"):
        train_coefficients(theta, r, eta=0.1, t=3, mode="euler")
    with pytest.raises(ValueError, match="eta"):
        train_coefficients(theta, r, eta=0.0, t=3)
    with pytest.raises(ValueError, match="integer"):
        train_coefficients(theta, r, eta=0.1, t=2.5, mode="discrete")
    with pytest.raises(ValueError, match="t must"):
        train_coefficients(theta, r, eta=0.1, t=-1.0, mode="continuous")
    with pytest.raises(ValueError, match="lam"):
        train_coefficients(theta, r, eta=0.1, t=3, lam=-1.0)
    with pytest.raises(ValueError, match="residual0"):
        train_coefficients(theta, r[:3], eta=0.1, t=3)
    with pytest.raises(ValueError, match="theta"):
        train_coefficients(theta[:, :5], r, eta=0.1, t=3)
    with pytest.raises(ValueError, match="non-finite"):
        train_coefficients(theta * float("nan"), r, eta=0.1, t=3)
    with pytest.raises(ValueError, match="do not match"):
        predict(theta, torch.zeros(5, dtype=F64), f0)
    with pytest.raises(ValueError, match="w0"):
        linearized_weights(jac, torch.zeros(8, dtype=F64), torch.zeros(3))
