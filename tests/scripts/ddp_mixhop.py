"""Train MixHop or GCN in mini-batches on 1 or N CPU processes, then validate; rank 0 saves.

Used by ``tests/methods/test_mixhop.py``: Lightning's subprocess launcher re-runs this script
for ranks 1..N-1, so it must be a standalone file. Rank zero writes ``{"world_size", "state",
"val_acc", "val_loss"}`` (the final weights and the metrics of ``trainer.validate`` over all
processes) to ``--out``.

Usage::

    python tests/scripts/ddp_mixhop.py --model mixhop --devices 2 --out result.pt
"""

from __future__ import annotations

import argparse

import lightning.pytorch as pl
import torch

from lit_info.data import HomophilyGraphDataModule
from lit_info.methods import GCN, MixHop


def build(model: str) -> tuple[HomophilyGraphDataModule, pl.LightningModule]:
    """The data (a generated graph, 7-node batches of 2-hop neighbourhoods) and the model."""
    dm = HomophilyGraphDataModule(
        source="generate",
        num_nodes=150,
        num_classes=3,
        homophily=0.2,
        seed=4,
        batch_size=7,
        num_hops=2,
    )
    if model == "mixhop":
        net = MixHop(
            in_features=2,
            num_classes=3,
            powers=[0, 1],
            hidden_widths=[[3, 3]],
            output_widths=[3, 3],
            input_normalization="none",
            input_dropout=0.0,
            dropout=0.2,
            batch_norm="running",
            lr=0.2,
            figure_every_n_epochs=1,
        )
    else:
        net = GCN(in_features=2, num_classes=3, hidden=[4], input_normalization="none")
    return dm, net


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="mixhop")
    parser.add_argument("--devices", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    torch.set_default_dtype(torch.float64)
    pl.seed_everything(0, verbose=False)
    dm, model = build(args.model)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=args.devices,
        strategy="ddp" if args.devices > 1 else "auto",
        max_epochs=args.epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, dm)
    metrics = trainer.validate(model, dm, verbose=False)[0]
    if trainer.is_global_zero:
        torch.save(
            {
                "world_size": trainer.world_size,
                "state": model.state_dict(),
                "val_acc": metrics["val/acc"],
                "val_loss": metrics["val/loss"],
            },
            args.out,
        )
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
