"""Multivariate data and time series of covariance-estimation tasks, as a LightningDataModule.

The family behind linear CorEx (Ver Steeg et al., NeurIPS 2019) and T-CorEx (Harutyunyan et
al., arXiv 1905.13276): ``p`` Gaussian variables observed in ``T`` periods, a few samples per
period, and the task of estimating each period's covariance matrix.

Synthetic data come from *latent factor models* (:class:`LatentFactorModel`): ``m`` standard
normal factors ``z`` and, for every variable ``i``,

    ``x_i = std_i * (sum_j L_ij z_j + sqrt(1 - |L_i|^2) e_i)``,  ``e_i ~ N(0, 1)``,

so that ``Var x_i = std_i^2`` and ``Cov x = diag(diagonal) + factor @ factor.T`` with
``diagonal_i = std_i^2 (1 - |L_i|^2)`` and ``factor = L * std[:, None]``. The generators follow
the papers' experiments (the code is our own):

* :func:`modular_model`: the papers' "NGLF" model; every variable has exactly one parent factor.
* :func:`approximately_modular_model`: a modular model in which some variables get a second,
  weaker parent.
* :func:`sudden_change_models`: independent modular models for consecutive segments of periods.
* :func:`smooth_change_models`: a model that drifts linearly from one modular model to the next,
  each variable switching its parent once per segment.
* :func:`sample_periods` draws samples for a list of per-period models.

Real data are read by :func:`read_table` (``.csv``, ``.tsv``, ``.npy``, ``.npz``): rows are
consecutive time steps and columns variables.

:class:`TimeSeriesDataModule` serves either. Items are ``(x, period, index)`` with ``x`` of shape
``(p,)``, ``period`` in ``[0, T)`` and ``index`` the item's position in its split. The per-period
samples are also available as lists of tensors (:attr:`TimeSeriesDataModule.train_periods`, ...)
for the scikit-learn style estimators. For a file, periods are consecutive non-overlapping
windows of ``train_samples + val_samples + test_samples`` rows; the rows of each window are
shuffled (seeded) and split into train / validation / test, the protocol of the T-CorEx paper
for its stock-market and fMRI data.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

__all__ = [
    "DTYPES",
    "PREDICT_SPLITS",
    "SOURCES",
    "TABLE_SUFFIXES",
    "LatentFactorModel",
    "PeriodDataset",
    "TimeSeriesDataModule",
    "approximately_modular_model",
    "modular_model",
    "read_table",
    "sample_periods",
    "smooth_change_models",
    "sudden_change_models",
]

#: Names accepted for ``TimeSeriesDataModule(source=...)``.
SOURCES: tuple[str, ...] = (
    "modular",
    "approximately_modular",
    "sudden_change",
    "smooth_change",
    "file",
)

#: Names accepted for ``TimeSeriesDataModule(predict_split=...)``.
PREDICT_SPLITS: tuple[str, ...] = ("train", "val", "test")

#: Names accepted for ``TimeSeriesDataModule(dtype=...)``.
DTYPES: dict[str, torch.dtype] = {"float64": torch.float64, "float32": torch.float32}

#: File suffixes :func:`read_table` reads.
TABLE_SUFFIXES: tuple[str, ...] = (".csv", ".tsv", ".npy", ".npz")

#: Cell texts (case-insensitive, after stripping spaces) read as a missing value (NaN).
MISSING_CELLS: frozenset[str] = frozenset({"", "na", "n/a", "nan", "null"})

RandomState = np.random.Generator | int | None


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


# --------------------------------------------------------------------------------------------
# Latent factor models
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class LatentFactorModel:
    """A Gaussian latent factor model ``x_i = std_i (L_i . z + sqrt(1 - |L_i|^2) e_i)``.

    ``z`` (``m`` factors) and ``e`` (``p`` noises) are independent standard normals, so
    ``Var x_i = std_i^2`` and ``Corr(x_i, z_j) = L_ij``. The arrays are copied to float64 and
    made read-only.

    Attributes:
        std: ``(p,)`` standard deviations of the variables, all > 0.
        loadings: ``(p, m)`` correlations of the variables with the factors; every row has
            Euclidean norm < 1.

    Raises:
        ValueError: If the shapes disagree, a ``std`` is not positive and finite, or a row of
            ``loadings`` is not finite or has norm >= 1.
    """

    std: np.ndarray
    loadings: np.ndarray

    def __post_init__(self) -> None:
        std = np.array(self.std, dtype=np.float64)
        loadings = np.array(self.loadings, dtype=np.float64)
        if std.ndim != 1 or std.shape[0] < 1:
            raise ValueError(f"std must be a non-empty 1-D array, got shape {std.shape}")
        if loadings.ndim != 2 or loadings.shape[0] != std.shape[0] or loadings.shape[1] < 1:
            raise ValueError(
                f"loadings must have shape (p, m) = ({std.shape[0]}, m >= 1), got {loadings.shape}"
            )
        if not (np.isfinite(std).all() and (std > 0).all()):
            raise ValueError("std must be positive and finite")
        if not np.isfinite(loadings).all():
            raise ValueError("loadings must be finite")
        norms = np.linalg.norm(loadings, axis=1)
        if (norms >= 1).any():
            i = int(np.argmax(norms))
            raise ValueError(f"loadings rows must have norm < 1; row {i} has norm {norms[i]:.6g}")
        std.setflags(write=False)
        loadings.setflags(write=False)
        object.__setattr__(self, "std", std)
        object.__setattr__(self, "loadings", loadings)

    @property
    def n_variables(self) -> int:
        """Number of observed variables ``p``."""
        return int(self.std.shape[0])

    @property
    def n_factors(self) -> int:
        """Number of latent factors ``m``."""
        return int(self.loadings.shape[1])

    @property
    def parents(self) -> np.ndarray:
        """``(p,)`` int64: the factor each variable loads on most, ``argmax_j |L_ij|``."""
        return np.argmax(np.abs(self.loadings), axis=1).astype(np.int64)

    @property
    def diagonal(self) -> np.ndarray:
        """``(p,)`` noise variances ``std_i^2 (1 - |L_i|^2)``, the covariance's diagonal part."""
        return self.std**2 * (1.0 - np.sum(self.loadings**2, axis=1))

    @property
    def factor(self) -> np.ndarray:
        """``(p, m)`` factor loadings in data units, ``L * std[:, None]``."""
        return self.loadings * self.std[:, None]

    def covariance(self) -> np.ndarray:
        """Dense ``(p, p)`` covariance ``diag(diagonal) + factor @ factor.T`` (small ``p`` only).

        Computed as ``std_i std_j L_i . L_j`` off the diagonal and ``std_i^2`` on it.
        """
        cov = np.outer(self.std, self.std) * (self.loadings @ self.loadings.T)
        np.fill_diagonal(cov, self.std**2)
        return cov

    def sample(self, n: int, rng: RandomState = None) -> np.ndarray:
        """Draw ``n`` samples in ``O(n p m)`` time, without forming the covariance.

        Args:
            n: Number of samples (>= 0).
            rng: A :class:`numpy.random.Generator` or a seed (None: fresh entropy).

        Returns:
            ``(n, p)`` float64 array.
        """
        if not _is_int(n) or n < 0:
            raise ValueError(f"n must be an integer >= 0, got {n!r}")
        gen = np.random.default_rng(rng)
        z = gen.standard_normal((int(n), self.n_factors))
        e = gen.standard_normal((int(n), self.n_variables))
        noise_scale = np.sqrt(1.0 - np.sum(self.loadings**2, axis=1))
        return (z @ self.loadings.T + e * noise_scale) * self.std


