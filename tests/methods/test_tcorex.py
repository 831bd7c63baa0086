import numpy as np
import pytest
import torch
from sklearn.base import clone

import lit_info.methods.corex as corex
from lit_info.data.timeseries import modular_model, sample_periods, sudden_change_models
from lit_info.info.corex import corex_moments, moments_covariance, variable_factor_mis
from lit_info.info.tcorex import (
    covariance_difference_penalty,
    difference_penalty,
    implied_factors,
    period_mixing,
    period_moments,
    sample_weights,
    smooth_abs,
    weighted_standardization,
)
from lit_info.methods.corex import LinearCorex, TCorex


def _periods(counts, p, seed, scale_drift=True):
    """Periods of a modular model with different offsets and scales per period."""
    rng = np.random.default_rng(seed)
    model = modular_model(p, 2, rng=seed)
    out = []
    for t, n in enumerate(counts):
        x = model.sample(n, rng)
        if scale_drift:
            x = x * rng.uniform(0.5, 2.0, size=p) + rng.normal(size=p) * (t + 1)
        out.append(x)
    return out


def _direct_weights(counts, gamma):
    """(T, N) weights written out sample by sample."""
    period = np.concatenate([np.full(n, t) for t, n in enumerate(counts)])
    out = np.zeros((len(counts), period.size))
    for t in range(len(counts)):
        for s, ts in enumerate(period):
            if gamma is None:
                out[t, s] = 1.0 if ts == t else 0.0
            else:
                out[t, s] = gamma ** abs(t - ts)
        out[t] /= out[t].sum()
    return out


# ------------------------------------------------------------ T = 1 is linear CorEx


def test_one_period_is_linear_corex():
    model = modular_model(24, 3, rng=0)
    x = model.sample(60, np.random.default_rng(10))
    lin = LinearCorex(3, random_state=0).fit(x)
    cov_lin = lin.get_covariance()
    # L-BFGS as in LinearCorex: the same optimum from the pooled (= linear CorEx) start or
    # from a random one; Adam (the default) gets close.
    for kwargs, rel in (
        ({"optimizer": "lbfgs"}, 1e-4),
        ({"optimizer": "lbfgs", "init": False}, 1e-4),
        ({}, 1e-3),
    ):
        tc = TCorex(3, random_state=0, **kwargs).fit([x])
        assert tc.components_.shape == (1, 3, 24)
        assert tc.tc_[0] == pytest.approx(lin.tc_, rel=rel)
        assert tc.objective_ == pytest.approx(tc.tc_[0], rel=1e-12)  # no penalty with T = 1
        cov_tc = tc.get_covariance()[0]
        assert np.abs(cov_tc - cov_lin).max() <= 20 * rel * np.abs(cov_lin).max()
        np.testing.assert_allclose(tc.mean_[0], x.mean(0), rtol=1e-12)
        np.testing.assert_allclose(tc.scale_[0], x.std(0), rtol=1e-12)
        assert tc.score([x]) == pytest.approx(lin.score(x), rel=10 * rel)


# --------------------------------------------------------- batched weighted objective


