"""Memorization on real MNIST images: cross-entropy vs LIMIT with 80% uniform label noise.

8,000 training images (10% of them held out for validation) and 2,000 test images are carved
from the real MNIST test set in ``$LIT_INFO_DATASETS/MNIST/raw`` (the only MNIST images shipped
with the project). Both models train to the last epoch, without early stopping; every
``--every`` epochs the table records the accuracy of the corrupted training samples on their
given (wrong) labels ("noisy-train acc"), the accuracy of all training samples on their given
labels ("train acc (given)": about 0.2 for a model that ignores the noise), the clean training
samples' accuracy and the test accuracy.

    python benchmarks/mnist_memorization.py --epochs 60
"""

from __future__ import annotations

import argparse
import gzip
import os
import shutil
import tempfile
import time
from pathlib import Path

import lightning.pytorch as pl
import torch

from lit_info.cli import main as cli_main

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {
    "CE": ROOT / "configs/classifier/mnist8k_uniform0.8_ce.yaml",
    "LIMIT_L": ROOT / "configs/limit/mnist8k_uniform0.8_l.yaml",
    "LIMIT_G": ROOT / "configs/limit/mnist8k_uniform0.8_g.yaml",
}


class TestAccuracyMonitor(pl.Callback):
    """Record the test accuracy every ``every`` epochs next to the memorization statistics."""

    def __init__(self, every: int) -> None:
        self.every = every
        self.rows: list[dict[str, float]] = []

    @torch.no_grad()
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch + 1
        if epoch % self.every:
            return
        was_training = pl_module.training
        pl_module.eval()
        hits = total = 0
        for x, y, _ in trainer.datamodule.test_dataloader():
            pred = pl_module(x.to(pl_module.device)).argmax(1).cpu()
            hits += int((pred == y).sum())
            total += len(y)
        pl_module.train(was_training)
        metrics = trainer.callback_metrics
        self.rows.append(
            {
                "epoch": epoch,
                "test_acc": hits / total,
                "train_acc": float(metrics.get("memorization/train_acc", float("nan"))),
                "noisy_train_acc": float(
                    metrics.get("memorization/corrupted_acc_given", float("nan"))
                ),
                "clean_train_acc": float(metrics.get("memorization/clean_acc", float("nan"))),
            }
        )


def unpack_mnist(datasets: Path, target: Path) -> Path:
    """Write the uncompressed MNIST test files where the datamodule reads them."""
    raw = target / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        src = datasets / "MNIST" / "raw" / f"{name}.gz"
        if not src.is_file():
            raise SystemExit(f"real MNIST file not found: {src} (set LIT_INFO_DATASETS)")
        with gzip.open(src) as fin, open(raw / name, "wb") as fout:
            shutil.copyfileobj(fin, fout)
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--every", type=int, default=10)
    parser.add_argument("--methods", nargs="+", default=["CE", "LIMIT_L"], choices=list(CONFIGS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--cli-args",
        nargs="*",
        default=[],
        help="extra CLI arguments for every run, e.g. --cli-args=--model.init_args.beta=300",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    datasets = Path(os.environ.get("LIT_INFO_DATASETS", ROOT.parent / "shared" / "datasets"))
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = unpack_mnist(datasets, Path(tmp) / "data")
        results = {}
        for method in args.methods:
            monitor = TestAccuracyMonitor(args.every)
            cli = cli_main(
                [
                    "--config",
                    str(CONFIGS[method]),
                    f"--data.data_dir={data_dir}",
                    f"--trainer.max_epochs={args.epochs}",
                    f"--trainer.logger.init_args.save_dir={tmp}/runs",
                    "--trainer.enable_progress_bar=false",
                    "--trainer.enable_checkpointing=false",
                    "--trainer.callbacks=[lit_info.callbacks.MemorizationMonitor]",
                    *args.cli_args,
                ],
                run=False,
            )
            cli.trainer.callbacks.append(monitor)
            start = time.perf_counter()
            cli.trainer.fit(cli.model, datamodule=cli.datamodule)
            results[method] = (monitor.rows, time.perf_counter() - start)

    print(f"\nMNIST 8k train / 2k test (real images), 80% uniform noise, {args.epochs} epochs")
    print(
        f"{'method':<9}{'epoch':>6}{'noisy-train acc':>17}{'clean-train acc':>17}{'test acc':>10}"
    )
    for method, (rows, seconds) in results.items():
        for row in rows:
            print(
                f"{method:<9}{row['epoch']:>6}{row['train_acc']:>19.3f}{row['noisy_train_acc']:>17.3f}"
                f"{row['clean_train_acc']:>17.3f}{row['test_acc']:>10.3f}"
            )
        final = rows[-1]
        print(
            f"final {method}: test acc {final['test_acc']:.3f}, noisy-train acc "
            f"{final['noisy_train_acc']:.3f} ({seconds:.0f} s)"
        )


if __name__ == "__main__":
    main()
