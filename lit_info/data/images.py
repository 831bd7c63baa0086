"""Small image-classification data sets with synthetic label noise, as a LightningDataModule.

:class:`NoisyImageDataModule` serves ``digits`` (scikit-learn's bundled 8x8 digits), MNIST,
Fashion-MNIST, CIFAR-10 and CIFAR-100. Everything is held in memory as ``uint8`` tensors and
converted / normalised / augmented per item by :class:`ImageTransform`. Every item is a triple
``(x, y, index)`` where ``index`` is the item's position in its split, so that callbacks can keep
per-sample statistics (e.g. whether a sample's label was corrupted).

Pipeline of :meth:`NoisyImageDataModule.setup`:

1. Read the *pool* (official training set) and the test set. With ``train_from_test_set=k`` the
   official training set is ignored: the official test set is split once, by a random
   permutation with the fixed seed :data:`TEST_CARVE_SEED` (independent of every other seed, so
   the test set is the same for all runs), into ``k`` test images and a pool made of the rest.
2. Optionally keep ``train_subset`` images of the pool (first ones after a shuffle seeded by
   ``split_seed``; sorted back into source order, so a smaller subset is nested in a larger one).
3. Corrupt the pool labels with :func:`~lit_info.data.label_noise.apply_label_noise`
   (seed ``noise_seed``).
4. Split the pool into train / validation by a permutation seeded by ``split_seed``.
   Validation labels are the noisy ones if ``noisy_validation`` (as in Harutyunyan et al.,
   ICML 2020), else the clean ones. The test set is always clean.
5. Optionally drop ``exclude_train_indices`` from the training split (e.g. the least
   informative samples, for data summarization; see :mod:`lit_info.summarization`). This comes
   last, so the split, the noise and the labels of every remaining sample are exactly those of
   the run without exclusion.

Indices after an exclusion. The per-sample callbacks
(:class:`~lit_info.callbacks.SampleInformation`, :class:`~lit_info.callbacks.MemorizationMonitor`)
treat the ``index`` of an item as a row number in ``[0, len(train_set))``: they gather results
with :func:`lit_info.dist.gather_by_index` into ``len(train_set)`` rows and compare them with
``train_clean_labels`` / ``train_noisy_labels`` row by row. So the training items of a module
with exclusions carry the *position in the reduced training set* (``0..m-1``, in increasing
order of the original index), and ``train_clean_labels``, ``train_noisy_labels``,
``train_is_corrupted`` and ``train_source_indices`` have ``m`` rows aligned with it. The
original index of item ``i`` (its ``index`` in the run without exclusion) is
``train_original_indices[i]``; ``train_split_size`` is the size of the full training split and
``train_excluded_indices`` lists the dropped original indices. Without exclusions
``train_original_indices`` is ``arange(n)``, so nothing changes.

File formats and readers:

* ``mnist`` / ``fashion_mnist``: the uncompressed IDX files that ``torchvision.datasets.MNIST``
  / ``FashionMNIST`` use, under ``<data_dir>/MNIST/raw/`` or ``<data_dir>/FashionMNIST/raw/``.
  Each file's header and size are checked first, then it is parsed with torchvision's own
  reader (``torchvision.datasets.mnist.read_image_file`` / ``read_label_file``). Only the files
  of the splits actually used are needed (with ``train_from_test_set`` only the ``t10k-*``
  files). ``download=True`` fetches missing files through the torchvision dataset class.
* ``cifar10`` / ``cifar100``: the official "python version" batches under
  ``<data_dir>/cifar-10-batches-py/`` or ``<data_dir>/cifar-100-python/``. They are read with a
  small loader of our own that follows the same format as torchvision (a pickled dict with a
  ``uint8`` ``data`` array of shape ``N x 3072`` and ``labels`` / ``fine_labels``). Unlike
  torchvision it does not check the files' MD5 sums (so that small, generated files in the same
  format can be used, e.g. in tests); instead it validates the structure of every file, and it
  unpickles with an allow-list of the few numpy globals these files need, so that a foreign
  pickle cannot run code. ``download=True`` fetches (and MD5-checks) missing files through
  ``torchvision.datasets.CIFAR10`` / ``CIFAR100``.
* ``digits``: :func:`sklearn.datasets.load_digits` (bundled, no download): 1,797 images 8x8 with
  values 0..16, scaled to [0, 1]. It has no official split, so a fixed stratified 20% test
  split (360 images; ``random_state=TEST_CARVE_SEED``) is carved, leaving a pool of 1,437.

Missing files raise :class:`FileNotFoundError` naming the data set, ``data_dir``, the expected
files and the ``download: true`` option (a missing ``exclude_train_indices`` file names
itself); malformed files raise :class:`ValueError` naming the file. All files are read and
checked before the module's state is set, so a failed ``setup`` leaves the module untouched,
and nothing is ever written unless ``download=True``.
"""

from __future__ import annotations

import csv
import os
import pickle
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from lit_info.data.label_noise import PAIR_MAPS, apply_label_noise

__all__ = [
    "DATASETS",
    "DATASET_INFO",
    "TEST_CARVE_SEED",
    "DatasetInfo",
    "ImageTransform",
    "IndexedTensorDataset",
    "NoisyImageDataModule",
    "expected_files",
]

