"""Synthetic label noise for classification data sets.

Two corruption models are provided, both as pure functions of a label array and a seed:

* **uniform** (symmetric) noise: each label is kept with probability ``1 - p`` and otherwise
  replaced by one of the *other* ``k - 1`` classes chosen uniformly at random. This is the
  noise model of Harutyunyan et al., "Improving generalization by controlling label-noise
  information in neural network weights" (ICML 2020). Note that the fraction of corrupted
  labels is exactly ``p`` in expectation (a corrupted label never equals the original one).
* **pair** (class-dependent) noise: a sample whose class ``c`` is a key of a *pair map* is
  flipped to ``pair_map[c]`` with probability ``p``; samples of other classes are untouched.
  For CIFAR-10 the classic map is truck -> automobile, bird -> airplane, deer -> horse,
  cat -> dog (Patrini et al., CVPR 2017).

All functions are deterministic given ``seed`` (they use ``np.random.default_rng(seed)``) and
never modify their input.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

__all__ = [
    "CIFAR10_PAIR_MAP",
    "NOISE_TYPES",
    "PAIR_MAPS",
    "apply_label_noise",
    "pair_label_noise",
    "uniform_label_noise",
]

#: CIFAR-10 pair map: truck->automobile, bird->airplane, deer->horse, cat->dog.
CIFAR10_PAIR_MAP: dict[int, int] = {9: 1, 2: 0, 4: 7, 3: 5}

#: Pair maps by data-set name (only data sets listed here support ``noise_type="pair"``).
PAIR_MAPS: dict[str, dict[int, int]] = {"cifar10": CIFAR10_PAIR_MAP}

#: Values accepted for ``noise_type`` by :func:`apply_label_noise`.
NOISE_TYPES: tuple[str | None, ...] = (None, "none", "uniform", "pair")


def _check_noise_level(noise_level: float) -> float:
    """Return ``noise_level`` as a float after checking that it lies in ``[0, 1)``."""
    if isinstance(noise_level, bool) or not isinstance(noise_level, (int, float, np.number)):
        raise ValueError(
            f"noise_level must be a number in [0, 1), got {noise_level!r} "
            f"(type {type(noise_level).__name__})"
        )
    level = float(noise_level)
    if not 0.0 <= level < 1.0:  # also rejects NaN
        raise ValueError(f"noise_level must lie in [0, 1), got {noise_level!r}")
    return level


def _check_labels(labels: np.ndarray, num_classes: int | None = None) -> np.ndarray:
    """Return ``labels`` as a 1-D integer array after validating shape, dtype and range."""
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise ValueError(f"labels must be a 1-D array, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"labels must have an integer dtype, got {arr.dtype}")
    if num_classes is not None and arr.size:
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi >= num_classes:
            raise ValueError(
                f"labels must lie in [0, num_classes={num_classes}), got values in [{lo}, {hi}]"
            )
    return arr


def uniform_label_noise(
    labels: np.ndarray, num_classes: int, noise_level: float, seed: int
) -> np.ndarray:
    """Corrupt labels with uniform (symmetric) noise.

    Each label is kept with probability ``1 - noise_level``; otherwise it is replaced by one of
    the other ``num_classes - 1`` classes, chosen uniformly. The corrupted label is therefore
    never equal to the original one.

    Args:
        labels: 1-D integer array of clean labels in ``[0, num_classes)``.
        num_classes: Number of classes ``k >= 2``.
        noise_level: Corruption probability ``p`` in ``[0, 1)``.
        seed: Seed of the ``np.random.default_rng`` generator.

    Returns:
        A new array (same dtype as ``labels``) of noisy labels.

    Raises:
        ValueError: If ``num_classes < 2``, ``noise_level`` is outside ``[0, 1)`` or ``labels``
            is not a 1-D integer array with values in range.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)):
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2 for uniform label noise, got {num_classes}")
    level = _check_noise_level(noise_level)
    arr = _check_labels(labels, int(num_classes))
    rng = np.random.default_rng(seed)
    flip = rng.random(arr.shape[0]) < level
    # An offset in {1, ..., k-1} added modulo k hits each *other* class with probability 1/(k-1).
    offset = rng.integers(1, num_classes, size=arr.shape[0])
    noisy = arr.copy()
    noisy[flip] = ((arr[flip].astype(np.int64) + offset[flip]) % num_classes).astype(arr.dtype)
    return noisy


