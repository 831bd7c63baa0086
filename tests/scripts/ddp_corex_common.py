"""What ``ddp_corex.py`` and ``ddp_tcorex.py`` share: the command line, the fit and the output.

Each of those scripts builds its datamodule and model and calls :func:`main`; this module is
imported as their sibling (a script's own folder comes first on ``sys.path``, also in the
processes Lightning's launcher starts for ranks 1..N-1 by re-running the script).

:func:`main` parses ``--devices --epochs --out --ckpt-dir [--log-dir] [--resume]``, seeds
everything with 5, fits in float64 on the CPU (strategy ``ddp_variables`` on several
processes), with a checkpoint every epoch (``<ckpt-dir>/epoch=<k>.ckpt``), a TensorBoard logger
when ``--log-dir`` is given, one sanity validation step and gradient clipping by norm, then
tests. Rank zero writes ``{"world_size", "columns", "free_weights", "weights", "metrics",
"test"}`` (the weights gathered over the shards) and the script's own outputs to ``--out``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger

from lit_info.dist import all_gather_columns


def main(
    description: str,
    build: Callable[[], tuple[pl.LightningDataModule, Any]],
    outputs: Callable[[Any, Any], dict[str, Any]],
    gradient_clip_val: float,
    argv: list[str] | None = None,
) -> None:
    """Parse the command line, fit and test ``build()``'s model, save the results on rank zero.

    Args:
        description: the script's one-line description (``--help``).
        build: ``() -> (datamodule, model)``, called after seeding.
        outputs: ``(model, train_moments) -> dict``: the script's own results, computed on
            every process (they may be collectives) after the test.
        gradient_clip_val: clipping by norm (the norm over all shards when sharded).
        argv: the command line (default ``sys.argv[1:]``).
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--devices", type=int, required=True)
    parser.add_argument("--epochs", type=int, required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--ckpt-dir", required=True)
    parser.add_argument("--log-dir", default=None)
    parser.add_argument("--resume", default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    pl.seed_everything(5, verbose=False)
    dm, model = build()
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
        gradient_clip_val=gradient_clip_val,
    )
    trainer.fit(model, datamodule=dm, ckpt_path=args.resume)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    test = trainer.test(model, datamodule=dm, verbose=False)[0]
    moments = model.train_moments()
    own = outputs(model, moments)
    free = model.free_weights.detach()
    weights = moments.weights
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        free, weights = all_gather_columns(free), all_gather_columns(weights)
    if trainer.is_global_zero:
        torch.save(
            {
                "world_size": trainer.world_size,
                "columns": model.columns,
                "free_weights": free.cpu().clone(),
                "weights": weights.cpu().clone(),
                **own,
                "metrics": metrics,
                "test": {k: float(v) for k, v in test.items()},
            },
            args.out,
        )
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        # leave together and close gloo before the interpreter exits: a process group still
        # alive at exit can abort ("terminate called without an active exception", status -6)
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