#: Names accepted for ``NoisyImageDataModule(dataset=...)``.
DATASETS: tuple[str, ...] = ("digits", "mnist", "fashion_mnist", "cifar10", "cifar100")

#: Seed of the fixed test split (digits) and of the test carve (``train_from_test_set``).
TEST_CARVE_SEED = 0

#: Fraction of ``digits`` held out as its (fixed) test set.
DIGITS_TEST_FRACTION = 0.2


@dataclass(frozen=True)
class DatasetInfo:
    """Static facts about one supported data set.

    Attributes:
        num_classes: Number of classes.
        input_shape: ``(channels, height, width)`` of one image.
        mean: Per-channel mean of the [0, 1]-scaled pixels (used for normalisation).
        std: Per-channel standard deviation of the [0, 1]-scaled pixels.
        pixel_max: Raw pixel value that maps to 1.0 (255, or 16 for ``digits``).
        augment_pad: Zero padding of the random crop used by the standard augmentation.
        augment_flip: Whether the standard augmentation flips images horizontally.
        folder: Sub-folder of ``data_dir`` holding the files (empty for ``digits``).
        train_files: Files of the official training set (relative to ``data_dir``).
        test_files: Files of the official test set (relative to ``data_dir``).
    """

    num_classes: int
    input_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    pixel_max: float
    augment_pad: int
    augment_flip: bool
    folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]


def _idx_files(folder: str, prefix: str) -> tuple[str, ...]:
    return (f"{folder}/raw/{prefix}-images-idx3-ubyte", f"{folder}/raw/{prefix}-labels-idx1-ubyte")


#: Static information per data set. Means/stds are the usual training-set statistics
#: (digits: statistics of all 1,797 images).
DATASET_INFO: dict[str, DatasetInfo] = {
    "digits": DatasetInfo(
        num_classes=10,
        input_shape=(1, 8, 8),
        mean=(0.3053,),
        std=(0.3760,),
        pixel_max=16.0,
        augment_pad=1,
        augment_flip=False,
        folder="",
        train_files=(),
        test_files=(),
    ),
    "mnist": DatasetInfo(
        num_classes=10,
        input_shape=(1, 28, 28),
        mean=(0.1307,),
        std=(0.3081,),
        pixel_max=255.0,
        augment_pad=3,
        augment_flip=False,
        folder="MNIST",
        train_files=_idx_files("MNIST", "train"),
        test_files=_idx_files("MNIST", "t10k"),
    ),
    "fashion_mnist": DatasetInfo(
        num_classes=10,
        input_shape=(1, 28, 28),
        mean=(0.2860,),
        std=(0.3530,),
        pixel_max=255.0,
        augment_pad=3,
        augment_flip=True,
        folder="FashionMNIST",
        train_files=_idx_files("FashionMNIST", "train"),
        test_files=_idx_files("FashionMNIST", "t10k"),
    ),
    "cifar10": DatasetInfo(
        num_classes=10,
        input_shape=(3, 32, 32),
        mean=(0.4914, 0.4822, 0.4465),
        std=(0.2470, 0.2435, 0.2616),
        pixel_max=255.0,
        augment_pad=4,
        augment_flip=True,
        folder="cifar-10-batches-py",
        train_files=tuple(f"cifar-10-batches-py/data_batch_{i}" for i in range(1, 6)),
        test_files=("cifar-10-batches-py/test_batch",),
    ),
    "cifar100": DatasetInfo(
        num_classes=100,
        input_shape=(3, 32, 32),
        mean=(0.5071, 0.4865, 0.4409),
        std=(0.2673, 0.2564, 0.2762),
        pixel_max=255.0,
        augment_pad=4,
        augment_flip=True,
        folder="cifar-100-python",
        train_files=("cifar-100-python/train",),
        test_files=("cifar-100-python/test",),
    ),
}


def expected_files(dataset: str, data_dir: str | os.PathLike[str]) -> dict[str, list[Path]]:
    """Return the files a data set is read from, per official split.

    Args:
        dataset: One of :data:`DATASETS`.
        data_dir: Root data folder.

    Returns:
        ``{"train": [...], "test": [...]}`` (both empty for ``digits``, which is bundled).

    Raises:
        ValueError: If ``dataset`` is unknown.
    """
    if dataset not in DATASET_INFO:
        raise ValueError(f"dataset must be one of {list(DATASETS)}, got {dataset!r}")
    info = DATASET_INFO[dataset]
    root = Path(data_dir)
    return {
        "train": [root / f for f in info.train_files],
        "test": [root / f for f in info.test_files],
    }


# --------------------------------------------------------------------------------------------
# In-memory dataset and transform
# --------------------------------------------------------------------------------------------