def pair_label_noise(
    labels: np.ndarray, pair_map: Mapping[int, int], noise_level: float, seed: int
) -> np.ndarray:
    """Corrupt labels with pair (class-dependent) noise.

    A sample whose class ``c`` is a key of ``pair_map`` is relabelled ``pair_map[c]`` with
    probability ``noise_level``; all other samples keep their label.

    Args:
        labels: 1-D integer array of clean labels.
        pair_map: Mapping source class -> target class (e.g. :data:`CIFAR10_PAIR_MAP`).
        noise_level: Flip probability ``p`` in ``[0, 1)``.
        seed: Seed of the ``np.random.default_rng`` generator.

    Returns:
        A new array (same dtype as ``labels``) of noisy labels.

    Raises:
        ValueError: If ``noise_level`` is outside ``[0, 1)``, ``pair_map`` maps a class to
            itself or has non-integer entries, or ``labels`` is not a 1-D integer array.
    """
    level = _check_noise_level(noise_level)
    arr = _check_labels(labels)
    for src, dst in pair_map.items():
        if isinstance(src, bool) or isinstance(dst, bool):
            raise ValueError(f"pair_map entries must be integers, got {src!r}: {dst!r}")
        if not isinstance(src, (int, np.integer)) or not isinstance(dst, (int, np.integer)):
            raise ValueError(f"pair_map entries must be integers, got {src!r}: {dst!r}")
        if src == dst:
            raise ValueError(f"pair_map maps class {src} to itself")
    rng = np.random.default_rng(seed)
    flip = rng.random(arr.shape[0]) < level
    noisy = arr.copy()
    for src, dst in pair_map.items():
        mask = flip & (arr == src)
        noisy[mask] = dst
    return noisy


def apply_label_noise(
    labels: np.ndarray,
    num_classes: int,
    noise_type: str | None,
    noise_level: float,
    seed: int,
    dataset: str,
) -> np.ndarray:
    """Apply the named label-noise model to ``labels``.

    Args:
        labels: 1-D integer array of clean labels in ``[0, num_classes)``.
        num_classes: Number of classes.
        noise_type: ``None`` or ``"none"`` (no noise), ``"uniform"`` or ``"pair"``.
        noise_level: Corruption probability in ``[0, 1)``.
        seed: Seed of the noise generator.
        dataset: Data-set name; selects the pair map (see :data:`PAIR_MAPS`) for
            ``noise_type="pair"``.

    Returns:
        A new array of (possibly) noisy labels; the input is never modified.

    Raises:
        ValueError: On an unknown ``noise_type``, a ``noise_level`` outside ``[0, 1)``, pair noise
            on a data set without a pair map, or invalid ``labels``.
    """
    if noise_type not in NOISE_TYPES:
        raise ValueError(f"noise_type must be one of {list(NOISE_TYPES)}, got {noise_type!r}")
    level = _check_noise_level(noise_level)
    arr = _check_labels(labels, num_classes)
    if noise_type is None or noise_type == "none":
        return arr.copy()
    if noise_type == "uniform":
        return uniform_label_noise(arr, num_classes, level, seed)
    if dataset not in PAIR_MAPS:
        raise ValueError(
            f"noise_type='pair' needs a pair map, and dataset {dataset!r} has none; "
            f"datasets with a pair map: {sorted(PAIR_MAPS)}"
        )
    pair_map = PAIR_MAPS[dataset]
    bad = [c for c in (*pair_map.keys(), *pair_map.values()) if not 0 <= c < num_classes]
    if bad:
        raise ValueError(
            f"pair map of dataset {dataset!r} has classes {bad} outside "
            f"[0, num_classes={num_classes})"
        )
    return pair_label_noise(arr, pair_map, level, seed)