@pytest.mark.parametrize("gamma", [None, 0.5, 1.0])
def test_batched_objective_is_sum_of_periods(gamma):
    counts, p, m, eps = [5, 9, 7], 7, 3, 0.3
    periods = _periods(counts, p, seed=1)
    x_all = np.concatenate(periods)
    period = np.concatenate([np.full(n, t) for t, n in enumerate(counts)])
    mixing = period_mixing(np.array(counts), gamma)
    omega = sample_weights(mixing, period)
    direct = _direct_weights(counts, gamma)
    np.testing.assert_allclose(omega, direct, rtol=1e-13, atol=1e-16)
    mean, scale = weighted_standardization(periods, mixing)
    rng = np.random.default_rng(2)
    v = torch.as_tensor(rng.normal(size=(3, m, p)))

    batched = corex_moments(
        torch.as_tensor(x_all),
        v,
        eps,
        free=True,
        sample_weights=torch.as_tensor(omega),
        mean=torch.as_tensor(mean),
        scale=torch.as_tensor(scale),
    )
    for t in range(3):
        w = direct[t]
        mu = w @ x_all
        sd = np.sqrt(w @ (x_all - mu) ** 2)
        np.testing.assert_allclose(mean[t], mu, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(scale[t], sd, rtol=1e-12)
        z = (x_all - mu) / sd
        keep = w > 0
        single = corex_moments(
            torch.as_tensor(z[keep]),
            v[t],
            eps,
            free=True,
            sample_weights=torch.as_tensor(w[keep]),
        )
        np.testing.assert_allclose(batched.tc[t], single.tc, rtol=1e-10)
        np.testing.assert_allclose(batched.rho[t], single.rho, rtol=1e-10, atol=1e-13)
        np.testing.assert_allclose(batched.u[t], single.u, rtol=1e-10)

    # the estimator's objective is the same batched computation minus the penalty
    est = TCorex(m, gamma=gamma, l1=0.2, l2=0.1, max_iter=5, anneal=False, init=False)
    est.fit(periods)
    again = corex_moments(
        torch.as_tensor(x_all),
        torch.as_tensor(est.free_components_),
        0.0,
        free=True,
        sample_weights=torch.as_tensor(omega),
        mean=torch.as_tensor(mean),
        scale=torch.as_tensor(scale),
    )
    np.testing.assert_allclose(est.tc_, again.tc.numpy(), rtol=1e-10)
    d = np.diff(est.free_components_, axis=0)
    penalty = 0.2 * np.abs(d).sum() + 0.1 * (d**2).sum()
    assert est.penalty_ == pytest.approx(penalty, rel=1e-10)
    assert est.objective_ == pytest.approx(est.tc_.sum() - penalty, rel=1e-10)


def test_weighted_standardization_is_stable_for_large_offsets():
    periods = _periods([6, 8, 5], 4, seed=3, scale_drift=False)
    periods = [x + 1e8 * (t + 1) for t, x in enumerate(periods)]
    mixing = period_mixing(np.array([6, 8, 5]), 0.5)
    mean, scale = weighted_standardization(periods, mixing)
    x_all = np.concatenate(periods)
    direct = _direct_weights([6, 8, 5], 0.5)
    for t in range(3):
        mu = direct[t] @ x_all
        np.testing.assert_allclose(mean[t], mu, rtol=1e-12)
        np.testing.assert_allclose(scale[t], np.sqrt(direct[t] @ (x_all - mu) ** 2), rtol=1e-8)


# ----------------------------------------------------------------------- penalties


def test_difference_penalties_against_numpy():
    rng = np.random.default_rng(4)
    mats = rng.normal(size=(4, 3, 6))
    d = np.diff(mats, axis=0)
    got = difference_penalty(torch.as_tensor(mats), 0.7, 0.3)
    assert float(got) == pytest.approx(0.7 * np.abs(d).sum() + 0.3 * (d**2).sum(), rel=1e-12)
    delta = 1e-2
    smooth = np.sqrt(d**2 + delta**2) - delta
    got = difference_penalty(torch.as_tensor(mats), 0.7, 0.0, delta)
    assert float(got) == pytest.approx(0.7 * smooth.sum(), rel=1e-12)
    assert float(smooth_abs(torch.tensor(0.5), 0.0)) == 0.5
    assert float(difference_penalty(torch.as_tensor(mats[:1]), 1.0, 1.0)) == 0.0


@pytest.mark.parametrize("eps", [0.0, 0.36])
def test_mi_and_covariance_penalties_against_dense(eps):
    counts, p, m = [20, 25, 22], 9, 3
    periods = _periods(counts, p, seed=5)
    mixing = period_mixing(np.array(counts), 0.6)
    mean, scale = weighted_standardization(periods, mixing)
    period = np.concatenate([np.full(n, t) for t, n in enumerate(counts)])
    v = torch.as_tensor(np.random.default_rng(6).normal(size=(3, m, p)) * 0.4)
    moments = corex_moments(
        torch.as_tensor(np.concatenate(periods)),
        v,
        eps,
        free=True,
        sample_weights=torch.as_tensor(sample_weights(mixing, period)),
        mean=torch.as_tensor(mean),
        scale=torch.as_tensor(scale),
    )
    rho = moments.rho.numpy()
    mis = -0.5 * np.log1p(-(rho**2))
    np.testing.assert_allclose(variable_factor_mis(moments).numpy(), mis, rtol=1e-12)
    d = np.diff(mis, axis=0)
    got = difference_penalty(variable_factor_mis(moments), 0.5, 2.0)
    assert float(got) == pytest.approx(0.5 * np.abs(d).sum() + 2.0 * (d**2).sum(), rel=1e-10)

    dense = [moments_covariance(period_moments(moments, t)).dense().numpy() for t in range(3)]
    for sigma in dense:
        np.testing.assert_allclose(np.diag(sigma), 1.0, rtol=1e-12)
    expected = sum(((dense[t + 1] - dense[t]) ** 2).sum() for t in range(2))
    got = covariance_difference_penalty(implied_factors(moments))
    assert float(got) == pytest.approx(expected, rel=1e-10)


def _roughness(est, reg_type):
    """sum_t ||M_{t+1} - M_t||_F^2 of the matrices that reg_type compares."""
    if reg_type == "covariance":
        return float(covariance_difference_penalty(implied_factors(est.moments_)))
    mats = est.free_components_ if reg_type == "W" else est.mis_
    return float((np.diff(mats, axis=0) ** 2).sum())


@pytest.mark.parametrize(
    ("reg_type", "penalty"),
    [("W", {"l1": 1.0}), ("W", {"l2": 5.0}), ("MI", {"l2": 20.0}), ("covariance", {"l2": 2.0})],
)
def test_penalized_fits_are_smoother(reg_type, penalty):
    models = sudden_change_models(16, 2, 4, 1, seed=7)
    periods = list(sample_periods(models, 12, rng=8))
    kw = {"anneal": False, "max_iter": 200, "random_state": 0, "optimizer": "lbfgs"}
    free = TCorex(2, **kw).fit(periods)
    fused = TCorex(2, reg_type=reg_type, **penalty, **kw).fit(periods)
    assert _roughness(fused, reg_type) < 0.5 * _roughness(free, reg_type)
    assert fused.penalty_ > 0 and fused.objective_ <= free.tc_.sum()


# --------------------------------------------------------------- change points, API


def _small_fit(**kwargs):
    models = sudden_change_models(10, 2, 4, 2, seed=9)
    periods = list(sample_periods(models, 30, rng=10))
    kwargs = {"random_state": 0, "max_iter": 100, **kwargs}
    return TCorex(2, **kwargs).fit(periods), periods


def test_change_point_scores_match_dense_norms():
    est, _ = _small_fit(l1=0.1, gamma=0.5)
    scores = est.change_point_scores()
    assert scores["frobenius"].shape == scores["spectral"].shape == (3,)
    covs = est.get_covariance()
    inv_corr = []
    for cov in covs:
        d = 1.0 / np.sqrt(np.diag(cov))
        corr = cov * d[:, None] * d[None, :]
        inv_corr.append(np.linalg.solve(corr, np.eye(len(d))))
    for t in range(3):
        diff = inv_corr[t + 1] - inv_corr[t]
        assert scores["frobenius"][t] == pytest.approx(np.linalg.norm(diff, "fro"), rel=1e-8)
        assert scores["spectral"][t] == pytest.approx(np.linalg.norm(diff, 2), rel=1e-8)


def test_outputs_and_scikit_learn_api():
    est, periods = _small_fit(l1=0.1, gamma=0.5)
    t, m, p = 4, 2, 10
    assert est.components_.shape == est.free_components_.shape == est.mis_.shape == (t, m, p)
    assert est.tcs_.shape == (t, m) and est.tc_.shape == (t,)
    assert np.all(np.diff(est.tcs_.mean(0)) <= 1e-12)  # factors ordered by mean TC
    assert est.clusters().shape == (t, p)
    np.testing.assert_array_equal(est.clusters(), est.mis_.argmax(1))
    factors = est.transform(periods)
    assert [f.shape for f in factors] == [(30, m)] * t
    z0 = (periods[0] - est.mean_[0]) / est.scale_[0]
    np.testing.assert_allclose(factors[0], z0 @ est.components_[0].T, rtol=1e-12)
    covs, precs = est.get_covariance(), est.get_precision()
    lowrank = est.covariance_low_rank()
    for cov, prec, lr, sd in zip(covs, precs, lowrank, est.scale_, strict=True):
        np.testing.assert_allclose(cov @ prec, np.eye(p), atol=1e-8)
        np.testing.assert_allclose(np.diag(cov), sd**2, rtol=1e-10)
        np.testing.assert_allclose(lr.dense().numpy(), cov, rtol=1e-12)
    manual = []
    for x, cov, mu in zip(periods, covs, est.mean_, strict=True):
        r = x - mu
        _, logdet = np.linalg.slogdet(cov)
        quad = np.einsum("ni,ni->n", r, np.linalg.solve(cov, r.T).T)
        manual.append(np.mean(-0.5 * (p * np.log(2 * np.pi) + logdet + quad)))
    assert est.score(periods) == pytest.approx(np.mean(manual), rel=1e-10)
    assert est.nll(periods, center=True) == pytest.approx(-est.score(periods), rel=1e-12)
    assert est.nll(periods) != est.nll(periods, center=True)
    assert len(est.history_) > 0 and len(est.n_iter_) == 7
    # 3-D input is the same as a list; clone / get_params / set_params
    again = clone(est).fit(np.stack(periods))
    np.testing.assert_allclose(again.components_, est.components_, rtol=1e-10, atol=1e-12)
    assert est.get_params()["gamma"] == 0.5
    assert clone(est).set_params(l1=0.5).l1 == 0.5


def test_adam_float32_and_random_start_are_reproducible():
    adam = {"optimizer": "adam", "lr": 1e-2, "init": False, "max_iter": 40}
    a, periods = _small_fit(l1=0.1, **adam)
    b, _ = _small_fit(l1=0.1, **adam)
    np.testing.assert_array_equal(a.components_, b.components_)
    assert np.isfinite(a.objective_) and a.objective_ > 0
    c, _ = _small_fit(gamma=0.5, dtype="float32")
    assert c.components_.dtype == np.float32
    d, _ = _small_fit(gamma=0.5)
    assert c.tc_.sum() == pytest.approx(d.tc_.sum(), rel=1e-3)


def test_dense_outputs_are_guarded(monkeypatch):
    est, _ = _small_fit()
    monkeypatch.setattr(corex, "_DENSE_LIMIT", 5)  # the guard is CorexEstimator's
    with pytest.raises(ValueError, match="get_covariance.*covariance_low_rank"):
        est.get_covariance()
    with pytest.raises(ValueError, match="get_precision"):
        est.get_precision()
    assert len(est.covariance_low_rank()) == 4


# --------------------------------------------------------------- sudden change


def test_sudden_change_beats_independent_linear_corex():
    # 2 segments of 3 periods: gamma = 0.4 would give the periods next to the change 28% of
    # their weight from the other segment; 0.1 borrows from the neighbours only.
    p, m, n_periods = 64, 4, 6
    models = sudden_change_models(p, m, n_periods, 2, seed=1)
    train = list(sample_periods(models, 16, rng=101))
    test = list(sample_periods(models, 500, rng=201))
    independent = np.mean(
        [
            float(
                LinearCorex(m, random_state=0)
                .fit(x)
                .covariance_low_rank()
                .nll(torch.as_tensor(x_test))
            )
            for x, x_test in zip(train, test, strict=True)
        ]
    )
    est = TCorex(m, l1=0.3, gamma=0.1, random_state=0).fit(train)
    assert est.nll(test) < independent - 1.0  # 103.2 against 106.2 nats
    scores = est.change_point_scores()
    assert np.argmax(scores["frobenius"]) == 2  # between periods 2 and 3
    assert np.argmax(scores["spectral"]) == 2


# --------------------------------------------------------------------- marginal transforms


def test_empirical_gaussianize_is_invariant_to_monotone_column_maps():
    periods = _periods([20, 20, 20], 6, seed=4)
    warped = [np.exp(x) * 3.0 + x**3 for x in periods]  # strictly increasing per entry
    kwargs = {"n_hidden": 2, "gamma": 0.5, "random_state": 0, "max_iter": 200}
    plain = TCorex(gaussianize="empirical", **kwargs).fit(periods)
    bent = TCorex(gaussianize="empirical", **kwargs).fit(warped)
    np.testing.assert_allclose(bent.components_, plain.components_, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(bent.tc_, plain.tc_, rtol=1e-10)
    # held-out data go through the same transform: the same factors for the warped samples
    new = _periods([5, 5, 5], 6, seed=9)
    for a, b in zip(
        plain.transform(new), bent.transform([np.exp(x) * 3.0 + x**3 for x in new]), strict=True
    ):
        # interpolation between order statistics is not invariant between them: close only
        assert np.corrcoef(a[:, 0], b[:, 0])[0, 1] > 0.9
    # standard gaussianize sees the warp
    standard = TCorex(gaussianize="standard", **kwargs).fit(warped)
    assert not np.allclose(standard.tc_, plain.tc_, rtol=1e-3)


def test_outliers_gaussianize_equals_fitting_the_pooled_transform_first():
    periods = _periods([16, 16, 16], 5, seed=6)
    periods[1][3, 2] = 40.0  # a gross outlier
    kwargs = {"n_hidden": 2, "gamma": 0.4, "random_state": 1, "max_iter": 200}
    model = TCorex(gaussianize="outliers", **kwargs).fit(periods)
    pooled = corex.Gaussianizer("outliers").fit(np.concatenate(periods))
    manual = TCorex(gaussianize="standard", **kwargs).fit([pooled.transform(x) for x in periods])
    np.testing.assert_allclose(model.components_, manual.components_, rtol=1e-10, atol=1e-12)
    assert model.nll(periods) == pytest.approx(manual.nll([pooled.transform(x) for x in periods]))
    # squashing the outlier changes the fit; standard has no marginal transform
    standard = TCorex(gaussianize="standard", **kwargs).fit(periods)
    assert standard.marginal_ is None
    assert np.abs(standard.tc_ - model.tc_).max() > 1e-4


# --------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"n_hidden": 0}, "n_hidden=0"),
        ({"l1": -0.1}, "l1=-0.1"),
        ({"l2": -1.0}, "l2=-1.0"),
        ({"gamma": 0.0}, r"gamma=0.0; must lie in \(0, 1\]"),
        ({"gamma": 1.5}, "gamma=1.5"),
        ({"reg_type": "Sigma"}, "reg_type='Sigma'"),
        ({"reg_type": "covariance", "l1": 0.1}, "reg_type='covariance'.*use l2"),
        ({"optimizer": "sgd"}, "optimizer='sgd'"),
        ({"gaussianize": "ranks"}, "gaussianize='ranks'"),
        ({"tol": 0.0}, "tol=0.0"),
    ],
)
def test_bad_parameters(params, match):
    periods = _periods([5, 5], 4, seed=0)
    with pytest.raises(ValueError, match=match):
        TCorex(**{"n_hidden": 2, **params}).fit(periods)


