"""Safe checkpoint reading: allow-listed classes load, anything else is named and refused."""

from __future__ import annotations

import argparse
import collections

import pytest
import torch

from lit_info.checkpoints import (
    CheckpointError,
    load_state_dict_from_checkpoint,
    read_checkpoint,
    resolve_checkpoint_path,
)


def test_lightning_style_checkpoint_with_a_step_schedule_loads_weights_only(tmp_path):
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[2, 5])
    path = tmp_path / "a.ckpt"
    # MultiStepLR keeps its milestones in a collections.Counter: not loadable by weights_only
    # without the allow-list
    torch.save(
        {
            "state_dict": {f"net.{k}": v for k, v in net.state_dict().items()},
            "lr_schedulers": [sched.state_dict()],
        },
        path,
    )
    ckpt = read_checkpoint(path)
    assert isinstance(ckpt["lr_schedulers"][0]["milestones"], collections.Counter)
    sub = load_state_dict_from_checkpoint(path)
    torch.testing.assert_close(sub["weight"], net.weight.detach())


def test_a_file_naming_an_unknown_class_is_refused_unless_trusted(tmp_path):
    path = tmp_path / "odd.ckpt"
    torch.save({"state_dict": {}, "extra": argparse.Namespace(a=1)}, path)
    with pytest.raises(CheckpointError, match=r"argparse\.Namespace.*--weights_only false"):
        read_checkpoint(path)
    assert read_checkpoint(path, trusted=True)["extra"].a == 1


@pytest.mark.parametrize(
    "content", [b"", b"not a checkpoint at all" * 10, "truncate"], ids=["empty", "text", "cut"]
)
def test_damaged_files_are_named_as_damaged(tmp_path, content):
    path = tmp_path / "bad.ckpt"
    if content == "truncate":
        torch.save({"state_dict": {"net.w": torch.zeros(1000)}}, path)
        content = path.read_bytes()[:1500]
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=r"bad\.ckpt is damaged or not a PyTorch checkpoint"):
        read_checkpoint(path)


def test_a_glob_pattern_picks_the_newest_match(tmp_path):
    import os

    for i, name in enumerate(["version_0", "version_1", "version_2"]):
        folder = tmp_path / name / "checkpoints"
        folder.mkdir(parents=True)
        path = folder / "best.ckpt"
        torch.save({"state_dict": {"net.w": torch.full((1,), float(i))}}, path)
        os.utime(path, (1000 + i * (-1 if i == 2 else 1), 1000 + i * (-1 if i == 2 else 1)))
    pattern = str(tmp_path / "version_*" / "checkpoints" / "best.ckpt")
    assert resolve_checkpoint_path(pattern) == tmp_path / "version_1" / "checkpoints" / "best.ckpt"
    assert float(load_state_dict_from_checkpoint(pattern)["w"]) == 1.0
    with pytest.raises(FileNotFoundError, match="no checkpoint matches"):
        resolve_checkpoint_path(str(tmp_path / "nothing_*" / "best.ckpt"))
