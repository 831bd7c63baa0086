"""Discretizer, normalizer, hand-crafted features and the datamodule, on the demo benchmark."""

from __future__ import annotations

import csv
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import skew

from lit_info.data.mimic3.datamodule import Mimic3DataModule
from lit_info.data.mimic3.features import (
    SUB_PERIODS,
    Discretizer,
    Episode,
    Normalizer,
    channel_series,
    handcrafted_features,
    read_episode,
)
from lit_info.data.mimic3.pipeline import resource_path

CONFIG = json.loads(resource_path("discretizer_config.json").read_text())
CHANNEL_INFO = json.loads(resource_path("channel_info.json").read_text())


def brute_force_grid(
    rows: list[list[str]], header: list[str], end: float, timestep: float, impute: str
):
    """A cell-by-cell transcription of the authors' Discretizer.transform."""
    eps = 1e-6
    channels = CONFIG["id_to_channel"]
    categorical = CONFIG["is_categorical_channel"]
    possible = CONFIG["possible_values"]
    begin, width = {}, 0
    for c in channels:
        begin[c] = width
        width += len(possible[c]) if categorical[c] else 1
    n_bins = int(end / timestep + 1.0 - eps)
    data = np.zeros((n_bins, width))
    mask = np.zeros((n_bins, len(channels)))
    original = [["" for _ in channels] for _ in range(n_bins)]

    def write(b, c, value):
        if categorical[c]:
            for k in range(len(possible[c])):
                data[b, begin[c] + k] = 1.0 if possible[c].index(value) == k else 0.0
        else:
            data[b, begin[c]] = float(value)

    for row in rows:
        t = float(row[0])
        if t > end + eps:
            continue
        b = int(t / timestep - eps)
        for j in range(1, len(row)):
            if row[j] == "":
                continue
            c = header[j]
            mask[b][channels.index(c)] = 1
            write(b, c, row[j])
            original[b][channels.index(c)] = row[j]
    if impute in ("normal_value", "previous"):
        previous = [[] for _ in channels]
        for b in range(n_bins):
            for i, c in enumerate(channels):
                if mask[b][i] == 1:
                    previous[i].append(original[b][i])
                    continue
                value = (
                    CONFIG["normal_values"][c]
                    if impute == "normal_value" or not previous[i]
                    else previous[i][-1]
                )
                write(b, c, value)
    if impute == "next":
        following = [[] for _ in channels]
        for b in range(n_bins - 1, -1, -1):
            for i, c in enumerate(channels):
                if mask[b][i] == 1:
                    following[i].append(original[b][i])
                    continue
                write(b, c, following[i][-1] if following[i] else CONFIG["normal_values"][c])
    return np.hstack([data, mask])


def episode_files(benchmark: Path, task: str = "phenotyping") -> list[Path]:
    return sorted((benchmark / task / "train").glob("*_timeseries.csv"))


@pytest.mark.parametrize(
    ("impute", "timestep"), [("previous", 1.0), ("zero", 1.0), ("normal_value", 0.8), ("next", 2.0)]
)
def test_discretizer_equals_a_cell_by_cell_transcription(mimic3_benchmark, impute, timestep):
    benchmark, _ = mimic3_benchmark
    discretizer = Discretizer(timestep=timestep, impute=impute)
    checked = 0
    for path in episode_files(benchmark)[:25]:
        with open(path, newline="") as handle:
            rows = list(csv.reader(handle))
        header, body = rows[0], rows[1:]
        end = max(float(r[0]) for r in body)
        for stop in (end, min(end, 30.0)):
            kept = [r for r in body if float(r[0]) < stop + 1e-6]
            expected = brute_force_grid(kept, header, stop, timestep, impute)
            episode = read_episode(path, discretizer.channels)
            episode = Episode(
                episode.hours[: len(kept)], episode.values[: len(kept)], episode.header
            )
            grid = discretizer.transform(episode, end=stop)
            assert grid.shape == expected.shape == (discretizer.bins(stop), 76)
            np.testing.assert_allclose(grid, expected, rtol=1e-6, atol=0)
            checked += grid.size
    assert checked > 100_000


