"""Build an MNIST-format data folder (torchvision layout) from the shared real MNIST test set.

The shared copy (``<datasets>/MNIST/raw``) holds the real 10,000 MNIST *test* images and labels
as ``.gz`` files, but no training images. ``NoisyImageDataModule`` reads the IDX files of
``<root>/MNIST/raw/``, uncompressed or ``.gz``. This script writes (uncompressed, or with
``compress`` gzip-compressed under the same names plus ``.gz``):

* ``t10k-images-idx3-ubyte`` / ``t10k-labels-idx1-ubyte``: the real test set (uncompressed,
  byte-identical to the official uncompressed files);
* ``train-images-idx3-ubyte`` / ``train-labels-idx1-ubyte`` (only if ``n_train > 0``): NOT the
  real training set (absent from the shared copy) but the first ``n_train`` real *test* images
  with their own labels, so that the full two-split layout can be exercised with real pixels.

:func:`make_random_mnist_folder` writes the same layout with random pixels, for tests of the
file handling that must run without the shared data.

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


def write_idx(path: Path, array: np.ndarray) -> Path:
    """Write a uint8 array as an IDX file, gzip-compressed if the name ends with ``.gz``."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = (0x0800 | array.ndim).to_bytes(4, "big") + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape
    )
    raw = header + array.tobytes()
    path = Path(path)
    path.write_bytes(gzip.compress(raw, compresslevel=1) if path.name.endswith(".gz") else raw)
    return path


def _write_split_files(
    raw: Path, prefix: str, images: np.ndarray, labels: np.ndarray, compress: bool
) -> None:
    ext = ".gz" if compress else ""
    write_idx(raw / f"{prefix}-images-idx3-ubyte{ext}", images)
    write_idx(raw / f"{prefix}-labels-idx1-ubyte{ext}", labels)


def make_mnist_folder(
    src_raw: Path,
    dst_root: Path,
    n_train: int = 2000,
    folder: str = "MNIST",
    compress: bool = False,
) -> Path:
    """Write ``dst_root/<folder>/raw/*-ubyte`` from the real MNIST test set in ``src_raw``.

    Args:
        src_raw: Folder with ``t10k-images-idx3-ubyte.gz`` and ``t10k-labels-idx1-ubyte.gz``.
        dst_root: Root to use as ``data_dir``.
        n_train: Number of leading test images copied as the fake ``train-*`` files
            (0: write no training files, like the shared copy).
        folder: ``"MNIST"`` or ``"FashionMNIST"`` (the layout only; the pixels stay MNIST's).
        compress: Write ``*-ubyte.gz`` files instead of uncompressed ones.

    Returns:
        ``dst_root``.
    """
    images = read_idx(Path(src_raw) / "t10k-images-idx3-ubyte.gz")
    labels = read_idx(Path(src_raw) / "t10k-labels-idx1-ubyte.gz")
    raw = Path(dst_root) / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    _write_split_files(raw, "t10k", images, labels, compress)
    if n_train > 0:
        _write_split_files(raw, "train", images[:n_train], labels[:n_train], compress)
    return Path(dst_root)


def make_random_mnist_folder(
    dst_root: Path,
    n_train: int = 40,
    n_test: int = 20,
    folder: str = "MNIST",
    compress: bool = False,
    seed: int = 0,
) -> Path:
    """Write ``dst_root/<folder>/raw/*-ubyte[.gz]`` with random 28x28 images and labels 0..9.

    Args:
        dst_root: Root to use as ``data_dir``.
        n_train: Number of training images (0: no ``train-*`` files).
        n_test: Number of test images.
        folder: ``"MNIST"`` or ``"FashionMNIST"``.
        compress: Write ``*-ubyte.gz`` files instead of uncompressed ones.
        seed: Seed of the pixels and labels.

    Returns:
        ``dst_root``.
    """
    rng = np.random.default_rng(seed)
    raw = Path(dst_root) / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        if n > 0:
            images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
            labels = rng.integers(0, 10, size=n, dtype=np.uint8)
            _write_split_files(raw, prefix, images, labels, compress)
    return Path(dst_root)


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__)
    n = int(sys.argv[3]) if len(sys.argv) == 4 else 2000
    print(make_mnist_folder(Path(sys.argv[1]), Path(sys.argv[2]), n))
