"""The five benchmark tasks from the episodes, in the authors' on-disk format.

For each split (``train``, ``test``) and task, every episode becomes a timeseries file
``<subject>_episode<i>_timeseries.csv`` (its rows within the task's window) and rows of the
task's ``listfile.csv``. An episode is skipped (counted by reason) when its label file is
empty (the stay has no diagnosis), its length of stay is missing, or it has no event within
the ICU stay. The rules (``eps = 1e-6``, times in hours since ICU admission):

* **in-hospital mortality**: stays of at least 48 h; rows with ``-eps < t < 48 + eps``;
  ``stay,y_true``.
* **decompensation**: hourly samples ``t`` in ``arange(0, min(LOS, lived) + eps)`` with
  ``t > 4`` and ``t`` after the first event; label 1 when the patient died in hospital within
  24 h of ``t``; ``stay,period_length,y_true``.
* **length of stay**: the same hourly samples up to LOS, target the remaining LOS.
* **phenotyping**: one row per stay with its 25 benchmark HCUP-CCS groups.
* **multitask**: one row per stay with the four tasks' masks and labels (the authors' format).

Order: ``test`` listfiles are sorted; ``train`` listfiles are shuffled with ``random.Random
(49297)`` as the authors', except phenotyping whose train list they sort. The authors shuffle
(and list the phenotyping test set) in ``os.listdir`` order, which differs between file
systems; here episodes are enumerated in sorted order first, so the result is reproducible
and the test listfiles equal the authors' row for row.

The train / validation split writes ``train_listfile.csv`` / ``val_listfile.csv`` beside each
task's folders by the published ``valset.csv`` (subject id = the file-name prefix), and
``test_listfile.csv`` (a copy of ``test/listfile.csv``).
"""

from __future__ import annotations

import csv
import random
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np

from lit_info.data.mimic3.files import atomic_path, write_text

__all__ = [
    "EPS",
    "SHUFFLE_SEED",
    "TASKS",
    "StayEpisode",
    "TaskResult",
    "create_tasks",
    "iterate_episodes",
    "read_subject_list",
    "split_train_val",
]

EPS = 1e-6
SHUFFLE_SEED = 49297
TASKS = ("in-hospital-mortality", "decompensation", "length-of-stay", "phenotyping", "multitask")
IHM_HOURS = 48.0
SHORTEST_HOURS = 4.0
FUTURE_HOURS = 24.0
MULTITASK_HEADER = (
    "filename,length of stay,in-hospital mortality task (pos;mask;label),"
    "length of stay task (masks;labels),phenotyping task (labels),"
    "decompensation task (masks;labels)"
)


@dataclass
class StayEpisode:
    """One episode's data as the task scripts see it."""

    subject: str
    name: str  # "episode<i>_timeseries.csv"
    header: str
    lines: list[str]
    times: list[float]
    mortality: int | None
    los_hours: float | None  # 24 x "Length of Stay"; None when the label file is empty
    icustay: int | None
    lived_hours: float
    phenotypes: list[int] | None

    @property
    def output_name(self) -> str:
        """``<subject>_episode<i>_timeseries.csv``."""
        return f"{self.subject}_{self.name}"


@dataclass
class TaskResult:
    """Rows and counts of one task on one split."""

    rows: list = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)


def read_subject_list(path: str | Path) -> set[str]:
    """Subject ids flagged 1 in a ``SUBJECT_ID,flag`` file (``testset.csv``, ``valset.csv``).

    Raises:
        ValueError: for a line that is not ``<id>,<0 or 1>`` (file and line named).
    """
    flagged = set()
    with open(path) as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            parts = line.strip().split(",")
            if len(parts) != 2 or parts[1] not in ("0", "1") or not parts[0].isdigit():
                raise ValueError(
                    f"{path}: line {number} is not '<SUBJECT_ID>,<0 or 1>': {line.strip()!r}"
                )
            if parts[1] == "1":
                flagged.add(parts[0])
    return flagged


