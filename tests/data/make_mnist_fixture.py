"""Build an MNIST-format data folder (torchvision layout) from the shared real MNIST test set.

The shared copy (``<datasets>/MNIST/raw``) holds the real 10,000 MNIST *test* images and labels
as ``.gz`` files, but no training images. ``torchvision.datasets.MNIST`` and
``NoisyImageDataModule`` read *uncompressed* IDX files from ``<root>/MNIST/raw/``. This script
writes:

* ``t10k-images-idx3-ubyte`` / ``t10k-labels-idx1-ubyte``: the real test set, decompressed
  (byte-identical to the official uncompressed files);
* ``train-images-idx3-ubyte`` / ``train-labels-idx1-ubyte`` (only if ``n_train > 0``): NOT the
  real training set (absent from the shared copy) but the first ``n_train`` real *test* images
  with their own labels, so that the full two-split layout can be exercised with real pixels.

Usage: ``python tests/data/make_mnist_fixture.py <src_raw> <dst_root> [n_train]``.
"""

from __future__ import annotations

import gzip
import sys
from pathlib import Path

import numpy as np


def read_idx(path: Path) -> np.ndarray:
    """Parse a (possibly gzip-compressed) uint8 IDX file with numpy only."""
    raw = Path(path).read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    magic = int.from_bytes(raw[:4], "big")
    if magic >> 8 != 0x08:
        raise ValueError(f"{path}: not a uint8 IDX file (magic 0x{magic:08x})")
    ndim = magic & 0xFF
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array as an uncompressed IDX file."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = (0x0800 | array.ndim).to_bytes(4, "big") + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape
    )
    Path(path).write_bytes(header + array.tobytes())


def make_mnist_folder(
    src_raw: Path, dst_root: Path, n_train: int = 2000, folder: str = "MNIST"
) -> Path:
    """Write ``dst_root/<folder>/raw/*-ubyte`` from the real MNIST test set in ``src_raw``.

    Args:
        src_raw: Folder with ``t10k-images-idx3-ubyte.gz`` and ``t10k-labels-idx1-ubyte.gz``.
        dst_root: Root to use as ``data_dir``.
        n_train: Number of leading test images copied as the fake ``train-*`` files
            (0: write no training files, like the shared copy).
        folder: ``"MNIST"`` or ``"FashionMNIST"`` (the layout only; the pixels stay MNIST's).

    Returns:
        ``dst_root``.
    """
    images = read_idx(Path(src_raw) / "t10k-images-idx3-ubyte.gz")
    labels = read_idx(Path(src_raw) / "t10k-labels-idx1-ubyte.gz")
    raw = Path(dst_root) / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    write_idx(raw / "t10k-images-idx3-ubyte", images)
    write_idx(raw / "t10k-labels-idx1-ubyte", labels)
    if n_train > 0:
        write_idx(raw / "train-images-idx3-ubyte", images[:n_train])
        write_idx(raw / "train-labels-idx1-ubyte", labels[:n_train])
    return Path(dst_root)


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__)
    n = int(sys.argv[3]) if len(sys.argv) == 4 else 2000
    print(make_mnist_folder(Path(sys.argv[1]), Path(sys.argv[2]), n))
