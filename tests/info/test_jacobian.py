import pytest
import torch
from torch import nn

from lit_info.info import (
    empirical_ntk,
    flatten_parameters,
    network_jacobian,
    parameter_names,
    sketch_matrix,
)
from lit_info.info.jacobian import countsketch_hashes


def _mlp(k: int = 3) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Tanh(), nn.Dropout(0.5), nn.Linear(6, k)
    ).double()
    # non-trivial running statistics
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(16, 4, dtype=torch.float64) * 2 + 1)
    return model


def _cnn(k: int = 3) -> nn.Module:
    torch.manual_seed(1)
    model = nn.Sequential(
        nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 4 * 4, k)
    ).double()
    model.train()
    with torch.no_grad():
        model(torch.randn(8, 1, 6, 6, dtype=torch.float64) + 0.5)
    return model


def _loop_jacobian(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Per-sample, per-output autograd loop (eval mode)."""
    model.eval()
    params = [p for p in model.parameters() if p.requires_grad]
    rows = []
    for i in range(x.shape[0]):
        out = model(x[i : i + 1]).reshape(-1)
        per_output = []
        for c in range(out.shape[0]):
            grads = torch.autograd.grad(out[c], params, retain_graph=True)
            per_output.append(torch.cat([g.flatten() for g in grads]))
        rows.append(torch.stack(per_output))
    return torch.stack(rows)


@pytest.mark.parametrize("make, shape", [(_mlp, (5, 4)), (_cnn, (5, 1, 6, 6))])
def test_matches_autograd_loop_with_frozen_batchnorm(make, shape):
    model = make()
    model.train()
    stats = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(*shape, dtype=torch.float64)
    jac = network_jacobian(model, x, chunk_size=2)
    assert model.training  # mode restored
    for key, value in model.state_dict().items():  # running stats untouched
        assert torch.equal(value, stats[key]), key
    expected = _loop_jacobian(model, x)
    p = sum(q.numel() for q in model.parameters())
    assert jac.shape == (shape[0], 3, p)
    torch.testing.assert_close(jac, expected, rtol=1e-10, atol=1e-12)
    # chunking does not change the result
    torch.testing.assert_close(network_jacobian(model, x, chunk_size=None), jac)


def test_one_output_and_frozen_parameters():
    model = _mlp(k=1)
    x = torch.randn(4, 4, dtype=torch.float64)
    jac = network_jacobian(model, x)
    assert jac.shape[:2] == (4, 1)

    squeezed = nn.Sequential(model, nn.Flatten(0))  # outputs (N,)
    torch.testing.assert_close(network_jacobian(squeezed, x), jac)

    model[0].weight.requires_grad_(False)
    names = parameter_names(model)
    assert "0.weight" not in names and names[0] == "0.bias"
    jac_frozen = network_jacobian(model, x)
    assert jac_frozen.shape[2] == jac.shape[2] - 24
    torch.testing.assert_close(jac_frozen, jac[:, :, 24:])  # 0.weight was the first block
    assert flatten_parameters(model).shape == (jac_frozen.shape[2],)


def test_flatten_parameters_matches_jacobian_columns():
    # the Jacobian of a linear model f(x) = W x + b w.r.t. the flat parameter vector
    model = nn.Linear(3, 2).double()
    x = torch.randn(5, 3, dtype=torch.float64)
    jac = network_jacobian(model, x)
    w = flatten_parameters(model)
    # linear in the parameters: f(x) = J(x) w exactly
    torch.testing.assert_close(torch.einsum("nkp,p->nk", jac, w), model(x).detach())


def test_sketch_is_exact_projection_and_seeded():
    model = _mlp()
    x_train = torch.randn(6, 4, dtype=torch.float64)
    x_test = torch.randn(3, 4, dtype=torch.float64)
    jac = network_jacobian(model, x_train)
    proj = sketch_matrix(model, 7, sketch_seed=3)
    sk = network_jacobian(model, x_train, sketch_dim=7, sketch_seed=3, chunk_size=4)
    assert sk.shape == (6, 3, 7)
    torch.testing.assert_close(sk, jac @ proj)
    # train and test computed separately with the same seed share the projection
    sk_test = network_jacobian(model, x_test, sketch_dim=7, sketch_seed=3)
    jac_test = network_jacobian(model, x_test)
    torch.testing.assert_close(
        empirical_ntk(sk_test, sk), empirical_ntk(jac_test @ proj, jac @ proj)
    )
    other = network_jacobian(model, x_train, sketch_dim=7, sketch_seed=4)
    assert not torch.allclose(other, sk)


def test_sketch_kernel_unbiased():
    model = _mlp()
    x = torch.randn(5, 4, dtype=torch.float64)
    exact = empirical_ntk(network_jacobian(model, x))
    seeds = range(40)
    mean = sum(
        empirical_ntk(network_jacobian(model, x, sketch_dim=64, sketch_seed=s)) for s in seeds
    )
    mean = mean / len(seeds)
    single = empirical_ntk(network_jacobian(model, x, sketch_dim=64, sketch_seed=0))
    err_mean = (mean - exact).norm() / exact.norm()
    err_single = (single - exact).norm() / exact.norm()
    assert err_mean < 0.08  # effective dimension 2560
    assert err_mean < err_single
    # the projection itself: E[P P^T] = I
    proj = sketch_matrix(model, 4000, sketch_seed=1)
    gram = proj @ proj.T
    assert (gram.diagonal() - 1).abs().max() < 0.15
    assert abs(gram.diagonal().mean().item() - 1) < 0.01


def _countsketch_explicit(model: nn.Module, d: int, seed: int) -> torch.Tensor:
    """The ``p x d`` CountSketch matrix built by hand from the public hashes."""
    buckets, signs = countsketch_hashes(model, d, sketch_seed=seed)
    p = sum(q.numel() for q in model.parameters() if q.requires_grad)
    assert buckets.shape == signs.shape == (p,)
    assert buckets.dtype == torch.int64 and signs.dtype == torch.float64
    assert int(buckets.min()) >= 0 and int(buckets.max()) < d
    assert set(signs.tolist()) == {-1.0, 1.0}
    proj = torch.zeros(p, d, dtype=torch.float64)
    proj[torch.arange(p), buckets] = signs
    return proj


@pytest.mark.parametrize("make, shape", [(_mlp, (6, 4)), (_cnn, (5, 1, 6, 6))])
def test_countsketch_is_exact_projection_and_seeded(make, shape):
    model = make()
    x = torch.randn(*shape, dtype=torch.float64)
    x_test = torch.randn(3, *shape[1:], dtype=torch.float64)
    jac, jac_test = network_jacobian(model, x), network_jacobian(model, x_test)
    proj = _countsketch_explicit(model, 7, seed=3)
    torch.testing.assert_close(proj, sketch_matrix(model, 7, 3, sketch_type="countsketch"))
    # one +-1 per row: E[P P^T] = I with an exact diagonal
    assert torch.equal((proj != 0).sum(dim=1), torch.ones(proj.shape[0], dtype=torch.int64))
    sk = network_jacobian(model, x, sketch_dim=7, sketch_seed=3, sketch_type="countsketch")
    assert sk.shape == (shape[0], 3, 7)
    torch.testing.assert_close(sk, jac @ proj, rtol=1e-12, atol=1e-12)
    # the same sketch whatever the chunking, and in a separate call (train vs test)
    for chunk in (1, 4, None):
        torch.testing.assert_close(
            network_jacobian(
                model, x, chunk_size=chunk, sketch_dim=7, sketch_seed=3, sketch_type="countsketch"
            ),
            sk,
        )
    sk_test = network_jacobian(
        model, x_test, sketch_dim=7, sketch_seed=3, sketch_type="countsketch"
    )
    torch.testing.assert_close(sk_test, jac_test @ proj, rtol=1e-12, atol=1e-12)
    # other seeds, other sketches (and not the Gaussian one)
    other = network_jacobian(model, x, sketch_dim=7, sketch_seed=4, sketch_type="countsketch")
    assert not torch.allclose(other, sk)
    assert not torch.equal(_countsketch_explicit(model, 7, seed=4), proj)
    assert not torch.allclose(network_jacobian(model, x, sketch_dim=7, sketch_seed=3), sk)
    # float32 networks use the same hashes (drawn on the CPU, independent of dtype)
    sk32 = network_jacobian(
        model.float(), x.float(), sketch_dim=7, sketch_seed=3, sketch_type="countsketch"
    )
    torch.testing.assert_close(sk32.double(), sk, rtol=1e-4, atol=1e-5)


def test_countsketch_on_a_parameter_subset():
    model = _mlp()
    x = torch.randn(4, 4, dtype=torch.float64)
    names = ["0.bias", "4.weight"]
    sub = network_jacobian(model, x, parameters=names)
    sk = network_jacobian(
        model, x, parameters=names, sketch_dim=5, sketch_seed=1, sketch_type="countsketch"
    )
    # the sketch of a subset is that of the model restricted to those parameters
    for name, q in model.named_parameters():
        q.requires_grad_(name in names)
    torch.testing.assert_close(sk, sub @ _countsketch_explicit(model, 5, seed=1))


def test_countsketch_inner_products_unbiased():
    torch.manual_seed(5)
    model = nn.Sequential(nn.Linear(40, 50), nn.Linear(50, 1)).double()  # p = 2101
    p = sum(q.numel() for q in model.parameters())
    a = torch.randn(p, dtype=torch.float64)
    b = 0.6 * a + 0.8 * torch.randn(p, dtype=torch.float64)  # correlation ~0.6
    d, seeds = 64, range(1000)
    exact = float(a @ b)
    estimates = []
    for seed in seeds:
        buckets, signs = countsketch_hashes(model, d, sketch_seed=seed)
        sa = torch.zeros(d, dtype=torch.float64).index_add_(0, buckets, signs * a)
        sb = torch.zeros(d, dtype=torch.float64).index_add_(0, buckets, signs * b)
        estimates.append(float(sa @ sb))
    estimates = torch.tensor(estimates, dtype=torch.float64)
    # variance of one estimate: (|a|^2 |b|^2 + <a,b>^2 - 2 sum_j a_j^2 b_j^2) / d
    var = float((a @ a) * (b @ b) + exact**2 - 2 * (a * a * b * b).sum()) / d
    assert float(estimates.var()) == pytest.approx(var, rel=0.25)
    # the mean of 1000 estimates is within 4 standard errors (~3% here) of <a, b>
    stderr = (var / len(seeds)) ** 0.5
    assert abs(float(estimates.mean()) - exact) < 4 * stderr < 0.04 * exact


def test_countsketch_kernel_unbiased():
    model = _mlp()
    x = torch.randn(5, 4, dtype=torch.float64)
    exact = empirical_ntk(network_jacobian(model, x))

    def kernel(seed: int) -> torch.Tensor:
        return empirical_ntk(
            network_jacobian(model, x, sketch_dim=64, sketch_seed=seed, sketch_type="countsketch")
        )

    mean = sum(kernel(s) for s in range(40)) / 40
    err_mean = (mean - exact).norm() / exact.norm()
    err_single = (kernel(0) - exact).norm() / exact.norm()
    assert err_mean < 0.08
    assert err_mean < err_single


def test_bad_sketch_type():
    model = _mlp()
    x = torch.randn(3, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match="sketch_type"):
        network_jacobian(model, x, sketch_dim=4, sketch_type="sparse")
    with pytest.raises(ValueError, match="sketch_type"):
        network_jacobian(model, x, sketch_type=None)
    with pytest.raises(ValueError, match="sketch_type"):
        sketch_matrix(model, 4, sketch_type="CountSketch")
    with pytest.raises(ValueError, match="sketch_dim"):
        countsketch_hashes(model, 0)


def test_bad_arguments():
    model = _mlp()
    x = torch.randn(3, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match="chunk_size"):
        network_jacobian(model, x, chunk_size=0)
    with pytest.raises(ValueError, match="sketch_dim"):
        network_jacobian(model, x, sketch_dim=-2)
    with pytest.raises(ValueError, match="inputs"):
        network_jacobian(model, [1, 2])
    with pytest.raises(ValueError, match="model"):
        network_jacobian(lambda z: z, x)
    with pytest.raises(ValueError, match="output"):
        network_jacobian(nn.Sequential(nn.Linear(4, 6).double(), nn.Unflatten(1, (2, 3))), x)
    frozen = nn.Linear(4, 2).double().requires_grad_(False)
    with pytest.raises(ValueError, match="requires_grad"):
        network_jacobian(frozen, x)