def test_bad_data():
    good = _periods([6, 6, 6], 5, seed=0)
    with pytest.raises(ValueError, match="period 1 has 4 variables, but period 0 has 5"):
        TCorex(2).fit([good[0], good[1][:, :4], good[2]])
    with pytest.raises(ValueError, match="period 2 has 1 sample"):
        TCorex(2).fit([good[0], good[1], good[2][:1]])
    nan = good[1].copy()
    nan[3, 2] = np.nan
    with pytest.raises(ValueError, match="period 1 contains NaN.*no missing-value support"):
        TCorex(2).fit([good[0], nan, good[2]])
    const = good[2].copy()
    const[:, 3] = 7.0
    with pytest.raises(ValueError, match=r"column\(s\) 3 are constant.*period 2"):
        TCorex(2).fit([good[0], good[1], const])
    # with gamma the period borrows the other periods' samples: no longer constant
    TCorex(2, gamma=0.5, max_iter=3, anneal=False).fit([good[0], good[1], const])
    with pytest.raises(ValueError, match="no periods"):
        TCorex(2).fit([])
    with pytest.raises(ValueError, match="2-D array; wrap a single period"):
        TCorex(2).fit(good[0])
    with pytest.raises(ValueError, match="period 0: expected a 2-D array"):
        TCorex(2).fit([good[0][0], good[1]])
    est = TCorex(2, max_iter=5, anneal=False).fit(good)
    with pytest.raises(ValueError, match="X has 2 periods, but the model was fitted on 3"):
        est.transform(good[:2])
    with pytest.raises(ValueError, match="period 1 has 4 variables, but the fitted model has 5"):
        est.score([good[0], good[1][:, :4], good[2]])
