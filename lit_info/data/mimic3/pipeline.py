"""The MIMIC-III benchmark build: resumable stages, atomic outputs, a drop report.

Stages (``python -m lit_info.data.mimic3 build --mimic-dir DIR --out OUT``):

``subjects``
    the cohort (:mod:`~lit_info.data.mimic3.cohort`): ``OUT/root/<subject>/stays.csv`` and
    ``diagnoses.csv``, ``OUT/root/all_stays.csv``, ``all_diagnoses.csv``,
    ``diagnosis_counts.csv``, ``phenotype_labels.csv``.
``events``
    CHARTEVENTS / LABEVENTS / OUTPUTEVENTS streamed in batches, validated against the stays
    (:mod:`~lit_info.data.mimic3.events`) and bucketed by subject into ``OUT/.work/events``.
``episodes``
    per bucket: ``events.csv``, ``episode<i>.csv`` and ``episode<i>_timeseries.csv`` per subject
    (:mod:`~lit_info.data.mimic3.episodes`).
``split``
    subject folders moved to ``OUT/root/train`` and ``OUT/root/test`` by ``testset.csv``.
``tasks``
    ``OUT/<task>/{train,test}/`` with ``listfile.csv`` for the five tasks, and the
    train / validation listfiles by ``valset.csv`` (:mod:`~lit_info.data.mimic3.tasks`).

Every file is written under a temporary name and renamed, and a stage records its completion
in ``OUT/.stages/<stage>.json`` (with its options and a fingerprint of the input files) only
at its end: a killed run leaves no file that a rerun trusts, and a rerun skips the stages
already done with the same inputs and options (``--force`` redoes them). Running a stage
invalidates the later ones. ``OUT/report.json`` and ``OUT/report.txt`` reconcile, for every
table, input rows = kept rows + rows dropped by reason.

Memory: event tables are read in batches and events are bucketed so that one bucket fits in
a fraction of ``memory_limit_mb``; the peak resident memory is measured and reported.
"""

from __future__ import annotations

import json
import math
import os
import resource
import shutil
import sys
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import polars as pl

from lit_info.data.mimic3.cohort import (
    Cohort,
    build_cohort,
    hcup_groups,
    phenotype_label_matrix,
    read_cohort_tables,
)
from lit_info.data.mimic3.episodes import (
    EPISODE_DROP_REASONS,
    EpisodeCounts,
    extract_episodes,
    load_definitions,
    read_variable_map,
)
from lit_info.data.mimic3.events import (
    DROP_REASONS,
    BucketWriter,
    EventValidation,
    read_bucket,
    validate_batch,
)
from lit_info.data.mimic3.files import write_csv, write_text
from lit_info.data.mimic3.tables import (
    EVENT_TABLES,
    TABLE_COLUMNS,
    event_batches,
    find_table,
    table_columns,
)
from lit_info.data.mimic3.tasks import TASKS, create_tasks, read_subject_list, split_train_val

__all__ = ["RESOURCES", "STAGES", "BuildOptions", "build", "resource_path"]

STAGES = ("subjects", "events", "episodes", "split", "tasks")
RESOURCES = Path(__file__).with_name("resources")
PIPELINE_VERSION = 1


def resource_path(name: str) -> Path:
    """A resource file shipped with the package (see ``resources/README.md``)."""
    return RESOURCES / name


@dataclass
class BuildOptions:
    """Options of a build (recorded with each stage; a change reruns the stage)."""

    memory_limit_mb: int = 4000
    workers: int = 2
    tasks: tuple[str, ...] = TASKS
    keep_work: bool = False

    def __post_init__(self) -> None:
        if self.memory_limit_mb < 256:
            raise ValueError(f"--memory-limit {self.memory_limit_mb}: give at least 256 (MB)")
        if self.workers < 1:
            raise ValueError(f"--workers {self.workers}: give at least 1")
        unknown = [task for task in self.tasks if task not in TASKS]
        if unknown:
            raise ValueError(
                f"--tasks: unknown task(s) {', '.join(unknown)}; choose from {', '.join(TASKS)}"
            )