def test_discretizer_header_and_clear_errors(tmp_path):
    discretizer = Discretizer()
    assert len(discretizer.header) == 76 and discretizer.header[-1] == "mask->pH"
    assert len(discretizer.continuous_columns) == 76 - 17 - 47  # one-hot and masks excluded
    path = tmp_path / "episode1_timeseries.csv"
    path.write_text(
        "Hours,"
        + ",".join(discretizer.channels)
        + "\n"
        + "1.5,"
        + ",".join([""] * 5 + ["15.0"] + [""] * 11)
        + "\n"
    )
    with pytest.raises(
        ValueError,
        match=r"episode1_timeseries.csv: channel 'Glascow coma scale total' has the value '15.0'",
    ):
        discretizer.transform(read_episode(path, discretizer.channels), source=str(path))
    with pytest.raises(ValueError, match="impute='mean'"):
        Discretizer(impute="mean")


def test_normalizer_matches_numpy_mean_and_sample_std():
    generator = np.random.default_rng(0)
    grids = [generator.normal(3.0, 2.0, size=(n, 5)) for n in (7, 1, 12)]
    grids[0][:, 4] = 1.0  # constant column: std floored
    normalizer = Normalizer(columns=[0, 1, 4])
    for grid in grids:
        normalizer.feed(grid)
    normalizer.finish()
    stacked = np.vstack(grids)
    np.testing.assert_allclose(normalizer.means, stacked.mean(axis=0), rtol=1e-12)
    expected_std = stacked.std(axis=0, ddof=1)
    np.testing.assert_allclose(normalizer.stds[:4], expected_std[:4], rtol=1e-9)
    out = normalizer.transform(grids[2])
    np.testing.assert_allclose(
        out[:, 0], (grids[2][:, 0] - stacked[:, 0].mean()) / expected_std[0], rtol=1e-5
    )
    np.testing.assert_array_equal(
        out[:, 2], grids[2][:, 2].astype(np.float32)
    )  # not a chosen column


def brute_force_features(path: Path) -> np.ndarray:
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    header, body = rows[0], rows[1:]
    out = []
    for j, name in enumerate(header[1:], start=1):
        data = []
        for row in body:
            if row[j] != "":
                value = (
                    CHANNEL_INFO[name]["values"][row[j]]
                    if CHANNEL_INFO[name]["possible_values"]
                    else float(row[j])
                )
                data.append((float(row[0]), value))
        for kind, percent in SUB_PERIODS:
            if not data:
                out += [np.nan] * 6
                continue
            low, high = data[0][0], data[-1][0]
            if kind == 2:
                low, high = low, low + (high - low) * percent / 100.0
            else:
                low, high = high - (high - low) * percent / 100.0, high
            window = [x for t, x in data if low - 1e-6 < t < high + 1e-6]
            if not window:
                out += [np.nan] * 6
                continue
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                out += [
                    min(window),
                    max(window),
                    np.mean(window),
                    np.std(window),
                    skew(window),
                    len(window),
                ]
    return np.array(out, dtype=np.float32)


def test_handcrafted_features_equal_a_direct_computation(mimic3_benchmark):
    benchmark, _ = mimic3_benchmark
    files = episode_files(benchmark, "in-hospital-mortality")
    assert len(files) == 46
    for path in files[:20]:
        features = handcrafted_features(read_episode(path))
        assert features.shape == (714,)
        # atol: a skewness of an almost symmetric window is ~1e-16 either way
        np.testing.assert_allclose(
            features, brute_force_features(path), rtol=1e-5, atol=1e-9, equal_nan=True
        )
    # a prefix (decompensation / length-of-stay sample) from the whole episode's series
    episode = read_episode(files[0])
    series = channel_series(episode)
    for end in (5.0, 12.0, 47.0):
        keep = episode.hours < end + 1e-6
        truncated = Episode(episode.hours[keep], episode.values[keep], episode.header)
        np.testing.assert_array_equal(
            handcrafted_features(series=series, end=end), handcrafted_features(truncated)
        )


