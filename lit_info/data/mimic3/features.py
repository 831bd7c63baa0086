"""Model inputs of the MIMIC-III benchmark: the discretizer, the normalizer, hand-crafted features.

* :class:`Discretizer`: an episode's irregular rows -> a regular grid of ``timestep`` hours
  (the authors' rules): row ``t`` goes to bin ``int(t / timestep - 1e-6)`` (the last row of a bin
  wins), ``int(end / timestep + 1 - 1e-6)`` bins, categorical channels one-hot over the
  config's possible values, missing cells imputed (``previous``: the last observed value,
  else the channel's normal value; or ``zero``, ``normal_value``, ``next``), and a 0/1 mask
  per channel appended: 59 + 17 = 76 features with the shipped config.
* :class:`Normalizer`: means and standard deviations (``N - 1``, floored at 1e-7) of the
  continuous columns over the training split's bins, applied as ``(x - mean) / std``.
* :func:`handcrafted_features`: the linear baselines' 17 channels x 7 sub-periods (all, first
  10 / 25 / 50 %, last 10 / 25 / 50 % of the channel's observed span) x 6 statistics (min, max,
  mean, std, skewness, count) = 714 features, NaN where a window is empty.

The implementation is vectorized numpy; ``tests/data/test_mimic3_features.py`` checks it
against a cell-by-cell transcription of the rules.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from lit_info.data.mimic3.pipeline import resource_path

__all__ = [
    "IMPUTE_STRATEGIES",
    "SUB_PERIODS",
    "Discretizer",
    "Episode",
    "Normalizer",
    "channel_series",
    "handcrafted_features",
    "read_episode",
]

EPS = 1e-6
IMPUTE_STRATEGIES = ("previous", "zero", "normal_value", "next")
# (kind, percent): 2 = first p % of the span, 3 = last p %
SUB_PERIODS = ((2, 100), (2, 10), (2, 25), (2, 50), (3, 10), (3, 25), (3, 50))


@dataclass
class Episode:
    """An episode's timeseries: ``hours`` (n,), ``values`` (n, channels) text ('' = missing)."""

    hours: np.ndarray
    values: np.ndarray
    header: list[str]


def read_episode(path: str | Path, channels: list[str] | None = None) -> Episode:
    """Read an ``episode<i>_timeseries.csv`` (``Hours`` then one column per channel).

    Args:
        path: the file.
        channels: reorder the columns to these names (default: the file's order).

    Raises:
        ValueError: for a file without ``Hours`` first, a missing channel, or a bad hour.
    """
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    if not rows or rows[0][0] != "Hours":
        raise ValueError(f"{path}: not an episode timeseries (the first column must be Hours)")
    header = rows[0]
    body = rows[1:]
    try:
        hours = np.array([float(row[0]) for row in body], dtype=np.float64)
    except ValueError as error:
        raise ValueError(f"{path}: an Hours value is not a number ({error})") from None
    values = np.array([row[1:] for row in body], dtype=object).reshape(len(body), len(header) - 1)
    names = header[1:]
    if channels is not None:
        missing = [c for c in channels if c not in names]
        if missing:
            raise ValueError(f"{path}: lacks the channel(s) {', '.join(missing)}")
        values = values[:, [names.index(c) for c in channels]]
        names = list(channels)
    return Episode(hours=hours, values=values, header=["Hours", *names])


