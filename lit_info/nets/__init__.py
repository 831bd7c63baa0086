"""Plain ``nn.Module`` networks and a name-based registry.

Use :func:`build_net` to construct a network from its name, the number of classes and the
``(channels, height, width)`` shape of one input sample.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

from torch import nn

from lit_info.nets.cnn import MNISTCNN
from lit_info.nets.mlp import MLP
from lit_info.nets.resnet_cifar import BasicBlock, ResNetCIFAR, resnet18_cifar, resnet34_cifar
from lit_info.nets.resnet_imagenet import ResNet18ImageNet

__all__ = [
    "MLP",
    "MNISTCNN",
    "NET_DESCRIPTIONS",
    "NET_NAMES",
    "BasicBlock",
    "ResNet18ImageNet",
    "ResNetCIFAR",
    "build_net",
    "resnet18_cifar",
    "resnet34_cifar",
]


def _mnist_cnn(num_classes: int, shape: tuple[int, int, int], **kwargs: Any) -> nn.Module:
    return MNISTCNN(shape[0], num_classes, image_size=(shape[1], shape[2]), **kwargs)


def _mlp(num_classes: int, shape: tuple[int, int, int], **kwargs: Any) -> nn.Module:
    return MLP(shape[0] * shape[1] * shape[2], num_classes, **kwargs)


def _resnet18(num_classes: int, shape: tuple[int, int, int], **kwargs: Any) -> nn.Module:
    return resnet18_cifar(shape[0], num_classes, **kwargs)


def _resnet34(num_classes: int, shape: tuple[int, int, int], **kwargs: Any) -> nn.Module:
    return resnet34_cifar(shape[0], num_classes, **kwargs)


def _resnet18_imagenet(num_classes: int, shape: tuple[int, int, int], **kwargs: Any) -> nn.Module:
    return ResNet18ImageNet(shape[0], num_classes, **kwargs)


_REGISTRY: dict[str, Callable[..., nn.Module]] = {
    "mnist_cnn": _mnist_cnn,
    "mlp": _mlp,
    "resnet18": _resnet18,
    "resnet34": _resnet34,
    "resnet18_imagenet": _resnet18_imagenet,
}

#: Names accepted by :func:`build_net`.
NET_NAMES: tuple[str, ...] = tuple(_REGISTRY)

#: One line per network, for ``python -m lit_info list``.
NET_DESCRIPTIONS: dict[str, str] = {
    "mnist_cnn": "the 4-layer CNN of the LIMIT paper for MNIST (net_kwargs: conv_padding)",
    "mlp": "fully connected net (net_kwargs: hidden, activation, batch_norm, dropout)",
    "resnet18": "CIFAR ResNet-18 (3x3 stem, no max-pool)",
    "resnet34": "CIFAR ResNet-34, the LIMIT paper's CIFAR network",
    "resnet18_imagenet": (
        "torchvision's ImageNet ResNet-18, weights from a local file (net_kwargs: "
        "pretrained_path, freeze_backbone, freeze_batchnorm, input_size)"
    ),
}


def build_net(
    name: str, num_classes: int, input_shape: tuple[int, int, int], **kwargs: Any
) -> nn.Module:
    """Build a network by name.

    Args:
        name: One of :data:`NET_NAMES` (``mnist_cnn``, ``mlp``, ``resnet18``, ``resnet34``,
            ``resnet18_imagenet``).
        num_classes: Number of output logits.
        input_shape: Shape ``(channels, height, width)`` of one input sample.
        **kwargs: Extra keyword arguments for the network constructor, e.g. ``hidden``,
            ``activation``, ``batch_norm``, ``dropout`` for ``mlp``, ``conv_padding`` for
            ``mnist_cnn``, or ``input_size``, ``pretrained_path``, ``freeze_backbone``,
            ``freeze_batchnorm`` for ``resnet18_imagenet`` (torchvision's ImageNet ResNet-18,
            weights from a local file only).

    Returns:
        The network, mapping ``(N, *input_shape)`` to ``(N, num_classes)`` logits.

    Raises:
        ValueError: If ``name`` is unknown, ``input_shape``/``num_classes`` is invalid or a
            keyword argument has a bad value (e.g. a weights file that does not fit).
        TypeError: If a keyword argument is not accepted by the network.
        FileNotFoundError: If a weights file (``pretrained_path``) does not exist.
    """
    if name not in _REGISTRY:
        raise ValueError(f"unknown net name {name!r}; available: {', '.join(NET_NAMES)}")
    try:
        shape = tuple(operator.index(s) for s in input_shape)
    except TypeError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(
            f"input_shape must be (channels, height, width) of positive ints, got {input_shape!r}"
        )
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    try:
        return _REGISTRY[name](num_classes, shape, **kwargs)
    except TypeError as err:
        raise TypeError(f"bad keyword arguments for net {name!r}: {err}") from err
    except ValueError as err:
        raise ValueError(f"bad arguments for net {name!r}: {err}") from err
