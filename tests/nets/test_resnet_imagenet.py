"""ImageNet-style ResNet-18 (``resnet18_imagenet``): architecture, local weights, freezing, SUI.

Weights files are written by the tests from randomly initialized torchvision networks; nothing
is downloaded.
"""

from __future__ import annotations

import math

import lightning.pytorch as pl
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader
from torchvision.models import resnet18

from lit_info.callbacks.sample_information import SampleInformation
from lit_info.data.images import IndexedTensorDataset
from lit_info.info.jacobian import network_jacobian, parameter_names
from lit_info.methods import Classifier
from lit_info.nets import ResNet18ImageNet, build_net

HEAD = ["fc.weight", "fc.bias"]
# Frozen parts stay in eval mode on purpose; Lightning warns about it when fitting starts.
EVAL_MODE_WARNING = r"ignore:Found \d+ module\(s\) in eval mode"


@pytest.fixture(scope="module")
def torchvision_weights(tmp_path_factory) -> tuple[str, dict[str, torch.Tensor]]:
    """A randomly initialized torchvision ResNet-18 state dict saved like the ImageNet file."""
    torch.manual_seed(123)
    state = resnet18(weights=None).state_dict()
    # non-trivial BatchNorm statistics, so that loading them matters in eval mode
    for name, value in state.items():
        if name.endswith("running_mean"):
            value.normal_(0.0, 0.1)
        elif name.endswith("running_var"):
            value.uniform_(0.5, 1.5)
    path = tmp_path_factory.mktemp("weights") / "resnet18-random.pth"
    torch.save(state, path)
    return str(path), state


def _torchvision_features(state: dict[str, torch.Tensor]) -> nn.Module:
    net = resnet18(weights=None)
    net.load_state_dict(state)
    net.fc = nn.Identity()
    return net.eval()


def test_build_matches_the_torchvision_architecture():
    torch.manual_seed(0)
    net = build_net("resnet18_imagenet", 2, (1, 28, 28))
    assert isinstance(net, ResNet18ImageNet)
    reference = resnet18(weights=None).state_dict()
    own = net.state_dict()
    assert list(own) == list(reference)
    for name, value in own.items():
        expected = (2, 512) if name == "fc.weight" else (2,) if name == "fc.bias" else None
        assert tuple(value.shape) == (expected or tuple(reference[name].shape)), name
    assert net.skipped_keys == []
    net.train()
    out = net(torch.randn(3, 1, 28, 28))
    assert out.shape == (3, 2) and torch.isfinite(out).all()
    with pytest.raises(ValueError, match=r"expected images \(N, 1, H, W\)"):
        net(torch.randn(2, 3, 28, 28))


def test_input_resize_and_argument_errors():
    net = build_net("resnet18_imagenet", 3, (1, 8, 8), input_size=40)
    assert net._prepare(torch.zeros(2, 1, 8, 8)).shape == (2, 3, 40, 40)
    assert net.eval()(torch.zeros(2, 1, 8, 8)).shape == (2, 3)
    with pytest.raises(ValueError, match="in_channels"):
        build_net("resnet18_imagenet", 2, (2, 8, 8))
    with pytest.raises(ValueError, match="input_size"):
        build_net("resnet18_imagenet", 2, (1, 8, 8), input_size=0)
    with pytest.raises(TypeError, match="resnet18_imagenet"):
        build_net("resnet18_imagenet", 2, (1, 8, 8), weights="IMAGENET1K_V1")


def test_state_dict_file_reproduces_the_features_and_skips_the_head(torchvision_weights):
    path, state = torchvision_weights
    reference = _torchvision_features(state)
    torch.manual_seed(1)
    rgb = build_net("resnet18_imagenet", 2, (3, 32, 32), pretrained_path=path).eval()
    assert rgb.skipped_keys == HEAD
    assert rgb.fc.weight.shape == (2, 512)
    for name, value in rgb.state_dict().items():
        if name not in HEAD:
            assert torch.equal(value, state[name]), name
    x = torch.randn(2, 3, 32, 32)
    gray = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(rgb.features(x), reference(x))
        assert torch.equal(rgb(x), rgb.fc(reference(x)))
        grayscale = build_net("resnet18_imagenet", 2, (1, 32, 32), pretrained_path=path).eval()
        assert torch.equal(grayscale.features(gray), reference(gray.repeat(1, 3, 1, 1)))
        # a 1000-class head fits and is loaded too
        full = ResNet18ImageNet(3, 1000, pretrained_path=path).eval()
    assert full.skipped_keys == []
    assert torch.equal(full.fc.weight, state["fc.weight"])


