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

* ``mnist`` / ``fashion_mnist``: the IDX files of torchvision's layout,
  ``<data_dir>/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte`` (``FashionMNIST/raw/``
  for Fashion-MNIST), each either uncompressed or gzip-compressed as downloaded (the same name
  plus ``.gz``); where both exist the uncompressed file is read. A ``.gz`` file is decompressed
  in memory, nothing is written. The reader is our own (a few lines of numpy): it checks the
  IDX magic number, that the dimensions in the header match the file's (decompressed) size and
  the image size of the data set, that image and label files agree in length, and that labels
  lie in ``[0, num_classes)``. Only the files of the splits actually used are needed (with
  ``train_from_test_set`` only the ``t10k-*`` files). ``download=True`` fetches missing files
  through the torchvision dataset class.
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

Missing files raise :class:`FileNotFoundError` naming the data set, ``data_dir``, each missing
file once and the ways to get them (``--data.data_dir``, env ``LIT_INFO_DATA``,
``--data.download true``); a missing ``exclude_train_indices`` file names itself. Malformed
files raise :class:`ValueError` naming the file. :meth:`NoisyImageDataModule.check_files` (which
the CLI calls before the trainer writes anything) raises the same errors from cheap checks: all
of the above for MNIST-format files (a ``.gz`` file is decompressed as a stream, without
keeping the data), and for CIFAR batches a check of the pickle's framing (a known first opcode,
the final ``STOP``), which catches truncated and non-pickle files; a complete pickle with the
wrong content is found by ``setup``. All files are read and checked before the module's state
is set, so a failed ``setup`` leaves the module untouched, and nothing is ever written unless
``download=True``.
"""

from __future__ import annotations

import csv
import gzip
import math
import os
import pickle
import pickletools
import zlib
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
    "PREDICT_SPLITS",
    "TEST_CARVE_SEED",
    "DatasetInfo",
    "ImageTransform",
    "IndexedTensorDataset",
    "NoisyImageDataModule",
    "expected_files",
]

#: Names accepted for ``NoisyImageDataModule(dataset=...)``.
DATASETS: tuple[str, ...] = ("digits", "mnist", "fashion_mnist", "cifar10", "cifar100")

#: Names accepted for ``NoisyImageDataModule(predict_split=...)``.
PREDICT_SPLITS: tuple[str, ...] = ("train", "val", "test")

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
        gzip_ok: Whether each file may instead be present gzip-compressed, as its name plus
            ``.gz`` (MNIST-format data sets).
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
    gzip_ok: bool = False


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
        gzip_ok=True,
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
        gzip_ok=True,
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


def _resolve(path: Path, gzip_ok: bool) -> Path:
    """Return the file read for ``path``: itself if present, else ``path.gz`` if allowed/present."""
    if gzip_ok and not path.is_file():
        compressed = path.with_name(path.name + ".gz")
        if compressed.is_file():
            return compressed
    return path


def expected_files(
    dataset: str, data_dir: str | os.PathLike[str], resolve: bool = False
) -> dict[str, list[Path]]:
    """Return the files a data set is read from, per official split.

    For MNIST-format data sets (:attr:`DatasetInfo.gzip_ok`) each file may be present either
    uncompressed or gzip-compressed (its name plus ``.gz``); either form satisfies the
    requirement, and the uncompressed file wins where both exist.

    Args:
        dataset: One of :data:`DATASETS`.
        data_dir: Root data folder.
        resolve: If true, look at the disk and return, for each file, the path that is actually
            read (``<name>.gz`` where only the compressed form exists); files absent in every
            form keep their canonical name, so ``[p for p in ... if not p.is_file()]`` lists
            the missing ones. If false, return the canonical (uncompressed) names.

    Returns:
        ``{"train": [...], "test": [...]}`` (both empty for ``digits``, which is bundled).

    Raises:
        ValueError: If ``dataset`` is unknown.
    """
    if dataset not in DATASET_INFO:
        raise ValueError(f"dataset must be one of {list(DATASETS)}, got {dataset!r}")
    info = DATASET_INFO[dataset]
    root = Path(data_dir)
    out = {
        "train": [root / f for f in info.train_files],
        "test": [root / f for f in info.test_files],
    }
    if resolve:
        out = {split: [_resolve(p, info.gzip_ok) for p in paths] for split, paths in out.items()}
    return out


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
_GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 << 20  # bytes per read when streaming a .gz file


def _is_gz(path: Path) -> bool:
    return path.name.endswith(".gz")


def _gzip_error_hint(path: Path) -> str:
    """Explain a ``.gz`` file that is no gzip stream at all (e.g. already decompressed)."""
    with open(path, "rb") as f:
        head = f.read(4)
    if head[:2] == _GZIP_MAGIC:
        return ""
    if len(head) == 4 and int.from_bytes(head, "big") in _IDX_MAGIC.values():
        return f"; it looks like an uncompressed IDX file: rename it {path.name[:-3]}"
    return "; the file does not start with the gzip magic bytes 1f 8b"


def _idx_content(path: Path, header_len: int, keep: bool) -> tuple[bytes, int, bytearray | None]:
    """Read a plain or gzip-compressed (``*.gz``) IDX file.

    A ``.gz`` file is decompressed as a stream, in chunks, so that checking a file without
    keeping it (``keep=False``) needs little memory; the gzip CRC and length are verified at
    its end. A plain file is only read when ``keep``.

    Args:
        path: The file.
        header_len: Number of leading bytes to return.
        keep: Whether to return all (decompressed) bytes.

    Returns:
        ``(header, size, data)``: the first ``header_len`` bytes (fewer if the data is
        shorter), the (decompressed) size in bytes, and the bytes if ``keep`` else ``None``.

    Raises:
        ValueError: If a ``.gz`` file is not a complete, valid gzip stream (naming the file).
    """
    if not _is_gz(path):
        size = path.stat().st_size
        with open(path, "rb") as f:
            if not keep:
                return f.read(header_len), size, None
            data = bytearray(size)
            size = f.readinto(data)
        del data[size:]
        return bytes(data[:header_len]), size, data
    header = b""
    size = 0
    data = bytearray() if keep else None
    try:
        with gzip.open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                if len(header) < header_len:
                    header += chunk[: header_len - len(header)]
                size += len(chunk)
                if data is not None:
                    data += chunk
    except (OSError, EOFError, zlib.error) as err:  # BadGzipFile is an OSError
        reason = f"not a readable gzip file ({type(err).__name__}: {err}{_gzip_error_hint(path)})"
        raise _corrupt(path, reason) from err
    return header, size, data


def _check_idx_header(
    path: Path, header: bytes, size: int, ndim: int, item_shape: Sequence[int]
) -> list[int]:
    """Check a uint8 IDX header against the data size and the expected item shape.

    Args:
        path: The file (for messages).
        header: Its first ``4 * (ndim + 1)`` (decompressed) bytes, or fewer if it is shorter.
        size: Its (decompressed) size in bytes.
        ndim: Expected number of dimensions (3 for images, 1 for labels).
        item_shape: Expected shape of one item (``dims[1:]``).

    Returns:
        The dimensions announced by the header.

    Raises:
        ValueError: Naming the file, if anything does not match.
    """
    header_len = 4 * (ndim + 1)
    what = "decompressed data" if _is_gz(path) else "file"
    if len(header) < header_len:
        raise _corrupt(path, f"{what} has {size} bytes, shorter than its {header_len}-byte header")
    magic = int.from_bytes(header[:4], "big")
    if magic != _IDX_MAGIC[ndim]:
        hint = ""
        if header[:2] == _GZIP_MAGIC:
            hint = f" (the file is gzip-compressed: name it {path.name}.gz or decompress it)"
        raise _corrupt(
            path, f"bad IDX magic number 0x{magic:08x}, expected 0x{_IDX_MAGIC[ndim]:08x}{hint}"
        )
    dims = [int.from_bytes(header[4 * (i + 1) : 4 * (i + 2)], "big") for i in range(ndim)]
    expected = header_len + math.prod(dims)
    if size != expected:
        raise _corrupt(
            path, f"header announces dims {dims} ({expected} bytes) but {what} has {size}"
        )
    if tuple(dims[1:]) != tuple(item_shape):
        raise _corrupt(path, f"items are {tuple(dims[1:])}, expected {tuple(item_shape)}")
    return dims


def _read_idx(
    path: Path, ndim: int, item_shape: Sequence[int], keep: bool = True
) -> tuple[int, np.ndarray | None]:
    """Validate a plain or ``.gz`` uint8 IDX file; return ``(items, array or None)``.

    Args:
        path: The file.
        ndim: Expected number of dimensions.
        item_shape: Expected shape of one item.
        keep: Return the (writable) uint8 array of shape ``dims``; else only validate.

    Returns:
        The number of items and, if ``keep``, the data.

    Raises:
        ValueError: Naming the file, if it is not a valid IDX file of that shape.
    """
    header_len = 4 * (ndim + 1)
    header, size, data = _idx_content(path, header_len, keep)
    dims = _check_idx_header(path, header, size, ndim, item_shape)
    if data is None:
        return dims[0], None
    return dims[0], np.frombuffer(data, dtype=np.uint8, offset=header_len).reshape(dims)


def _read_mnist_split(
    files: Sequence[Path], info: DatasetInfo, load_images: bool = True
) -> tuple[torch.Tensor | None, torch.Tensor]:
    """Validate and read one MNIST-format split.

    The same checks run, in the same order, whether or not the images are kept, so
    :meth:`NoisyImageDataModule.check_files` and ``setup`` report a damaged file alike.

    Args:
        files: ``(images file, labels file)``, each plain or ``.gz``.
        info: The data set's static facts (image size, number of classes).
        load_images: Return the images; else only validate them (streaming a ``.gz`` file).

    Returns:
        ``(uint8 N x 1 x H x W images or None, int64 N labels)``.

    Raises:
        ValueError: Naming the file that is malformed.
    """
    img_path, lbl_path = files
    n_img, images = _read_idx(img_path, 3, info.input_shape[1:], keep=load_images)
    n_lbl, labels = _read_idx(lbl_path, 1, ())
    assert labels is not None
    if n_img != n_lbl:
        raise _corrupt(lbl_path, f"{n_lbl} labels but {img_path.name} has {n_img} images")
    if labels.size and int(labels.max()) >= info.num_classes:
        raise _corrupt(lbl_path, f"label {int(labels.max())} >= {info.num_classes} classes")
    images_t = None if images is None else torch.from_numpy(images).unsqueeze(1).contiguous()
    return images_t, torch.from_numpy(labels.astype(np.int64))


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


_PICKLE_OPCODES = frozenset(op.code.encode("latin1") for op in pickletools.opcodes)


def _check_pickle_frame(path: Path) -> None:
    """Cheaply check that a file looks like one complete pickle, without unpickling it.

    Reads three bytes: the first must be a pickle opcode (``PROTO`` with a known protocol for
    protocol 2+, as in the official CIFAR batches) and the last the ``STOP`` opcode. This
    catches empty, truncated and non-pickle files (a truncated file passes only if its new
    last byte happens to be ``.``); a complete pickle with the wrong content passes.

    Args:
        path: The file.

    Raises:
        ValueError: Naming the file, if the check fails.
    """
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(2)
        f.seek(max(size - 1, 0))
        last = f.read(1)
    reason = None
    if size == 0:
        reason = "the file is empty"
    elif head[:1] not in _PICKLE_OPCODES:
        reason = f"first byte 0x{head[0]:02x} is no pickle opcode"
    elif head[:1] == pickle.PROTO and (len(head) < 2 or head[1] > pickle.HIGHEST_PROTOCOL):
        reason = "unknown pickle protocol"
    elif last != pickle.STOP:
        reason = "it does not end with the pickle STOP opcode: cut short, or not a pickle"
    if reason is not None:
        raise _corrupt(path, f"not a readable CIFAR python batch ({reason})")


def _read_cifar_batch(path: Path, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR python batch; return ``(uint8 N x 3 x 32 x 32, int64 N)``."""
    _check_pickle_frame(path)
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


