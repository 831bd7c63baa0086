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
