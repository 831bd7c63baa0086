"""Shared helpers of the MixHop benchmarks: train a config in-process, the PyG example model."""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from pathlib import Path

import lightning.pytorch as pl
import torch
import torch.nn.functional as F

from lit_info.cli import main

ROOT = Path(__file__).resolve().parents[1]
DATASETS = Path(os.environ.get("LIT_INFO_DATASETS", ROOT.parent / "shared" / "datasets"))


def quiet() -> None:
    warnings.filterwarnings("ignore")
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)


def fit_config(config: str, seed: int, overrides: list[str] | None = None, inspect=None) -> tuple:
    """Fit ``configs/<config>.yaml`` with ``seed``.

    Returns (test accuracy of the best-validation checkpoint, fit seconds, the model), and
    ``inspect(model)`` of the model at the end of the fit (before the best checkpoint is
    loaded for the test) as a fourth entry when ``inspect`` is given.
    """
    import time

    data_dir = DATASETS / ("mixhop-synthetic" if "synthetic" in config else "planetoid")
    with tempfile.TemporaryDirectory() as tmp:
        args = [
            "--config",
            str(ROOT / "configs" / f"{config}.yaml"),
            f"--seed_everything={seed}",
            f"--trainer.default_root_dir={tmp}",
            "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false",
            f"--data.init_args.data_dir={data_dir}",
            *(overrides or []),
        ]
        cli = main(args, run=False)
        start = time.perf_counter()
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
        seconds = time.perf_counter() - start
        inspected = inspect(cli.model) if inspect is not None else None
        best = cli.trainer.checkpoint_callback.best_model_path
        metrics = cli.trainer.test(
            cli.model, datamodule=cli.datamodule, ckpt_path=best, verbose=False
        )[0]
        if inspect is not None:
            return float(metrics["test/acc"]), seconds, cli.model, inspected
        return float(metrics["test/acc"]), seconds, cli.model


class PyGExampleMixHop(torch.nn.Module):
    """torch-geometric's examples/mixhop.py model (3 MixHopConv(60) layers, BN, dropout)."""

    def __init__(self, in_features: int, num_classes: int):
        from torch_geometric.nn import BatchNorm, Linear, MixHopConv

        super().__init__()
        self.convs = torch.nn.ModuleList(
            [MixHopConv(in_features, 60, powers=[0, 1, 2])]
            + [MixHopConv(180, 60, powers=[0, 1, 2]) for _ in range(2)]
        )
        self.norms = torch.nn.ModuleList([BatchNorm(180) for _ in range(3)])
        self.lin = Linear(180, num_classes)

    def forward(self, x, edge_index):
        x = F.dropout(x, p=0.7, training=self.training)
        for conv, norm in zip(self.convs, self.norms, strict=True):
            x = F.dropout(norm(conv(x, edge_index)), p=0.9, training=self.training)
        return self.lin(x)


def pyg_example(name: str, seed: int) -> float:
    """The example's recipe: SGD lr 0.5, wd 5e-3, StepLR(40, 0.01), 100 epochs, best val."""
    from torch_geometric.io import read_planetoid_data

    data = read_planetoid_data(str(DATASETS / "planetoid" / name / "raw"), name.lower())
    pl.seed_everything(seed, verbose=False)
    model = PyGExampleMixHop(data.num_features, int(data.y.max()) + 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5, weight_decay=0.005)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=40, gamma=0.01)
    best_val = test_acc = 0.0
    for _ in range(100):
        model.train()
        optimizer.zero_grad()
        out = model(data.x, data.edge_index)
        F.cross_entropy(out[data.train_mask], data.y[data.train_mask]).backward()
        optimizer.step()
        scheduler.step()
        model.eval()
        with torch.no_grad():
            pred = model(data.x, data.edge_index).argmax(1)
        val = float((pred[data.val_mask] == data.y[data.val_mask]).float().mean())
        if val > best_val:
            best_val = val
            test_acc = float((pred[data.test_mask] == data.y[data.test_mask]).float().mean())
    return test_acc