class IndexedTensorDataset(Dataset):
    """In-memory dataset of images and labels whose items are ``(x, y, index)``.

    Args:
        images: Tensor of shape ``(N, ...)``.
        labels: Integer tensor of shape ``(N,)``.
        transform: Optional callable applied to ``images[index]``.

    Raises:
        ValueError: If ``images`` and ``labels`` disagree in length or ``labels`` is not 1-D.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        if labels.ndim != 1:
            raise ValueError(f"labels must be 1-D, got shape {tuple(labels.shape)}")
        if images.shape[0] != labels.shape[0]:
            raise ValueError(
                f"images and labels must have the same length, got {images.shape[0]} images "
                f"and {labels.shape[0]} labels"
            )
        self.images = images
        self.labels = labels.long()
        self.transform = transform

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        """Return ``(image, label, index)``; the image is transformed if a transform is set."""
        x = self.images[index]
        if self.transform is not None:
            x = self.transform(x)
        return x, int(self.labels[index]), int(index)


class ImageTransform:
    """Convert a raw ``(C, H, W)`` image to a normalised float tensor, optionally augmented.

    The augmentation works on the raw image, as the usual PIL pipeline does: a random crop of
    the original size from the image zero-padded by ``pad`` pixels on each side, then (if
    ``flip``) a horizontal flip with probability 1/2. Then ``x / pixel_max`` is normalised by
    ``mean`` and ``std``. Randomness comes from torch's global generator (seeded by
    ``lightning.seed_everything`` and per DataLoader worker).

    Args:
        mean: Per-channel means (of the [0, 1]-scaled image).
        std: Per-channel standard deviations.
        pixel_max: Raw value that maps to 1.0.
        pad: Padding of the random crop (0 disables cropping).
        flip: Whether to flip horizontally at random.
    """

    def __init__(
        self,
        mean: Sequence[float],
        std: Sequence[float],
        pixel_max: float = 255.0,
        pad: int = 0,
        flip: bool = False,
    ) -> None:
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
        self.pixel_max = float(pixel_max)
        self.pad = int(pad)
        self.flip = bool(flip)

    @property
    def augments(self) -> bool:
        """Whether this transform is random (crop or flip)."""
        return self.pad > 0 or self.flip

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Transform one ``(C, H, W)`` image."""
        if self.pad > 0:
            h, w = x.shape[-2:]
            padded = F.pad(x, (self.pad, self.pad, self.pad, self.pad))
            top, left = torch.randint(0, 2 * self.pad + 1, (2,)).tolist()
            x = padded[..., top : top + h, left : left + w]
        if self.flip and bool(torch.rand(()) < 0.5):
            x = x.flip(-1)
        return (x.float() / self.pixel_max - self.mean) / self.std


# --------------------------------------------------------------------------------------------
# File readers
# --------------------------------------------------------------------------------------------


def _corrupt(path: Path, reason: str) -> ValueError:
    return ValueError(
        f"corrupt or truncated data file {path}: {reason}. Delete it and set `download: true` "
        f"(or --data.download true) to fetch a fresh copy."
    )


_IDX_MAGIC = {3: 0x00000803, 1: 0x00000801}  # ndim -> magic for uint8 IDX files


def _check_idx_file(path: Path, ndim: int) -> int:
    """Check an uncompressed uint8 IDX file's header and size; return its number of items."""
    size = path.stat().st_size
    header_len = 4 * (ndim + 1)
    with open(path, "rb") as f:
        header = f.read(header_len)
    if len(header) < header_len:
        raise _corrupt(path, f"file has {size} bytes, shorter than its {header_len}-byte header")
    magic = int.from_bytes(header[:4], "big")
    if magic != _IDX_MAGIC[ndim]:
        hint = " (is it still gzip-compressed?)" if header[:2] == b"\x1f\x8b" else ""
        raise _corrupt(
            path, f"bad IDX magic number 0x{magic:08x}, expected 0x{_IDX_MAGIC[ndim]:08x}{hint}"
        )
    dims = [int.from_bytes(header[4 * (i + 1) : 4 * (i + 2)], "big") for i in range(ndim)]
    expected = header_len + int(np.prod(dims))
    if size != expected:
        raise _corrupt(path, f"header announces dims {dims} ({expected} bytes) but file has {size}")
    return dims[0]


def _read_mnist_split(root: Path, files: Sequence[str], info: DatasetInfo) -> tuple[Any, Any]:
    """Validate and read one MNIST-format split; return ``(uint8 N x 1 x H x W, int64 N)``."""
    from torchvision.datasets.mnist import read_image_file, read_label_file

    img_path, lbl_path = (root / f for f in files)
    n_img = _check_idx_file(img_path, 3)
    n_lbl = _check_idx_file(lbl_path, 1)
    if n_img != n_lbl:
        raise _corrupt(lbl_path, f"{n_lbl} labels but {img_path.name} has {n_img} images")
    try:
        images = read_image_file(str(img_path))
    except Exception as err:  # torchvision raises AssertionError / TypeError / ValueError
        raise _corrupt(img_path, f"{type(err).__name__}: {err}") from err
    try:
        labels = read_label_file(str(lbl_path))
    except Exception as err:
        raise _corrupt(lbl_path, f"{type(err).__name__}: {err}") from err
    if tuple(images.shape[1:]) != info.input_shape[1:]:
        raise _corrupt(
            img_path, f"images are {tuple(images.shape[1:])}, expected {info.input_shape[1:]}"
        )
    if labels.numel() and int(labels.max()) >= info.num_classes:
        raise _corrupt(lbl_path, f"label {int(labels.max())} >= {info.num_classes} classes")
    return images.unsqueeze(1).contiguous(), labels.long()


