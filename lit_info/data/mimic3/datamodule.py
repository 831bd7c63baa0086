"""The MIMIC-III benchmark tasks as a LightningDataModule.

Reads a benchmark built by ``python -m lit_info.data.mimic3 build`` (``data_dir`` is its
``--out``): ``<task>/train_listfile.csv``, ``val_listfile.csv``, ``test_listfile.csv`` and the
task's timeseries files. Episodes are discretized once (:class:`~lit_info.data.mimic3.features.
Discretizer`: 1 h bins, ``previous`` imputation, masks; 76 features) and standardized with a
:class:`~lit_info.data.mimic3.features.Normalizer` fit on the training split (continuous columns).

Samples per task (``x`` is ``(bins, 76)``; a batch pads to the longest and carries ``lengths``):

* ``in-hospital-mortality``: the first 48 h (48 bins), ``y`` 0/1.
* ``decompensation`` / ``length-of-stay``: one sample per listfile row ``(stay, t, y)``: the
  first ``t`` hours (``t`` bins; the prefix of the episode's grid, as discretizing the rows up
  to ``t`` gives the same bins), ``y`` = death within 24 h / the remaining stay in hours. With
  ``deep_supervision``, one sample per stay: every bin, with ``mask`` = 1 at the bins of the
  listfile's rows (the bin that ends at hour ``t``) and ``y`` there.
* ``phenotyping``: the whole stay, ``y`` the 25 group indicators.
* ``multitask``: the whole stay with the four tasks' masks and labels, aligned the same way
  (the prediction for hour ``t`` is the output after the bin ending at ``t``; in-hospital
  mortality at bin 47).

``features: handcrafted`` gives the linear baselines' 714 features instead
(:func:`~lit_info.data.mimic3.features.handcrafted_features` of the sample's rows, missing
values imputed by the training mean, standardized by training statistics).

Under DDP the training set is sharded by Lightning's ``DistributedSampler`` and every
evaluation sample is seen by exactly one process (:class:`~lit_info.data.samplers.ShardSampler`).
"""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from lit_info.data.mimic3.features import (
    Discretizer,
    Normalizer,
    channel_series,
    handcrafted_features,
    read_episode,
)
from lit_info.data.mimic3.tasks import TASKS
from lit_info.data.samplers import ShardSampler

__all__ = ["Mimic3DataModule", "collate_sequences"]

EPS = 1e-6
SPLITS = ("train", "val", "test")


class _Samples(Dataset):
    """Samples that point into shared per-episode tensors (prefixes for decomp / LOS)."""

    def __init__(self, items: list[dict[str, Any]], grids: list[Tensor]) -> None:
        self.items = items
        self.grids = grids

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.items[index]
        out = {key: value for key, value in item.items() if key not in ("episode", "bins")}
        grid = self.grids[item["episode"]]
        out["x"] = grid if item.get("bins") is None else grid[: item["bins"]]
        out["index"] = index
        return out


def collate_sequences(items: list[dict[str, Any]]) -> dict[str, Tensor]:
    """Pad ``x`` (and per-bin ``*mask`` / ``*_y`` sequences) to the longest; add ``lengths``."""
    lengths = torch.tensor([item["x"].shape[0] for item in items], dtype=torch.long)
    batch: dict[str, Tensor] = {"lengths": lengths}
    longest = int(lengths.max()) if len(items) else 0
    for key in items[0]:
        values = [item[key] for item in items]
        if isinstance(values[0], Tensor) and values[0].dim() >= 1 and key in SEQUENCE_KEYS:
            padded = values[0].new_zeros((len(values), longest, *values[0].shape[1:]))
            for row, value in enumerate(values):
                padded[row, : value.shape[0]] = value
            batch[key] = padded
        elif isinstance(values[0], Tensor):
            batch[key] = torch.stack(values)
        else:
            batch[key] = torch.tensor(values)
    return batch


SEQUENCE_KEYS = {"x", "mask", "y_seq", "decomp_mask", "decomp_y", "los_mask", "los_y"}


