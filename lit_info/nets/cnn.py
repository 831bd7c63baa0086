"""The 4-layer CNN of Harutyunyan et al. (ICML 2020) used for MNIST-like images.

Reference: H. Harutyunyan, K. Reing, G. Ver Steeg, A. Galstyan, "Improving generalization by
controlling label-noise information in neural network weights", ICML 2020.

Architecture (each conv is followed by BatchNorm and ReLU)::

    conv 32, kernel 4, stride 2, padding 1
    conv 32, kernel 4, stride 2, padding 1
    conv 64, kernel 3, stride 2, padding 0
    conv 256, kernel 3, stride 1, padding 0
    flatten -> FC 128 -> ReLU -> FC num_classes

The paddings ``(1, 1, 0, 0)`` are those of the authors' released configuration; on 28x28
inputs they give spatial sizes 14 -> 7 -> 3 -> 1 (and 16 -> 8 -> 3 -> 1 on 32x32). On tiny
inputs (e.g. the 8x8 scikit-learn digits: 4 -> 2 -> collapse) the last two unpadded convs do
not fit, so when ``conv_padding`` is left as ``None`` the network falls back to padding 1 on
every conv (8x8: 4 -> 2 -> 1 -> 1). The resolved choice is stored in
:attr:`MNISTCNN.conv_padding`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

#: Paddings of the four convolutions in the authors' release.
PAPER_CONV_PADDING: tuple[int, int, int, int] = (1, 1, 0, 0)
#: Fallback paddings used when the paper's choice collapses the feature map (tiny images).
SMALL_INPUT_CONV_PADDING: tuple[int, int, int, int] = (1, 1, 1, 1)

_CONV_SPECS: tuple[tuple[int, int, int], ...] = (
    # (out_channels, kernel_size, stride)
    (32, 4, 2),
    (32, 4, 2),
    (64, 3, 2),
    (256, 3, 1),
)


def _conv_out(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


def _fits(hw: tuple[int, int], padding: Sequence[int]) -> bool:
    for size in hw:
        for (_, kernel, stride), pad in zip(_CONV_SPECS, padding, strict=True):
            if size + 2 * pad < kernel:
                return False
            size = _conv_out(size, kernel, stride, pad)
    return True


def _as_hw(image_size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(image_size, int):
        hw = (image_size, image_size)
    else:
        hw = tuple(int(s) for s in image_size)
        if len(hw) != 2:
            raise ValueError(f"image_size must be an int or (height, width), got {image_size!r}")
    if min(hw) < 1:
        raise ValueError(f"image_size must be positive, got {image_size!r}")
    return hw  # type: ignore[return-value]


class MNISTCNN(nn.Module):
    """4-layer CNN (conv-BN-ReLU x4, FC 128, FC num_classes) of Harutyunyan et al. (2020).

    Args:
        in_channels: Number of input channels (1 for MNIST).
        num_classes: Number of output logits.
        image_size: Input spatial size, an int for square images or ``(height, width)``.
        conv_padding: Paddings of the four convolutions. ``None`` (default) uses the authors'
            ``(1, 1, 0, 0)`` when it fits ``image_size`` and ``(1, 1, 1, 1)`` otherwise.

    Attributes:
        conv_padding: The paddings actually used.
        feature_dim: Size of the flattened conv features fed to the first FC layer.

    Raises:
        ValueError: If an argument is invalid or the input is too small for the convolutions.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        image_size: int | Sequence[int] = 28,
        conv_padding: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        if in_channels < 1:
            raise ValueError(f"in_channels must be >= 1, got {in_channels}")
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        hw = _as_hw(image_size)
        if conv_padding is None:
            padding = (
                PAPER_CONV_PADDING if _fits(hw, PAPER_CONV_PADDING) else SMALL_INPUT_CONV_PADDING
            )
        else:
            padding = tuple(int(p) for p in conv_padding)
            if len(padding) != len(_CONV_SPECS) or min(padding) < 0:
                raise ValueError(
                    f"conv_padding must be 4 non-negative ints, got {tuple(conv_padding)!r}"
                )
        if not _fits(hw, padding):
            raise ValueError(
                f"image_size {hw} is too small for MNISTCNN with conv_padding {padding}"
            )
        self.conv_padding: tuple[int, ...] = padding

        layers: list[nn.Module] = []
        channels = in_channels
        for (out_ch, kernel, stride), pad in zip(_CONV_SPECS, padding, strict=True):
            layers += [
                nn.Conv2d(channels, out_ch, kernel_size=kernel, stride=stride, padding=pad),
                nn.BatchNorm2d(out_ch),
                nn.ReLU(inplace=True),
            ]
            channels = out_ch
        self.features = nn.Sequential(*layers)

        # Flattened size from a dummy forward pass in eval mode (so BatchNorm running
        # statistics are neither needed from a batch nor updated).
        was_training = self.features.training
        self.features.eval()
        with torch.no_grad():
            dummy = self.features(torch.zeros(1, in_channels, *hw))
        self.features.train(was_training)
        self.feature_dim: int = int(dummy.numel())

        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(self.feature_dim, 128),
            nn.ReLU(inplace=True),
            nn.Linear(128, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        """Compute logits.

        Args:
            x: Images of shape ``(N, in_channels, H, W)``.

        Returns:
            Logits of shape ``(N, num_classes)``.
        """
        return self.classifier(self.features(x))