def test_wrong_files_raise_clear_errors(tmp_path, torchvision_weights):
    missing = tmp_path / "no" / "resnet18.pth"
    with pytest.raises(FileNotFoundError, match=r"no/resnet18\.pth"):
        build_net("resnet18_imagenet", 2, (1, 8, 8), pretrained_path=str(missing))

    text = tmp_path / "notes.txt"
    text.write_text("not weights\n")
    with pytest.raises(ValueError, match=r"pretrained_path .*notes\.txt is damaged"):
        build_net("resnet18_imagenet", 2, (1, 8, 8), pretrained_path=str(text))

    listed = tmp_path / "list.pt"
    torch.save([torch.zeros(2)], listed)
    with pytest.raises(ValueError, match="not a state dict"):
        build_net("resnet18_imagenet", 2, (1, 8, 8), pretrained_path=str(listed))

    torch.manual_seed(0)
    cifar = tmp_path / "resnet18_cifar.pth"
    torch.save(build_net("resnet18", 2, (3, 32, 32)).state_dict(), cifar)
    with pytest.raises(
        ValueError, match=r"missing keys \(\d+\): conv1\.weight, bn1\.weight"
    ) as err:
        build_net("resnet18_imagenet", 2, (1, 8, 8), pretrained_path=str(cifar))
    assert "unexpected keys" in str(err.value) and "stem.0.weight" in str(err.value)

    _, state = torchvision_weights
    partial = tmp_path / "partial.pth"
    partial_state = {k: v for k, v in state.items() if not k.startswith("layer4.")}
    torch.save({**partial_state, "extra.weight": torch.zeros(1)}, partial)
    with pytest.raises(
        ValueError, match=r"missing keys \(\d+\): layer4\.0\.conv1\.weight.*unexpected keys \(1\)"
    ):
        build_net("resnet18_imagenet", 2, (1, 8, 8), pretrained_path=str(partial))

    reshaped = tmp_path / "reshaped.pth"
    torch.save({**state, "conv1.weight": torch.zeros(64, 1, 7, 7)}, reshaped)
    with pytest.raises(ValueError, match=r"shape mismatches \(1\): conv1\.weight"):
        build_net("resnet18_imagenet", 2, (1, 8, 8), pretrained_path=str(reshaped))


def test_freeze_backbone_trains_and_linearizes_the_head_only():
    torch.manual_seed(0)
    net = build_net("resnet18_imagenet", 2, (1, 8, 8), freeze_backbone=True)
    assert [n for n, p in net.named_parameters() if p.requires_grad] == HEAD
    net.train()
    assert net.training and net.fc.training
    assert not any(m.training for name, m in net.named_modules() if name and name != "fc")
    before = net.bn1.running_mean.clone()
    net(torch.randn(4, 1, 8, 8)).sum().backward()
    assert torch.equal(net.bn1.running_mean, before)  # BatchNorm statistics frozen
    assert all(p.grad is None for n, p in net.named_parameters() if n not in HEAD)
    assert parameter_names(net) == HEAD
    jac = network_jacobian(net, torch.randn(3, 1, 8, 8))
    assert jac.shape == (3, 2, 512 * 2 + 2)

    bn_frozen = build_net("resnet18_imagenet", 2, (1, 8, 8), freeze_batchnorm=True).train()
    norms = [m for m in bn_frozen.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms and not any(m.training for m in norms)
    assert bn_frozen.layer1[0].conv1.weight.requires_grad and bn_frozen.layer1.training


class _RandomImages(pl.LightningDataModule):
    """Random grayscale 8x8 images of two classes; items ``(x, y, index)``."""

    def __init__(self, n_train: int = 12, n_val: int = 4) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(n_train + n_val, 1, 8, 8, generator=gen)
        y = torch.arange(n_train + n_val) % 2
        x[y == 1] += 0.5
        self.train_eval_dataset = IndexedTensorDataset(x[:n_train], y[:n_train])
        self.val_dataset = IndexedTensorDataset(x[n_train:], y[n_train:])

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_eval_dataset, batch_size=4, shuffle=True)

    def train_eval_dataloader(self) -> DataLoader:
        return DataLoader(self.train_eval_dataset, batch_size=8)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_dataset, batch_size=8)


