"""Fit TCorexModule full batch on 1 process, or with its variables sharded over N CPU processes.

Used by ``tests/methods/test_tcorex_module.py``: Lightning's subprocess launcher re-runs this
script for ranks 1..N-1 (strategy ``ddp_variables``), so it must be a standalone file. Rank zero
writes ``{"world_size", "columns", "free_weights", "weights", "tc", "scores", "metrics",
"test"}`` (the weights gathered over the shards) to ``--out``. Every epoch writes a checkpoint
(``<ckpt-dir>/epoch=<k>.ckpt``); ``--resume FILE`` continues a fit from one. The command line,
the fit and the output are those of ``ddp_corex_common.py``, shared with ``ddp_corex.py``.

Float64 throughout; the variables (37) do not divide evenly between 2 processes. The model
starts from the pooled linear CorEx (gathered columns), borrows samples across periods
(``gamma``), penalizes the covariance differences (the all-reduced Gram products) and logs
TensorBoard histograms and images every 2 epochs, so the collectives of those paths run too.

Usage::

    python tests/scripts/ddp_tcorex.py --devices 2 --epochs 3 --out result.pt --ckpt-dir ckpts
"""

from __future__ import annotations

from typing import Any

import torch
from ddp_corex_common import main

from lit_info.data import TimeSeriesDataModule
from lit_info.methods import TCorexModule

P, M, T = 37, 3, 4


def build() -> tuple[TimeSeriesDataModule, TCorexModule]:
    """The data and the model (after seeding)."""
    dm = TimeSeriesDataModule(
        source="sudden_change",
        n_variables=P,
        n_factors=M,
        n_periods=T,
        train_samples=12,
        val_samples=8,
        test_samples=8,
        seed=3,
    )
    model = TCorexModule(
        n_variables=P,
        n_periods=T,
        n_hidden=M,
        l2=0.05,
        reg_type="covariance",
        gamma=0.5,
        lr=0.05,
        epochs_per_stage=2,
        init_from_pooled=True,
        shard_variables=True,
        image_every_n_epochs=2,
    )
    return dm, model


def outputs(model: TCorexModule, moments: Any) -> dict[str, Any]:
    """Every period's TC and the change-point scores (a collective when sharded)."""
    scores = model.change_point_scores()
    return {
        "tc": moments.tc.cpu().clone(),
        "scores": {k: torch.from_numpy(v) for k, v in scores.items()},
    }


if __name__ == "__main__":
    main(__doc__.splitlines()[0], build, outputs, gradient_clip_val=1e-2)
