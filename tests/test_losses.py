import math

import numpy as np
import pytest
import torch
from scipy import stats

from lit_info.losses import (
    LOSS_NAMES,
    add_logit_gradient_noise,
    cross_entropy,
    dmi_loss,
    estimate_transition_matrix,
    forward_corrected_ce,
    gce_loss,
    mae_loss,
    make_loss,
    mse_loss,
)


def np_softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(17, 5, generator=g, dtype=torch.float64) * 2
    targets = torch.randint(0, 5, (17,), generator=g)
    return logits, targets


def test_cross_entropy_matches_numpy(batch):
    logits, y = batch
    p = np_softmax(logits.numpy())
    expected = np.mean([-math.log(p[i, y[i]]) for i in range(len(y))])
    assert cross_entropy(logits, y).item() == pytest.approx(expected, rel=1e-10)


def test_mae_loop(batch):
    logits, y = batch
    p = np_softmax(logits.numpy())
    per = []
    for i in range(len(y)):
        onehot = np.zeros(5)
        onehot[y[i]] = 1
        per.append(sum(abs(p[i, j] - onehot[j]) for j in range(5)))
    assert mae_loss(logits, y).item() == pytest.approx(np.mean(per), rel=1e-10)
    assert np.allclose(per, 2 * (1 - p[np.arange(len(y)), y.numpy()]))


def test_mse_loop(batch):
    logits, y = batch
    p = np_softmax(logits.numpy())
    per = [sum((p[i, j] - float(j == y[i])) ** 2 for j in range(5)) for i in range(len(y))]
    assert mse_loss(logits, y).item() == pytest.approx(np.mean(per), rel=1e-10)


def test_gce_formula_and_limits(batch):
    logits, y = batch
    p_y = np_softmax(logits.numpy())[np.arange(len(y)), y.numpy()]
    assert gce_loss(logits, y, q=0.7).item() == pytest.approx(
        np.mean((1 - p_y**0.7) / 0.7), rel=1e-10
    )
    assert gce_loss(logits, y, q=1.0).item() == pytest.approx(np.mean(1 - p_y), rel=1e-10)
    ce = cross_entropy(logits, y).item()
    assert gce_loss(logits, y, q=1e-6).item() == pytest.approx(ce, rel=1e-4)
    # (1 - p^q)/q decreases to -log p as q -> 0
    vals = [gce_loss(logits, y, q=q).item() for q in (1.0, 0.5, 0.1, 0.01)]
    assert all(a < b for a, b in zip(vals, vals[1:], strict=False)) and vals[-1] < ce


def test_gce_gradient_is_weighted_ce_gradient(batch):
    # d/dz (1 - p_y^q)/q = p_y^q * d/dz (-log p_y)  (Zhang & Sabuncu 2018, eq. 6)
    logits, y = batch
    z1 = logits.clone().requires_grad_()
    gce_loss(z1, y, q=0.7).backward()
    z2 = logits.clone().requires_grad_()
    torch.nn.functional.cross_entropy(z2, y, reduction="none").backward(
        torch.ones(len(y), dtype=logits.dtype) / len(y)
    )
    p_y = torch.softmax(logits, 1)[torch.arange(len(y)), y]
    torch.testing.assert_close(z1.grad, z2.grad * (p_y**0.7).unsqueeze(1))


def test_forward_identity_equals_ce(batch):
    logits, y = batch
    z1 = logits.clone().requires_grad_()
    z2 = logits.clone().requires_grad_()
    fw = forward_corrected_ce(z1, y, torch.eye(5, dtype=torch.float64))
    ce = cross_entropy(z2, y)
    fw.backward()
    ce.backward()
    assert fw.item() == pytest.approx(ce.item(), rel=1e-10)
    torch.testing.assert_close(z1.grad, z2.grad)