def _fit(
    tmp_path, net_kwargs: dict, callback: SampleInformation, n_train: int, n_val: int
) -> Classifier:
    pl.seed_everything(0, verbose=False)
    model = Classifier(
        num_classes=2,
        input_shape=(1, 8, 8),
        net="resnet18_imagenet",
        net_kwargs=net_kwargs,
        optimizer="sgd",
        lr=2e-3,
    )
    pl.Trainer(
        max_epochs=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        num_sanity_val_steps=0,
        callbacks=[callback],
        default_root_dir=tmp_path,
    ).fit(model, _RandomImages(n_train, n_val))
    return model


def _check_results(cb: SampleInformation, n: int) -> None:
    r = cb.results
    assert r["si"].shape == r["fsi"].shape == (n,)
    assert torch.isfinite(r["si"]).all() and torch.isfinite(r["fsi"]).all()
    assert (r["si"] >= 0).all() and (r["fsi"] >= 0).all() and r["si"].sum() > 0


@pytest.mark.filterwarnings(EVAL_MODE_WARNING)
def test_classifier_fine_tunes_and_sample_information_uses_a_sketch(tmp_path, torchvision_weights):
    path, state = torchvision_weights
    cb = SampleInformation(
        sketch_dim=16,
        t=20,
        eta=2e-3,
        lam=0.0,
        targets="binary",
        jacobian_chunk_size=8,
        log_images=False,
    )
    # every Jacobian row of the full network (11M parameters) costs about a second on one
    # CPU thread: keep the data tiny
    model = _fit(tmp_path, {"pretrained_path": path, "freeze_batchnorm": True}, cb, 4, 1)
    assert model.trainer.global_step == 1
    changed = [n for n, p in model.net.named_parameters() if n not in HEAD and n in state]
    assert any(not torch.equal(model.net.state_dict()[n], state[n]) for n in changed)
    # BatchNorm kept the loaded running statistics while fine-tuning
    assert torch.equal(model.net.bn1.running_mean, state["bn1.running_mean"])
    _check_results(cb, 4)

    # a Lightning checkpoint of the fine-tuned classifier is a valid weights file too
    ckpt = tmp_path / "fine_tuned.ckpt"
    model.trainer.save_checkpoint(ckpt)
    again = build_net("resnet18_imagenet", 2, (1, 8, 8), pretrained_path=str(ckpt))
    assert again.skipped_keys == []
    for name, value in model.net.state_dict().items():
        assert torch.equal(again.state_dict()[name], value.cpu()), name


@pytest.mark.filterwarnings(EVAL_MODE_WARNING)
def test_frozen_backbone_classifier_and_exact_head_jacobian(tmp_path, torchvision_weights):
    path, state = torchvision_weights
    cb = SampleInformation(t=math.inf, lam=1e-2, log_images=False)
    model = _fit(tmp_path, {"pretrained_path": path, "freeze_backbone": True}, cb, 12, 4)
    assert model.trainer.global_step == 3
    net_state = model.net.state_dict()
    assert all(torch.equal(net_state[n], state[n]) for n in state if n not in HEAD)
    optimizer = model.trainer.optimizers[0]
    assert sum(p.numel() for g in optimizer.param_groups for p in g["params"]) == 1026
    _check_results(cb, 12)
