import math

import pytest
import torch
import torch.nn.functional as F

from lit_info.methods import LIMIT
from lit_info.methods.base import NonFiniteLossError
from lit_info.methods.limit import predicted_gradient, true_gradient


def make_limit(**kwargs):
    torch.manual_seed(0)
    args = dict(num_classes=4, input_shape=(1, 4, 4), net="mlp", net_kwargs={"hidden": [16]})
    args.update(kwargs)
    return LIMIT(**args)


def batch(n=12, k=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 4, 4, generator=g)
    y = torch.randint(0, k, (n,), generator=g)
    return x, y, torch.arange(n)


def grads(module, loss):
    module.zero_grad()
    loss.backward()
    net = [
        p.grad.clone() if p.grad is not None else torch.zeros_like(p)
        for p in module.net.parameters()
    ]
    q = [
        p.grad.clone() if p.grad is not None else torch.zeros_like(p)
        for p in module.q_net.parameters()
    ]
    return net, q


def test_classifier_gradient_is_the_predicted_gradient_and_ignores_labels():
    # float64: both sides are one gradient through two graphs, equal to float64 rounding
    module = make_limit(beta=0.5).double()
    x, y, idx = batch()
    x = x.double()
    net_grad, _ = grads(module, module.training_step((x, y, idx), 0))

    # reference: backpropagate g_hat / N from the logits, computed independently
    module.zero_grad()
    logits = module.net(x)
    with torch.no_grad():
        g_hat = torch.softmax(logits, 1) - torch.softmax(module.q_net(x), 1)
    logits.backward(g_hat / x.shape[0])
    ref = [p.grad.clone() for p in module.net.parameters()]
    for a, b in zip(net_grad, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-14)

    # the labels never reach the classifier
    y_other = (y + 1) % 4
    net_grad_other, q_grad_other = grads(module, module.training_step((x, y_other, idx), 0))
    for a, b in zip(net_grad, net_grad_other, strict=True):
        torch.testing.assert_close(a, b)
    # ... while q does see them
    _, q_grad = grads(module, module.training_step((x, y, idx), 0))
    assert any(not torch.allclose(a, b) for a, b in zip(q_grad, q_grad_other, strict=True))


@pytest.mark.parametrize("q_dist", ["gaussian", "laplace"])
def test_q_gradient_matches_the_penalties(q_dist):
    beta = 0.7
    module = make_limit(beta=beta, q_dist=q_dist).double()  # float64, as above
    x, y, idx = batch()
    x = x.double()
    _, q_grad = grads(module, module.training_step((x, y, idx), 0))

    module.zero_grad()
    logits = module.net(x).detach()
    probs = torch.softmax(logits, 1)
    g_hat = probs - torch.softmax(module.q_net(x), 1)
    g = probs - F.one_hot(y, 4).double()
    if q_dist == "gaussian":
        info = ((g_hat - g) ** 2).sum(1).mean()
    else:
        info = (g_hat - g).abs().sum(1).mean()
    (info + beta * (g_hat**2).sum(1).mean()).backward()
    for a, p in zip(q_grad, module.q_net.parameters(), strict=True):
        torch.testing.assert_close(a, p.grad, rtol=1e-10, atol=1e-14)


def test_gradient_helpers():
    a = torch.tensor([[2.0, 0.0, -1.0]])
    q = torch.tensor([[0.0, 1.0, 0.0]], requires_grad=True)
    y = torch.tensor([1])
    pa = torch.softmax(a, 1)
    torch.testing.assert_close(true_gradient(a, y), pa - torch.tensor([[0.0, 1.0, 0.0]]))
    # true_gradient is the autograd gradient of the per-sample cross-entropy
    a_req = a.clone().requires_grad_(True)
    F.cross_entropy(a_req, y, reduction="sum").backward()
    torch.testing.assert_close(true_gradient(a, y), a_req.grad)
    g_hat = predicted_gradient(a, q)
    torch.testing.assert_close(g_hat, pa - torch.softmax(q, 1))
    # a perfect q (softmax(q) = onehot in the limit) predicts the true gradient
    q_perfect = torch.tensor([[-30.0, 30.0, -30.0]])
    torch.testing.assert_close(
        predicted_gradient(a, q_perfect), true_gradient(a, y), atol=1e-6, rtol=0
    )


@pytest.mark.parametrize(
    "q_dist,expected_std", [("gaussian", math.sqrt(1 / (2 * 8.0))), ("laplace", math.sqrt(2) / 8.0)]
)
def test_sampled_gradient_has_the_authors_spread(q_dist, expected_std):
    module = make_limit(q_dist=q_dist, sample_gradient=True, lamb=8.0)
    torch.manual_seed(3)
    g = torch.zeros(20000, 4)
    noise = module.sample_around(g)
    assert abs(noise.std().item() - expected_std) / expected_std < 0.03
    kurtosis = ((noise - noise.mean()) ** 4).mean() / noise.var() ** 2
    assert abs(kurtosis.item() - (3.0 if q_dist == "gaussian" else 6.0)) < 0.6


def test_warm_up_trains_only_q():
    module = make_limit(warm_up_epochs=1)
    x, y, idx = batch()
    net_grad, q_grad = grads(module, module.training_step((x, y, idx), 0))  # epoch 0 (no trainer)
    assert all(torch.count_nonzero(g) == 0 for g in net_grad)
    assert any(torch.count_nonzero(g) > 0 for g in q_grad)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="q_dist"):
        make_limit(q_dist="cauchy")
    with pytest.raises(ValueError, match="beta"):
        make_limit(beta=-1.0)
    with pytest.raises(ValueError, match="num_classes and input_shape"):
        LIMIT()


def test_nan_input_stops_with_the_step_named():
    module = make_limit()
    x, y, idx = batch()
    x[0, 0, 0, 0] = float("nan")
    with pytest.raises(NonFiniteLossError, match="global step"):
        module.training_step((x, y, idx), 3)
