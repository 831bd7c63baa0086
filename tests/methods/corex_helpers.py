"""What ``test_corex_module.py`` and ``test_tcorex_module.py`` share.

* :func:`cpu_trainer`, :func:`read_events`: a quiet float64 CPU trainer, a fit's events;
* :func:`print_config`, :func:`fit_fmri_config`, :func:`assert_strategy_checks`: the CLI and
  config checks both modules pass the same way;
* the 2-process comparison: :func:`launch_sharded_runs` runs ``tests/scripts/ddp_corex.py`` or
  ``ddp_tcorex.py`` (Lightning's ``ddp_variables`` re-launches the script, so it runs as a
  subprocess, in a clean environment) on 1 process for 6 epochs and on 2 for 3 then resumed to
  6; :func:`sharded_checkpoints` and :func:`sharded_results` load and compare what they wrote.

Imported by those test modules as ``corex_helpers`` (pytest puts their folder on ``sys.path``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
import yaml
from lightning.pytorch.strategies import DDPStrategy
from subprocess_runs import run_together

from lit_info.cli import main
from lit_info.strategies import VariableShardingStrategy

QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


def cpu_trainer(**kwargs: Any) -> pl.Trainer:
    """A float64 CPU trainer without logger, checkpoints, progress bar or sanity check."""
    args: dict[str, Any] = dict(
        accelerator="cpu",
        devices=1,
        precision="64-true",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    args.update(kwargs)
    return pl.Trainer(**args)


def read_events(run_dir: Path) -> Any:
    """The fit's TensorBoard events of ``run_dir`` (the first events file; a test adds one)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    path = sorted(run_dir.glob("events.out.tfevents.*"))[0]
    acc = EventAccumulator(str(path), size_guidance={"scalars": 0, "histograms": 0, "images": 0})
    acc.Reload()
    return acc


# -- the CLI and the configs --------------------------------------------------------------------
def print_config(config: Path, capsys: Any, request: Any) -> tuple[dict, dict]:
    """``fit --print_config`` of ``config``; a file source reads the shared datasets.

    Skips when the config's file is not in the datasets folder.

    Returns:
        ``(printed, data_init_args)``: the printed config and the file's data arguments.
    """
    extra = []
    source = yaml.safe_load(config.read_text())["data"]["init_args"]
    if source.get("source") == "file":  # the hints read the file: use the shared copy
        datasets = request.getfixturevalue("datasets_dir")
        path = datasets / source["file"]
        if not path.is_file():
            pytest.skip(f"{path} not found")
        extra = [f"--data.init_args.data_dir={datasets}"]
    with pytest.raises(SystemExit) as stop:
        main(["fit", "--config", str(config), *extra, "--print_config"])
    assert stop.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert isinstance(printed["seed_everything"], int)
    trainer = printed["trainer"]
    assert trainer["logger"]["init_args"]["name"] == f"{config.parent.name}/{config.stem}"
    best, last = trainer["callbacks"][:2]
    assert best["init_args"]["monitor"] == "val/nll" and best["init_args"]["mode"] == "min"
    assert last["init_args"]["filename"] == "last"
    assert not Path(source.get("file", "")).is_absolute()
    return printed, source


def fit_fmri_config(config: Path, datasets_dir: Path, tmp_path: Path, epochs: int = 3) -> Any:
    """Fit ``config`` (an fMRI config) for ``epochs`` on the shared datasets; the CLI object.

    Skips when the fMRI file is not in the datasets folder.
    """
    path = datasets_dir / "fmri" / "fmri_timeseries.csv"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return main(
        [
            "fit",
            "--config",
            str(config),
            *QUIET,
            f"--data.init_args.data_dir={datasets_dir}",
            f"--trainer.default_root_dir={tmp_path}",
            f"--trainer.max_epochs={epochs}",
        ]
    )


def assert_strategy_checks(make: Callable[..., pl.LightningModule]) -> None:
    """``make(shard_variables=...)``'s ``setup`` refuses a strategy that disagrees (2 ranks)."""

    class FakeTrainer:
        def __init__(self, strategy):
            self.world_size, self.global_rank, self.strategy = 2, 0, strategy

    module = make(shard_variables=True)
    module.trainer = FakeTrainer(DDPStrategy())
    with pytest.raises(ValueError, match="needs --trainer.strategy ddp_variables"):
        module.setup("fit")
    module = make(shard_variables=False)
    module.trainer = FakeTrainer(VariableShardingStrategy())
    with pytest.raises(ValueError, match="shard_variables true"):
        module.setup("fit")


