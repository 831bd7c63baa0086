"""Write a tiny CIFAR-10 / CIFAR-100 folder in the official "python version" pickle format.

The images are random ``uint8`` noise and the labels random classes; only the file format is
real: CIFAR-10 ``cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}`` with dicts
``{"batch_label", "labels", "data" (uint8 N x 3072, channel-major), "filenames"}``; CIFAR-100
``cifar-100-python/{train, test, meta}`` with ``"fine_labels"`` and ``"coarse_labels"``.
Pickles use protocol 2, as the official files do.

Usage: ``python tests/data/make_cifar_fixture.py <dst_root> [cifar10|cifar100] [n_per_batch]``.
"""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

import numpy as np

CIFAR10_NAMES = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]


def _batch(rng: np.random.Generator, n: int, num_classes: int, name: str) -> dict:
    labels = [int(v) for v in rng.integers(0, num_classes, size=n)]
    return {
        "batch_label": name,
        "data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
        "filenames": [f"img_{name}_{i}.png" for i in range(n)],
        "labels": labels,
    }


def _dump(path: Path, obj: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def make_cifar_folder(
    dst_root: Path, dataset: str = "cifar10", n_per_batch: int = 50, seed: int = 0
) -> Path:
    """Write a tiny CIFAR folder under ``dst_root``.

    Args:
        dst_root: Root to use as ``data_dir``.
        dataset: ``"cifar10"`` (5 train batches + test batch of ``n_per_batch`` images each) or
            ``"cifar100"`` (``train`` with ``5 * n_per_batch`` images, ``test`` with
            ``n_per_batch``).
        n_per_batch: Images per CIFAR-10 batch file.
        seed: Seed of the random images and labels.

    Returns:
        ``dst_root``.
    """
    rng = np.random.default_rng(seed)
    root = Path(dst_root)
    if dataset == "cifar10":
        folder = root / "cifar-10-batches-py"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(1, 6):
            _dump(folder / f"data_batch_{i}", _batch(rng, n_per_batch, 10, f"training batch {i}"))
        _dump(folder / "test_batch", _batch(rng, n_per_batch, 10, "testing batch 1"))
        _dump(folder / "batches.meta", {"label_names": CIFAR10_NAMES, "num_cases_per_batch": 0})
    elif dataset == "cifar100":
        folder = root / "cifar-100-python"
        folder.mkdir(parents=True, exist_ok=True)
        for name, n in (("train", 5 * n_per_batch), ("test", n_per_batch)):
            entry = _batch(rng, n, 100, name)
            entry["fine_labels"] = entry.pop("labels")
            entry["coarse_labels"] = [v // 5 for v in entry["fine_labels"]]
            _dump(folder / name, entry)
        _dump(
            folder / "meta",
            {
                "fine_label_names": [f"fine_{i}" for i in range(100)],
                "coarse_label_names": [f"coarse_{i}" for i in range(20)],
            },
        )
    else:
        raise ValueError(f"dataset must be 'cifar10' or 'cifar100', got {dataset!r}")
    return root


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3, 4):
        sys.exit(__doc__)
    ds = sys.argv[2] if len(sys.argv) > 2 else "cifar10"
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 50
    print(make_cifar_folder(Path(sys.argv[1]), ds, n))