def _missing_message(dataset: str, data_dir: Path, missing: list[Path], test_only: bool) -> str:
    """One line naming each missing file once (grouped by folder) and how to get them."""
    by_folder: dict[Path, list[str]] = {}
    for path in missing:
        by_folder.setdefault(path.parent, []).append(path.name)
    gz = " (plain or .gz)" if DATASET_INFO[dataset].gzip_ok else ""
    lacks = "; ".join(
        f"{folder} lacks {', '.join(names)}{gz}" for folder, names in by_folder.items()
    )
    carve = (
        "; only the test set is there: --data.train_from_test_set N trains on part of it"
        if test_only
        else ""
    )
    now = repr(str(data_dir)) + ("" if data_dir.is_dir() else ", no such folder")
    above = ", ".join(str(folder.relative_to(data_dir)) for folder in by_folder)
    return (
        f"{dataset} data files not found: {lacks}{carve}. Set --data.data_dir (the folder above "
        f"{above}; now {now}; default: env LIT_INFO_DATA, else ./data) to one that has them, or "
        "--data.download true (`download: true` in a config) to fetch them."
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


def _class_list(classes: Sequence[Any]) -> list[int]:
    """Validate ``classes`` (integers, no repeats, at least two); return them as ints."""
    bad = [c for c in classes if not _is_int(c)]
    if bad:
        raise ValueError(f"classes must be integers, got {bad[:5]!r} in {list(classes)!r}")
    values = [int(c) for c in classes]
    counts: dict[int, int] = {}
    for c in values:
        counts[c] = counts.get(c, 0) + 1
    repeats = [f"{c} {'twice' if n == 2 else f'{n} times'}" for c, n in counts.items() if n > 1]
    if repeats:
        raise ValueError(f"classes lists {' and '.join(repeats)} ({values}); give each class once")
    if len(values) < 2:
        raise ValueError(f"classes must list at least 2 classes, got {values}")
    return values


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
    """Image data sets (digits, MNIST, Fashion-MNIST, CIFAR-10/100) with synthetic label noise.

    Items are ``(x, y, index)``; see the module docstring for the pipeline, the file layout and
    the readers.

    Args:
        dataset: digits (scikit-learn's bundled 8x8 digits, no download), mnist, fashion_mnist,
            cifar10 or cifar100.
        data_dir: Folder holding the data files; unset = the LIT_INFO_DATA environment
            variable, else ./data.
        download: Download missing data files (needs network access).
        noise_type: Label noise: uniform (a corrupted label becomes one of the other classes,
            chosen at random) or pair (cifar10 only: truck -> automobile, bird -> airplane,
            deer -> horse, cat -> dog); unset = clean labels.
        noise_level: Probability that a label is corrupted, in [0, 1); must be 0 without
            noise_type.
        noise_seed: Seed of the label noise.
        val_size: Validation set taken from the training pool: a fraction in [0, 1) or a
            number of images (e.g. 5000); 0 = no validation set.
        split_seed: Seed of the train/validation split, of the choice of train_subset and of
            the shuffling of training batches.
        noisy_validation: Give the validation set the noisy labels (true) or the clean ones
            (false). Test labels are always clean.
        train_from_test_set: If set, ignore the official training set and split the official
            test set into this many test images and a training pool of the rest (the same
            split in every run). E.g. MNIST (10,000 test images) with 2000 and val_size 0:
            8,000 train / 2,000 test images.
        train_subset: If set, keep only this many images of the training pool (chosen with
            split_seed, before noise and the validation split).
        classes: If set, keep only these classes (in every split), relabelled 0, 1, ... in
            the order given, e.g. [4, 9] for MNIST 4 vs 9 (4 -> 0, 9 -> 1). Not available
            with pair noise.
        exclude_train_indices: Training samples to drop, after the split and the noise: a list
            of indices or the path of a file of them (one per line, or a CSV with an index
            column, such as the per-sample CSVs this toolkit writes). Indices count from 0 in
            the training set without exclusions; per-sample outputs then number the remaining
            samples 0, 1, ... in the same order.
        augment: Augment the training images: random crop with zero padding (4 px for CIFAR,
            3 px for 28x28 images, 1 px for digits) and, except for mnist and digits, a random
            horizontal flip. Unset = on for CIFAR, off otherwise.
        batch_size: Training batch size.
        eval_batch_size: Batch size for validation, test and prediction; unset = batch_size.
        num_workers: Data-loading worker processes; 0 = load in the main process.
        pin_memory: Put batches in pinned memory (faster copies to the GPU).
        predict_split: Split used by predict: test (clean labels), val (the validation labels)
            or train (the training set with its noisy labels, without augmentation).

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
        predict_split: Literal["train", "val", "test"] = "test",
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
        if predict_split not in PREDICT_SPLITS:
            raise ValueError(
                f"predict_split must be one of {list(PREDICT_SPLITS)}, got {predict_split!r}"
            )
        if predict_split == "val" and val_size == 0:
            raise ValueError(
                "predict_split='val' needs a validation set, but val_size is 0; set val_size "
                "or use predict_split 'train' or 'test'"
            )
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
        self.predict_split = predict_split

        info = DATASET_INFO[dataset]
        if classes is not None:
            classes = _class_list(classes)
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

    def _needed_splits(self) -> list[str]:
        return ["test"] if self.train_from_test_set is not None else ["train", "test"]

    def _split_files(self) -> dict[str, list[Path]]:
        """The files read per needed official split (``.gz`` where only that form exists)."""
        files = expected_files(self.dataset, self.data_dir, resolve=True)
        return {split: files[split] for split in self._needed_splits()}

    def check_files(self) -> None:
        """Fail early, before anything is written, when data files are missing or damaged.

        The CLI calls this before the trainer creates its logger and checkpoint folders. It
        raises the same errors as :meth:`setup` would, from cheap checks: every MNIST-format
        file is validated completely (header, size, image size, label range; a ``.gz`` file is
        decompressed as a stream and not kept), CIFAR batches by their pickle framing (see the
        module docstring). With ``download`` set, missing files are not an error (they are
        fetched in :meth:`prepare_data`), but the files already present are checked. Does
        nothing for ``digits``.

        Raises:
            FileNotFoundError: naming ``data_dir``, each missing file and how to get them.
            ValueError: naming a damaged file.
        """
        if self.dataset == "digits":
            return
        files = self._split_files() if self.download else self._ensure_files()
        for paths in files.values():
            if not all(p.is_file() for p in paths):
                continue  # download=True: fetched in prepare_data, checked by setup
            if self.info.gzip_ok:
                _read_mnist_split(paths, self.info, load_images=False)
            else:
                for path in paths:
                    _check_pickle_frame(path)

    def _ensure_files(self) -> dict[str, list[Path]]:
        """Check that the needed files exist, downloading them first if ``download``.

        Returns:
            The files to read per needed split, as from :meth:`_split_files`.
        """
        files = self._split_files()
        missing = [p for paths in files.values() for p in paths if not p.is_file()]
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
            files = self._split_files()
            missing = [p for paths in files.values() for p in paths if not p.is_file()]
        if missing:
            test_only = "train" in files and all(p.is_file() for p in files["test"])
            raise FileNotFoundError(
                _missing_message(self.dataset, self.data_dir, missing, test_only)
            )
        return files

    def _load_split(
        self, split: str, files: dict[str, list[Path]]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Read one official split as ``(uint8 N x C x H x W, int64 N)``.

        Args:
            split: ``"train"`` or ``"test"``.
            files: The files per split, from :meth:`_ensure_files` (unused for ``digits``).
        """
        if self.dataset == "digits":
            return _load_digits_split(split == "train")
        if self.info.gzip_ok:
            images, labels = _read_mnist_split(files[split], self.info)
            assert images is not None  # load_images=True
            return images, labels
        parts = [_read_cifar_batch(p, self.info.num_classes) for p in files[split]]
        images_np = np.concatenate([p[0] for p in parts])
        labels_np = np.concatenate([p[1] for p in parts])
        return torch.from_numpy(images_np), torch.from_numpy(labels_np)

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
        files = self._ensure_files() if self.dataset != "digits" else {}

        if self.train_from_test_set is None:
            pool_x, pool_y = self._load_split("train", files)
            test_x, test_y = self._load_split("test", files)
            pool_src = np.arange(pool_y.shape[0])
            test_src = np.arange(test_y.shape[0])
            source_split = "train"
        else:
            all_x, all_y = self._load_split("test", files)
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

    def predict_dataloader(self) -> DataLoader:
        """Loader of the split chosen by ``predict_split``, for ``trainer.predict``.

        Items are ``(x, y, index)`` as in the other loaders, ``index`` being the position in
        that split: ``"test"`` has the clean test labels, ``"val"`` the validation labels
        (noisy if ``noisy_validation``), ``"train"`` the noisy training labels with the images
        unaugmented and in order (the loader of :meth:`train_eval_dataloader`; with
        ``exclude_train_indices`` the ``index`` is the position in the reduced training set).
        Unshuffled, eval batch size. Under DDP Lightning shards it as it shards the eval loaders
        (its predict sampler splits the indices among the ranks without padding).

        Raises:
            ValueError: If ``predict_split="val"`` and the validation set is empty.
        """
        self._require_setup()
        dataset = {
            "train": self.train_eval_dataset,
            "val": self.val_dataset,
            "test": self.test_dataset,
        }[self.predict_split]
        if len(dataset) == 0:
            hint = (
                f" (val_size={self.val_size!r} gives no images)"
                if self.predict_split == "val"
                else ""
            )
            raise ValueError(f"predict_split={self.predict_split!r} selects an empty split{hint}")
        return self._eval_loader(dataset)
