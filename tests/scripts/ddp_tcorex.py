"""Fit TCorexModule full batch on 1 process, or with its variables sharded over N CPU processes.

Used by ``tests/methods/test_tcorex_module.py``: Lightning's subprocess launcher re-runs this
script for ranks 1..N-1 (strategy ``ddp_variables``), so it must be a standalone file. Rank zero
writes ``{"world_size", "columns", "free_weights", "weights", "tc", "scores", "metrics",
"test"}`` (the weights gathered over the shards) to ``--out``. Every epoch writes a checkpoint
(``<ckpt-dir>/epoch=<k>.ckpt``); ``--resume FILE`` continues a fit from one.

Float64 throughout; the variables (37) do not divide evenly between 2 processes. The model
starts from the pooled linear CorEx (gathered columns), borrows samples across periods
(``gamma``), penalizes the covariance differences (the all-reduced Gram products) and logs
TensorBoard histograms and images every 2 epochs, so the collectives of those paths run too.

Usage::

    python tests/scripts/ddp_tcorex.py --devices 2 --epochs 3 --out result.pt --ckpt-dir ckpts
"""

from __future__ import annotations

import argparse

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger

from lit_info.data import TimeSeriesDataModule
from lit_info.methods import TCorexModule

P, M, T = 37, 3, 4


def main(argv: list[str] | None = None) -> None:
    """Parse the command line, fit, save the results on rank zero."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, required=True)
    parser.add_argument("--epochs", type=int, required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--ckpt-dir", required=True)
    parser.add_argument("--log-dir", default=None)
    parser.add_argument("--resume", default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    pl.seed_everything(5, verbose=False)
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
    logger = TensorBoardLogger(args.log_dir, name="", version="") if args.log_dir else False
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=args.devices,
        strategy="ddp_variables" if args.devices > 1 else "auto",
        precision="64-true",
        max_epochs=args.epochs,
        logger=logger,
        callbacks=[
            ModelCheckpoint(
                dirpath=args.ckpt_dir,
                filename="{epoch}",
                save_top_k=-1,
                every_n_epochs=1,
                enable_version_counter=False,
            )
        ],
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=1,
        gradient_clip_val=1e-2,
    )
    trainer.fit(model, datamodule=dm, ckpt_path=args.resume)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    test = trainer.test(model, datamodule=dm, verbose=False)[0]
    moments = model.train_moments()
    scores = model.change_point_scores()
    gather = getattr(torch.distributed, "is_initialized", lambda: False)()
    free = model.free_weights.detach()
    weights = moments.weights
    if gather:
        from lit_info.dist import all_gather_columns

        free, weights = all_gather_columns(free), all_gather_columns(weights)
    if trainer.is_global_zero:
        torch.save(
            {
                "world_size": trainer.world_size,
                "columns": model.columns,
                "free_weights": free.cpu().clone(),
                "weights": weights.cpu().clone(),
                "tc": moments.tc.cpu().clone(),
                "scores": {k: torch.from_numpy(v) for k, v in scores.items()},
                "metrics": metrics,
                "test": {k: float(v) for k, v in test.items()},
            },
            args.out,
        )


if __name__ == "__main__":
    main()