def test_forward_known_transition_brute_force(batch):
    logits, y = batch
    rng = np.random.default_rng(1)
    t = rng.dirichlet(np.ones(5), size=5) + 2 * np.eye(5)
    t /= t.sum(axis=1, keepdims=True)
    p = np_softmax(logits.numpy())
    per = []
    for n in range(len(y)):
        noisy_y = sum(p[n, i] * t[i, y[n]] for i in range(5))  # P(noisy=y|x)
        per.append(-math.log(noisy_y))
    got = forward_corrected_ce(logits, y, torch.from_numpy(t))
    assert got.item() == pytest.approx(np.mean(per), rel=1e-10)
    # float32 transition with float64 logits works too
    got32 = forward_corrected_ce(logits, y, torch.from_numpy(t).float())
    assert got32.item() == pytest.approx(np.mean(per), rel=1e-5)


def test_forward_zero_column_is_clamped():
    t = torch.eye(3)
    t[:, 2] = 0
    t[2] = torch.tensor([0.5, 0.5, 0.0])
    logits = torch.zeros(2, 3, requires_grad=True)
    loss = forward_corrected_ce(logits, torch.tensor([2, 2]), t)
    assert loss.item() == pytest.approx(-math.log(1e-12), rel=1e-6)
    loss.backward()
    assert torch.isfinite(logits.grad).all()
    with pytest.raises(ValueError, match=r"transition must have shape \(3, 3\)"):
        forward_corrected_ce(logits, torch.tensor([0, 1]), torch.eye(4))


def test_dmi_against_numpy_det():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(64, 4, generator=g, dtype=torch.float64) * 3
    y = torch.randint(0, 4, (64,), generator=g)
    o = np_softmax(logits.numpy())
    yy = np.eye(4)[y.numpy()]
    u = yy.T @ o / 64  # empirical joint P(label, prediction)
    assert np.isclose(u.sum(), 1.0)
    expected = -math.log(abs(np.linalg.det(64 * u)) + 1e-3) + 4 * math.log(64)
    got = dmi_loss(logits, y, num_classes=4)
    assert got.item() == pytest.approx(expected, rel=1e-9)
    # with a well-conditioned U the epsilon is negligible: value is the paper's -log|det U|
    assert got.item() == pytest.approx(-math.log(abs(np.linalg.det(u))), rel=1e-3)
    # a different eps changes the value exactly as documented
    got_eps = dmi_loss(logits, y, num_classes=4, eps=1.0)
    assert got_eps.item() == pytest.approx(
        -math.log(abs(np.linalg.det(64 * u)) + 1.0) + 4 * math.log(64), rel=1e-9
    )


def test_dmi_invariant_to_label_permutation_and_batch_order():
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(40, 3, generator=g, dtype=torch.float64) * 2
    y = torch.randint(0, 3, (40,), generator=g)
    base = dmi_loss(logits, y, 3).item()
    perm_classes = torch.tensor([2, 0, 1])
    assert dmi_loss(logits, perm_classes[y], 3).item() == pytest.approx(base, rel=1e-10)
    order = torch.randperm(40, generator=g)
    assert dmi_loss(logits[order], y[order], 3).item() == pytest.approx(base, rel=1e-10)


def test_dmi_gradient_and_missing_class():
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(12, 3, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 3, (12,), generator=g)
    assert torch.autograd.gradcheck(lambda z: dmi_loss(z, y, 3), (logits,))
    # a class absent from the batch makes U singular: loss = -log(eps) + k log N, finite grad
    y0 = torch.tensor([0, 1] * 6)
    loss = dmi_loss(logits, y0, 3)
    assert loss.item() == pytest.approx(-math.log(1e-3) + 3 * math.log(12), rel=1e-9)
    loss.backward()
    assert torch.isfinite(logits.grad).all()


def test_dmi_errors(batch):
    logits, y = batch
    with pytest.raises(ValueError, match="num_classes=4"):
        dmi_loss(logits, y, 4)
    with pytest.raises(ValueError, match="eps"):
        dmi_loss(logits, y, 5, eps=0.0)


