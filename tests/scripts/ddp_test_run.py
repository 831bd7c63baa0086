"""``trainer.test`` of a model on 1 or N CPU processes; rank 0 writes the metrics as JSON.

Shared by the DDP test scripts of this folder (each re-run by Lightning's launcher for ranks
1..N-1, so they stay standalone files that import this one from their own folder).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import lightning.pytorch as pl
import torch


def run_test_on_devices(
    model: pl.LightningModule,
    datamodule: pl.LightningDataModule,
    devices: int,
    out: str,
    callbacks: Sequence[pl.Callback] = (),
) -> None:
    """Test ``model`` on ``devices`` gloo processes; rank 0 saves ``world_size`` + metrics."""
    torch.set_num_threads(1)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy="ddp" if devices > 1 else "auto",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=list(callbacks),
    )
    metrics = trainer.test(model, datamodule, verbose=False)[0]
    if trainer.is_global_zero:
        with open(out, "w") as handle:
            json.dump({"world_size": trainer.world_size, **metrics}, handle)