# -- variables sharded over 2 processes ---------------------------------------------------------
def launch_sharded_runs(tmp: Path, script: Path) -> Path:
    """Run ``script`` on 1 process for 6 epochs and on 2 processes for 3, resumed to 6.

    The 1-process run and the first 2-process run (with TensorBoard logs in ``tmp / "tb"``)
    run at the same time. ``tmp`` then holds ``one.pt``, ``two_a.pt`` (epoch 3), ``two.pt``
    and the checkpoints ``ckpt_1/`` and ``ckpt_2/`` (``epoch=<k>.ckpt``).

    Returns:
        ``tmp``.
    """

    def cmd(devices: int, epochs: int, name: str, *extra: str) -> list[str]:
        return [
            sys.executable,
            str(script),
            "--devices",
            str(devices),
            "--epochs",
            str(epochs),
            "--out",
            str(tmp / f"{name}.pt"),
            "--ckpt-dir",
            str(tmp / f"ckpt_{devices}"),
            *extra,
        ]

    run_together([cmd(2, 3, "two_a", "--log-dir", str(tmp / "tb")), cmd(1, 6, "one")], tmp)
    resume = str(tmp / "ckpt_2" / "epoch=2.ckpt")
    run_together([cmd(2, 6, "two", "--resume", resume)], tmp)
    return tmp


def load(path: Path) -> dict:
    """A ``torch.save``'d file of tensors, on the CPU."""
    return torch.load(path, map_location="cpu", weights_only=True)


def sharded_checkpoints(
    runs: Path, state_tol: tuple[float, float], adam_tol: tuple[float, float]
) -> tuple[dict, dict]:
    """The epoch-3 checkpoints of 2 processes hold the 1-process state and Adam state.

    Args:
        runs: :func:`launch_sharded_runs`' folder.
        state_tol: ``(rtol, atol)`` of the weights and buffers.
        adam_tol: ``(rtol, atol)`` of Adam's state.

    Returns:
        The 2-process checkpoint's ``state_dict`` and Adam state of the weights.
    """
    one = load(runs / "ckpt_1" / "epoch=2.ckpt")
    two = load(runs / "ckpt_2" / "epoch=2.ckpt")
    rtol, atol = state_tol
    for key, value in one["state_dict"].items():
        torch.testing.assert_close(two["state_dict"][key], value, rtol=rtol, atol=atol)
    state_1, state_2 = (c["optimizer_states"][0]["state"][0] for c in (one, two))
    rtol, atol = adam_tol
    for key, value in state_1.items():
        torch.testing.assert_close(state_2[key], value, rtol=rtol, atol=atol)
    return two["state_dict"], state_2


def sharded_results(
    runs: Path,
    weights_tol: tuple[float, float],
    metrics: Iterable[str],
    test_metrics: Iterable[str],
    images: set[str],
) -> tuple[dict, dict, Any]:
    """The 2-process fit (resumed) ends with the weights and metrics of the 1-process fit.

    Also: rank 0 owned the first 18 of the 37 variables, the first 2-process fit (3 epochs)
    differs from the end, and rank zero logged exactly the image tags ``images``.

    Args:
        runs: :func:`launch_sharded_runs`' folder.
        weights_tol: ``(rtol, atol)`` of the free and the normalized weights.
        metrics: logged metrics equal to ``rel=1e-9``.
        test_metrics: test metrics equal to ``rel=1e-9``.
        images: the image tags of the first 2-process fit's TensorBoard events.

    Returns:
        ``(one, two, events)``: the two fits' outputs and the 2-process fit's TensorBoard
        events.
    """
    one, two = load(runs / "one.pt"), load(runs / "two.pt")
    first = load(runs / "two_a.pt")
    assert (one["world_size"], two["world_size"]) == (1, 2)
    assert first["columns"] == (0, 18)  # rank 0's slice of the 37 variables
    rtol, atol = weights_tol
    torch.testing.assert_close(two["free_weights"], one["free_weights"], rtol=rtol, atol=atol)
    torch.testing.assert_close(two["weights"], one["weights"], rtol=rtol, atol=atol)
    assert not torch.allclose(first["free_weights"], one["free_weights"])  # it kept training
    for key in metrics:
        assert two["metrics"][key] == pytest.approx(one["metrics"][key], rel=1e-9), key
    for key in test_metrics:
        assert two["test"][key] == pytest.approx(one["test"][key], rel=1e-9), key
    # rank zero wrote the histograms and images of the gathered shards
    logged = read_events(runs / "tb")
    assert set(logged.Tags()["images"]) == images
    return one, two, logged