def _check_model_args(
    n_variables: int, n_factors: int, snr: float, min_std: float, max_std: float
) -> None:
    if not _is_int(n_variables) or n_variables < 1:
        raise ValueError(f"n_variables must be an integer >= 1, got {n_variables!r}")
    if not _is_int(n_factors) or n_factors < 1:
        raise ValueError(f"n_factors must be an integer >= 1, got {n_factors!r}")
    if n_factors > n_variables:
        raise ValueError(
            f"n_factors={n_factors} must not exceed n_variables={n_variables} (each factor needs "
            "at least one variable)"
        )
    if not _is_number(snr) or not (0 < snr < math.inf):
        raise ValueError(f"snr must be a positive finite number, got {snr!r}")
    if not _is_number(min_std) or not (0 < min_std < math.inf):
        raise ValueError(f"min_std must be a positive finite number, got {min_std!r}")
    if not _is_number(max_std) or not (min_std <= max_std < math.inf):
        raise ValueError(f"max_std must be a finite number >= min_std={min_std!r}, got {max_std!r}")


def _modular_parts(
    n_variables: int,
    n_factors: int,
    snr: float,
    min_std: float,
    max_std: float,
    shuffle: bool,
    gen: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw ``(std, cor, parents)`` of a modular model (signed correlations with the parent)."""
    std = gen.uniform(min_std, max_std, size=n_variables)
    signs = np.where(gen.random(n_variables) < 0.5, -1.0, 1.0)
    snrs = gen.uniform(0.0, snr, size=n_variables)
    cor = signs * np.sqrt(snrs / (snrs + 1.0))
    if shuffle:
        parents = gen.integers(0, n_factors, size=n_variables)
    else:
        block = n_variables // n_factors
        parents = np.minimum(np.arange(n_variables) // block, n_factors - 1)
    return std, cor, parents.astype(np.int64)


def _loadings(cor: np.ndarray, parents: np.ndarray, n_factors: int) -> np.ndarray:
    loadings = np.zeros((cor.shape[0], n_factors))
    loadings[np.arange(cor.shape[0]), parents] = cor
    return loadings


def modular_model(
    n_variables: int,
    n_factors: int,
    snr: float = 5.0,
    min_std: float = 0.25,
    max_std: float = 4.0,
    shuffle: bool = False,
    rng: RandomState = None,
) -> LatentFactorModel:
    """A modular latent factor model (the papers' "NGLF" model): one parent factor per variable.

    Per variable ``i``: ``std_i ~ U(min_std, max_std)``, a signal-to-noise ratio
    ``snr_i ~ U(0, snr)`` and the correlation with its parent
    ``cor_i = ±sqrt(snr_i / (snr_i + 1))`` with a random sign, so that the parent explains the
    share ``snr_i / (snr_i + 1)`` of ``Var x_i``. Parents come in contiguous blocks of
    ``n_variables // n_factors`` variables (when ``n_factors`` does not divide ``n_variables``,
    the variables left over join the last factor) or, with ``shuffle``, uniformly at random.

    Args:
        n_variables: Number of variables ``p`` (>= 1).
        n_factors: Number of factors ``m``, in ``[1, p]``.
        snr: Upper end of the per-variable signal-to-noise ratios (> 0).
        min_std: Smallest standard deviation (> 0).
        max_std: Largest standard deviation (>= min_std).
        shuffle: Draw parents uniformly at random instead of in contiguous blocks.
        rng: A :class:`numpy.random.Generator` or a seed (None: fresh entropy).

    Returns:
        The model; ``loadings`` has one non-zero entry per row.

    Raises:
        ValueError: On an invalid argument (the message names it).
    """
    _check_model_args(n_variables, n_factors, snr, min_std, max_std)
    gen = np.random.default_rng(rng)
    std, cor, parents = _modular_parts(
        n_variables, n_factors, snr, min_std, max_std, bool(shuffle), gen
    )
    return LatentFactorModel(std=std, loadings=_loadings(cor, parents, n_factors))


def approximately_modular_model(
    n_variables: int,
    n_factors: int,
    extra_parent_prob: float = 0.3,
    snr: float = 5.0,
    min_std: float = 0.25,
    max_std: float = 4.0,
    shuffle: bool = False,
    rng: RandomState = None,
) -> LatentFactorModel:
    """A modular model in which some variables also load on a second, weaker factor.

    First a :func:`modular_model` is drawn with the same arguments and the same generator (so
    ``std``, the main parents and the row norms ``|L_i|`` are exactly those of
    ``modular_model(..., rng=seed)``). Then each variable, with probability
    ``extra_parent_prob``, gets one extra parent, uniform among the other ``m - 1`` factors.

    How the weight is split: the variable's signal share ``|L_i|^2 = snr_i / (snr_i + 1)`` is
    kept, and a fraction ``u_i ~ U(0, 1/2)`` of it goes to the extra parent:
    ``L_i,extra = ±sqrt(u_i) |cor_i|`` (random sign) and ``L_i,main = sqrt(1 - u_i) cor_i``.
    So ``|L_i| < 1`` and ``Var x_i = std_i^2`` are unchanged, the variable's total signal stays
    the snr-drawn share, and the main parent keeps the larger loading (it is still
    :attr:`LatentFactorModel.parents`).

    Args:
        n_variables: Number of variables ``p`` (>= 1).
        n_factors: Number of factors ``m``, in ``[1, p]`` (>= 2 if ``extra_parent_prob > 0``).
        extra_parent_prob: Probability in ``[0, 1]`` that a variable gets an extra parent.
        snr: Upper end of the per-variable signal-to-noise ratios (> 0).
        min_std: Smallest standard deviation (> 0).
        max_std: Largest standard deviation (>= min_std).
        shuffle: Draw the main parents at random instead of in contiguous blocks.
        rng: A :class:`numpy.random.Generator` or a seed (None: fresh entropy).

    Returns:
        The model; rows of ``loadings`` have one or two non-zero entries.

    Raises:
        ValueError: On an invalid argument (the message names it).
    """
    _check_model_args(n_variables, n_factors, snr, min_std, max_std)
    if not _is_number(extra_parent_prob) or not 0.0 <= extra_parent_prob <= 1.0:
        raise ValueError(f"extra_parent_prob must lie in [0, 1], got {extra_parent_prob!r}")
    if extra_parent_prob > 0 and n_factors < 2:
        raise ValueError(
            f"extra_parent_prob={extra_parent_prob!r} needs n_factors >= 2 (an extra parent must "
            f"differ from the main one), got n_factors={n_factors}"
        )
    gen = np.random.default_rng(rng)
    base = modular_model(n_variables, n_factors, snr, min_std, max_std, shuffle, rng=gen)
    parents = base.parents
    rows = np.arange(n_variables)
    cor = base.loadings[rows, parents]
    has_extra = gen.random(n_variables) < extra_parent_prob
    offset = gen.integers(1, max(n_factors, 2), size=n_variables)
    extra = (parents + offset) % n_factors
    share = gen.uniform(0.0, 0.5, size=n_variables)
    sign = np.where(gen.random(n_variables) < 0.5, -1.0, 1.0)
    loadings = np.array(base.loadings)
    idx = rows[has_extra]
    loadings[idx, parents[idx]] = np.sqrt(1.0 - share[idx]) * cor[idx]
    loadings[idx, extra[idx]] = sign[idx] * np.sqrt(share[idx]) * np.abs(cor[idx])
    return LatentFactorModel(std=base.std, loadings=loadings)


def _segment_lengths(n_periods: int, n_segments: int, min_length: int) -> list[int]:
    if not _is_int(n_periods) or n_periods < 1:
        raise ValueError(f"n_periods must be an integer >= 1, got {n_periods!r}")
    if not _is_int(n_segments) or n_segments < 1:
        raise ValueError(f"n_segments must be an integer >= 1, got {n_segments!r}")
    if n_periods < min_length * n_segments:
        raise ValueError(
            f"n_periods={n_periods} is too short for n_segments={n_segments}: every segment needs "
            f"at least {min_length} period{'s' if min_length > 1 else ''}"
        )
    lengths = [n_periods // n_segments] * n_segments
    lengths[-1] += n_periods - sum(lengths)
    return lengths


def sudden_change_models(
    n_variables: int,
    n_factors: int,
    n_periods: int,
    n_segments: int = 2,
    *,
    snr: float = 5.0,
    min_std: float = 0.25,
    max_std: float = 4.0,
    shuffle: bool = False,
    seed: RandomState = None,
) -> list[LatentFactorModel]:
    """Piecewise-constant models: ``n_segments`` independent modular models, one per segment.

    Segments have ``n_periods // n_segments`` periods each, the remainder going to the last.
    The T-CorEx paper's "sudden change" experiment.

    Args:
        n_variables: Number of variables ``p``.
        n_factors: Number of factors ``m``, in ``[1, p]``.
        n_periods: Number of periods ``T`` (>= n_segments).
        n_segments: Number of segments (>= 1).
        snr: See :func:`modular_model`.
        min_std: See :func:`modular_model`.
        max_std: See :func:`modular_model`.
        shuffle: See :func:`modular_model` (with blocks, the segments differ in their
            standard deviations and correlations only).
        seed: A :class:`numpy.random.Generator` or a seed (None: fresh entropy); the segment
            models are drawn one after the other from it.

    Returns:
        ``T`` models; within a segment the same object is repeated.

    Raises:
        ValueError: On an invalid argument (the message names it).
    """
    _check_model_args(n_variables, n_factors, snr, min_std, max_std)
    lengths = _segment_lengths(n_periods, n_segments, 1)
    gen = np.random.default_rng(seed)
    models: list[LatentFactorModel] = []
    for length in lengths:
        model = modular_model(n_variables, n_factors, snr, min_std, max_std, shuffle, rng=gen)
        models.extend([model] * length)
    return models


def smooth_change_models(
    n_variables: int,
    n_factors: int,
    n_periods: int,
    n_segments: int = 2,
    *,
    snr: float = 5.0,
    min_std: float = 0.25,
    max_std: float = 4.0,
    shuffle: bool = True,
    seed: RandomState = None,
) -> list[LatentFactorModel]:
    """Smoothly drifting models between ``n_segments + 1`` modular anchor models.

    Segments have ``L = n_periods // n_segments`` periods (the remainder goes to the last).
    Period ``t = 0, ..., L - 1`` of segment ``s`` sits at ``alpha = t / L`` between anchors
    ``s`` and ``s + 1``: each variable's standard deviation and (signed) correlation with its
    parent are ``(1 - alpha) * anchor_s + alpha * anchor_{s+1}``, and each variable switches from
    its parent in anchor ``s`` to its parent in anchor ``s + 1`` at a step drawn uniformly from
    ``[1, L)`` (so the first period of a segment *is* its anchor, and by the last one every
    variable has its next parent). The T-CorEx paper's "smooth change" experiment.

    Args:
        n_variables: Number of variables ``p``.
        n_factors: Number of factors ``m``, in ``[1, p]``.
        n_periods: Number of periods ``T`` (>= 2 * n_segments).
        n_segments: Number of segments (>= 1).
        snr: See :func:`modular_model`.
        min_std: See :func:`modular_model`.
        max_std: See :func:`modular_model`.
        shuffle: Random parents in the anchors (default, as in the paper). With blocks
            (False) all anchors have the same parents and nothing switches.
        seed: A :class:`numpy.random.Generator` or a seed (None: fresh entropy): first the
            anchors are drawn from it, then the switching steps segment by segment.

    Returns:
        ``T`` models, a new object for every period.

    Raises:
        ValueError: On an invalid argument (the message names it).
    """
    _check_model_args(n_variables, n_factors, snr, min_std, max_std)
    lengths = _segment_lengths(n_periods, n_segments, 2)
    gen = np.random.default_rng(seed)
    anchors = [
        _modular_parts(n_variables, n_factors, snr, min_std, max_std, bool(shuffle), gen)
        for _ in range(n_segments + 1)
    ]
    models: list[LatentFactorModel] = []
    for s, length in enumerate(lengths):
        std0, cor0, par0 = anchors[s]
        std1, cor1, par1 = anchors[s + 1]
        switch = gen.integers(1, length, size=n_variables)
        for t in range(length):
            alpha = t / length
            parents = np.where(t < switch, par0, par1)
            std = (1.0 - alpha) * std0 + alpha * std1
            cor = (1.0 - alpha) * cor0 + alpha * cor1
            models.append(LatentFactorModel(std=std, loadings=_loadings(cor, parents, n_factors)))
    return models


def sample_periods(
    models: Sequence[LatentFactorModel], n_per_period: int, rng: RandomState = None
) -> np.ndarray:
    """Draw ``n_per_period`` samples from each model, period after period.

    Args:
        models: ``T`` models with the same number of variables.
        n_per_period: Samples per period (>= 0).
        rng: A :class:`numpy.random.Generator` or a seed (None: fresh entropy).

    Returns:
        ``(T, n_per_period, p)`` float64 array.

    Raises:
        ValueError: If ``models`` is empty or the models disagree in ``p``.
    """
    if len(models) == 0:
        raise ValueError("models must contain at least one model")
    p = models[0].n_variables
    if any(model.n_variables != p for model in models):
        raise ValueError("models must all have the same number of variables")
    if not _is_int(n_per_period) or n_per_period < 0:
        raise ValueError(f"n_per_period must be an integer >= 0, got {n_per_period!r}")
    gen = np.random.default_rng(rng)
    out = np.empty((len(models), int(n_per_period), p))
    for t, model in enumerate(models):
        out[t] = model.sample(int(n_per_period), gen)
    return out


# --------------------------------------------------------------------------------------------
# Tables from files
# --------------------------------------------------------------------------------------------


def _parse_cell(text: str) -> float | None:
    """A cell as a float (NaN for a missing value), or None if it is not a number."""
    token = text.strip()
    if token.lower() in MISSING_CELLS:
        return math.nan
    try:
        return float(token)
    except ValueError:
        return None


def _read_delimited(
    path: Path, delimiter: str
) -> tuple[list[str] | None, list[list[str]], list[int]]:
    """Split a text table into ``(header or None, rows of cells, line number of each row)``."""
    rows: list[list[str]] = []
    lines: list[int] = []
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle, delimiter=delimiter)
            for record in reader:
                if not record or all(not cell.strip() for cell in record):
                    continue  # blank line
                rows.append(record)
                lines.append(reader.line_num)
    except (UnicodeDecodeError, csv.Error) as err:
        raise ValueError(f"{path}: not a readable {path.suffix} text table ({err})") from err
    if not rows:
        return None, [], []
    first = rows[0]
    if any(_parse_cell(cell) is None for cell in first):
        return [cell.strip() for cell in first], rows[1:], lines[1:]
    return None, rows, lines


def _column_indices(path: Path, names: list[str], columns: Sequence[str] | None) -> list[int]:
    if columns is None:
        return list(range(len(names)))
    if isinstance(columns, str) or len(columns) == 0:
        raise ValueError(f"columns must be a non-empty list of column names, got {columns!r}")
    repeated = sorted({c for c in columns if list(columns).count(c) > 1})
    if repeated:
        raise ValueError(f"columns lists {repeated} more than once; give each column once")
    position = {name: i for i, name in enumerate(names)}
    missing = [c for c in columns if c not in position]
    if missing:
        shown = names if len(names) <= 40 else [*names[:40], f"... ({len(names)} in all)"]
        raise ValueError(f"{path}: no column {missing[0]!r}; available columns: {shown}")
    return [position[c] for c in columns]


def _check_names(path: Path, names: list[str]) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ValueError(f"{path}: column name {name!r} appears more than once in the header")
        seen.add(name)


def _table_from_text(
    path: Path, delimiter: str, columns: Sequence[str] | None
) -> tuple[np.ndarray, list[str]]:
    header, rows, lines = _read_delimited(path, delimiter)
    if not rows:
        what = "only a header" if header is not None else "no rows"
        raise ValueError(f"{path}: the file has {what}, no data")
    width = len(header) if header is not None else len(rows[0])
    names = (
        [name or f"x{k}" for k, name in enumerate(header)]
        if header is not None
        else [f"x{k}" for k in range(width)]
    )
    _check_names(path, names)
    for row, line in zip(rows, lines, strict=True):
        if len(row) != width:
            raise ValueError(
                f"{path}: line {line} has {len(row)} cells, expected {width} "
                f"({'as in the header' if header is not None else 'as in line ' + str(lines[0])})"
            )
    keep = _column_indices(path, names, columns)
    cells = [[row[k] for k in keep] for row in rows]
    try:  # fast path: every cell a plain finite number or nan
        values = np.array(cells, dtype=np.float64)
        if np.isinf(values).any():
            raise ValueError("infinite value")
    except ValueError:
        values = np.empty((len(cells), len(keep)))
        for r, (row, line) in enumerate(zip(cells, lines, strict=True)):
            for c, cell in enumerate(row):
                value = _parse_cell(cell)
                if value is None or math.isinf(value):
                    problem = "not a number" if value is None else "an infinite value"
                    raise ValueError(
                        f"{path}: line {line}, column {names[keep[c]]!r}: {cell.strip()!r} is "
                        f"{problem}"
                    ) from None
                values[r, c] = value
    return values, [names[k] for k in keep]


def _table_from_array(
    path: Path, array: np.ndarray, columns: Sequence[str] | None, what: str
) -> tuple[np.ndarray, list[str]]:
    if array.ndim != 2:
        raise ValueError(
            f"{path}: {what} has shape {array.shape}; expected a 2-D array (rows x variables)"
        )
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"{path}: {what} has shape {array.shape}, no data")
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
        raise ValueError(f"{path}: {what} has dtype {array.dtype}; expected numbers")
    if np.iscomplexobj(array):
        raise ValueError(f"{path}: {what} is complex; expected real numbers")
    names = [f"x{k}" for k in range(array.shape[1])]
    keep = _column_indices(path, names, columns)
    values = np.array(array[:, keep], dtype=np.float64)
    bad = np.argwhere(np.isinf(values))
    if bad.size:
        r, c = (int(v) for v in bad[0])
        raise ValueError(f"{path}: row {r} (0-based), column {names[keep[c]]!r} is infinite")
    return values, [names[k] for k in keep]


def read_table(
    path: str | os.PathLike[str], columns: Sequence[str] | None = None
) -> tuple[np.ndarray, list[str]]:
    """Read a numeric table whose rows are samples (time steps) and columns variables.

    Formats, by suffix (case-insensitive):

    * ``.csv`` (comma) and ``.tsv`` (tab): text, quotes allowed, blank lines skipped. The first
      row is a header of column names if any of its cells is not a number (an empty header cell
      is named ``x<k>``); otherwise there is no header and the columns are ``x0, x1, ...``.
      Empty cells and ``NA``, ``N/A``, ``NaN``, ``null`` (any case) are missing values.
    * ``.npy``: one 2-D numeric array; ``.npz``: an archive holding exactly one such array.
      Columns are named ``x0, x1, ...``. Pickled objects are never loaded.

    Missing values are kept as NaN (what to do with them is the estimator's business);
    infinite values are an error.

    Args:
        path: The file.
        columns: Names of the columns to keep, in this order (default: all). Only these
            columns are parsed, so others may hold text (dates, labels).

    Returns:
        ``(values, names)``: float64 array ``(rows, len(names))`` and the column names.

    Raises:
        FileNotFoundError: If the file does not exist.
        ValueError: If the file is empty, not 2-D, holds a cell that is not a number (the
            message gives its line, counting from 1 with the header, and column), an ``.npz``
            archive does not hold exactly one array (the message lists its keys), or a
            requested column does not exist (the message lists the available ones). Every
            message names the file and fits on one line.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"table file not found: {str(path)!r}")
    suffix = path.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise ValueError(f"{path}: unsupported file type {suffix!r}; use one of {TABLE_SUFFIXES}")
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: the file is empty")
    if suffix in (".csv", ".tsv"):
        return _table_from_text(path, "," if suffix == ".csv" else "\t", columns)
    try:
        loaded = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise ValueError(f"{path}: not a readable {suffix} file ({err})") from err
    if suffix == ".npy":
        if not isinstance(loaded, np.ndarray):
            raise ValueError(f"{path}: not a .npy array file")
        return _table_from_array(path, loaded, columns, "the array")
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise ValueError(f"{path}: not an .npz archive")
    with loaded as archive:
        keys = list(archive.files)
        if len(keys) != 1:
            raise ValueError(f"{path}: expected one array in the archive, found keys {keys}")
        try:
            array = archive[keys[0]]
        except (ValueError, OSError, EOFError) as err:
            raise ValueError(f"{path}: array {keys[0]!r} is not readable ({err})") from err
    return _table_from_array(path, array, columns, f"array {keys[0]!r}")


# --------------------------------------------------------------------------------------------
# Dataset and DataModule
# --------------------------------------------------------------------------------------------


class PeriodDataset(Dataset):
    """Samples of several periods; items are ``(x, period, index)``.

    Args:
        x: ``(N, p)`` samples, ordered period by period.
        period: ``(N,)`` integer period of each sample.

    Raises:
        ValueError: If the shapes disagree.
    """

    def __init__(self, x: torch.Tensor, period: torch.Tensor) -> None:
        if x.ndim != 2 or period.ndim != 1 or x.shape[0] != period.shape[0]:
            raise ValueError(
                f"x must be (N, p) and period (N,), got {tuple(x.shape)} and {tuple(period.shape)}"
            )
        self.x = x
        self.period = period.long()

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        """Return ``(x (p,), period, index)``."""
        return self.x[index], int(self.period[index]), int(index)


class TimeSeriesDataModule(pl.LightningDataModule):
    """Multivariate samples per period, from synthetic factor models or a file (CorEx, T-CorEx).

    Items are ``(x, period, index)``: ``x`` of shape ``(p,)``, ``period`` in ``[0, T)`` and
    ``index`` the position in the split. Every split holds ``T`` periods with the same number
    of samples each, stored period by period; see the module docstring.

    Args:
        source: modular (one NGLF model), approximately_modular (some variables with a second
            parent), sudden_change (a new model per segment), smooth_change (models drifting
            between anchors) or file (a table whose rows are time steps).
        n_variables: Number of synthetic variables p (file: ignored, the columns decide).
        n_factors: Number of latent factors of the synthetic models (file: ignored).
        n_periods: Number of periods T. Synthetic: unset = 1 for modular and
            approximately_modular (more periods repeat the same model), 10 for the change
            sources. File: the number of whole windows to use, the last ones of the file;
            unset = all whole windows.
        n_segments: Segments of the change sources (sudden_change: segments of constant model;
            smooth_change: segments between consecutive anchor models).
        snr: Upper end of the per-variable signal-to-noise ratios U(0, snr).
        min_std: Smallest standard deviation of a synthetic variable.
        max_std: Largest standard deviation of a synthetic variable.
        shuffle: Random parent factors instead of contiguous blocks; unset = false, except
            for smooth_change (true, as in the T-CorEx paper: with blocks no parent switches).
        extra_parent_prob: approximately_modular only: probability that a variable gets a
            second parent.
        train_samples: Training samples per period (>= 2).
        val_samples: Validation samples per period (>= 0).
        test_samples: Test samples per period (>= 0).
        file: Table file (.csv, .tsv, .npy or .npz; see :func:`read_table`), only with source
            file; a relative path that does not exist from the working directory is looked up
            under ``data_dir``. Missing cells stay NaN in the tensors.
        data_dir: Folder for relative ``file`` paths; unset = the ``LIT_INFO_DATA``
            environment variable, else ``./data`` (as the image datamodules).
        columns: Columns of the file to use, by name (default: all); only with source file.
        batch_size: Training batch size; unset = the whole training split in one batch
            (full-batch training, unshuffled). Evaluation loaders use the same size, unset =
            each split in one batch.
        dtype: float64 or float32 tensors.
        num_workers: Data-loading worker processes; 0 = load in the main process.
        seed: Seed of the synthetic models and samples, of the file's within-window shuffle
            and of the shuffling of training batches.
        predict_split: Split served by predict: train, val or test.

    Attributes (after :meth:`setup`):
        train_dataset: :class:`PeriodDataset` of the training split (likewise ``val_dataset``,
            ``test_dataset``).
        source_rows: File: ``{"train": [...], "val": [...], "test": [...]}``, per period the
            0-based data rows of the file in that split (sorted); None for synthetic data.

    Raises:
        ValueError: On any invalid argument (the message names it).
    """

    def __init__(
        self,
        source: Literal[
            "modular", "approximately_modular", "sudden_change", "smooth_change", "file"
        ] = "modular",
        n_variables: int = 128,
        n_factors: int = 8,
        n_periods: int | None = None,
        n_segments: int = 2,
        snr: float = 5.0,
        min_std: float = 0.25,
        max_std: float = 4.0,
        shuffle: bool | None = None,
        extra_parent_prob: float = 0.3,
        train_samples: int = 16,
        val_samples: int = 16,
        test_samples: int = 1000,
        file: str | None = None,
        data_dir: str | None = None,
        columns: list[str] | None = None,
        batch_size: int | None = None,
        dtype: str = "float64",
        num_workers: int = 0,
        seed: int = 42,
        predict_split: Literal["train", "val", "test"] = "test",
    ) -> None:
        super().__init__()
        if source not in SOURCES:
            raise ValueError(f"source must be one of {list(SOURCES)}, got {source!r}")
        if source == "file" and file is None:
            raise ValueError("source='file' needs file (the path of a .csv, .tsv, .npy or .npz)")
        if source != "file" and file is not None:
            raise ValueError(f"file={file!r} is given but source={source!r}; set source='file'")
        if source != "file" and columns is not None:
            raise ValueError(f"columns is given but source={source!r}; columns select file columns")
        if columns is not None and (
            isinstance(columns, str)
            or len(columns) == 0
            or not all(isinstance(c, str) for c in columns)
        ):
            raise ValueError(f"columns must be a non-empty list of column names, got {columns!r}")
        if columns is not None and len(set(columns)) != len(columns):
            raise ValueError(f"columns must name each column once, got {columns!r}")
        for name, value, low in (
            ("n_variables", n_variables, 2),
            ("n_factors", n_factors, 1),
            ("n_segments", n_segments, 1),
            ("train_samples", train_samples, 2),
            ("val_samples", val_samples, 0),
            ("test_samples", test_samples, 0),
            ("num_workers", num_workers, 0),
            ("seed", seed, 0),
        ):
            if not _is_int(value) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        for name, value in (("n_periods", n_periods), ("batch_size", batch_size)):
            if value is not None and (not _is_int(value) or value < 1):
                raise ValueError(f"{name} must be None or an integer >= 1, got {value!r}")
        if shuffle is not None and not isinstance(shuffle, bool):
            raise ValueError(f"shuffle must be None, True or False, got {shuffle!r}")
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {list(DTYPES)}, got {dtype!r}")
        if predict_split not in PREDICT_SPLITS:
            raise ValueError(
                f"predict_split must be one of {list(PREDICT_SPLITS)}, got {predict_split!r}"
            )
        for split, count in (("val", val_samples), ("test", test_samples)):
            if predict_split == split and count == 0:
                raise ValueError(
                    f"predict_split={split!r} needs {split} samples, but {split}_samples is 0"
                )
        if n_periods is None and source != "file":
            n_periods = 1 if source in ("modular", "approximately_modular") else 10
        if source != "file":
            _check_model_args(n_variables, n_factors, snr, min_std, max_std)
            if source == "approximately_modular":
                if not _is_number(extra_parent_prob) or not 0 <= extra_parent_prob <= 1:
                    raise ValueError(
                        f"extra_parent_prob must lie in [0, 1], got {extra_parent_prob!r}"
                    )
                if extra_parent_prob > 0 and n_factors < 2:
                    raise ValueError(
                        f"extra_parent_prob={extra_parent_prob!r} needs n_factors >= 2, got "
                        f"n_factors={n_factors}"
                    )
            if source in ("sudden_change", "smooth_change"):
                assert n_periods is not None
                _segment_lengths(n_periods, n_segments, 2 if source == "smooth_change" else 1)

        # A file decides p (and T when n_periods is unset): those arguments are then not
        # hyper-parameters of the data. Kept, they would contradict the values a model receives
        # from model_hints(), and Lightning refuses to log the two hparams sets together.
        decided = ["n_variables"] + (["n_periods"] if n_periods is None else [])
        self.save_hyperparameters(ignore=decided if source == "file" else None)
        self.source = source
        self.n_variables = int(n_variables)
        self.n_factors = int(n_factors)
        self.n_periods = n_periods
        self.n_segments = int(n_segments)
        self.snr = float(snr)
        self.min_std = float(min_std)
        self.max_std = float(max_std)
        self.shuffle = (source == "smooth_change") if shuffle is None else shuffle
        self.extra_parent_prob = float(extra_parent_prob)
        self.train_samples = int(train_samples)
        self.val_samples = int(val_samples)
        self.test_samples = int(test_samples)
        self.data_dir = Path(data_dir or os.environ.get("LIT_INFO_DATA", "./data"))
        self.file = None if file is None else Path(file)
        if self.file is not None and not self.file.is_absolute() and not self.file.exists():
            self.file = self.data_dir / self.file
        self.columns = None if columns is None else list(columns)
        self.batch_size = batch_size
        self.dtype = dtype
        self.num_workers = int(num_workers)
        self.seed = int(seed)
        self.predict_split = predict_split
        self.source_rows: dict[str, list[torch.Tensor]] | None = None
        self._true_models: list[LatentFactorModel] | None = None
        self._variable_names: list[str] = []
        self._is_setup = False

    # ---------------------------------------------------------------- files

    @property
    def window(self) -> int:
        """Rows per period of a file: ``train_samples + val_samples + test_samples``."""
        return self.train_samples + self.val_samples + self.test_samples

    def _file_windows(self, n_rows: int) -> tuple[int, int]:
        """``(first window, number of windows)`` used from a file of ``n_rows`` data rows."""
        assert self.file is not None
        available = n_rows // self.window
        if available == 0:
            raise ValueError(
                f"{self.file}: {n_rows} data rows are fewer than one window of {self.window} rows "
                f"(train_samples {self.train_samples} + val_samples {self.val_samples} + "
                f"test_samples {self.test_samples})"
            )
        if self.n_periods is not None and self.n_periods > available:
            raise ValueError(
                f"n_periods={self.n_periods} exceeds the {available} whole windows of "
                f"{self.window} rows in {self.file} ({n_rows} data rows)"
            )
        count = available if self.n_periods is None else self.n_periods
        return available - count, count

    def _read_file(self) -> tuple[np.ndarray, list[str], int, int]:
        assert self.file is not None
        values, names = read_table(self.file, self.columns)
        if values.shape[1] < 2:
            raise ValueError(f"{self.file}: {values.shape[1]} column(s); need at least 2 variables")
        first, count = self._file_windows(int(values.shape[0]))
        return values, names, first, count

    def check_files(self) -> None:
        """Fail early, before anything is written, when the table file is missing or unusable.

        The CLI calls this before the trainer creates its folders. For a file source it reads
        the table (it is small) and checks that it holds at least one window of
        ``train_samples + val_samples + test_samples`` rows (and ``n_periods`` windows if set),
        raising the errors :meth:`setup` would. Does nothing for synthetic sources.

        Raises:
            FileNotFoundError: If the file does not exist.
            ValueError: Naming the file, if it cannot be parsed or is too short.
        """
        if self.source == "file":
            self._read_file()

    def model_hints(self) -> dict[str, int]:
        """Return ``{"n_variables": p, "n_periods": T}`` (a file source reads the file).

        Raises:
            FileNotFoundError: If a file source's file does not exist.
            ValueError: If it cannot be parsed or is too short.
        """
        if self.source != "file":
            assert self.n_periods is not None
            return {"n_variables": self.n_variables, "n_periods": self.n_periods}
        values, _, _, count = self._read_file()
        return {"n_variables": int(values.shape[1]), "n_periods": count}

    # ---------------------------------------------------------------- setup

    def _models(self, gen: np.random.Generator) -> list[LatentFactorModel]:
        assert self.n_periods is not None
        p, m, t = self.n_variables, self.n_factors, self.n_periods
        kwargs = {"snr": self.snr, "min_std": self.min_std, "max_std": self.max_std}
        if self.source == "modular":
            return [modular_model(p, m, shuffle=self.shuffle, rng=gen, **kwargs)] * t
        if self.source == "approximately_modular":
            model = approximately_modular_model(
                p, m, self.extra_parent_prob, shuffle=self.shuffle, rng=gen, **kwargs
            )
            return [model] * t
        build = sudden_change_models if self.source == "sudden_change" else smooth_change_models
        return build(p, m, t, self.n_segments, shuffle=self.shuffle, seed=gen, **kwargs)

    def _synthetic(self) -> tuple[dict[str, np.ndarray], list[LatentFactorModel]]:
        # Independent streams: changing the size of one split leaves the others unchanged.
        model_ss, *split_ss = np.random.SeedSequence(self.seed).spawn(4)
        models = self._models(np.random.default_rng(model_ss))
        sizes = (self.train_samples, self.val_samples, self.test_samples)
        splits = {
            split: sample_periods(models, n, np.random.default_rng(ss))
            for split, n, ss in zip(PREDICT_SPLITS, sizes, split_ss, strict=True)
        }
        return splits, models

    def _from_file(self) -> tuple[dict[str, np.ndarray], list[str], dict[str, list[np.ndarray]]]:
        values, names, first, count = self._read_file()
        w, n_tr, n_va = self.window, self.train_samples, self.val_samples
        parts: dict[str, list[np.ndarray]] = {split: [] for split in PREDICT_SPLITS}
        for k in range(first, first + count):
            # Seeded by (seed, window): a window's split does not depend on n_periods.
            perm = np.random.default_rng([self.seed, k]).permutation(w)
            for split, chosen in zip(
                PREDICT_SPLITS,
                (perm[:n_tr], perm[n_tr : n_tr + n_va], perm[n_tr + n_va :]),
                strict=True,
            ):
                parts[split].append(k * w + np.sort(chosen))
        splits = {split: np.stack([values[r] for r in rows]) for split, rows in parts.items()}
        return splits, names, parts

    def setup(self, stage: str | None = None) -> None:
        """Draw the synthetic samples or read and split the file; idempotent.

        Args:
            stage: Lightning stage (ignored: all splits are built at once).

        Raises:
            FileNotFoundError: If the file does not exist.
            ValueError: If the file cannot be parsed or is too short.
        """
        if self._is_setup:
            return
        rows: dict[str, list[np.ndarray]] | None = None
        models: list[LatentFactorModel] | None = None
        if self.source == "file":
            splits, names, rows = self._from_file()
        else:
            splits, models = self._synthetic()
            names = [f"x{k}" for k in range(self.n_variables)]
        dtype = DTYPES[self.dtype]
        datasets = {}
        for split, array in splits.items():
            t, n, p = array.shape
            x = torch.from_numpy(np.ascontiguousarray(array.reshape(t * n, p))).to(dtype)
            period = torch.arange(t).repeat_interleave(n)
            datasets[split] = PeriodDataset(x, period)

        # Set all state at once (a failure above leaves the module untouched).
        self.train_dataset = datasets["train"]
        self.val_dataset = datasets["val"]
        self.test_dataset = datasets["test"]
        self._true_models = models
        self._variable_names = list(names)
        self._n_periods_setup = int(splits["train"].shape[0])
        self.source_rows = (
            None
            if rows is None
            else {s: [torch.from_numpy(r).long() for r in rs] for s, rs in rows.items()}
        )
        self._is_setup = True

    def _require_setup(self) -> None:
        if not self._is_setup:
            self.setup()

    def _periods(self, dataset: PeriodDataset) -> list[torch.Tensor]:
        n = len(dataset) // self._n_periods_setup
        return [dataset.x[t * n : (t + 1) * n] for t in range(self._n_periods_setup)]

    @property
    def train_periods(self) -> list[torch.Tensor]:
        """Training samples per period: ``T`` tensors ``(train_samples, p)`` (runs setup)."""
        self._require_setup()
        return self._periods(self.train_dataset)

    @property
    def val_periods(self) -> list[torch.Tensor]:
        """Validation samples per period: ``T`` tensors ``(val_samples, p)`` (runs setup)."""
        self._require_setup()
        return self._periods(self.val_dataset)

    @property
    def test_periods(self) -> list[torch.Tensor]:
        """Test samples per period: ``T`` tensors ``(test_samples, p)`` (runs setup)."""
        self._require_setup()
        return self._periods(self.test_dataset)

    @property
    def true_models(self) -> list[LatentFactorModel] | None:
        """The model of every period (synthetic sources), None for a file (runs setup)."""
        self._require_setup()
        return self._true_models

    @property
    def variable_names(self) -> list[str]:
        """Column names of a file, ``x0, x1, ...`` for synthetic data (runs setup)."""
        self._require_setup()
        return list(self._variable_names)

    # ---------------------------------------------------------------- loaders

    def _loader(self, dataset: PeriodDataset, shuffle: bool = False) -> DataLoader:
        batch_size = self.batch_size or max(len(dataset), 1)
        generator = torch.Generator().manual_seed(self.seed) if shuffle else None
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            generator=generator,
            num_workers=self.num_workers,
        )

    def train_dataloader(self) -> DataLoader:
        """Training loader: shuffled batches of ``batch_size``, or the whole split in one batch.

        Shuffling is a plain ``shuffle=True`` loader (seeded by ``seed``); under DDP Lightning
        replaces its sampler by a :class:`~torch.utils.data.DistributedSampler`, as usual.
        """
        self._require_setup()
        return self._loader(self.train_dataset, shuffle=self.batch_size is not None)

    def val_dataloader(self) -> DataLoader | list[DataLoader]:
        """Validation loader (unshuffled); an empty list when ``val_samples`` is 0."""
        self._require_setup()
        return self._loader(self.val_dataset) if len(self.val_dataset) else []

    def test_dataloader(self) -> DataLoader | list[DataLoader]:
        """Test loader (unshuffled); an empty list when ``test_samples`` is 0."""
        self._require_setup()
        return self._loader(self.test_dataset) if len(self.test_dataset) else []

    def predict_dataloader(self) -> DataLoader:
        """Loader of the split chosen by ``predict_split`` (unshuffled), for ``trainer.predict``."""
        self._require_setup()
        dataset = {
            "train": self.train_dataset,
            "val": self.val_dataset,
            "test": self.test_dataset,
        }[self.predict_split]
        return self._loader(dataset)
