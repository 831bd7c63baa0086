"""Train a small digits classifier on 1 or N CPU processes and save per-sample results.

Used by ``tests/test_ddp.py``: Lightning's ``strategy="ddp"`` re-launches this very script for
ranks 1..N-1 (with ``LOCAL_RANK`` set), so it must be a standalone file. Rank zero writes
``{"state_dict", "last_predictions", "history", "metrics", "world_size", "train_indices"}`` to
``--out`` with ``torch.save``.

The run is built so that 1 process with batch ``B`` and ``N`` processes with batch ``B / N``
are the same computation. The network has no BatchNorm or dropout. The training sampler is a
``DistributedSampler`` seeded by ``split_seed``: with ``n_train`` a multiple of ``N`` there is
no padding and rank ``r`` gets the positions ``r::N`` of the epoch's permutation, so rank-batch
``k`` holds the positions ``kB + r, kB + r + N, ...`` below ``(k + 1) B`` and the ``N``
rank-batches ``k`` together are exactly the 1-process batch ``k``, all of the same size ``B / N``
(here ``n_train`` is even a multiple of ``B``: no partial last batch). DDP averages the per-rank
mean gradients, which is then the mean gradient over the union, i.e. the 1-process gradient.

Usage::

    python tests/scripts/ddp_train.py --devices 2 --out result.pt
"""

from __future__ import annotations

import argparse
from pathlib import Path

import lightning.pytorch as pl
import torch

from lit_info.callbacks import MemorizationMonitor
from lit_info.data import NoisyImageDataModule
from lit_info.methods import Classifier


class _RecordTrainIndices(pl.Callback):
    """Record the sample indices of every training batch on this rank (epoch, batch, index)."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, int, list[int]]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.seen.append((trainer.current_epoch, batch_idx, batch[2].tolist()))


def train(
    devices: int,
    out: str | Path | None,
    epochs: int = 4,
    global_batch_size: int = 64,
    train_subset: int = 600,
    val_size: int = 88,
    seed: int = 7,
) -> dict:
    """Fit the model on ``devices`` CPU processes; return (and on rank 0 save) the results."""
    if global_batch_size % devices:
        raise ValueError(f"global_batch_size={global_batch_size} must be divisible by {devices}")
    torch.set_num_threads(1)
    pl.seed_everything(seed, workers=True, verbose=False)
    dm = NoisyImageDataModule(
        dataset="digits",
        noise_type="uniform",
        noise_level=0.5,
        noise_seed=1,
        split_seed=3,
        train_subset=train_subset,
        val_size=val_size,
        batch_size=global_batch_size // devices,
        eval_batch_size=100,
    )
    model = Classifier(
        num_classes=dm.num_classes,
        input_shape=dm.input_shape,
        net="mlp",
        net_kwargs={"hidden": [64]},
        loss="ce",
        optimizer="sgd",
        lr=0.2,
        momentum=0.9,
    )
    monitor = MemorizationMonitor(every_n_epochs=1, log_histograms=False, filename=None)
    recorder = _RecordTrainIndices()
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy="ddp" if devices > 1 else "auto",
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[monitor, recorder],
    )
    trainer.fit(model, datamodule=dm)
    # every rank's batch indices, so the test can check the batches coincide
    gathered = [None] * trainer.world_size
    if trainer.world_size > 1:
        torch.distributed.all_gather_object(gathered, recorder.seen)
    else:
        gathered = [recorder.seen]
    result = {
        "world_size": trainer.world_size,
        "n_train": len(dm.train_dataset),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "last_predictions": monitor.last_predictions.clone(),
        "history": list(monitor.history),
        "metrics": {k: float(v) for k, v in trainer.callback_metrics.items()},
        "train_indices": gathered,
    }
    if out is not None and trainer.is_global_zero:
        torch.save(result, out)
    return result


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and train."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args(argv)
    train(args.devices, args.out, epochs=args.epochs)


if __name__ == "__main__":
    main()
