import numpy as np
import pytest
import torch

from lit_info.info.low_rank import LowRankPlusDiagonal, inverse_difference_norms


def _model(p: int, k: int, seed: int) -> LowRankPlusDiagonal:
    gen = torch.Generator().manual_seed(seed)
    diagonal = 0.2 + torch.rand(p, generator=gen, dtype=torch.float64)
    factor = torch.randn(p, k, generator=gen, dtype=torch.float64)
    return LowRankPlusDiagonal(diagonal, factor)


def test_woodbury_and_determinant_lemma_equal_dense_formulas():
    cov = _model(40, 5, 0)
    dense = cov.dense()
    assert torch.allclose(dense, torch.diag(cov.diagonal) + cov.factor @ cov.factor.T)
    sign, logdet = torch.linalg.slogdet(dense)
    assert sign > 0
    assert torch.allclose(cov.logdet(), logdet, rtol=1e-12)
    rhs = torch.randn(40, 3, dtype=torch.float64)
    assert torch.allclose(cov.solve(rhs), torch.linalg.solve(dense, rhs), rtol=1e-10, atol=1e-12)
    assert torch.allclose(cov.solve(rhs[:, 0]), torch.linalg.solve(dense, rhs[:, 0]), rtol=1e-10)
    assert torch.allclose(cov.precision(), torch.linalg.inv(dense), rtol=1e-9, atol=1e-11)
    assert torch.allclose(cov.variances(), dense.diagonal())


def test_log_prob_matches_dense_gaussian_and_torch_distribution():
    cov = _model(30, 4, 1)
    x = torch.randn(25, 30, dtype=torch.float64) * 2
    mean = torch.randn(30, dtype=torch.float64)
    dense = torch.distributions.MultivariateNormal(mean, covariance_matrix=cov.dense())
    assert torch.allclose(cov.log_prob(x, mean), dense.log_prob(x), rtol=1e-11)
    low = torch.distributions.LowRankMultivariateNormal(mean, cov.factor, cov.diagonal)
    assert torch.allclose(cov.log_prob(x, mean), low.log_prob(x), rtol=1e-11)
    assert torch.allclose(cov.nll(x, mean), -dense.log_prob(x).mean(), rtol=1e-11)


def test_correlation_and_scaling():
    cov = _model(20, 3, 2)
    corr = cov.correlation().dense()
    assert torch.allclose(corr.diagonal(), torch.ones(20, dtype=torch.float64))
    d = cov.dense().diagonal().sqrt()
    assert torch.allclose(corr, cov.dense() / d[:, None] / d[None, :], rtol=1e-12)
    scale = torch.linspace(0.5, 2.0, 20, dtype=torch.float64)
    assert torch.allclose(cov.scaled(scale).dense(), scale[:, None] * cov.dense() * scale)


def test_shape_errors_name_the_fields():
    with pytest.raises(ValueError, match="factor has 3 rows"):
        LowRankPlusDiagonal(torch.ones(4), torch.ones(3, 2))
    with pytest.raises(ValueError, match=r"diagonal must be \(p,\)"):
        LowRankPlusDiagonal(torch.ones(4, 1), torch.ones(4, 2))


@pytest.mark.parametrize(("p", "dense_limit"), [(30, 512), (300, 0)])
def test_inverse_difference_norms_equal_dense(p, dense_limit):
    a, b = _model(p, 4, 3), _model(p, 4, 4)
    diff = np.linalg.inv(a.correlation().dense().numpy()) - np.linalg.inv(
        b.correlation().dense().numpy()
    )
    fro, spec = inverse_difference_norms(a, b, dense_limit=dense_limit)
    assert float(fro) == pytest.approx(np.linalg.norm(diff, "fro"), rel=1e-9)
    assert float(spec) == pytest.approx(np.linalg.norm(diff, 2), rel=1e-8)
    raw = np.linalg.inv(a.dense().numpy()) - np.linalg.inv(b.dense().numpy())
    fro_raw, _ = inverse_difference_norms(a, b, correlation=False)
    assert float(fro_raw) == pytest.approx(np.linalg.norm(raw, "fro"), rel=1e-9)