def test_in_hospital_mortality_datamodule(mimic3_benchmark):
    benchmark, _ = mimic3_benchmark
    dm = Mimic3DataModule(data_dir=str(benchmark), task="in-hospital-mortality", batch_size=4)
    dm.setup("fit")
    sizes = {split: len(dm.datasets[split]) for split in ("train", "val", "test")}
    assert sizes == {"train": 41, "val": 5, "test": 11}
    batch = next(iter(dm.train_dataloader()))
    assert batch["x"].shape == (4, 48, 76) and batch["lengths"].tolist() == [48] * 4
    # the normalizer's statistics come from the training split only, continuous columns only
    train = np.vstack([g.numpy() for g in dm.datasets["train"].grids])
    continuous = dm.discretizer.continuous_columns
    np.testing.assert_allclose(train[:, continuous].mean(axis=0), 0.0, atol=1e-4)
    labels = [row[1] for row in dm.rows["test"]]
    assert [str(int(dm.datasets["test"][i]["y"])) for i in range(11)] == labels


def test_decompensation_samples_are_the_discretized_prefixes(mimic3_benchmark):
    benchmark, _ = mimic3_benchmark
    dm = Mimic3DataModule(data_dir=str(benchmark), task="decompensation")
    dm.setup("fit")
    dataset = dm.datasets["test"]
    assert len(dataset) == 1_874
    for index in (0, 17, 500, 1_873):
        name, hours, label = dm.rows["test"][index]
        path = benchmark / "decompensation" / "test" / name
        episode = read_episode(path, dm.discretizer.channels)
        keep = episode.hours < float(hours) + 1e-6
        episode = Episode(episode.hours[keep], episode.values[keep], episode.header)
        direct = dm.normalizer.transform(dm.discretizer.transform(episode, end=float(hours)))
        item = dataset[index]
        np.testing.assert_allclose(item["x"].numpy(), direct, rtol=1e-6)
        assert float(item["y"]) == float(label)


def test_deep_supervision_and_multitask_targets_follow_the_listfiles(mimic3_benchmark):
    benchmark, _ = mimic3_benchmark
    dm = Mimic3DataModule(data_dir=str(benchmark), task="length-of-stay", deep_supervision=True)
    dm.setup("fit")
    rows = dm.rows["test"]
    total = sum(float(item["mask"].sum()) for item in dm.datasets["test"])
    assert total == len(rows) == 1_899
    first = dm.datasets["test"][0]
    name = sorted({r[0] for r in rows})[0]
    listed = {int(round(float(r[1]))): float(r[2]) for r in rows if r[0] == name}
    marked = {
        int(i) + 1: float(first["y_seq"][i]) for i in torch.nonzero(first["mask"]).reshape(-1)
    }
    assert marked == pytest.approx(listed)

    multi = Mimic3DataModule(data_dir=str(benchmark), task="multitask")
    multi.setup("fit")
    for index, row in enumerate(multi.rows["test"]):
        item = multi.datasets["test"][index]
        pos, mask, label = (int(v) for v in row[2].split(";"))
        assert float(item["ihm_mask"]) == mask and float(item["ihm_y"]) == label
        decomp = row[5].split(";")
        half = len(decomp) // 2
        assert float(item["decomp_mask"].sum()) == sum(int(v) for v in decomp[1:half])
        assert item["pheno_y"].tolist() == [float(v) for v in row[4].split(";")]


def test_datamodule_errors_are_one_line(tmp_path):
    dm = Mimic3DataModule(data_dir=str(tmp_path), task="phenotyping")
    with pytest.raises(FileNotFoundError, match="build the benchmark first"):
        dm.check_files()
    with pytest.raises(
        ValueError, match="deep_supervision applies to decompensation and length-of-stay"
    ):
        Mimic3DataModule(task="phenotyping", deep_supervision=True)
    with pytest.raises(ValueError, match="task='sepsis'"):
        Mimic3DataModule(task="sepsis")