def _time(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S")


def _phenotype_groups(
    folder: Path, code_to_group: dict[str, str], benchmark_groups: list[str]
) -> dict[int, list[int]]:
    """Benchmark-group indicators per ICU stay from a subject's ``diagnoses.csv``."""
    position = {group: index for index, group in enumerate(benchmark_groups)}
    labels: dict[int, list[int]] = {}
    path = folder / "diagnoses.csv"
    if not path.exists():
        return labels
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            stay = labels.setdefault(int(row["ICUSTAY_ID"]), [0] * len(benchmark_groups))
            if row["USE_IN_BENCHMARK"] not in ("1", "1.0"):
                continue
            group = code_to_group.get(row["ICD9_CODE"])
            if group in position:
                stay[position[group]] = 1
    return labels


def iterate_episodes(
    split_root: Path, code_to_group: dict[str, str], benchmark_groups: list[str]
) -> Iterable[StayEpisode]:
    """The episodes of one split folder (``root/train`` or ``root/test``), in sorted order."""
    subjects = sorted(p.name for p in split_root.iterdir() if p.is_dir() and p.name.isdigit())
    for subject in subjects:
        folder = split_root / subject
        names = sorted(
            p.name
            for p in folder.iterdir()
            if "timeseries" in p.name and not p.name.startswith(".")
        )
        if not names:
            continue
        stays = {}
        with open(folder / "stays.csv", newline="") as handle:
            for row in csv.DictReader(handle):
                stays[int(row["ICUSTAY_ID"])] = row
        phenotypes = _phenotype_groups(folder, code_to_group, benchmark_groups)
        for name in names:
            with open(folder / name.replace("_timeseries", ""), newline="") as handle:
                label_rows = list(csv.DictReader(handle))
            with open(folder / name) as handle:
                lines = handle.readlines()
            header, body = lines[0], lines[1:]
            times = [float(line.split(",", 1)[0]) for line in body]
            mortality = los = icustay = None
            lived = 1e18
            labels = None
            if label_rows:
                row = label_rows[0]
                mortality = int(float(row["Mortality"]))
                icustay = int(float(row["Icustay"]))
                los = (
                    24.0 * float(row["Length of Stay"])
                    if row["Length of Stay"] not in ("", "nan")
                    else None
                )
                stay = stays[icustay]
                if stay["DEATHTIME"]:
                    lived = (
                        _time(stay["DEATHTIME"]) - _time(stay["INTIME"])
                    ).total_seconds() / 3600.0
                labels = phenotypes.get(icustay, [0] * len(benchmark_groups))
            yield StayEpisode(
                subject, name, header, body, times, mortality, los, icustay, lived, labels
            )


def _window(episode: StayEpisode, end: float) -> tuple[list[str], list[float]]:
    kept = [
        (line, t)
        for line, t in zip(episode.lines, episode.times, strict=True)
        if -EPS < t < end + EPS
    ]
    return [line for line, _ in kept], [t for _, t in kept]


def _write_timeseries(folder: Path, episode: StayEpisode, lines: list[str]) -> None:
    path = folder / episode.output_name
    with atomic_path(path) as temporary, open(temporary, "w") as handle:
        handle.write(episode.header)
        handle.writelines(lines)


def _stay_rows(episode: StayEpisode, folder: Path, result: TaskResult) -> list[float] | None:
    """Write the episode's rows within the stay; their hours, or None (counted) if none."""
    lines, times = _window(episode, episode.los_hours)
    if not lines:
        result.skipped["no events in the ICU stay"] += 1
        return None
    _write_timeseries(folder, episode, lines)
    return times


def _skip_reason(episode: StayEpisode) -> str | None:
    if episode.los_hours is None and episode.mortality is None:
        return "empty label file (the stay has no diagnosis)"
    if episode.los_hours is None or np.isnan(episode.los_hours):
        return "length of stay missing"
    return None


def _in_hospital_mortality(episode: StayEpisode, folder: Path, result: TaskResult) -> None:
    if episode.los_hours < IHM_HOURS - EPS:
        result.skipped["length of stay below 48 h"] += 1
        return
    lines, _ = _window(episode, IHM_HOURS)
    if not lines:
        result.skipped["no events in the first 48 h"] += 1
        return
    _write_timeseries(folder, episode, lines)
    result.rows.append((episode.output_name, episode.mortality))


def _hourly(episode: StayEpisode, end: float, first_event: float) -> list[float]:
    times = np.arange(0.0, end + EPS, 1.0)
    return [float(t) for t in times if t > SHORTEST_HOURS and t > first_event]


def _decompensation(episode: StayEpisode, folder: Path, result: TaskResult) -> None:
    times = _stay_rows(episode, folder, result)
    if times is None:
        return
    hours = _hourly(episode, min(episode.los_hours, episode.lived_hours), times[0])
    if episode.mortality == 0:
        labels = np.zeros(len(hours), dtype=np.int64)
    else:
        labels = np.array(
            [int(episode.lived_hours - t < FUTURE_HOURS) for t in hours], dtype=np.int64
        )
    result.rows.append((episode.output_name, np.array(hours, dtype=np.float64), labels))


def _length_of_stay(episode: StayEpisode, folder: Path, result: TaskResult) -> None:
    times = _stay_rows(episode, folder, result)
    if times is None:
        return
    hours = np.array(_hourly(episode, episode.los_hours, times[0]), dtype=np.float64)
    result.rows.append((episode.output_name, hours, episode.los_hours - hours))


def _phenotyping(episode: StayEpisode, folder: Path, result: TaskResult) -> None:
    if _stay_rows(episode, folder, result) is None:
        return
    result.rows.append((episode.output_name, episode.los_hours, list(episode.phenotypes)))


def _multitask(episode: StayEpisode, folder: Path, result: TaskResult) -> None:
    times = _stay_rows(episode, folder, result)
    if times is None:
        return
    los = episode.los_hours
    ihm_mask = int(not (los < IHM_HOURS - EPS or times[0] > IHM_HOURS + EPS))
    ihm = (47 if ihm_mask else 0, ihm_mask, episode.mortality)
    steps = np.array([int(t + EPS) for t in np.arange(0.0, los + EPS, 1.0)])
    los_masks = ((steps > SHORTEST_HOURS) & (steps > times[0])).astype(int).tolist()
    los_labels = (los - steps).tolist()
    lived = episode.lived_hours
    steps = np.array([int(t + EPS) for t in np.arange(0.0, min(los, lived) + EPS, 1.0)])
    decomp_masks = ((steps > SHORTEST_HOURS) & (steps > times[0])).astype(int).tolist()
    decomp_labels = [episode.mortality & int(lived - t < FUTURE_HOURS) for t in steps]
    los_task = ";".join(map(str, los_masks)) + ";" + ";".join(f"{v:.6f}" for v in los_labels)
    decomp_task = ";".join(map(str, decomp_masks)) + ";" + ";".join(map(str, decomp_labels))
    fields = [
        episode.output_name,
        f"{los:.6f}",
        "{:d};{:d};{:d}".format(*ihm),
        los_task,
        ";".join(map(str, episode.phenotypes)),
        decomp_task,
    ]
    result.rows.append((episode.output_name, ",".join(fields)))


_BUILDERS: dict[str, Callable[[StayEpisode, Path, TaskResult], None]] = {
    "in-hospital-mortality": _in_hospital_mortality,
    "decompensation": _decompensation,
    "length-of-stay": _length_of_stay,
    "phenotyping": _phenotyping,
    "multitask": _multitask,
}


def _hourly_lines(task: str, split: str, blocks: list) -> Iterator[str]:
    """Decompensation / length-of-stay lines from per-episode (name, hours, labels) blocks.

    The same order as sorting (test) or shuffling (train) the list of (name, t, y) rows, kept
    as arrays: a permutation of ``range(N)`` drawn by ``random.shuffle`` depends only on ``N``.
    """
    names = [name for name, hours, _ in blocks for _ in range(len(hours))]
    hours = np.concatenate([h for _, h, _ in blocks]) if blocks else np.zeros(0)
    labels = np.concatenate([y for _, _, y in blocks]) if blocks else np.zeros(0)
    if split == "train":
        order = list(range(len(names)))
        random.Random(SHUFFLE_SEED).shuffle(order)
    else:
        rank = {name: i for i, name in enumerate(sorted({name for name, _, _ in blocks}))}
        name_rank = np.array([rank[name] for name in names], dtype=np.int64)
        order = np.lexsort((labels, hours, name_rank)).tolist()
    for index in order:
        if task == "decompensation":
            yield f"{names[index]},{hours[index]:.6f},{int(labels[index]):d}"
        else:
            yield f"{names[index]},{hours[index]:.6f},{labels[index]:.6f}"


def _listfile_lines(
    task: str, split: str, rows: list, benchmark_groups: list[str]
) -> Iterator[str]:
    """The listfile's lines (header first) in the authors' order."""
    if task in ("decompensation", "length-of-stay"):
        yield "stay,period_length,y_true"
        yield from _hourly_lines(task, split, rows)
        return
    if task == "multitask":
        order = list(range(len(rows)))
        if split == "train":
            random.Random(SHUFFLE_SEED).shuffle(order)
        else:
            order.sort(key=lambda index: rows[index][0])
        yield MULTITASK_HEADER
        for index in order:
            yield rows[index][1]
        return
    if split == "train":
        random.Random(SHUFFLE_SEED).shuffle(rows)
        if task == "phenotyping":
            rows = sorted(rows)
    else:
        rows = sorted(rows)
    if task == "in-hospital-mortality":
        yield "stay,y_true"
        for x, y in rows:
            yield f"{x},{y:d}"
        return
    yield "stay,period_length," + ",".join(benchmark_groups)
    for x, t, y in rows:
        yield f"{x},{t:.6f}," + ",".join(map(str, y))


def _write_lines(path: Path, lines: Iterable[str]) -> None:
    with atomic_path(path) as temporary, open(temporary, "w") as handle:
        chunk: list[str] = []
        for line in lines:
            chunk.append(line)
            if len(chunk) >= 10_000:
                handle.write("\n".join(chunk) + "\n")
                chunk = []
        if chunk:
            handle.write("\n".join(chunk) + "\n")


def create_tasks(
    root: Path,
    out: Path,
    code_to_group: dict[str, str],
    benchmark_groups: list[str],
    tasks: tuple[str, ...] = TASKS,
    progress: Callable[[Iterable, str, int], Iterable] | None = None,
) -> dict[str, dict[str, dict]]:
    """Write ``<out>/<task>/{train,test}/`` (timeseries + ``listfile.csv``) for each task.

    Args:
        root: the split subject folders (``root/train/<subject>``, ``root/test/<subject>``).
        out: where the task folders go.
        code_to_group: ICD-9 code -> HCUP group.
        benchmark_groups: the sorted benchmark groups (the phenotype label order).
        tasks: which tasks to create.
        progress: wraps the episode iterator (a progress bar), given a description and total.

    Returns:
        Per task and split: ``samples``, ``episodes``, ``positives`` (binary tasks) and
        ``skipped`` episodes by reason.
    """
    summary: dict[str, dict[str, dict]] = {task: {} for task in tasks}
    for split in ("test", "train"):
        split_root = root / split
        results = {task: TaskResult() for task in tasks}
        folders = {}
        for task in tasks:
            folders[task] = out / task / split
            folders[task].mkdir(parents=True, exist_ok=True)
        episodes: Iterable[StayEpisode] = iterate_episodes(
            split_root, code_to_group, benchmark_groups
        )
        if progress is not None:
            total = sum(1 for _ in split_root.glob("*/episode*_timeseries.csv"))
            episodes = progress(episodes, f"tasks ({split})", total)
        for episode in episodes:
            reason = _skip_reason(episode)
            for task in tasks:
                if reason is not None:
                    results[task].skipped[reason] += 1
                else:
                    _BUILDERS[task](episode, folders[task], results[task])
        for task in tasks:
            rows = results[task].rows
            _write_lines(
                folders[task] / "listfile.csv",
                _listfile_lines(task, split, list(rows), benchmark_groups),
            )
            hourly = task in ("decompensation", "length-of-stay")
            samples = sum(len(row[1]) for row in rows) if hourly else len(rows)
            entry = {"samples": samples, "skipped_episodes": dict(results[task].skipped)}
            entry["episodes"] = sum(len(row[1]) > 0 for row in rows) if hourly else len(rows)
            if task == "in-hospital-mortality":
                entry["positives"] = int(sum(row[1] for row in rows))
            elif task == "decompensation":
                entry["positives"] = int(sum(row[2].sum() for row in rows))
            summary[task][split] = entry
    return summary


def split_train_val(task_folder: Path, validation_subjects: set[str]) -> dict[str, int]:
    """Write ``train_listfile.csv``, ``val_listfile.csv`` and ``test_listfile.csv`` of a task.

    Returns:
        The number of rows of each.
    """
    with open(task_folder / "train" / "listfile.csv") as handle:
        lines = handle.readlines()
    header, body = lines[0], lines[1:]
    train = [line for line in body if line[: line.find("_")] not in validation_subjects]
    val = [line for line in body if line[: line.find("_")] in validation_subjects]
    with open(task_folder / "test" / "listfile.csv") as handle:
        test = handle.readlines()
    for name, content in (
        ("train_listfile.csv", [header, *train]),
        ("val_listfile.csv", [header, *val]),
        ("test_listfile.csv", test),
    ):
        write_text(task_folder / name, "".join(content))
    return {"train": len(train), "val": len(val), "test": len(test) - 1}
