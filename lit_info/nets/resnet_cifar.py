"""CIFAR-style ResNet-18/34 (He et al. 2016, adapted to 32x32 inputs).

Differences from the ImageNet ResNet: the stem is a single 3x3 convolution with stride 1
(no 7x7 convolution and no max-pool), so a 32x32 input keeps its resolution in the first
stage. Stages have 64/128/256/512 channels (strides 1/2/2/2), followed by global average
pooling and a linear layer. With 3 input channels and 10 classes ResNet-18 has 11,173,962
parameters, the usual count for the CIFAR ResNet-18.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity (or 1x1 conv-BN projection) shortcut.

    Args:
        in_planes: Input channels.
        planes: Output channels.
        stride: Stride of the first convolution (and of the projection shortcut).
    """

    expansion: int = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        if stride != 1 or in_planes != planes:
            self.shortcut: nn.Module = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        """Apply the block.

        Args:
            x: Feature map ``(N, in_planes, H, W)``.

        Returns:
            Feature map ``(N, planes, H / stride, W / stride)``.
        """
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNetCIFAR(nn.Module):
    """ResNet with a CIFAR stem built from :class:`BasicBlock`.

    Args:
        blocks_per_stage: Number of blocks in each of the four stages.
        in_channels: Input channels.
        num_classes: Number of output logits.

    Raises:
        ValueError: If an argument is invalid.
    """

    def __init__(
        self, blocks_per_stage: Sequence[int], in_channels: int = 3, num_classes: int = 10
    ) -> None:
        super().__init__()
        if len(blocks_per_stage) != 4 or min(blocks_per_stage) < 1:
            raise ValueError(
                f"blocks_per_stage must be 4 positive ints, got {tuple(blocks_per_stage)!r}"
            )
        if in_channels < 1:
            raise ValueError(f"in_channels must be >= 1, got {in_channels}")
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
        )
        stages: list[nn.Module] = []
        in_planes = 64
        for planes, n_blocks, stride in zip(
            (64, 128, 256, 512), blocks_per_stage, (1, 2, 2, 2), strict=True
        ):
            blocks: list[nn.Module] = []
            for i in range(n_blocks):
                blocks.append(BasicBlock(in_planes, planes, stride if i == 0 else 1))
                in_planes = planes
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512 * BasicBlock.expansion, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Compute logits.

        Args:
            x: Images ``(N, in_channels, H, W)``.

        Returns:
            Logits ``(N, num_classes)``.
        """
        out = self.stem(x)
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.fc(self.pool(out).flatten(1))


def resnet18_cifar(in_channels: int = 3, num_classes: int = 10) -> ResNetCIFAR:
    """CIFAR ResNet-18 (blocks 2/2/2/2).

    Args:
        in_channels: Input channels.
        num_classes: Number of output logits.

    Returns:
        The network.
    """
    return ResNetCIFAR((2, 2, 2, 2), in_channels=in_channels, num_classes=num_classes)


def resnet34_cifar(in_channels: int = 3, num_classes: int = 10) -> ResNetCIFAR:
    """CIFAR ResNet-34 (blocks 3/4/6/3).

    Args:
        in_channels: Input channels.
        num_classes: Number of output logits.

    Returns:
        The network.
    """
    return ResNetCIFAR((3, 4, 6, 3), in_channels=in_channels, num_classes=num_classes)
