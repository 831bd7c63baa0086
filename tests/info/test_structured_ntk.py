"""Structured NTK against the independent ``empirical_ntk(network_jacobian(...))`` (float64)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lit_info.info import (
    empirical_ntk,
    network_jacobian,
    parameter_names,
    structured_ntk,
    structured_ntk_pair,
)
from lit_info.info.structured_ntk import _all_features
from lit_info.nets import MLP, MNISTCNN

F64 = torch.float64


def _reference(model: nn.Module, x1: torch.Tensor, x2: torch.Tensor | None = None):
    jac1 = network_jacobian(model, x1)
    jac2 = None if x2 is None else network_jacobian(model, x2)
    return empirical_ntk(jac1, jac2, dtype=F64)


def _close(theta: torch.Tensor, expected: torch.Tensor, rtol: float = 1e-10) -> None:
    assert theta.shape == expected.shape
    assert theta.dtype == F64
    scale = float(expected.abs().max())
    assert scale > 0
    torch.testing.assert_close(theta, expected, rtol=rtol, atol=rtol * scale)


def _structured_layers(model: nn.Module, x: torch.Tensor) -> list[str]:
    layers, _ = _all_features(model, [x], 256, F64)
    return [layer.name for layer in layers]


def _warm_batchnorm(model: nn.Module, shape: tuple[int, ...]) -> nn.Module:
    """Non-trivial running statistics and affine parameters; leaves the model in train mode."""
    model.train()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.5, 0.5)
        for _ in range(3):
            model(torch.randn(*shape, dtype=F64) * 2 + 0.5)
    return model


def _no_bias(model: nn.Module) -> nn.Module:
    for module in model.modules():
        if isinstance(module, nn.Linear):
            module.bias = None
    return model


@pytest.mark.parametrize("k", [1, 10])
@pytest.mark.parametrize("bias", [True, False])
def test_mlp_matches_jacobian_kernel(k, bias):
    torch.manual_seed(k)
    model = MLP(12, k, hidden=(16, 8), activation="tanh").double()
    if not bias:
        _no_bias(model)
    x = torch.randn(7, 12, dtype=F64)
    theta = structured_ntk(model, x)
    _close(theta, _reference(model, x))
    assert torch.equal(theta, theta.T)  # exactly symmetric
    assert _structured_layers(model, x) == ["net.1", "net.3", "net.5"]  # no Jacobian part


def test_mlp_with_batchnorm_and_dropout_in_train_mode():
    torch.manual_seed(0)
    model = MLP(6, 3, hidden=(10,), batch_norm=True, dropout=0.5).double()
    _warm_batchnorm(model, (32, 6))
    state = {key: value.clone() for key, value in model.state_dict().items()}
    x = torch.randn(9, 6, dtype=F64)
    theta = structured_ntk(model, x, chunk_size=4)
    assert model.training and all(m.training for m in model.modules())  # modes restored
    for key, value in model.state_dict().items():  # running statistics untouched
        assert torch.equal(value, state[key]), key
    _close(theta, _reference(model, x))  # BatchNorm affine parameters via the Jacobian


def test_mnist_cnn_conv_by_jacobian_linear_by_structure():
    torch.manual_seed(1)
    model = _warm_batchnorm(MNISTCNN(1, 10, image_size=8).double(), (16, 1, 8, 8))
    model.features[0].eval()  # a per-module mode is restored as it was
    x = torch.randn(5, 1, 8, 8, dtype=F64)
    x_test = torch.randn(3, 1, 8, 8, dtype=F64)
    theta, theta_test = structured_ntk_pair(model, x, x_test, chunk_size=2)
    assert model.training and not model.features[0].training
    _close(theta, _reference(model, x))
    _close(theta_test, _reference(model, x_test, x))
    # the fully connected layers come after an in-place ReLU: still the right output gradient
    assert _structured_layers(model, x) == ["classifier.1", "classifier.3"]


def test_frozen_weights_and_biases_are_skipped():
    torch.manual_seed(2)
    model = MLP(5, 4, hidden=(7, 6)).double()
    model.net[1].weight.requires_grad_(False)  # bias only
    model.net[3].bias.requires_grad_(False)  # weight only
    model.net[5].requires_grad_(False)  # fully frozen
    x = torch.randn(6, 5, dtype=F64)
    _close(structured_ntk(model, x), _reference(model, x))
    assert _structured_layers(model, x) == ["net.1", "net.3"]
    model.requires_grad_(False)
    with pytest.raises(ValueError, match="requires_grad"):
        structured_ntk(model, x)


class _SharedLinear(nn.Module):
    """One Linear applied twice, a tied pair, and a Linear on a sequence ``(N, T, d)``."""

    def __init__(self) -> None:
        super().__init__()
        self.shared = nn.Linear(4, 4)
        self.seq = nn.Linear(2, 3)
        self.tied_a = nn.Linear(4, 4, bias=False)
        self.tied_b = nn.Linear(4, 4)
        self.tied_b.weight = self.tied_a.weight
        self.head = nn.Linear(4 + 6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.shared(torch.tanh(self.shared(x))))
        h = torch.tanh(self.tied_b(torch.tanh(self.tied_a(h))))
        s = torch.tanh(self.seq(x.reshape(-1, 2, 2))).flatten(1)  # Linear on (N, 2, 2)
        return self.head(torch.cat([h, s], dim=1))


def test_weight_sharing_tying_and_sequence_inputs_fall_back_to_the_jacobian():
    torch.manual_seed(3)
    model = _SharedLinear().double()
    x = torch.randn(6, 4, dtype=F64)
    x_test = torch.randn(2, 4, dtype=F64)
    _close(structured_ntk(model, x, chunk_size=4), _reference(model, x))
    _close(structured_ntk(model, x_test, x), _reference(model, x_test, x))
    assert _structured_layers(model, x) == ["head"]


def test_test_train_kernel_pair_and_chunking_invariance():
    torch.manual_seed(4)
    model = MLP(8, 3, hidden=(9,)).double()
    x = torch.randn(10, 8, dtype=F64)
    x_test = torch.randn(4, 8, dtype=F64)
    cross = structured_ntk(model, x_test, x)
    _close(cross, _reference(model, x_test, x))
    assert cross.shape == (12, 30)
    train, test_train = structured_ntk_pair(model, x, x_test)
    torch.testing.assert_close(train, structured_ntk(model, x), rtol=0, atol=0)
    torch.testing.assert_close(test_train, cross, rtol=0, atol=0)
    for chunk in (1, 3, 10):
        torch.testing.assert_close(
            structured_ntk(model, x, chunk_size=chunk), train, rtol=1e-13, atol=1e-13
        )
        torch.testing.assert_close(
            structured_ntk(model, x_test, x, chunk_size=chunk), cross, rtol=1e-13, atol=1e-13
        )


def test_one_dimensional_output_float32_model_and_inference_mode():
    torch.manual_seed(5)
    model = nn.Sequential(MLP(4, 1, hidden=(5,)), nn.Flatten(0))  # outputs (N,)
    x = torch.randn(6, 4)
    with torch.inference_mode():  # gradients are re-enabled inside
        theta = structured_ntk(model, torch.randn(6, 4).copy_(x))
    assert theta.shape == (6, 6) and theta.dtype == F64
    _close(theta, _reference(model, x), rtol=1e-5)  # float32 features, float64 products
    theta32 = structured_ntk(model, x, dtype=torch.float32)
    assert theta32.dtype == torch.float32
    torch.testing.assert_close(theta32, theta.float(), rtol=1e-5, atol=1e-6)


def test_network_jacobian_parameter_selection():
    torch.manual_seed(6)
    model = MLP(3, 2, hidden=(4,), batch_norm=True).double()
    x = torch.randn(5, 3, dtype=F64)
    full = network_jacobian(model, x)
    names = parameter_names(model)
    sizes = dict((name, p.numel()) for name, p in model.named_parameters())
    offsets, start = {}, 0
    for name in names:
        offsets[name] = (start, start + sizes[name])
        start += sizes[name]
    chosen = ["net.2.bias", "net.1.weight"]  # order given does not matter
    part = network_jacobian(model, x, chunk_size=2, parameters=chosen)
    expected = torch.cat([full[:, :, slice(*offsets[n])] for n in names if n in chosen], dim=2)
    torch.testing.assert_close(part, expected, rtol=0, atol=0)
    with pytest.raises(ValueError, match="not trainable parameters"):
        network_jacobian(model, x, parameters=["nope"])
    with pytest.raises(ValueError, match="at least one"):
        network_jacobian(model, x, parameters=[])
    with pytest.raises(ValueError, match="sequence of parameter names"):
        network_jacobian(model, x, parameters="net.1.weight")


def test_errors():
    model = MLP(4, 2, hidden=(3,)).double()
    x = torch.randn(3, 4, dtype=F64)
    with pytest.raises(ValueError, match="model must be a torch.nn.Module"):
        structured_ntk(lambda z: z, x)
    with pytest.raises(ValueError, match="inputs1 must be a non-empty tensor"):
        structured_ntk(model, x[:0])
    with pytest.raises(ValueError, match="inputs1 must be a non-empty tensor"):
        structured_ntk(model, [[1.0, 2.0]])
    with pytest.raises(ValueError, match="inputs2 must be a non-empty tensor"):
        structured_ntk(model, x, torch.zeros(0, 4, dtype=F64))
    with pytest.raises(ValueError, match="must agree beyond the batch dimension"):
        structured_ntk(model, x, torch.randn(3, 5, dtype=F64))
    with pytest.raises(ValueError, match="x_train and x_test must agree"):
        structured_ntk_pair(model, x, torch.randn(2, 2, 2, dtype=F64))
    with pytest.raises(ValueError, match="chunk_size"):
        structured_ntk(model, x, chunk_size=0)
    with pytest.raises(ValueError, match="dtype"):
        structured_ntk(model, x, dtype=torch.int64)
    bad = nn.Sequential(nn.Linear(4, 6), nn.Unflatten(1, (2, 3))).double()
    with pytest.raises(ValueError, match=r"output must have shape \(N, k\) or \(N,\)"):
        structured_ntk(bad, x)
    assert bad.training  # mode restored after the error