def peak_memory_mb() -> float:
    """Peak resident memory of this process since the last :func:`reset_peak_memory`, in MB.

    Linux: ``VmHWM`` of ``/proc/self/status`` (resettable per stage); elsewhere the process's
    lifetime maximum from ``getrusage``.
    """
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    scale = 1 / 1024 if sys.platform != "darwin" else 1 / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def reset_peak_memory() -> None:
    """Start a new peak-memory window (Linux ``/proc/self/clear_refs``; a no-op elsewhere)."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        pass


def _fingerprint(paths: Iterable[Path]) -> list[list]:
    return [[str(p), p.stat().st_size, int(p.stat().st_mtime)] for p in paths]


def _atomic_json(path: Path, content: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, json.dumps(content, indent=2, default=str) + "\n")


def _subject_folder(root: Path, subject: str) -> Path:
    """A subject's folder before (``root/<s>``) or after the split (``root/train/<s>``)."""
    for candidate in (root / subject, root / "train" / subject, root / "test" / subject):
        if candidate.is_dir():
            return candidate
    return root / subject


class Build:
    """One build of the benchmark from ``mimic_dir`` into ``out``."""

    def __init__(
        self,
        mimic_dir: str | Path,
        out: str | Path,
        options: BuildOptions,
        log: Callable[[str], None] = print,
        progress: bool = True,
    ) -> None:
        self.mimic_dir = Path(mimic_dir)
        self.out = Path(out)
        self.options = options
        self.log = log
        self.progress = progress
        self.root = self.out / "root"
        self.work = self.out / ".work"
        self.markers = self.out / ".stages"

    # -- inputs -----------------------------------------------------------------------------
    def check_inputs(self) -> dict[str, Path]:
        """Locate every table and check its columns (before anything is written).

        Raises:
            Mimic3InputError: naming the missing table or columns.
        """
        paths = {}
        for table in TABLE_COLUMNS:
            paths[table] = find_table(self.mimic_dir, table)
            table_columns(paths[table], table)
        for name in (
            "hcup_ccs_2015_definitions.yaml",
            "itemid_to_variable_map.csv",
            "testset.csv",
            "valset.csv",
        ):
            if not resource_path(name).is_file():
                raise FileNotFoundError(
                    f"{resource_path(name)}: a resource file of the package is missing"
                )
        return paths

    def _stage_key(self, stage: str, paths: dict[str, Path]) -> dict:
        inputs = {
            "subjects": ["PATIENTS", "ADMISSIONS", "ICUSTAYS", "DIAGNOSES_ICD", "D_ICD_DIAGNOSES"],
            "events": list(EVENT_TABLES),
        }.get(stage, [])
        options = asdict(self.options)
        options["tasks"] = list(options["tasks"])
        if stage not in ("events", "episodes"):
            options.pop("memory_limit_mb")
            options.pop("workers")
        return {
            "version": PIPELINE_VERSION,
            "inputs": _fingerprint(paths[t] for t in inputs),
            "options": options if stage in ("events", "episodes", "tasks") else {},
        }

    def _done(self, stage: str, key: dict) -> dict | None:
        marker = self.markers / f"{stage}.json"
        if not marker.exists():
            return None
        try:
            content = json.loads(marker.read_text())
        except json.JSONDecodeError:
            return None
        return content if content.get("key") == key else None

    def _invalidate_from(self, stage: str) -> None:
        for later in STAGES[STAGES.index(stage) :]:
            (self.markers / f"{later}.json").unlink(missing_ok=True)

    # -- stages -----------------------------------------------------------------------------
    def run(self, stages: Iterable[str] = STAGES, force: bool = False) -> dict:
        """Run ``stages`` (in pipeline order), skipping those done with the same key.

        Returns:
            The report (also written to ``OUT/report.json`` and ``OUT/report.txt``).

        Raises:
            Mimic3InputError: for bad input (nothing of the failing stage is kept).
            ValueError: when a stage is asked for before the stages it needs.
        """
        paths = self.check_inputs()
        stages = [stage for stage in STAGES if stage in set(stages)]
        for stage in stages:
            key = self._stage_key(stage, paths)
            previous = STAGES[: STAGES.index(stage)]
            missing = [s for s in previous if not (self.markers / f"{s}.json").exists()]
            if missing:
                raise ValueError(
                    f"--stage {stage} needs stage {missing[0]} first (run build without --stage)"
                )
            if not force and self._done(stage, key):
                self.log(f"stage {stage}: done earlier with the same inputs and options, skipped")
                continue
            self._invalidate_from(stage)
            reset_peak_memory()
            started = time.perf_counter()
            counts = getattr(self, f"_stage_{stage}")(paths)
            seconds = time.perf_counter() - started
            _atomic_json(
                self.markers / f"{stage}.json",
                {
                    "key": key,
                    "seconds": seconds,
                    "peak_memory_mb": peak_memory_mb(),
                    "counts": counts,
                },
            )
            self.log(f"stage {stage}: {seconds:.1f} s, peak memory {peak_memory_mb():.0f} MB")
        report = self.report()
        return report

    def _bar(self, iterable: Iterable, description: str, total: int | None = None) -> Iterable:
        if not self.progress:
            return iterable
        from tqdm.auto import tqdm

        return tqdm(iterable, desc=description, total=total, leave=False, dynamic_ncols=True)

    def _stage_subjects(self, paths: dict[str, Path]) -> dict:
        definitions = load_definitions(resource_path("hcup_ccs_2015_definitions.yaml"))
        cohort = build_cohort(read_cohort_tables(self.mimic_dir), definitions)
        partial = self.out / ".root.partial"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        write_csv(cohort.stays, partial / "all_stays.csv")
        write_csv(cohort.diagnoses, partial / "all_diagnoses.csv")
        write_csv(_diagnosis_counts(cohort), partial / "diagnosis_counts.csv")
        write_csv(
            phenotype_label_matrix(cohort.diagnoses, cohort.stays), partial / "phenotype_labels.csv"
        )
        stays_by_subject = cohort.stays.sort(["SUBJECT_ID", "INTIME"]).partition_by(
            "SUBJECT_ID", as_dict=True
        )
        diagnoses_by_subject = cohort.diagnoses.sort(
            ["SUBJECT_ID", "ICUSTAY_ID", "SEQ_NUM"]
        ).partition_by("SUBJECT_ID", as_dict=True)
        empty_diagnoses = cohort.diagnoses.clear()
        for (subject,), stays in self._bar(
            stays_by_subject.items(), "subjects", len(stays_by_subject)
        ):
            folder = partial / str(subject)
            folder.mkdir()
            write_csv(stays, folder / "stays.csv")
            write_csv(
                diagnoses_by_subject.get((subject,), empty_diagnoses), folder / "diagnoses.csv"
            )
        self.work.mkdir(parents=True, exist_ok=True)
        cohort.stays.write_parquet(self.work / "stays.parquet")
        cohort.diagnoses.write_parquet(self.work / "diagnoses.parquet")
        shutil.rmtree(self.root, ignore_errors=True)
        partial.replace(self.root)
        return {"steps": cohort.steps, "tables": cohort.tables}

    def _event_plan(self, paths: dict[str, Path]) -> tuple[int, int]:
        """(batch rows, buckets) for the memory limit.

        A batch of text rows takes about 150 bytes a row and its validation a few copies; the
        tables are read by up to three threads. A bucket of events is processed by one of
        ``workers`` threads with several intermediate copies; its size is estimated from the
        event files' size (x8 for gzip).
        """
        limit = self.options.memory_limit_mb * 2**20
        readers = min(self.options.workers, len(EVENT_TABLES))
        # polars' streaming CSV reader holds several batches in flight: about 1 kB per row of
        # batch size was measured (x20 demo: 0.4 GB at 100k rows, 1 GB at 1M)
        batch_rows = int(min(1_000_000, max(10_000, limit // (4000 * readers))))
        size = sum(
            paths[t].stat().st_size * (8 if paths[t].suffix == ".gz" else 1) for t in EVENT_TABLES
        )
        buckets = max(1, math.ceil(size * 6 * self.options.workers / limit))
        return batch_rows, buckets

    def _stage_events(self, paths: dict[str, Path]) -> dict:
        stays = pl.read_parquet(self.work / "stays.parquet")
        stay_keys = stays.select("SUBJECT_ID", "HADM_ID", pl.col("ICUSTAY_ID").alias("STAY_ID"))
        batch_rows, buckets = self._event_plan(paths)
        partial = self.work / "events.partial"
        shutil.rmtree(partial, ignore_errors=True)
        shutil.rmtree(self.work / "events", ignore_errors=True)
        partial.mkdir(parents=True)

        def one_table(table: str) -> EventValidation:
            counts = EventValidation()
            writer = BucketWriter(partial, buckets, table)
            batches = event_batches(paths[table], table, batch_rows)
            for batch in self._bar(batches, f"{table} (batches of {batch_rows:,} rows)"):
                kept, batch_counts = validate_batch(batch, table, stay_keys)
                writer.add(kept)
                counts.add(batch_counts)
            return counts

        try:
            with ThreadPoolExecutor(
                max_workers=min(self.options.workers, len(EVENT_TABLES))
            ) as pool:
                results = dict(zip(EVENT_TABLES, pool.map(one_table, EVENT_TABLES), strict=True))
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        partial.replace(self.work / "events")
        return {
            "batch_rows": batch_rows,
            "buckets": buckets,
            "tables": {table: counts.as_dict() for table, counts in results.items()},
        }

    def _stage_episodes(self, paths: dict[str, Path]) -> dict:
        stays = pl.read_parquet(self.work / "stays.parquet")
        diagnoses = pl.read_parquet(self.work / "diagnoses.parquet")
        variable_map = read_variable_map(resource_path("itemid_to_variable_map.csv"))
        n_buckets = json.loads((self.markers / "events.json").read_text())["counts"]["buckets"]
        total = EpisodeCounts()
        # subject folders may already sit in root/train|test (a rerun after the split)
        folders = {}
        for subject in stays["SUBJECT_ID"].unique().to_list():
            folders[subject] = _subject_folder(self.root, str(subject))
            for stale in folders[subject].glob("episode*.csv"):
                stale.unlink()
            (folders[subject] / "events.csv").unlink(missing_ok=True)

        def one_bucket(bucket: int) -> EpisodeCounts:
            events = read_bucket(self.work / "events", bucket)
            return extract_episodes(events, stays, diagnoses, variable_map, folders.__getitem__)

        with ThreadPoolExecutor(max_workers=self.options.workers) as pool:
            work = pool.map(one_bucket, range(n_buckets))
            for counts in self._bar(work, "episodes (subject buckets)", n_buckets):
                total.add(counts)
        if not self.options.keep_work:
            shutil.rmtree(self.work / "events", ignore_errors=True)
        return {
            "subjects_with_events": total.subjects_with_events,
            "episodes": total.episodes,
            "episodes_without_diagnoses": total.episodes_without_diagnoses,
            "stays_without_events": stays.height - total.episodes,
            "tables": {
                EVENT_TABLES[table]: {
                    "kept_rows": int(total.kept.get(table, 0)),
                    "dropped": {
                        r: int(total.dropped.get(table, {}).get(r, 0)) for r in EPISODE_DROP_REASONS
                    },
                }
                for table in range(len(EVENT_TABLES))
            },
            "rejected_by_variable": dict(sorted(total.rejected_by_variable.items())),
        }

    def _stage_split(self, paths: dict[str, Path]) -> dict:
        test_subjects = read_subject_list(resource_path("testset.csv"))
        counts = {"train": 0, "test": 0}
        for split in counts:
            (self.root / split).mkdir(exist_ok=True)
        for folder in sorted(self.root.iterdir()):
            if folder.is_dir() and folder.name.isdigit():
                split = "test" if folder.name in test_subjects else "train"
                folder.replace(self.root / split / folder.name)
        for split in counts:
            counts[split] = sum(
                1 for p in (self.root / split).iterdir() if p.is_dir() and p.name.isdigit()
            )
        return {"subjects": counts}

    def _stage_tasks(self, paths: dict[str, Path]) -> dict:
        definitions = load_definitions(resource_path("hcup_ccs_2015_definitions.yaml"))
        code_to_group, benchmark_groups = hcup_groups(definitions)
        for task in TASKS:
            shutil.rmtree(self.out / task, ignore_errors=True)
        summary = create_tasks(
            self.root,
            self.out,
            code_to_group,
            benchmark_groups,
            tasks=tuple(self.options.tasks),
            progress=lambda items, description, total: self._bar(items, description, total),
        )
        validation = read_subject_list(resource_path("valset.csv"))
        for task in self.options.tasks:
            summary[task]["listfiles"] = split_train_val(self.out / task, validation)
        return summary

    # -- report -----------------------------------------------------------------------------
    def report(self) -> dict:
        """Assemble ``report.json`` / ``report.txt`` from the stage markers present."""
        stages = {}
        for stage in STAGES:
            marker = self.markers / f"{stage}.json"
            if marker.exists():
                stages[stage] = json.loads(marker.read_text())
        report: dict = {"mimic_dir": str(self.mimic_dir), "out": str(self.out), "stages": {}}
        for stage, content in stages.items():
            report["stages"][stage] = {
                "seconds": round(content["seconds"], 3),
                "peak_memory_mb": round(content["peak_memory_mb"], 1),
            }
        tables = {}
        if "subjects" in stages:
            report["cohort"] = stages["subjects"]["counts"]["steps"]
            tables.update(stages["subjects"]["counts"]["tables"])
        if "events" in stages:
            report["event_validation"] = _authors_counters(stages["events"]["counts"]["tables"])
            for table, counts in stages["events"]["counts"]["tables"].items():
                tables[table] = {
                    "input_rows": counts["input_rows"],
                    "kept_rows": None,
                    "rows_in_events_csv": counts["kept_rows"],
                    "recovered_icustay_id": counts["recovered_icustay_id"],
                    "dropped": dict(counts["dropped"]),
                }
        if "episodes" in stages:
            episodes = stages["episodes"]["counts"]
            for table, counts in episodes["tables"].items():
                entry = tables[table]
                entry["kept_rows"] = counts["kept_rows"]
                entry["dropped"].update(counts["dropped"])
                if entry["input_rows"] != entry["kept_rows"] + sum(entry["dropped"].values()):
                    raise AssertionError(f"{table}: row counts do not reconcile: {entry}")
            report["episodes"] = {k: v for k, v in episodes.items() if k != "tables"}
        report["tables"] = tables
        if "split" in stages:
            report["split"] = stages["split"]["counts"]
        if "tasks" in stages:
            report["tasks"] = stages["tasks"]["counts"]
        report["total_seconds"] = round(sum(c["seconds"] for c in stages.values()), 3)
        report["peak_memory_mb"] = round(
            max((c["peak_memory_mb"] for c in stages.values()), default=0.0), 1
        )
        if self.out.exists():
            _atomic_json(self.out / "report.json", report)
            write_text(self.out / "report.txt", format_report(report))
        return report


def _diagnosis_counts(cohort: Cohort) -> pl.DataFrame:
    """ICD-9 codes of the cohort with their titles and number of rows (``diagnosis_counts.csv``)."""
    return (
        cohort.diagnoses.group_by("ICD9_CODE")
        .agg(pl.col("SHORT_TITLE").first(), pl.col("LONG_TITLE").first(), pl.len().alias("COUNT"))
        .sort(["COUNT", "ICD9_CODE"], descending=[True, False])
    )


def _authors_counters(tables: dict) -> dict:
    """The counters the authors' ``validate_events`` prints, from our per-table counts."""
    n_events = sum(t["input_rows"] - t["dropped"][DROP_REASONS[0]] for t in tables.values())
    empty_hadm = sum(t["dropped"][DROP_REASONS[1]] for t in tables.values())
    no_hadm = sum(t["dropped"][DROP_REASONS[2]] for t in tables.values())
    recovered = sum(t["recovered_icustay_id"] for t in tables.values())
    mismatch = sum(t["dropped"][DROP_REASONS[3]] for t in tables.values())
    return {
        "n_events": n_events,
        "empty_hadm": empty_hadm,
        "no_hadm_in_stay": no_hadm,
        "no_icustay": recovered,
        "recovered": recovered,
        "could_not_recover": 0,
        "icustay_missing_in_stays": mismatch,
    }


def format_report(report: dict) -> str:
    """A readable summary of :meth:`Build.report`."""
    lines = [f"MIMIC-III benchmark built from {report['mimic_dir']} into {report['out']}", ""]
    if "cohort" in report:
        lines.append("Cohort (ICU stays / admissions / subjects):")
        for step, counts in report["cohort"].items():
            numbers = [counts[k] for k in ("icu_stays", "admissions", "subjects")]
            lines.append(f"  {step:<32}" + "".join(f" {n:>8,}" for n in numbers))
        lines.append("")
    if report.get("tables"):
        lines.append("Rows per table: input = kept + dropped")
        for table, entry in report["tables"].items():
            kept = entry["kept_rows"]
            kept_text = "(pending)" if kept is None else f"{kept:,}"
            lines.append(f"  {table}: {entry['input_rows']:,} input, {kept_text} kept")
            for reason, count in entry["dropped"].items():
                if count:
                    lines.append(f"      dropped {count:>12,}  {reason}")
            if entry.get("recovered_icustay_id"):
                recovered = entry["recovered_icustay_id"]
                lines.append(f"      ICUSTAY_ID recovered from the admission: {recovered:,}")
        lines.append("")
    if "episodes" in report:
        e = report["episodes"]
        lines.append(
            f"Episodes: {e['episodes']:,} ({e['episodes_without_diagnoses']:,} without a "
            f"diagnosis, skipped by the tasks); {e['subjects_with_events']:,} subjects with "
            f"events; {e['stays_without_events']:,} stays without events"
        )
        lines.append("")
    if "split" in report:
        s = report["split"]["subjects"]
        lines.append(f"Split: {s['train']:,} train / {s['test']:,} test subjects")
        lines.append("")
    if "tasks" in report:
        lines.append(
            "Tasks (samples train incl. validation / test; listfile rows train / val / test):"
        )
        for task, entry in report["tasks"].items():
            train, test, listfiles = entry["train"], entry["test"], entry.get("listfiles", {})
            positives = ""
            if "positives" in train:
                positives = f", positives {train['positives']:,} / {test['positives']:,}"
            lines.append(
                f"  {task:<24} {train['samples']:>9,} / {test['samples']:>8,}{positives}; "
                "listfiles "
                + " / ".join(f"{listfiles.get(k, 0):,}" for k in ("train", "val", "test"))
            )
        lines.append("")
    lines.append(
        f"Time: {report['total_seconds']:.1f} s, peak memory {report['peak_memory_mb']:.0f} MB"
    )
    for stage, entry in report["stages"].items():
        lines.append(
            f"  {stage:<10} {entry['seconds']:>8.1f} s  {entry['peak_memory_mb']:>8.0f} MB"
        )
    return "\n".join(lines) + "\n"


def build(
    mimic_dir: str | Path,
    out: str | Path,
    stages: Iterable[str] = STAGES,
    force: bool = False,
    options: BuildOptions | None = None,
    log: Callable[[str], None] = print,
    progress: bool = True,
) -> dict:
    """Build the benchmark (see the module docstring); returns the report.

    Raises:
        Mimic3InputError: for a missing or damaged table, column or value.
    """
    return Build(mimic_dir, out, options or BuildOptions(), log=log, progress=progress).run(
        stages, force=force
    )


def default_workers() -> int:
    """Worker threads: the CPU count, at most 8."""
    return max(1, min(8, os.cpu_count() or 1))