def _synthetic_noisy_posteriors(t: np.ndarray, n: int, anchor_frac: float, seed: int):
    k = t.shape[0]
    rng = np.random.default_rng(seed)
    n_anchor = int(anchor_frac * n)
    anchors = np.repeat(np.eye(k), n_anchor, axis=0)
    mixed = rng.dirichlet(np.ones(k), size=n - k * n_anchor)
    clean = np.concatenate([anchors, mixed])[rng.permutation(n)]
    return torch.from_numpy(clean @ t)


def test_transition_estimator_recovers_known_t():
    t = np.array(
        [
            [0.7, 0.1, 0.1, 0.1],
            [0.2, 0.6, 0.2, 0.0],
            [0.0, 0.1, 0.8, 0.1],
            [0.25, 0.0, 0.0, 0.75],
        ]
    )
    probs = _synthetic_noisy_posteriors(t, n=2000, anchor_frac=0.05, seed=0)
    for q in (0.97, 1.0):
        est = estimate_transition_matrix(probs, quantile=q)
        np.testing.assert_allclose(est.numpy(), t, atol=1e-12)
        np.testing.assert_allclose(est.sum(1).numpy(), 1.0)
    # too few anchors for the 97th percentile: the estimate is pulled off T by mixed points
    sparse = _synthetic_noisy_posteriors(t, n=2000, anchor_frac=0.005, seed=0)
    assert not np.allclose(estimate_transition_matrix(sparse, 0.97).numpy(), t, atol=1e-3)
    np.testing.assert_allclose(estimate_transition_matrix(sparse, 1.0).numpy(), t, atol=1e-12)


def test_transition_estimator_quantile_position():
    # column 0 values 0.0, 0.1, ..., 1.0 in shuffled order; rows are valid distributions
    vals = torch.linspace(0, 1, 11, dtype=torch.float64)[torch.randperm(11)]
    probs = torch.stack([vals, 1 - vals], dim=1)
    assert estimate_transition_matrix(probs, 0.5)[0, 0].item() == pytest.approx(0.5)
    assert estimate_transition_matrix(probs, 0.97)[0, 0].item() == pytest.approx(1.0)  # ceil
    assert estimate_transition_matrix(probs, 0.9)[0, 0].item() == pytest.approx(0.9)
    assert estimate_transition_matrix(probs, 0.0)[0, 0].item() == pytest.approx(0.0)
    assert estimate_transition_matrix(probs, 0.8)[1, 1].item() == pytest.approx(0.8)


def test_transition_estimator_errors():
    with pytest.raises(ValueError, match="quantile"):
        estimate_transition_matrix(torch.full((3, 2), 0.5), 1.5)
    with pytest.raises(ValueError, match="sum to 1"):
        estimate_transition_matrix(torch.ones(3, 2), 0.97)
    with pytest.raises(ValueError, match=r"shape \(N, k\)"):
        estimate_transition_matrix(torch.ones(3), 0.97)


def test_make_loss_dispatch(batch):
    logits, y = batch
    t = torch.full((5, 5), 0.05, dtype=torch.float64) + 0.75 * torch.eye(5, dtype=torch.float64)
    expected = {
        "ce": cross_entropy(logits, y),
        "mae": mae_loss(logits, y),
        "mse": mse_loss(logits, y),
        "gce": gce_loss(logits, y, q=0.3),
        "fw": forward_corrected_ce(logits, y, t),
        "dmi": dmi_loss(logits, y, 5),
    }
    assert set(expected) == set(LOSS_NAMES)
    values = {n: make_loss(n, 5, gce_q=0.3, transition=t)(logits, y).item() for n in LOSS_NAMES}
    assert len(set(values.values())) == len(LOSS_NAMES)  # all different
    for name in LOSS_NAMES:
        assert values[name] == pytest.approx(expected[name].item(), rel=1e-10), name


def test_make_loss_errors():
    with pytest.raises(ValueError, match="unknown loss 'focal'.*ce, mae, mse, gce, fw, dmi"):
        make_loss("focal", 3)
    with pytest.raises(ValueError, match="'fw'.*transition"):
        make_loss("fw", 3)
    with pytest.raises(ValueError, match=r"transition must have shape \(3, 3\)"):
        make_loss("fw", 3, transition=torch.eye(2))
    for q in (0.0, -0.5, 1.5):
        with pytest.raises(ValueError, match=r"q must be in \(0, 1\]"):
            make_loss("gce", 3, gce_q=q)


