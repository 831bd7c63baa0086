"""Test a ClinicalLSTM with given weights on 1 or N CPU processes; rank 0 saves the metrics.

Used by ``tests/methods/test_clinical.py``: Lightning's subprocess launcher re-runs this script
for ranks 1..N-1, so it must be a standalone file.

Usage::

    python tests/scripts/ddp_clinical.py --data-dir BENCH --task decompensation \
        --weights w.pt --devices 2 --out metrics.json
"""

from __future__ import annotations

import argparse
import json

import lightning.pytorch as pl
import torch

from lit_info.data import Mimic3DataModule
from lit_info.methods import ClinicalLSTM


def build(data_dir: str, task: str) -> tuple[Mimic3DataModule, ClinicalLSTM]:
    """The datamodule and a small LSTM (8 units) for ``task``."""
    dm = Mimic3DataModule(data_dir=data_dir, task=task, batch_size=4)
    hints = dm.model_hints()
    model = ClinicalLSTM(task=task, input_size=hints["input_size"], hidden=8, dropout=0.0)
    return dm, model


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--task", required=True)
    parser.add_argument("--weights", required=True)
    parser.add_argument("--devices", type=int, default=1)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    dm, model = build(args.data_dir, args.task)
    model.load_state_dict(torch.load(args.weights, weights_only=True))
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=args.devices,
        strategy="ddp" if args.devices > 1 else "auto",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    metrics = trainer.test(model, dm, verbose=False)[0]
    if trainer.is_global_zero:
        with open(args.out, "w") as handle:
            json.dump({"world_size": trainer.world_size, **metrics}, handle)


if __name__ == "__main__":
    main()