def _read_listfile(path: Path) -> tuple[list[str], list[list[str]]]:
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    if not rows:
        raise ValueError(f"{path}: empty listfile")
    return rows[0], rows[1:]


class Mimic3DataModule(pl.LightningDataModule):
    """One task of the MIMIC-III benchmark (or the multitask set), batched for sequence models.

    Args:
        data_dir: the benchmark folder (``--out`` of ``python -m lit_info.data.mimic3 build``).
        task: ``in-hospital-mortality``, ``decompensation``, ``length-of-stay``,
            ``phenotyping`` or ``multitask``.
        batch_size: samples per batch (8 in the paper).
        features: ``grid`` (the discretizer's 76 columns per hour) or ``handcrafted`` (714
            features per sample, for the linear baselines).
        deep_supervision: one sample per stay with a prediction target at every listed hour
            (decompensation and length of stay).
        timestep: discretizer bin width in hours.
        impute: discretizer imputation (``previous``, ``zero``, ``normal_value``, ``next``).
        max_train_samples: use only the first ``n`` training samples (listfile order).
        num_workers: DataLoader workers.
    """

    def __init__(
        self,
        data_dir: str = "data/mimic3",
        task: Literal[
            "in-hospital-mortality", "decompensation", "length-of-stay", "phenotyping", "multitask"
        ] = "in-hospital-mortality",
        batch_size: int = 8,
        features: Literal["grid", "handcrafted"] = "grid",
        deep_supervision: bool = False,
        timestep: float = 1.0,
        impute: Literal["previous", "zero", "normal_value", "next"] = "previous",
        max_train_samples: int | None = None,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        if task not in TASKS:
            raise ValueError(f"task={task!r}: choose from {', '.join(TASKS)}")
        if features not in ("grid", "handcrafted"):
            raise ValueError(f"features={features!r}: choose 'grid' or 'handcrafted'")
        if deep_supervision and task not in ("decompensation", "length-of-stay"):
            raise ValueError(
                f"deep_supervision applies to decompensation and length-of-stay, not {task}"
            )
        if features == "handcrafted" and (task == "multitask" or deep_supervision):
            raise ValueError(
                "features='handcrafted' (the linear baselines) serves single tasks "
                "without deep supervision"
            )
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size}: must be at least 1")
        self.save_hyperparameters()
        self.data_dir = Path(data_dir)
        self.task = task
        self.batch_size = batch_size
        self.features = features
        self.deep_supervision = deep_supervision
        self.discretizer = Discretizer(timestep=timestep, impute=impute)
        self.max_train_samples = max_train_samples
        self.num_workers = num_workers
        self.normalizer: Normalizer | None = None
        self.datasets: dict[str, Dataset] = {}
        self.rows: dict[str, list[list[str]]] = {}
        self.header: list[str] = []

    # -- conventions of the toolkit's datamodules -----------------------------------------
    def check_files(self) -> None:
        """Raise a one-line FileNotFoundError when the built task is not there."""
        folder = self.data_dir / self.task
        needed = [folder / f"{split}_listfile.csv" for split in SPLITS]
        missing = [str(p) for p in needed if not p.is_file()]
        if missing:
            raise FileNotFoundError(
                f"{missing[0]} not found: build the benchmark first "
                "(python -m lit_info.data.mimic3 build --mimic-dir <MIMIC-III CSVs> "
                f"--out {self.data_dir})"
            )

    def model_hints(self) -> dict[str, Any]:
        """Input width, output size, task, columns and deep supervision (read by the CLI)."""
        width = 17 * 7 * 6 if self.features == "handcrafted" else len(self.discretizer.header)
        outputs = {"phenotyping": 25}.get(self.task, 1)
        return {
            "input_size": width,
            "num_outputs": outputs,
            "task": self.task,
            "header": self.discretizer.header,
            "deep_supervision": self.deep_supervision,
        }

    # -- reading ------------------------------------------------------------------------------
    def _episode_path(self, split: str, name: str) -> Path:
        return self.data_dir / self.task / ("test" if split == "test" else "train") / name

    def setup(self, stage: str | None = None) -> None:
        """Read the listfiles, discretize the episodes, fit the normalizer on train."""
        if self.datasets:
            return
        self.check_files()
        for split in SPLITS:
            self.header, self.rows[split] = _read_listfile(
                self.data_dir / self.task / f"{split}_listfile.csv"
            )
        if self.max_train_samples is not None:
            self.rows["train"] = self.rows["train"][: self.max_train_samples]
        if self.features == "handcrafted":
            self._setup_handcrafted()
        else:
            self._setup_grids()

    def _grids(self, split: str, names: list[str], ends: list[float | None]) -> list[np.ndarray]:
        grids = []
        for name, end in tqdm(
            list(zip(names, ends, strict=True)),
            desc=f"discretizing {split}",
            leave=False,
            disable=len(names) < 200,
        ):
            path = self._episode_path(split, name)
            episode = read_episode(path, self.discretizer.channels)
            grids.append(self.discretizer.transform(episode, end=end, source=str(path)))
        return grids

    def _setup_grids(self) -> None:
        per_split = {}
        for split in SPLITS:
            ends = self._episode_ends(self.rows[split])
            names = sorted(ends)
            per_split[split] = (names, self._grids(split, names, [ends[n] for n in names]))
        self.normalizer = Normalizer(self.discretizer.continuous_columns)
        for grid in per_split["train"][1]:
            self.normalizer.feed(grid)
        self.normalizer.finish()
        for split in SPLITS:
            names, grids = per_split[split]
            tensors = [torch.from_numpy(self.normalizer.transform(g)) for g in grids]
            position = {name: i for i, name in enumerate(names)}
            items = self._items(split, self.rows[split], position, tensors)
            self.datasets[split] = _Samples(items, tensors)

    def _episode_ends(self, rows: list[list[str]]) -> dict[str, float]:
        """Hours each episode's grid covers.

        48 for in-hospital mortality, the stay for phenotyping and multitask, the last listed
        hour for decompensation and length of stay.
        """
        ends: dict[str, float] = {}
        for row in rows:
            if self.task == "in-hospital-mortality":
                ends[row[0]] = 48.0
            elif self.task in ("phenotyping", "multitask"):
                ends[row[0]] = float(row[1])
            else:
                ends[row[0]] = max(ends.get(row[0], 0.0), float(row[1]))
        return ends

    def _items(
        self, split: str, rows: list[list[str]], position: dict[str, int], grids: list[Tensor]
    ) -> list[dict]:
        task = self.task
        if task == "in-hospital-mortality":
            return [
                {"episode": position[r[0]], "bins": None, "y": torch.tensor(float(r[1]))}
                for r in rows
            ]
        if task == "phenotyping":
            return [
                {
                    "episode": position[r[0]],
                    "bins": None,
                    "y": torch.tensor([float(v) for v in r[2:]]),
                }
                for r in rows
            ]
        if task in ("decompensation", "length-of-stay") and not self.deep_supervision:
            return [
                {
                    "episode": position[r[0]],
                    "bins": int(round(float(r[1]))),
                    "y": torch.tensor(float(r[2])),
                }
                for r in rows
            ]
        if task in ("decompensation", "length-of-stay"):
            by_stay: dict[str, list[tuple[int, float]]] = defaultdict(list)
            for r in rows:
                by_stay[r[0]].append((int(round(float(r[1]))), float(r[2])))
            items = []
            for name in sorted(by_stay):
                grid = grids[position[name]]
                mask = torch.zeros(grid.shape[0])
                target = torch.zeros(grid.shape[0])
                for hour, y in by_stay[name]:
                    mask[hour - 1] = 1.0
                    target[hour - 1] = y
                items.append(
                    {"episode": position[name], "bins": None, "mask": mask, "y_seq": target}
                )
            return items
        return [self._multitask_item(r, position, grids) for r in rows]

    def _multitask_item(
        self, row: list[str], position: dict[str, int], grids: list[Tensor]
    ) -> dict:
        name = row[0]
        bins = grids[position[name]].shape[0]
        pos, ihm_mask, ihm_y = (int(v) for v in row[2].split(";"))

        def shifted(field: str, cast=float) -> tuple[Tensor, Tensor]:
            values = field.split(";")
            half = len(values) // 2
            masks, labels = values[:half], values[half:]
            mask, target = torch.zeros(bins), torch.zeros(bins)
            for hour in range(1, min(half, bins + 1)):
                mask[hour - 1] = float(masks[hour])
                target[hour - 1] = cast(labels[hour])
            return mask, target

        los_mask, los_y = shifted(row[3])
        decomp_mask, decomp_y = shifted(row[5])
        return {
            "episode": position[name],
            "bins": None,
            "ihm_mask": torch.tensor(float(ihm_mask) if bins >= 48 else 0.0),
            "ihm_y": torch.tensor(float(ihm_y)),
            "ihm_pos": torch.tensor(min(pos, max(bins - 1, 0))),
            "los_mask": los_mask,
            "los_y": los_y,
            "decomp_mask": decomp_mask,
            "decomp_y": decomp_y,
            "pheno_y": torch.tensor([float(v) for v in row[4].split(";")]),
        }

    def _setup_handcrafted(self) -> None:
        features, targets = {}, {}
        for split in SPLITS:
            rows = self.rows[split]
            cache: dict[str, Any] = {}
            values = []
            for row in tqdm(rows, desc=f"features {split}", leave=False, disable=len(rows) < 500):
                name = row[0]
                if name not in cache:
                    path = self._episode_path(split, name)
                    cache[name] = channel_series(read_episode(path, self.discretizer.channels))
                hourly = self.task in ("decompensation", "length-of-stay")
                end = float(row[1]) if hourly else None
                values.append(handcrafted_features(series=cache[name], end=end))
            features[split] = np.stack(values) if values else np.zeros((0, 714), dtype=np.float32)
            if self.task == "phenotyping":
                targets[split] = [torch.tensor([float(v) for v in r[2:]]) for r in rows]
            else:
                targets[split] = [torch.tensor(float(r[-1])) for r in rows]
        train = features["train"].astype(np.float64)
        finite = np.isfinite(train)
        counts = finite.sum(axis=0)
        means = np.where(finite, train, 0.0).sum(axis=0) / np.maximum(counts, 1)  # 0 if never seen
        scaled = {}
        for split in SPLITS:
            x = features[split].astype(np.float64)
            x = np.where(np.isfinite(x), x, means)
            scaled[split] = x
        stds = scaled["train"].std(axis=0)
        stds[stds == 0] = 1.0
        centre = scaled["train"].mean(axis=0)
        self.feature_statistics = {"impute_means": means, "means": centre, "stds": stds}
        for split in SPLITS:
            x = torch.from_numpy(((scaled[split] - centre) / stds).astype(np.float32))
            items = [{"episode": i, "bins": None, "y": y} for i, y in enumerate(targets[split])]
            self.datasets[split] = _Samples(items, list(x))

    # -- loaders ------------------------------------------------------------------------------
    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        if split not in self.datasets:
            self.setup()
        kwargs: dict[str, Any] = {}
        trainer = self.trainer
        world = trainer.world_size if trainer is not None else 1
        if not shuffle and world > 1:
            kwargs["sampler"] = ShardSampler(
                self.datasets[split], num_replicas=world, rank=trainer.global_rank
            )
        return DataLoader(
            self.datasets[split],
            batch_size=self.batch_size,
            shuffle=shuffle and "sampler" not in kwargs,
            collate_fn=collate_sequences,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            **kwargs,
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled training samples."""
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        """Validation samples in listfile order."""
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        """Test samples in listfile order."""
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        """The test samples (``index`` = row of ``test_listfile.csv``)."""
        return self._loader("test", shuffle=False)
