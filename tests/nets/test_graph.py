"""Graph nets against dense formulas and torch-geometric's own layers (float64)."""

import numpy as np
import pytest
import torch
from torch_geometric.nn import GCNConv, MixHopConv

from lit_info.data.citation import homophily_graph
from lit_info.nets.graph import (
    GCNNet,
    MixHopLayer,
    MixHopNet,
    SparseFeatures,
    adjacency_matrix,
    normalized_adjacency,
)


@pytest.fixture(autouse=True)
def _float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def tiny_graph(n=40, seed=0):
    x, y, edge_index = homophily_graph(n, 3, 0.5, edges_per_node=2, seed=seed)
    g = torch.Generator().manual_seed(seed)
    features = (torch.rand(n, 12, generator=g) < 0.3).double() * torch.rand(n, 12, generator=g)
    return features, y, edge_index


def dense_normalized(edge_index, n):
    a = np.zeros((n, n))
    a[edge_index[0].numpy(), edge_index[1].numpy()] = 1.0
    a = a + np.eye(n)
    d = a.sum(1) ** -0.5
    return d[:, None] * a * d[None, :]


def test_normalized_adjacency_is_the_dense_formula():
    x, _, edge_index = tiny_graph()
    index, weight = normalized_adjacency(edge_index, x.shape[0])
    dense = adjacency_matrix(index, weight, x.shape[0]).to_dense().numpy()
    np.testing.assert_allclose(dense, dense_normalized(edge_index, x.shape[0]), rtol=1e-12)


def test_mixhop_layer_is_concat_of_adjacency_powers():
    x, _, edge_index = tiny_graph()
    n = x.shape[0]
    adj = adjacency_matrix(*normalized_adjacency(edge_index, n), n)
    a = torch.from_numpy(dense_normalized(edge_index, n))
    layer = MixHopLayer(12, [0, 1, 3], [2, 0, 4])
    w = layer.weight.detach()
    expected = torch.cat([x @ w[:, :2], torch.linalg.matrix_power(a, 3) @ x @ w[:, 2:]], dim=1)
    torch.testing.assert_close(layer(x, adj), expected, rtol=1e-12, atol=1e-12)
    assert list(layer.column_norms()) == [0, 3]


def test_mixhop_layer_equals_torch_geometric_mixhopconv():
    x, _, edge_index = tiny_graph()
    n = x.shape[0]
    adj = adjacency_matrix(*normalized_adjacency(edge_index, n), n)
    ours = MixHopLayer(12, [0, 1, 2], [5, 5, 5])
    ref = MixHopConv(12, 5, powers=[0, 1, 2], bias=False).double()
    with torch.no_grad():
        for k, lin in enumerate(ref.lins):
            lin.weight.copy_(ours.weight[:, 5 * k : 5 * (k + 1)].t())
    torch.testing.assert_close(ours(x, adj), ref(x, edge_index), rtol=1e-10, atol=1e-12)


def test_gcn_layers_equal_torch_geometric_gcnconv():
    x, _, edge_index = tiny_graph()
    n = x.shape[0]
    adj = adjacency_matrix(*normalized_adjacency(edge_index, n), n)
    net = GCNNet(12, 3, hidden=[4], input_normalization="none").eval()
    conv1, conv2 = GCNConv(12, 4).double(), GCNConv(4, 3).double()
    with torch.no_grad():
        for conv, layer in ((conv1, net.layers[0]), (conv2, net.layers[1])):
            conv.lin.weight.copy_(layer.weight.t())
            layer.bias.normal_()
            conv.bias.copy_(layer.bias)
    expected = conv2(torch.relu(conv1(x, edge_index)), edge_index)
    torch.testing.assert_close(net(x, adj), expected, rtol=1e-10, atol=1e-12)


def test_sparse_features_normalizations_and_dropout():
    x, _, _ = tiny_graph()
    x[3] = 0.0  # an all-zero row stays zero
    binary = (x != 0).double()
    l2 = SparseFeatures("binary_l2", dropout=0.5).eval()
    expected = binary / binary.norm(dim=1, keepdim=True).clamp(min=1e-300)
    torch.testing.assert_close(l2(x).to_dense(), expected, rtol=1e-12, atol=0)
    total = SparseFeatures("sum").eval()
    torch.testing.assert_close(
        total(x).to_dense(), x / x.sum(1, keepdim=True).clamp(min=1e-300), rtol=1e-12, atol=0
    )
    l2.train()
    torch.manual_seed(0)
    dropped = l2(x).to_dense()
    assert ((dropped != 0) <= (x != 0)).all()  # only non-zero entries survive
    kept = (dropped != 0).sum() / (x != 0).sum()
    assert 0.35 < float(kept) < 0.65
    norms = dropped.norm(dim=1)
    alive = (dropped != 0).any(dim=1)
    torch.testing.assert_close(norms[alive], torch.ones_like(norms[alive]))
    # the cache is keyed on the tensor: new values give new features
    y = x.clone()
    y[0, :] = 1.0
    assert not torch.equal(total.eval()(y).to_dense(), total(x).to_dense())


def test_mixhop_net_psum_output_is_a_softmax_weighted_sum_of_blocks():
    x, _, edge_index = tiny_graph()
    n = x.shape[0]
    adj = adjacency_matrix(*normalized_adjacency(edge_index, n), n)
    net = MixHopNet(12, 3, hidden_widths=[[4, 4, 4]], output_widths=[0, 3, 3]).eval()
    with torch.no_grad():
        net.psum_logits.copy_(torch.tensor([0.3, -1.0]))
    h = net.features(x)
    h = torch.relu(net.norms[0](net.layers[0](h, adj)))
    out = net.layers[1](h, adj)
    weights = torch.softmax(torch.tensor([0.3, -1.0]), 0)
    expected = weights[0] * out[:, :3] + weights[1] * out[:, 3:]
    torch.testing.assert_close(net(x, adj), expected, rtol=1e-12, atol=1e-12)
    # batch statistics: the hidden layer has zero mean over the nodes in evaluation too
    pre = net.norms[0].norm(net.layers[0](net.features(x), adj))
    torch.testing.assert_close(pre.mean(0), torch.zeros(12), atol=1e-10, rtol=0)


def test_bad_widths_are_refused():
    with pytest.raises(ValueError, match="multiple of num_classes"):
        MixHopNet(12, 3, output_widths=[0, 2, 2])
    with pytest.raises(ValueError, match="differ in length"):
        MixHopLayer(12, [0, 1], [2])
    with pytest.raises(ValueError, match="dropout"):
        SparseFeatures("binary_l2", dropout=1.0)