def test_input_validation():
    with pytest.raises(ValueError, match="targets must lie in"):
        cross_entropy(torch.zeros(2, 3), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="integer"):
        mae_loss(torch.zeros(2, 3), torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"logits must have shape \(N, k\)"):
        mse_loss(torch.zeros(6), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"targets must have shape \(N,\)"):
        mse_loss(torch.zeros(2, 3), torch.tensor([0, 1, 2]))


def _noise_sample(kind: str, scale: float, n: int = 2000, k: int = 100, seed: int = 0):
    g = torch.Generator().manual_seed(123)
    logits = torch.randn(n, k, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, k, (n,), generator=g)
    out = add_logit_gradient_noise(
        logits, kind, scale, generator=torch.Generator().manual_seed(seed)
    )
    assert torch.equal(out.detach(), logits.detach())
    torch.nn.functional.cross_entropy(out, y).backward()
    ref = logits.detach().clone().requires_grad_()
    torch.nn.functional.cross_entropy(ref, y).backward()
    analytic = (torch.softmax(ref.detach(), 1) - torch.nn.functional.one_hot(y, k)) / n
    torch.testing.assert_close(ref.grad, analytic)  # clean gradient is (softmax - onehot) / N
    return (logits.grad - ref.grad).flatten().numpy(), n


@pytest.mark.parametrize("kind", ["gaussian", "laplace"])
def test_gradient_noise_distribution(kind):
    noise, n = _noise_sample(kind, scale=0.5)
    std = 0.5 / n
    assert abs(noise.mean()) < 5 * std / math.sqrt(noise.size)
    assert noise.std() == pytest.approx(std, rel=0.02)
    kurt = stats.kurtosis(noise)  # excess kurtosis: 0 Gaussian, 3 Laplace
    if kind == "gaussian":
        assert abs(kurt) < 0.1
        right, wrong = stats.norm(scale=std), stats.laplace(scale=std / math.sqrt(2))
    else:
        assert 2.5 < kurt < 3.5
        right, wrong = stats.laplace(scale=std / math.sqrt(2)), stats.norm(scale=std)
    sub = noise[:20000]
    assert stats.kstest(sub, right.cdf).pvalue > 1e-3
    assert stats.kstest(sub, wrong.cdf).pvalue < 1e-6


def test_gradient_noise_zero_scale_and_reproducibility():
    noise, _ = _noise_sample("gaussian", scale=0.0, n=50, k=7)
    assert np.all(noise == 0)
    a, _ = _noise_sample("laplace", 1.0, n=50, k=7, seed=1)
    b, _ = _noise_sample("laplace", 1.0, n=50, k=7, seed=1)
    c, _ = _noise_sample("laplace", 1.0, n=50, k=7, seed=2)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_gradient_noise_reaches_parameters():
    # noise on the logit gradient propagates linearly: dW = (clean + noise)^T x
    torch.manual_seed(0)
    lin = torch.nn.Linear(4, 3, bias=False).double()
    x = torch.randn(8, 4, dtype=torch.float64)
    y = torch.randint(0, 3, (8,))
    logits = lin(x)
    logits.retain_grad()
    noisy = add_logit_gradient_noise(logits, "gaussian", 2.0)
    torch.nn.functional.cross_entropy(noisy, y).backward()
    torch.testing.assert_close(lin.weight.grad, logits.grad.T @ x)
    clean = (torch.softmax(logits.detach(), 1) - torch.nn.functional.one_hot(y, 3)) / 8
    assert not torch.allclose(logits.grad, clean)


def test_gradient_noise_errors():
    z = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="kind"):
        add_logit_gradient_noise(z, "uniform", 1.0)
    with pytest.raises(ValueError, match="scale"):
        add_logit_gradient_noise(z, "gaussian", -1.0)
    with pytest.raises(ValueError, match="scale"):
        add_logit_gradient_noise(z, "gaussian", float("nan"))