# Globals a CIFAR python pickle may reference (numpy array reconstruction only).
_PICKLE_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _PICKLE_ALLOWED:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR batch")
        return super().find_class(module, name)


def _read_cifar_batch(path: Path, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR python batch; return ``(uint8 N x 3 x 32 x 32, int64 N)``."""
    try:
        with open(path, "rb") as f:
            entry = _RestrictedUnpickler(f, encoding="latin1").load()
    except Exception as err:  # UnpicklingError, EOFError, ValueError, ...
        reason = f"not a readable CIFAR python batch ({type(err).__name__}: {err})"
        raise _corrupt(path, reason) from err
    if not isinstance(entry, dict):
        raise _corrupt(path, f"expected a pickled dict, got {type(entry).__name__}")
    entry = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in entry.items()}
    if "data" not in entry:
        raise _corrupt(path, f"missing key 'data' (keys: {sorted(entry)})")
    label_key = "labels" if "labels" in entry else "fine_labels" if "fine_labels" in entry else None
    if label_key is None:
        raise _corrupt(path, f"missing key 'labels' or 'fine_labels' (keys: {sorted(entry)})")
    data = entry["data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
        raise _corrupt(path, "'data' must be a 2-D uint8 array")
    if data.shape[1] != 3 * 32 * 32:
        raise _corrupt(path, f"'data' has {data.shape[1]} columns, expected 3072")
    try:
        labels = np.asarray(entry[label_key], dtype=np.int64).reshape(-1)
    except (TypeError, ValueError) as err:
        raise _corrupt(path, f"'{label_key}' is not a list of integers ({err})") from err
    if labels.shape[0] != data.shape[0]:
        raise _corrupt(path, f"{labels.shape[0]} labels for {data.shape[0]} images")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise _corrupt(path, f"labels outside [0, {num_classes})")
    return data.reshape(-1, 3, 32, 32), labels


def _load_digits_split(train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Fixed stratified split of sklearn's digits; ``(uint8 N x 1 x 8 x 8, int64 N)``."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = digits.images.astype(np.uint8)  # values 0..16
    idx = np.arange(images.shape[0])
    train_idx, test_idx = train_test_split(
        idx, test_size=DIGITS_TEST_FRACTION, stratify=digits.target, random_state=TEST_CARVE_SEED
    )
    sel = np.sort(train_idx if train else test_idx)
    return (
        torch.from_numpy(images[sel]).unsqueeze(1).contiguous(),
        torch.from_numpy(digits.target[sel].astype(np.int64)),
    )


def _missing_message(dataset: str, data_dir: Path, missing: list[Path], needed: list[Path]) -> str:
    gz = [p for p in missing if Path(f"{p}.gz").is_file()]
    gz_hint = (
        f" Found gzip-compressed copies of {[str(p) + '.gz' for p in gz]}: decompress them "
        "(e.g. `gunzip -k`), the uncompressed files are read."
        if gz
        else ""
    )
    return (
        f"{dataset} data files not found in data_dir {str(data_dir)!r}: missing "
        f"{[str(p) for p in missing]}. Expected files: {[str(p) for p in needed]}. Set "
        f"`download: true` in the data config (or pass --data.download true) to fetch them, or "
        f"point data_dir (default: env LIT_INFO_DATA, else ./data) to a folder that has them."
        f"{gz_hint}"
    )


# --------------------------------------------------------------------------------------------
# DataModule
# --------------------------------------------------------------------------------------------


def _select_classes(
    images: torch.Tensor, labels: torch.Tensor, source: np.ndarray, classes: list[int]
) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """Keep the samples of ``classes`` and relabel them ``0..len(classes)-1`` in that order."""
    labels_np = np.asarray(labels)
    keep = np.isin(labels_np, classes)
    lookup = np.full(int(labels_np.max(initial=0)) + 1, -1, dtype=np.int64)
    lookup[classes] = np.arange(len(classes))
    kept = np.nonzero(keep)[0]
    relabeled = torch.from_numpy(lookup[labels_np[kept]])
    return images[torch.from_numpy(kept)], relabeled, source[kept]


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _parse_index(token: str, where: str) -> int:
    text = token.strip()
    try:
        value = int(text)
    except ValueError:
        raise ValueError(
            f"exclude_train_indices: {where}: expected an integer training index, got {text!r}"
        ) from None
    return value


def read_index_file(path: str | os.PathLike[str]) -> list[int]:
    """Read training indices from a text file (one per line) or a CSV with an ``index`` column.

    Blank lines and lines starting with ``#`` are ignored. The file is a CSV when its first
    remaining line is not an integer: that line is then the header, and it must name an
    ``index`` column (as the ``scores/*.csv`` files of :mod:`lit_info.summarization` and the
    ``sample_information_epoch*.csv`` files of :class:`~lit_info.callbacks.SampleInformation`
    do; the latter hold original indices only for a run without exclusions, otherwise
    positions in the reduced set).

    Args:
        path: The file.

    Returns:
        The indices in file order (not validated against a data set).

    Raises:
        FileNotFoundError: If the file does not exist.
        ValueError: If a line is not an integer, or a CSV has no ``index`` column.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"exclude_train_indices file not found: {str(path)!r}")
    lines = [
        (number, line.strip())
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if line.strip() and not line.lstrip().startswith("#")
    ]
    if not lines:
        return []
    first = lines[0][1]
    try:
        int(first)
    except ValueError:
        pass
    else:  # plain text: one index per line
        return [_parse_index(line, f"{path}, line {number}") for number, line in lines]
    rows = list(csv.reader([line for _, line in lines]))
    header = [name.strip() for name in rows[0]]
    if "index" not in header:
        raise ValueError(
            f"exclude_train_indices: {path} is neither one integer per line nor a CSV with an "
            f"'index' column (first line: {first!r})"
        )
    col = header.index("index")
    out = []
    for (number, _), row in zip(lines[1:], rows[1:], strict=True):
        if col >= len(row):
            raise ValueError(f"exclude_train_indices: {path}, line {number}: no 'index' field")
        out.append(_parse_index(row[col], f"{path}, line {number}"))
    return out


def _exclusion_list(value: object) -> np.ndarray:
    """Validate ``exclude_train_indices`` (a list or a file path); return sorted int64 indices."""
    if value is None:
        return np.zeros(0, dtype=np.int64)
    if isinstance(value, (str, os.PathLike)):
        indices: list[object] = list(read_index_file(value))
        source = f" (from {str(value)!r})"
    elif isinstance(value, (list, tuple, np.ndarray, torch.Tensor)):
        indices = list(value.tolist() if hasattr(value, "tolist") else value)
        source = ""
    else:
        raise ValueError(
            "exclude_train_indices must be None, a list of training indices or the path of a "
            f"file of indices, got {type(value).__name__}"
        )
    bad = [v for v in indices if not _is_int(v)]
    if bad:
        raise ValueError(
            f"exclude_train_indices must hold integers{source}, got {bad[:5]!r}"
            + (f" (and {len(bad) - 5} more)" if len(bad) > 5 else "")
        )
    arr = np.asarray(indices, dtype=np.int64)
    if arr.size and arr.min() < 0:
        negative = sorted(set(arr[arr < 0].tolist()))[:5]
        raise ValueError(f"exclude_train_indices must be >= 0{source}, got {negative}")
    uniq, counts = np.unique(arr, return_counts=True)
    if (counts > 1).any():
        raise ValueError(
            f"exclude_train_indices has duplicates{source}: {uniq[counts > 1][:5].tolist()}"
        )
    return uniq


class NoisyImageDataModule(pl.LightningDataModule):
    """Image classification data with synthetic label noise; items are ``(x, y, index)``.

    See the module docstring for the pipeline, the file layout and the readers.

    Args:
        dataset: ``"digits"``, ``"mnist"``, ``"fashion_mnist"``, ``"cifar10"`` or ``"cifar100"``.
        data_dir: Root folder of the data files; default: env ``LIT_INFO_DATA``, else ``./data``.
        download: Fetch missing files with torchvision (needs network).
        noise_type: ``None`` (clean), ``"uniform"`` or ``"pair"`` (CIFAR-10 only).
        noise_level: Corruption probability in ``[0, 1)``; must be 0 when ``noise_type`` is None.
        noise_seed: Seed of the label noise.
        val_size: Validation set carved from the pool: a fraction in ``[0, 1)`` (rounded to the
            nearest count) or a count ``>= 0`` (an int, or an integral float ``>= 1``). The
            annotation is ``int | float`` (int first) so that jsonargparse keeps ``5000`` an int.
        split_seed: Seed of the train/val split, the ``train_subset`` shuffle and the training
            sampler's shuffling.
        noisy_validation: Validation labels noisy (``True``) or clean (``False``).
        train_from_test_set: If given, ignore the official training set; split the official test
            set into this many test images and a training pool made of the rest (fixed seed
            :data:`TEST_CARVE_SEED`). E.g. MNIST with 10,000 test images and
            ``train_from_test_set=2000, val_size=0``: 8,000 train / 2,000 test.
        train_subset: If given, keep only this many images of the pool (before noise and split).
        classes: If given, keep only the images of these classes (in every split) and relabel
            them ``0..len(classes)-1`` in the order given, e.g. ``[4, 9]`` for MNIST 4 vs 9
            (4 -> 0, 9 -> 1). Applied before ``train_subset``, noise and split; pair noise is
            not available on a class subset.
        exclude_train_indices: Training samples to drop after split and noise (step 5 of the
            pipeline): a list of indices into the full training split (the ``index`` of the
            items without exclusion) or the path of a file of such indices (one per line, or a
            CSV with an ``index`` column; see :func:`read_index_file`). Items of the remaining
            samples are renumbered ``0..m-1`` for the per-sample callbacks; see the module
            docstring and :attr:`train_original_indices`.
        augment: Use the standard augmentation for training; ``None`` means ``True`` for CIFAR
            and ``False`` otherwise. Standard augmentation: random crop with zero padding
            (4 px for CIFAR, 3 px for 28x28, 1 px for digits) and, except for MNIST and
            digits, a random horizontal flip.
        batch_size: Training batch size.
        eval_batch_size: Batch size of the evaluation loaders (default: ``batch_size``).
        num_workers: DataLoader worker processes.
        pin_memory: DataLoader ``pin_memory``.

    Attributes (after :meth:`setup`):
        train_original_indices: ``(m,)`` original training index of every training item.
        train_excluded_indices: Sorted original indices dropped by ``exclude_train_indices``.
        train_split_size: Size of the training split before the exclusion.

    Raises:
        ValueError: On any invalid argument (the message names it).
        FileNotFoundError: If an ``exclude_train_indices`` file does not exist.
    """

    def __init__(
        self,
        dataset: Literal["digits", "mnist", "fashion_mnist", "cifar10", "cifar100"] = "digits",
        data_dir: str | None = None,
        download: bool = False,
        noise_type: Literal["uniform", "pair"] | None = None,
        noise_level: float = 0.0,
        noise_seed: int = 0,
        val_size: int | float = 0.1,
        split_seed: int = 0,
        noisy_validation: bool = True,
        train_from_test_set: int | None = None,
        train_subset: int | None = None,
        classes: list[int] | None = None,
        exclude_train_indices: list[int] | str | None = None,
        augment: bool | None = None,
        batch_size: int = 256,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        pin_memory: bool = False,
    ) -> None:
        super().__init__()
        if dataset not in DATASET_INFO:
            raise ValueError(f"dataset must be one of {list(DATASETS)}, got {dataset!r}")
        if noise_type == "none":
            noise_type = None
        if noise_type not in (None, "uniform", "pair"):
            raise ValueError(
                f"noise_type must be one of [None, 'uniform', 'pair'], got {noise_type!r}"
            )
        if isinstance(noise_level, bool) or not isinstance(noise_level, (int, float)):
            raise ValueError(f"noise_level must be a number in [0, 1), got {noise_level!r}")
        if not 0.0 <= float(noise_level) < 1.0:
            raise ValueError(f"noise_level must lie in [0, 1), got {noise_level!r}")
        if noise_type is None and noise_level != 0:
            raise ValueError(
                f"noise_level={noise_level!r} is given but noise_type is None; set noise_type "
                "to 'uniform' or 'pair' (or noise_level to 0)"
            )
        if noise_type == "pair" and dataset not in PAIR_MAPS:
            raise ValueError(
                f"noise_type='pair' needs a pair map, and dataset {dataset!r} has none; "
                f"datasets with a pair map: {sorted(PAIR_MAPS)}"
            )
        for name, value in (("noise_seed", noise_seed), ("split_seed", split_seed)):
            if not _is_int(value) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
        if isinstance(val_size, float) and val_size >= 1 and val_size.is_integer():
            val_size = int(val_size)  # e.g. "5000.0" from a config: a count
        if _is_int(val_size):
            if val_size < 0:
                raise ValueError(
                    f"val_size must be a count >= 0 or a fraction in [0, 1), got {val_size!r}"
                )
        elif isinstance(val_size, float):
            if not 0.0 <= val_size < 1.0:
                raise ValueError(
                    f"val_size as a fraction must lie in [0, 1), got {val_size!r} "
                    "(pass an int for a count)"
                )
        else:
            raise ValueError(f"val_size must be an int count or a float fraction, got {val_size!r}")
        for name, value in (
            ("train_from_test_set", train_from_test_set),
            ("train_subset", train_subset),
            ("eval_batch_size", eval_batch_size),
        ):
            if value is not None and (not _is_int(value) or value < 1):
                raise ValueError(f"{name} must be None or an integer >= 1, got {value!r}")
        if not _is_int(batch_size) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        if not _is_int(num_workers) or num_workers < 0:
            raise ValueError(f"num_workers must be an integer >= 0, got {num_workers!r}")
        if augment is not None and not isinstance(augment, bool):
            raise ValueError(f"augment must be None, True or False, got {augment!r}")
        self.exclude_train_indices = _exclusion_list(exclude_train_indices)

        self.save_hyperparameters()
        self.dataset = dataset
        if data_dir is None:
            data_dir = os.environ.get("LIT_INFO_DATA", "./data")
        self.data_dir = Path(data_dir)
        self.download = bool(download)
        self.noise_type = noise_type
        self.noise_level = float(noise_level)
        self.noise_seed = int(noise_seed)
        self.val_size = val_size
        self.split_seed = int(split_seed)
        self.noisy_validation = bool(noisy_validation)
        self.train_from_test_set = train_from_test_set
        self.train_subset = train_subset
        self.augment = dataset.startswith("cifar") if augment is None else augment
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size or batch_size)
        self.num_workers = int(num_workers)
        self.pin_memory = bool(pin_memory)

        info = DATASET_INFO[dataset]
        if classes is not None:
            classes = [int(c) for c in classes]
            if len(classes) < 2 or len(set(classes)) != len(classes):
                raise ValueError(f"classes must list at least 2 distinct classes, got {classes}")
            if min(classes) < 0 or max(classes) >= info.num_classes:
                raise ValueError(
                    f"classes must lie in [0, {info.num_classes}) for {dataset}, got {classes}"
                )
            if noise_type == "pair":
                raise ValueError(
                    "noise_type='pair' is not available with a classes subset (the pair map is "
                    f"defined on all {info.num_classes} classes); use noise_type='uniform'"
                )
        self.classes = classes
        self.info = info
        self.num_classes: int = info.num_classes if classes is None else len(classes)
        self.input_shape: tuple[int, int, int] = info.input_shape
        self.eval_transform = ImageTransform(info.mean, info.std, info.pixel_max)
        self.train_transform = (
            ImageTransform(
                info.mean, info.std, info.pixel_max, pad=info.augment_pad, flip=info.augment_flip
            )
            if self.augment
            else self.eval_transform
        )
        self._is_setup = False

    # ---------------------------------------------------------------- files

    def _needed_files(self) -> list[Path]:
        files = expected_files(self.dataset, self.data_dir)
        if self.train_from_test_set is not None:
            return files["test"]
        return files["train"] + files["test"]

    def check_files(self) -> None:
        """Fail early, before anything is written, when data files are missing.

        Does nothing when ``download`` is set (the files are fetched in ``prepare_data``).

        Raises:
            FileNotFoundError: naming the data folder, the expected files and ``download: true``.
        """
        if not self.download:
            self._ensure_files()

    def _ensure_files(self) -> None:
        """Check that the needed files exist, downloading them first if ``download``."""
        needed = self._needed_files()
        missing = [p for p in needed if not p.is_file()]
        if missing and self.download:
            from torchvision import datasets as tvd

            cls = {
                "mnist": tvd.MNIST,
                "fashion_mnist": tvd.FashionMNIST,
                "cifar10": tvd.CIFAR10,
                "cifar100": tvd.CIFAR100,
            }[self.dataset]
            try:
                cls(str(self.data_dir), train=True, download=True)
            except Exception as err:
                raise RuntimeError(
                    f"downloading {self.dataset} into {str(self.data_dir)!r} failed: {err}"
                ) from err
            missing = [p for p in needed if not p.is_file()]
        if missing:
            raise FileNotFoundError(_missing_message(self.dataset, self.data_dir, missing, needed))

    def _load_split(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Read one official split as ``(uint8 images N x C x H x W, int64 labels N)``."""
        if self.dataset == "digits":
            return _load_digits_split(train)
        files = expected_files(self.dataset, self.data_dir)["train" if train else "test"]
        if self.dataset in ("mnist", "fashion_mnist"):
            rel = self.info.train_files if train else self.info.test_files
            return _read_mnist_split(self.data_dir, rel, self.info)
        parts = [_read_cifar_batch(p, self.info.num_classes) for p in files]
        images = np.concatenate([p[0] for p in parts])
        labels = np.concatenate([p[1] for p in parts])
        return torch.from_numpy(images), torch.from_numpy(labels)

    def prepare_data(self) -> None:
        """Download missing files if ``download`` is set (called on one process per node)."""
        if self.dataset != "digits" and self.download:
            self._ensure_files()

    # ---------------------------------------------------------------- setup

    def setup(self, stage: str | None = None) -> None:
        """Read the data, add label noise and split; idempotent (later calls do nothing).

        Args:
            stage: Lightning stage (ignored: all splits are built at once).

        Raises:
            FileNotFoundError: If data files are missing and ``download`` is False.
            ValueError: If a file is malformed or a size argument does not fit the data.
        """
        if self._is_setup:
            return
        if self.dataset != "digits":
            self._ensure_files()

        if self.train_from_test_set is None:
            pool_x, pool_y = self._load_split(train=True)
            test_x, test_y = self._load_split(train=False)
            pool_src = np.arange(pool_y.shape[0])
            test_src = np.arange(test_y.shape[0])
            source_split = "train"
        else:
            all_x, all_y = self._load_split(train=False)
            n_all, k = int(all_y.shape[0]), self.train_from_test_set
            if k >= n_all:
                raise ValueError(
                    f"train_from_test_set={k} must be smaller than the {n_all} images of the "
                    f"official {self.dataset} test set (the rest becomes the training pool)"
                )
            perm = np.random.default_rng(TEST_CARVE_SEED).permutation(n_all)
            test_src, pool_src = np.sort(perm[:k]), np.sort(perm[k:])
            pool_x, pool_y = all_x[pool_src], all_y[pool_src]
            test_x, test_y = all_x[test_src], all_y[test_src]
            source_split = "test"

        if self.classes is not None:
            pool_x, pool_y, pool_src = _select_classes(pool_x, pool_y, pool_src, self.classes)
            test_x, test_y, test_src = _select_classes(
                test_x, test_y, np.asarray(test_src), self.classes
            )

        rng = np.random.default_rng(self.split_seed)
        if self.train_subset is not None:
            n_pool = int(pool_y.shape[0])
            if self.train_subset > n_pool:
                raise ValueError(
                    f"train_subset={self.train_subset} exceeds the training pool of {n_pool} "
                    f"{self.dataset} images"
                )
            keep = np.sort(rng.permutation(n_pool)[: self.train_subset])
            pool_x, pool_y, pool_src = pool_x[keep], pool_y[keep], pool_src[keep]

        n_pool = int(pool_y.shape[0])
        clean = pool_y.numpy()
        noisy = apply_label_noise(
            clean,
            self.num_classes,
            self.noise_type,
            self.noise_level,
            self.noise_seed,
            self.dataset,
        )

        if _is_int(self.val_size):
            n_val = int(self.val_size)
        else:
            n_val = int(round(float(self.val_size) * n_pool))
        if n_val >= n_pool:
            raise ValueError(
                f"val_size={self.val_size!r} leaves no training data: {n_val} validation images "
                f"out of a pool of {n_pool}"
            )
        perm = rng.permutation(n_pool)
        val_idx, train_idx = np.sort(perm[:n_val]), np.sort(perm[n_val:])

        n_split = int(train_idx.shape[0])
        excluded = self.exclude_train_indices
        if excluded.size and int(excluded[-1]) >= n_split:
            out = excluded[excluded >= n_split]
            raise ValueError(
                f"exclude_train_indices: {out[:5].tolist()} out of range for a training split of "
                f"{n_split} samples (valid indices: 0..{n_split - 1})"
            )
        if excluded.size == n_split:
            raise ValueError(
                f"exclude_train_indices removes all {n_split} training samples; keep at least one"
            )
        kept = np.setdiff1d(np.arange(n_split), excluded)  # sorted
        train_idx = train_idx[kept]

        noisy_t = torch.from_numpy(noisy).long()
        clean_t = pool_y.long()
        train_x = pool_x[train_idx]
        val_x = pool_x[val_idx]

        # Set all state at once (a failure above leaves the module untouched).
        self.source_split = source_split
        self.train_split_size = n_split
        self.train_original_indices = torch.from_numpy(kept).long()
        self.train_excluded_indices = torch.from_numpy(excluded.copy()).long()
        self.train_source_indices = torch.from_numpy(pool_src[train_idx]).long()
        self.val_source_indices = torch.from_numpy(pool_src[val_idx]).long()
        self.test_source_indices = torch.from_numpy(np.asarray(test_src)).long()
        self.train_clean_labels = clean_t[train_idx]
        self.train_noisy_labels = noisy_t[train_idx]
        self.train_is_corrupted = self.train_noisy_labels != self.train_clean_labels
        self.val_clean_labels = clean_t[val_idx]
        self.val_noisy_labels = noisy_t[val_idx]
        self.train_dataset = IndexedTensorDataset(
            train_x, self.train_noisy_labels, self.train_transform
        )
        self.train_eval_dataset = IndexedTensorDataset(
            train_x, self.train_noisy_labels, self.eval_transform
        )
        self.val_dataset = IndexedTensorDataset(
            val_x,
            self.val_noisy_labels if self.noisy_validation else self.val_clean_labels,
            self.eval_transform,
        )
        self.test_dataset = IndexedTensorDataset(test_x, test_y.long(), self.eval_transform)
        self._is_setup = True

    # ---------------------------------------------------------------- loaders

    def model_hints(self) -> dict[str, Any]:
        """Return ``{"num_classes": ..., "input_shape": ...}`` for building a model."""
        return {"num_classes": self.num_classes, "input_shape": self.input_shape}

    def _require_setup(self) -> None:
        if not self._is_setup:
            self.setup()

    def _world(self) -> tuple[int, int]:
        trainer = self.trainer
        if trainer is None:
            return 1, 0
        return int(trainer.world_size), int(trainer.global_rank)

    def _eval_loader(self, dataset: Dataset) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.eval_batch_size,
            shuffle=False,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
        )

    def train_dataloader(self) -> DataLoader:
        """Training loader (noisy labels, augmentation if enabled).

        Shuffling uses a :class:`~torch.utils.data.DistributedSampler` seeded by ``split_seed``
        (world size and rank from the attached trainer, else 1 and 0). Lightning calls its
        ``set_epoch``, so the order of each epoch is reproducible, also after resuming from a
        checkpoint, and Lightning does not replace it under DDP.
        """
        self._require_setup()
        world, rank = self._world()
        sampler = DistributedSampler(
            self.train_dataset,
            num_replicas=world,
            rank=rank,
            shuffle=True,
            seed=self.split_seed,
            drop_last=False,
        )
        return DataLoader(
            self.train_dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
        )

    def val_dataloader(self) -> DataLoader | list[DataLoader]:
        """Validation loader (unshuffled); an empty list when ``val_size`` is 0."""
        self._require_setup()
        if len(self.val_dataset) == 0:
            return []
        return self._eval_loader(self.val_dataset)

    def test_dataloader(self) -> DataLoader:
        """Test loader (clean labels, unshuffled)."""
        self._require_setup()
        return self._eval_loader(self.test_dataset)

    def train_eval_dataloader(self) -> DataLoader:
        """Training set without augmentation, unshuffled, eval batch size, noisy labels.

        Items are ``(x, noisy_label, index)``; compare with :attr:`train_clean_labels` /
        :attr:`train_is_corrupted` through ``index``. With ``exclude_train_indices`` the
        ``index`` is the position in the reduced training set; map it back with
        :attr:`train_original_indices`.
        """
        self._require_setup()
        return self._eval_loader(self.train_eval_dataset)
