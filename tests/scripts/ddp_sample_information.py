"""Run the SampleInformation callback on 1 or N CPU processes; every rank saves its results.

Used by ``tests/callbacks/test_sample_information.py``. The callback linearizes the weights of
``--checkpoint`` (so the short training in between does not matter and 1 and N processes
linearize the same network); the training set has an odd size, so the ``DistributedSampler``
pads it and the gather must deduplicate. Lightning's ``strategy="ddp"`` re-launches this script
for ranks 1..N-1. Rank ``r`` writes ``{"world_size", "rank", "results"}`` to
``{--out}.rank{r}.pt``.

Usage::

    python tests/scripts/ddp_sample_information.py --devices 2 --checkpoint ref.ckpt --out res
"""

from __future__ import annotations

import argparse

import lightning.pytorch as pl
import torch

from lit_info.callbacks.sample_information import SampleInformation
from lit_info.data import NoisyImageDataModule
from lit_info.methods import Classifier


def run(devices: int, checkpoint: str, out: str) -> None:
    """Fit one epoch with the callback on ``devices`` processes and save each rank's results."""
    torch.set_num_threads(1)
    pl.seed_everything(0, verbose=False)
    dm = NoisyImageDataModule(
        dataset="digits",
        noise_type="uniform",
        noise_level=0.3,
        train_subset=45,
        val_size=8,  # 37 training samples: odd, so 2 ranks get a padded shard
        batch_size=8,
        eval_batch_size=5,
    )
    model = Classifier(num_classes=10, input_shape=(1, 8, 8), net="mlp", net_kwargs={"hidden": [8]})
    callback = SampleInformation(
        reference_checkpoint=checkpoint, eta=0.05, t=10, lam=0.01, log_images=False
    )
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy="ddp" if devices > 1 else "auto",
        max_epochs=1,
        limit_train_batches=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[callback],
    )
    trainer.fit(model, datamodule=dm)
    torch.save(
        {
            "world_size": trainer.world_size,
            "rank": trainer.global_rank,
            "n_train": len(dm.train_eval_dataset),
            "results": callback.results,
        },
        f"{out}.rank{trainer.global_rank}.pt",
    )


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, required=True)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    run(args.devices, args.checkpoint, args.out)


if __name__ == "__main__":
    main()
