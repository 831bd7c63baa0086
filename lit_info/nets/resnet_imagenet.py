"""ImageNet-style ResNet-18 (torchvision architecture), optionally started from local weights.

The network is torchvision's ResNet-18 (``torchvision.models.resnet18(weights=None)``: 7x7
stride-2 stem, max-pool, four stages of two basic blocks, global average pooling) with the
1000-class ImageNet head replaced by ``nn.Linear(512, num_classes)``. It subclasses
:class:`torchvision.models.ResNet`, so its ``state_dict`` keys are exactly torchvision's
(``conv1.weight``, ``layer1.0.bn1.running_mean``, ..., ``fc.bias``).

Inputs may be grayscale (repeated to 3 channels) or RGB and are optionally resized (bilinear) to
``input_size x input_size`` before the stem.

Nothing is ever downloaded. Pretrained weights come from a local file (``pretrained_path``):

* a torchvision state dict, as written by ``torch.save(resnet18().state_dict(), path)``; this is
  the format of torchvision's ImageNet weights file ``resnet18-f37072fd.pth``;
* a Lightning checkpoint of a lit_info module whose ``net`` is this network (its ``net.``
  parameters are read with :func:`lit_info.checkpoints.load_state_dict_from_checkpoint`).

Every tensor of the file must match a tensor of the network by name and shape, and every tensor
of the network must be in the file, except the head ``fc.*``: it is skipped when its shape
differs (the 1000-class ImageNet head for a 2-class problem) or when it is absent, and then keeps
its random initialization.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, ResNet

from lit_info.checkpoints import load_state_dict_from_checkpoint, read_checkpoint

__all__ = ["ResNet18ImageNet", "load_resnet_state_dict"]

# Prefix of the classification head in the torchvision ResNet state dict.
_HEAD_PREFIX = "fc."
# How many key names an error message lists before summarizing the rest.
_MAX_LISTED = 10


def _list_keys(keys: list[str]) -> str:
    """Comma-separated key names, truncated after :data:`_MAX_LISTED` with a count."""
    shown = ", ".join(keys[:_MAX_LISTED])
    if len(keys) > _MAX_LISTED:
        shown += f", ... ({len(keys) - _MAX_LISTED} more)"
    return shown


def load_resnet_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Read a torchvision ResNet state dict or the ``net.`` weights of a Lightning checkpoint.

    Both are read with :func:`lit_info.checkpoints.read_checkpoint` (``weights_only=True``:
    tensors and plain containers only, nothing in the file is executed); of a Lightning
    checkpoint (a dict with a ``state_dict`` entry) the parameters under ``net.`` are kept, with
    the prefix removed.

    Args:
        path: Local file with the weights.

    Returns:
        The state dict (CPU tensors), keys in torchvision's naming.

    Raises:
        FileNotFoundError: If ``path`` is not an existing file.
        ValueError: If the file cannot be read by ``torch.load`` or holds no state dict.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"pretrained_path not found: {str(path)!r} (nothing is downloaded: copy the weights "
            "file, e.g. torchvision's resnet18-f37072fd.pth, onto this machine first)"
        )
    obj = read_checkpoint(path, what="pretrained_path")
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        return load_state_dict_from_checkpoint(path)
    if (
        not isinstance(obj, Mapping)
        or not obj
        or not all(isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items())
    ):
        raise ValueError(
            f"pretrained_path {str(path)!r} holds a {type(obj).__name__}, not a state dict "
            "(a mapping of parameter names to tensors) nor a Lightning checkpoint"
        )
    return dict(obj)


class ResNet18ImageNet(ResNet):
    """torchvision ResNet-18 with a new head, grayscale/resize handling and local weights.

    Args:
        in_channels: Channels of the inputs: 1 (grayscale, repeated to 3) or 3.
        num_classes: Number of output logits (size of the new head ``fc``).
        input_size: If given, inputs are resized (bilinear) to ``input_size x input_size``
            before the stem, e.g. 112 or 224 for small images; None keeps their size.
        pretrained_path: A local weights file (see the module docstring) loaded into the
            network; None keeps torchvision's random initialization. Nothing is downloaded.
        freeze_backbone: Train only the head: every parameter outside ``fc`` gets
            ``requires_grad=False`` and every module outside ``fc`` stays in eval mode
            (BatchNorm uses and keeps its running statistics). Linearizing the network (e.g.
            :class:`~lit_info.callbacks.SampleInformation`) then differentiates the head only.
        freeze_batchnorm: Keep every BatchNorm layer in eval mode during training (running
            statistics used, never updated), as the SUI authors do when fine-tuning a
            pretrained network; the trained function is then the one that is linearized.

    Raises:
        ValueError: If an argument is invalid or the weights file does not fit the network.
        FileNotFoundError: If ``pretrained_path`` does not exist.
    """

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 1000,
        input_size: int | None = None,
        pretrained_path: str | None = None,
        freeze_backbone: bool = False,
        freeze_batchnorm: bool = False,
    ) -> None:
        if in_channels not in (1, 3):
            raise ValueError(f"in_channels must be 1 (grayscale) or 3 (RGB), got {in_channels}")
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
        if input_size is not None and (
            isinstance(input_size, bool) or not isinstance(input_size, int) or input_size < 1
        ):
            raise ValueError(f"input_size must be a positive int or None, got {input_size!r}")
        for name, flag in (
            ("freeze_backbone", freeze_backbone),
            ("freeze_batchnorm", freeze_batchnorm),
        ):
            if not isinstance(flag, bool):
                raise ValueError(f"{name} must be True or False, got {flag!r}")
        # The architecture of torchvision.models.resnet18(weights=None), with a new head.
        super().__init__(BasicBlock, [2, 2, 2, 2], num_classes=num_classes)
        self.in_channels = in_channels
        self.input_size = input_size
        self.pretrained_path = pretrained_path
        self.freeze_backbone = freeze_backbone
        self.freeze_batchnorm = freeze_batchnorm
        #: Head tensors of the weights file left out because their shape differs (or absent).
        self.skipped_keys: list[str] = []
        if pretrained_path is not None:
            self.skipped_keys = self.load_pretrained(pretrained_path)
        if freeze_backbone:
            for name, param in self.named_parameters():
                param.requires_grad_(name.startswith(_HEAD_PREFIX))
        self.train(self.training)  # applies the frozen modules' eval mode

    def load_pretrained(self, path: str | Path) -> list[str]:
        """Load a local weights file into the network; the head is skipped if it does not fit.

        Args:
            path: A torchvision ResNet state dict or a Lightning checkpoint (module docstring).

        Returns:
            Names of the head tensors (``fc.*``) not loaded (shape differs, or absent in the
            file); empty if the head was loaded too.

        Raises:
            FileNotFoundError: If ``path`` does not exist.
            ValueError: If the file is unreadable, or its tensors do not match the network
                outside the head (the message lists missing, unexpected and mismatched keys).
        """
        loaded = load_resnet_state_dict(path)
        own = self.state_dict()
        unexpected = [k for k in loaded if k not in own]
        mismatched = [
            k
            for k in loaded
            if k in own
            and tuple(loaded[k].shape) != tuple(own[k].shape)
            and not k.startswith(_HEAD_PREFIX)
        ]
        missing = [k for k in own if k not in loaded and not k.startswith(_HEAD_PREFIX)]
        if unexpected or mismatched or missing:
            problems = []
            if missing:
                problems.append(f"missing keys ({len(missing)}): {_list_keys(missing)}")
            if unexpected:
                problems.append(f"unexpected keys ({len(unexpected)}): {_list_keys(unexpected)}")
            if mismatched:
                shapes = [
                    f"{k} {tuple(loaded[k].shape)} vs {tuple(own[k].shape)}" for k in mismatched
                ]
                problems.append(f"shape mismatches ({len(mismatched)}): {_list_keys(shapes)}")
            raise ValueError(
                f"pretrained_path {str(path)!r} does not fit the torchvision ResNet-18: "
                + "; ".join(problems)
            )
        head = [k for k in own if k.startswith(_HEAD_PREFIX)]
        head_fits = all(k in loaded and tuple(loaded[k].shape) == tuple(own[k].shape) for k in head)
        skipped = [] if head_fits else head
        state = {k: v for k, v in loaded.items() if head_fits or not k.startswith(_HEAD_PREFIX)}
        self.load_state_dict({**own, **state})
        return skipped

    def train(self, mode: bool = True) -> ResNet18ImageNet:
        """Set the training mode, keeping frozen parts (backbone, BatchNorm) in eval mode.

        Args:
            mode: Training (True) or evaluation (False) mode.

        Returns:
            The network.
        """
        super().train(mode)
        if mode and self.freeze_backbone:
            for name, child in self.named_children():
                if name != "fc":
                    child.train(False)
        if mode and self.freeze_batchnorm:
            for module in self.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.train(False)
        return self

    def _prepare(self, x: Tensor) -> Tensor:
        """Check the channels, repeat grayscale to RGB and resize."""
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"expected images (N, {self.in_channels}, H, W), got shape {tuple(x.shape)}"
            )
        if self.in_channels == 1:
            x = x.expand(-1, 3, -1, -1)
        if self.input_size is not None and tuple(x.shape[-2:]) != (
            self.input_size,
            self.input_size,
        ):
            x = F.interpolate(
                x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False
            )
        return x

    def features(self, x: Tensor) -> Tensor:
        """Pooled 512-dimensional features (the input of the head).

        Args:
            x: Images ``(N, in_channels, H, W)``.

        Returns:
            Features ``(N, 512)``.
        """
        x = self._prepare(x)
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)

    def forward(self, x: Tensor) -> Tensor:
        """Compute logits.

        Args:
            x: Images ``(N, in_channels, H, W)``.

        Returns:
            Logits ``(N, num_classes)``.
        """
        return self.fc(self.features(x))
