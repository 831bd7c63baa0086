"""``make demo``: cross-entropy vs LIMIT on handwritten digits with 80% uniform label noise.

Trains both models from their configs (``configs/demo/``) on scikit-learn's bundled digits
(no download), without early stopping, and prints the test accuracy of the final weights and
how much of the label noise each one memorized. Logs go to ``runs/demo/`` (``make tensorboard``).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from lit_info.cli import main as cli_main

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs" / "demo"
RUNS = {"cross-entropy": "digits_uniform0.8_ce.yaml", "LIMIT_L": "digits_uniform0.8_limit.yaml"}


def run_one(config: Path, extra_args: list[str]) -> dict[str, float]:
    """Fit one config, then test its final weights.

    Args:
        config: the YAML config.
        extra_args: additional CLI arguments (e.g. ``--trainer.max_epochs=5``).

    Returns:
        Test accuracy, and memorization statistics on the training set at the end of training.
    """
    cli = cli_main(["--config", str(config), *extra_args], run=False)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    metrics = {}
    for key in ("corrupted_acc_given", "clean_acc", "corrupted_acc_true"):
        value = cli.trainer.callback_metrics.get(f"memorization/{key}")
        if value is not None:
            metrics[key] = float(value)
    test = cli.trainer.test(cli.model, datamodule=cli.datamodule, verbose=False)[0]
    metrics["test_acc"] = float(test["test/acc"])
    return metrics


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    """Train both models and print a comparison table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-epochs", type=int, default=None, help="override the configs")
    args = parser.parse_args(argv)
    extra = [] if args.max_epochs is None else [f"--trainer.max_epochs={args.max_epochs}"]
    torch.set_num_threads(1)  # small models: one thread is several times faster on 2 cores
    results = {}
    for label, filename in RUNS.items():
        start = time.perf_counter()
        results[label] = run_one(CONFIG_DIR / filename, extra)
        results[label]["seconds"] = time.perf_counter() - start
    print("\nDigits, 80% uniform label noise, final weights (no early stopping):")
    print(
        f"{'method':<15}{'test acc':>10}{'noisy-train acc':>17}{'clean-train acc':>17}{'time':>8}"
    )
    for label, m in results.items():
        print(
            f"{label:<15}{m['test_acc']:>10.3f}{m.get('corrupted_acc_given', float('nan')):>17.3f}"
            f"{m.get('clean_acc', float('nan')):>17.3f}{m['seconds']:>7.0f}s"
        )
    print("noisy-train acc: accuracy on the corrupted samples against their wrong labels")
    return results


if __name__ == "__main__":
    main()