class Discretizer:
    """Regular-grid features of an episode, as the authors' ``Discretizer``.

    Args:
        timestep: bin width in hours (1.0 in the paper).
        impute: ``previous`` (the paper), ``zero``, ``normal_value`` or ``next``.
        store_masks: append one observed-or-not column per channel.
        config: the discretizer config (default: the shipped ``discretizer_config.json``).
    """

    def __init__(
        self,
        timestep: float = 1.0,
        impute: Literal["previous", "zero", "normal_value", "next"] = "previous",
        store_masks: bool = True,
        config: str | Path | None = None,
    ) -> None:
        if timestep <= 0:
            raise ValueError(f"timestep={timestep}: must be positive (hours)")
        if impute not in IMPUTE_STRATEGIES:
            raise ValueError(f"impute={impute!r}: choose from {', '.join(IMPUTE_STRATEGIES)}")
        with open(config or resource_path("discretizer_config.json")) as handle:
            spec = json.load(handle)
        self.timestep = timestep
        self.impute = impute
        self.store_masks = store_masks
        self.channels: list[str] = spec["id_to_channel"]
        self.categorical = [bool(spec["is_categorical_channel"][c]) for c in self.channels]
        self.possible_values = {c: list(spec["possible_values"][c]) for c in self.channels}
        self.normal_values = {c: spec["normal_values"][c] for c in self.channels}
        self.begin = []
        width = 0
        for name, categorical in zip(self.channels, self.categorical, strict=True):
            self.begin.append(width)
            width += len(self.possible_values[name]) if categorical else 1
        self.value_width = width

    @property
    def header(self) -> list[str]:
        """Names of the output columns (``channel->value`` for one-hot, ``mask->channel``)."""
        names = []
        for name, categorical in zip(self.channels, self.categorical, strict=True):
            names += [f"{name}->{v}" for v in self.possible_values[name]] if categorical else [name]
        if self.store_masks:
            names += [f"mask->{name}" for name in self.channels]
        return names

    @property
    def continuous_columns(self) -> list[int]:
        """Indices of the columns the normalizer standardizes (no one-hot, no mask)."""
        return [i for i, name in enumerate(self.header) if "->" not in name]

    def bins(self, end: float) -> int:
        """Number of bins of an episode observed up to ``end`` hours."""
        return max(0, int(end / self.timestep + 1.0 - EPS))

    def _encode(self, channel: int, texts: np.ndarray, source: str) -> np.ndarray:
        """(k, width) encoded values of one channel (one-hot or the number)."""
        name = self.channels[channel]
        if self.categorical[channel]:
            lookup = {v: i for i, v in enumerate(self.possible_values[name])}
            try:
                index = np.array([lookup[t] for t in texts], dtype=np.int64)
            except KeyError as error:
                raise ValueError(
                    f"{source}: channel {name!r} has the value {error.args[0]!r}, not one of the "
                    "discretizer's possible values"
                ) from None
            out = np.zeros((len(texts), len(lookup)), dtype=np.float32)
            out[np.arange(len(texts)), index] = 1.0
            return out
        try:
            return np.array([float(t) for t in texts], dtype=np.float32).reshape(-1, 1)
        except ValueError:
            bad = next(t for t in texts if not _is_number(t))
            raise ValueError(
                f"{source}: channel {name!r} has the non-numeric value {bad!r}"
            ) from None

    def transform(
        self, episode: Episode, end: float | None = None, source: str = "episode"
    ) -> np.ndarray:
        """The (bins, 76) float32 grid of ``episode`` up to ``end`` hours (default: last row).

        Raises:
            ValueError: for rows out of time order, a row before -1 h, or a value the config
                cannot encode (``source`` names the file in the message).
        """
        hours = episode.hours
        if len(hours) > 1 and np.any(np.diff(hours) < -EPS):
            raise ValueError(f"{source}: rows are not in time order")
        if end is None:
            end = float(hours.max()) if len(hours) else 0.0
        n_bins = self.bins(end)
        keep = hours <= end + EPS
        hours, values = hours[keep], episode.values[keep]
        bin_of = (hours / self.timestep - EPS).astype(np.int64)  # truncation toward zero
        outside = (bin_of < 0) | (bin_of >= n_bins)
        if outside.any():
            hour = float(hours[outside][0])
            raise ValueError(f"{source}: the row at {hour} h lies outside the {n_bins} bins")
        n_channels = len(self.channels)
        data = np.zeros((n_bins, self.value_width), dtype=np.float32)
        mask = np.zeros((n_bins, n_channels), dtype=np.float32)
        for channel in range(n_channels):
            present = values[:, channel] != ""
            if not present.any():
                observed_bins = np.zeros(0, dtype=np.int64)
                encoded = np.zeros((0, self._width(channel)), dtype=np.float32)
            else:
                rows_bins = bin_of[present]
                # the last row of each bin wins
                reverse_unique, reverse_first = np.unique(rows_bins[::-1], return_index=True)
                last_rows = len(rows_bins) - 1 - reverse_first
                observed_bins = reverse_unique
                encoded = self._encode(channel, values[present, channel][last_rows], source)
            columns = slice(self.begin[channel], self.begin[channel] + self._width(channel))
            mask[observed_bins, channel] = 1.0
            data[observed_bins, columns] = encoded
            if self.impute == "zero" or n_bins == 0:
                continue
            normal = self._encode(
                channel, np.array([self.normal_values[self.channels[channel]]]), "config"
            )[0]
            missing = np.ones(n_bins, dtype=bool)
            missing[observed_bins] = False
            if not missing.any():
                continue
            if self.impute == "normal_value":
                data[missing, columns] = normal
                continue
            # the observed bin each missing bin copies from (previous or next); -1 = none
            if self.impute == "previous":
                source_bin = np.full(n_bins, -1, dtype=np.int64)
                source_bin[observed_bins] = observed_bins
                source_bin = np.maximum.accumulate(source_bin)
            else:
                source_bin = np.full(n_bins, n_bins, dtype=np.int64)
                source_bin[observed_bins] = observed_bins
                source_bin = np.minimum.accumulate(source_bin[::-1])[::-1]
                source_bin[source_bin == n_bins] = -1
            fill = np.where(missing)[0]
            from_bin = source_bin[fill]
            has = from_bin >= 0
            data[fill[has], columns] = data[from_bin[has], columns]
            data[fill[~has], columns] = normal
        return np.hstack([data, mask]) if self.store_masks else data

    def _width(self, channel: int) -> int:
        return len(self.possible_values[self.channels[channel]]) if self.categorical[channel] else 1


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


