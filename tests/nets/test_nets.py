import numpy as np
import pytest
import torch
from torch import nn

from lit_info.nets import (
    MLP,
    MNISTCNN,
    NET_NAMES,
    build_net,
    resnet18_cifar,
    resnet34_cifar,
)


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def count(m: nn.Module, cls: type) -> int:
    return sum(isinstance(x, cls) for x in m.modules())


def conv_output_sizes(net: nn.Module, x: torch.Tensor) -> list[tuple[int, ...]]:
    sizes: list[tuple[int, ...]] = []
    hooks = [
        mod.register_forward_hook(lambda _m, _i, out: sizes.append(tuple(out.shape[1:])))
        for mod in net.modules()
        if isinstance(mod, nn.Conv2d)
    ]
    net.eval()
    with torch.no_grad():
        net(x)
    for h in hooks:
        h.remove()
    return sizes


@pytest.mark.parametrize("num_classes", [3, 100])
@pytest.mark.parametrize(
    "name,shape",
    [
        ("mnist_cnn", (1, 28, 28)),
        ("mnist_cnn", (1, 8, 8)),
        ("mnist_cnn", (3, 32, 32)),
        ("mlp", (1, 28, 28)),
        ("mlp", (1, 8, 8)),
        ("mlp", (3, 32, 32)),
        ("resnet18", (3, 32, 32)),
        ("resnet18", (1, 28, 28)),
        ("resnet34", (3, 32, 32)),
    ],
)
def test_output_shapes(name, shape, num_classes):
    torch.manual_seed(0)
    net = build_net(name, num_classes, shape)
    net.train()
    out = net(torch.randn(2, *shape))
    assert out.shape == (2, num_classes)
    assert torch.isfinite(out).all()
    # and again in eval mode, on a different batch size
    net.eval()
    with torch.no_grad():
        assert net(torch.randn(5, *shape)).shape == (5, num_classes)


def test_mnist_cnn_paper_geometry_and_param_count():
    net = MNISTCNN(1, 10)
    assert net.conv_padding == (1, 1, 0, 0)
    sizes = conv_output_sizes(net, torch.zeros(1, 1, 28, 28))
    assert sizes == [(32, 14, 14), (32, 7, 7), (64, 3, 3), (256, 1, 1)]
    assert net.feature_dim == 256
    # conv weights+bias, BN affine params, FC 256->128->10, counted by hand
    convs = [(1, 32, 4), (32, 32, 4), (32, 64, 3), (64, 256, 3)]
    expected = sum(ci * co * k * k + co + 2 * co for ci, co, k in convs)
    expected += 256 * 128 + 128 + 128 * 10 + 10
    assert n_params(net) == expected == 218122
    assert count(net, nn.BatchNorm2d) == 4
    assert count(net, nn.ReLU) == 5


def test_mnist_cnn_cifar_geometry():
    net = MNISTCNN(3, 10, image_size=32)
    assert net.conv_padding == (1, 1, 0, 0)
    sizes = conv_output_sizes(net, torch.zeros(1, 3, 32, 32))
    assert [s[1:] for s in sizes] == [(16, 16), (8, 8), (3, 3), (1, 1)]


def test_mnist_cnn_small_input_falls_back_to_padding_one():
    net = MNISTCNN(1, 10, image_size=8)
    assert net.conv_padding == (1, 1, 1, 1)
    sizes = conv_output_sizes(net, torch.zeros(1, 1, 8, 8))
    assert [s[1:] for s in sizes] == [(4, 4), (2, 2), (1, 1), (1, 1)]
    with pytest.raises(ValueError, match="too small"):
        MNISTCNN(1, 10, image_size=8, conv_padding=(1, 1, 0, 0))
    with pytest.raises(ValueError, match="too small"):
        MNISTCNN(1, 10, image_size=3)
    with pytest.raises(ValueError, match="conv_padding"):
        MNISTCNN(1, 10, conv_padding=(1, 1, 0))


def test_mnist_cnn_nonsquare_feature_dim_matches_forward():
    net = MNISTCNN(1, 4, image_size=(28, 40))
    sizes = conv_output_sizes(net, torch.zeros(1, 1, 28, 40))
    assert net.feature_dim == int(np.prod(sizes[-1])) == 256 * 1 * 2  # 40 -> 20 -> 10 -> 4 -> 2
    assert net(torch.zeros(2, 1, 28, 40)).shape == (2, 4)


def test_construction_does_not_touch_batchnorm_statistics():
    net = MNISTCNN(1, 10)
    assert net.training
    for bn in (m for m in net.modules() if isinstance(m, nn.BatchNorm2d)):
        assert int(bn.num_batches_tracked) == 0
        assert torch.all(bn.running_mean == 0)


