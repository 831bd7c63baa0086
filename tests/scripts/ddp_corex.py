"""Fit CorexModule full batch on 1 process, or with its variables sharded over N CPU processes.

Used by ``tests/methods/test_corex_module.py``: Lightning's subprocess launcher re-runs this
script for ranks 1..N-1 (strategy ``ddp_variables``), so it must be a standalone file. Rank zero
writes ``{"world_size", "columns", "free_weights", "weights", "tc", "metrics", "test"}`` (the
weights gathered over the shards) to ``--out``. Every epoch writes a checkpoint
(``<ckpt-dir>/epoch=<k>.ckpt``); ``--resume FILE`` continues a fit from one. The command line,
the fit and the output are those of ``ddp_corex_common.py``, shared with ``ddp_tcorex.py``.

Float64 throughout; the variables (37) do not divide evenly between 2 processes. The model
logs TensorBoard histograms and images every 2 epochs, so the collectives of the image code
run too.

Usage::

    python tests/scripts/ddp_corex.py --devices 2 --epochs 3 --out result.pt --ckpt-dir ckpts
"""

from __future__ import annotations

from typing import Any

from ddp_corex_common import main

from lit_info.data import TimeSeriesDataModule
from lit_info.methods import CorexModule

P, M = 37, 3


def build() -> tuple[TimeSeriesDataModule, CorexModule]:
    """The data and the model (after seeding)."""
    dm = TimeSeriesDataModule(
        n_variables=P, n_factors=M, train_samples=24, val_samples=12, test_samples=12, seed=3
    )
    model = CorexModule(
        n_variables=P,
        n_hidden=M,
        lr=0.05,
        epochs_per_stage=2,
        shard_variables=True,
        image_every_n_epochs=2,
    )
    return dm, model


def outputs(model: CorexModule, moments: Any) -> dict[str, Any]:
    """The objective of the final weights on the training split."""
    return {"tc": float(moments.tc)}


if __name__ == "__main__":
    main(__doc__.splitlines()[0], build, outputs, gradient_clip_val=1e-3)