class Normalizer:
    """Standardize chosen columns with statistics accumulated over training grids.

    The authors' formula: ``mean = sum / N``, ``std = sqrt((sumsq - 2 sum mean + N mean^2) /
    (N - 1))`` floored at 1e-7, accumulated in float64 over every bin of every grid fed.
    """

    def __init__(self, columns: list[int] | None = None) -> None:
        self.columns = columns
        self.count = 0
        self.sum: np.ndarray | None = None
        self.sum_squares: np.ndarray | None = None
        self.means: np.ndarray | None = None
        self.stds: np.ndarray | None = None

    def feed(self, grid: np.ndarray) -> None:
        """Add a (bins, features) grid to the statistics."""
        grid = np.asarray(grid, dtype=np.float64)
        if self.sum is None:
            self.sum = np.zeros(grid.shape[1])
            self.sum_squares = np.zeros(grid.shape[1])
        self.count += grid.shape[0]
        self.sum += grid.sum(axis=0)
        self.sum_squares += (grid**2).sum(axis=0)

    def finish(self) -> Normalizer:
        """Compute ``means`` / ``stds`` from what was fed.

        Raises:
            ValueError: when fewer than two bins were fed.
        """
        if self.count < 2:
            raise ValueError(
                f"the normalizer needs at least 2 bins of training data, got {self.count}"
            )
        n = self.count
        self.means = self.sum / n
        variance = (self.sum_squares - 2.0 * self.sum * self.means + n * self.means**2) / (n - 1)
        self.stds = np.sqrt(np.maximum(variance, 0.0))
        self.stds[self.stds < 1e-7] = 1e-7
        return self

    def transform(self, grid: np.ndarray) -> np.ndarray:
        """``(x - mean) / std`` on the chosen columns (float32)."""
        if self.means is None:
            raise ValueError("the normalizer has no statistics: call feed() and finish() first")
        out = np.array(grid, dtype=np.float32, copy=True)
        columns = self.columns if self.columns is not None else list(range(out.shape[1]))
        out[:, columns] = ((out[:, columns] - self.means[columns]) / self.stds[columns]).astype(
            np.float32
        )
        return out

    def state_dict(self) -> dict:
        """JSON-ready statistics."""
        return {
            "columns": self.columns,
            "count": self.count,
            "means": None if self.means is None else self.means.tolist(),
            "stds": None if self.stds is None else self.stds.tolist(),
        }


def channel_series(
    episode: Episode, channel_info: dict | None = None
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each channel's observed (hours, numbers), categorical text mapped by ``channel_info``.

    ``channel_info.json`` maps, e.g., ``"4 Spontaneously"`` to 4; other values are numbers.
    """
    if channel_info is None:
        with open(resource_path("channel_info.json")) as handle:
            channel_info = json.load(handle)
    series = []
    for column, name in enumerate(episode.header[1:]):
        present = episode.values[:, column] != ""
        texts = episode.values[present, column]
        mapping = channel_info[name]["values"] if channel_info[name]["possible_values"] else None
        numbers = np.array(
            [mapping[t] if mapping is not None else float(t) for t in texts], dtype=np.float64
        )
        series.append((episode.hours[present], numbers))
    return series


def _statistics(window: np.ndarray) -> np.ndarray:
    """min, max, mean, std, skewness (scipy's biased estimate; NaN when constant), count."""
    mean = window.mean()
    centred = window - mean
    m2 = (centred**2).mean()
    m3 = (centred**3).mean()
    constant = m2 <= (np.finfo(np.float64).resolution * mean) ** 2
    skewness = np.nan if constant else m3 / m2**1.5
    return np.array(
        [window.min(), window.max(), mean, np.sqrt(m2), skewness, len(window)], dtype=np.float32
    )


def handcrafted_features(
    episode: Episode | None = None,
    channel_info: dict | None = None,
    end: float | None = None,
    series: list[tuple[np.ndarray, np.ndarray]] | None = None,
) -> np.ndarray:
    """The linear baselines' 714 features (float32, NaN for empty windows).

    Args:
        episode: the rows (or give their :func:`channel_series` as ``series``, to reuse it for
            several ``end`` of one episode).
        channel_info: the categorical maps (default: the shipped ``channel_info.json``).
        end: use only rows before ``end + 1e-6`` hours (a decompensation / length-of-stay sample).
        series: precomputed :func:`channel_series`.
    """
    if series is None:
        if episode is None:
            raise ValueError("handcrafted_features needs an episode or its channel series")
        series = channel_series(episode, channel_info)
    out = []
    nothing = np.full(6, np.nan, dtype=np.float32)
    for times, numbers in series:
        if end is not None:
            count = int(np.searchsorted(times, end + EPS, side="left"))
            times, numbers = times[:count], numbers[:count]
        for kind, percent in SUB_PERIODS:
            if len(times) == 0:
                out.append(nothing)
                continue
            begin, finish = times[0], times[-1]
            if kind == 2:
                low, high = begin, begin + (finish - begin) * percent / 100.0
            else:
                low, high = finish - (finish - begin) * percent / 100.0, finish
            window = numbers[(low - EPS < times) & (times < high + EPS)]
            out.append(_statistics(window) if len(window) else nothing)
    return np.concatenate(out).astype(np.float32)
