"""Test a ClinicalLSTM with given weights on 1 or N CPU processes; rank 0 saves the metrics.

Used by ``tests/methods/test_clinical.py``: Lightning's subprocess launcher re-runs this script
for ranks 1..N-1, so it must be a standalone file.

Usage::

    python tests/scripts/ddp_clinical.py --data-dir BENCH --task decompensation \
        --weights w.pt --devices 2 --out metrics.json
"""

from __future__ import annotations

import argparse

import torch
from ddp_test_run import run_test_on_devices

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
    dm, model = build(args.data_dir, args.task)
    model.load_state_dict(torch.load(args.weights, weights_only=True))
    run_test_on_devices(model, dm, args.devices, args.out)


if __name__ == "__main__":
    main()
