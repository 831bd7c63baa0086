"""Test a small MinSyn model with given weights on 1 or N CPU processes; rank 0 saves metrics.

Used by ``tests/methods/test_minsyn.py``: Lightning's subprocess launcher re-runs this script
for ranks 1..N-1, so it must be a standalone file.

Usage::

    python tests/scripts/ddp_minsyn.py --weights w.pt --devices 2 --out metrics.json
"""

from __future__ import annotations

import argparse

import torch
from ddp_test_run import run_test_on_devices

from lit_info.callbacks import DisentanglementMonitor
from lit_info.data.words import WordImageDataModule
from lit_info.methods import MinSyn


def build() -> tuple[WordImageDataModule, MinSyn]:
    """A tiny word-image datamodule (uneven shards) and an MLP MinSyn with 6 factors."""
    dm = WordImageDataModule(
        images_per_char=4,
        samples_per_word=3,
        eval_samples_per_word=1,
        noise_std=0.05,
        batch_size=16,
    )
    model = MinSyn(
        input_shape=dm.model_hints()["input_shape"], n_factors=6, encoder="mlp", hidden=(32,)
    )
    return dm, model


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--weights", required=True)
    parser.add_argument("--devices", type=int, default=1)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    dm, model = build()
    model.load_state_dict(torch.load(args.weights, weights_only=True))
    run_test_on_devices(model, dm, args.devices, args.out, [DisentanglementMonitor(batch_size=37)])


if __name__ == "__main__":
    main()