def test_resnet18_param_count():
    assert n_params(resnet18_cifar(3, 10)) == 11_173_962
    assert n_params(build_net("resnet18", 10, (3, 32, 32))) == 11_173_962
    # ResNet-34 (3/4/6/3 blocks) CIFAR count
    assert n_params(resnet34_cifar(3, 10)) == 21_282_122
    # fc is 512*k + k: changing the class count only changes the head
    assert n_params(resnet18_cifar(3, 100)) - n_params(resnet18_cifar(3, 10)) == 513 * 90
    # stem conv has 3*3*in_channels*64 weights (no bias)
    assert n_params(resnet18_cifar(3, 10)) - n_params(resnet18_cifar(1, 10)) == 2 * 9 * 64


def test_resnet_structure():
    net = resnet18_cifar(3, 10)
    assert count(net, nn.MaxPool2d) == 0
    # stem + 2 per block (8 blocks) + 3 projection shortcuts
    assert count(net, nn.BatchNorm2d) == 1 + 16 + 3
    stem_conv = net.stem[0]
    assert stem_conv.kernel_size == (3, 3) and stem_conv.stride == (1, 1)
    sizes = conv_output_sizes(net, torch.zeros(1, 3, 32, 32))
    assert sizes[0] == (64, 32, 32)
    assert sizes[-1] == (512, 4, 4)
    assert count(resnet34_cifar(3, 10), nn.BatchNorm2d) == 1 + 32 + 3


def test_mlp_linear_model_matches_affine_map():
    torch.manual_seed(0)
    net = MLP(12, 3, hidden=())
    lin = [m for m in net.modules() if isinstance(m, nn.Linear)]
    assert len(lin) == 1
    x = torch.randn(4, 3, 2, 2)
    expected = x.reshape(4, -1) @ lin[0].weight.T + lin[0].bias
    torch.testing.assert_close(net(x), expected)


def test_mlp_layers_and_options():
    net = MLP(64, 5, hidden=(32, 16), activation="tanh", batch_norm=True, dropout=0.5)
    assert [m.out_features for m in net.modules() if isinstance(m, nn.Linear)] == [32, 16, 5]
    assert count(net, nn.BatchNorm1d) == 2
    assert count(net, nn.Tanh) == 2
    assert count(net, nn.Dropout) == 2
    assert n_params(net) == (64 * 32 + 32) + 2 * 32 + (32 * 16 + 16) + 2 * 16 + (16 * 5 + 5)
    plain = MLP(64, 5)
    assert count(plain, nn.BatchNorm1d) == 0 and count(plain, nn.Dropout) == 0
    assert [m.out_features for m in plain.modules() if isinstance(m, nn.Linear)] == [512, 512, 5]
    # dropout is active only in train mode
    net.eval()
    x = torch.randn(8, 64)
    torch.testing.assert_close(net(x), net(x))


def test_mlp_errors():
    with pytest.raises(ValueError, match="activation"):
        MLP(4, 2, activation="swishy")
    with pytest.raises(ValueError, match="dropout"):
        MLP(4, 2, dropout=1.0)
    with pytest.raises(ValueError, match="hidden"):
        MLP(4, 2, hidden=(0,))
    with pytest.raises(ValueError, match="expects 4 features"):
        MLP(4, 2)(torch.zeros(3, 5))


def test_registry_names_and_kwargs():
    assert NET_NAMES == ("mnist_cnn", "mlp", "resnet18", "resnet34", "resnet18_imagenet")
    net = build_net("mlp", 10, (1, 8, 8), hidden=(7,), batch_norm=True)
    assert [m.out_features for m in net.modules() if isinstance(m, nn.Linear)] == [7, 10]
    assert net.net[1].in_features == 64
    cnn = build_net("mnist_cnn", 10, (1, 8, 8), conv_padding=(2, 1, 1, 1))
    assert cnn.conv_padding == (2, 1, 1, 1)


def test_registry_errors():
    with pytest.raises(ValueError, match="unknown net name 'vgg'.*mnist_cnn, mlp, resnet18"):
        build_net("vgg", 10, (3, 32, 32))
    with pytest.raises(TypeError, match="net 'mlp'.*hiden"):
        build_net("mlp", 10, (1, 28, 28), hiden=(3,))
    with pytest.raises(TypeError, match="net 'resnet18'"):
        build_net("resnet18", 10, (3, 32, 32), width=2)
    with pytest.raises(ValueError, match="net 'mlp'.*activation"):
        build_net("mlp", 10, (1, 28, 28), activation="nope")
    with pytest.raises(ValueError, match="input_shape"):
        build_net("mlp", 10, (28, 28))
    with pytest.raises(ValueError, match="num_classes"):
        build_net("mlp", 0, (1, 28, 28))
