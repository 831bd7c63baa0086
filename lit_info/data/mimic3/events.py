"""Streaming the event tables: keep the cohort's events, reconcile them with the ICU stays.

Each batch of CHARTEVENTS / LABEVENTS / OUTPUTEVENTS goes through the authors' event
validation, vectorized, in their order (every dropped row is counted by reason):

1. the subject is not in the cohort;
2. ``HADM_ID`` is empty;
3. ``HADM_ID`` is not the admission of one of the subject's cohort stays;
4. ``ICUSTAY_ID`` is empty: recovered from the admission's stay (counted, not dropped; all of
   LABEVENTS, which has no ICUSTAY_ID);
5. ``ICUSTAY_ID`` differs from the admission's stay;
6. ``CHARTTIME`` is empty (never in MIMIC-III; the authors' pipeline would fail on it).

Kept rows are appended to per-bucket Parquet files (bucket = ``SUBJECT_ID mod n_buckets``) so the
next stage can process a bucket at a time in bounded memory.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from lit_info.data.mimic3.tables import EVENT_TABLES, parse_int, parse_time

__all__ = [
    "DROP_REASONS",
    "BucketWriter",
    "EventValidation",
    "validate_batch",
]

DROP_REASONS = (
    "SUBJECT_ID not in the cohort",
    "empty HADM_ID",
    "HADM_ID not an admission of the subject's cohort stays",
    "ICUSTAY_ID differs from the admission's ICU stay",
    "empty CHARTTIME",
)

KEPT_SCHEMA = {
    "SUBJECT_ID": pl.Int64,
    "HADM_ID": pl.Int64,
    "ICUSTAY_ID": pl.Int64,
    "CHARTTIME": pl.Datetime("us"),
    "ITEMID": pl.Int64,
    "VALUE": pl.String,
    "VALUEUOM": pl.String,
    "TABLE": pl.UInt8,
    "ROW": pl.UInt64,
}


@dataclass
class EventValidation:
    """Row counts of one event table: input, kept, dropped by reason, recovered ICUSTAY_IDs."""

    input_rows: int = 0
    kept_rows: int = 0
    recovered_icustay: int = 0
    dropped: Counter = field(default_factory=Counter)

    def add(self, other: EventValidation) -> None:
        """Accumulate another batch's counts."""
        self.input_rows += other.input_rows
        self.kept_rows += other.kept_rows
        self.recovered_icustay += other.recovered_icustay
        self.dropped.update(other.dropped)

    def as_dict(self) -> dict:
        """JSON-ready counts (reasons in pipeline order)."""
        return {
            "input_rows": self.input_rows,
            "kept_rows": self.kept_rows,
            "recovered_icustay_id": self.recovered_icustay,
            "dropped": {reason: int(self.dropped.get(reason, 0)) for reason in DROP_REASONS},
        }


def validate_batch(
    batch: pl.DataFrame, table: str, stay_keys: pl.DataFrame
) -> tuple[pl.DataFrame, EventValidation]:
    """Validate one batch of raw text rows of ``table`` against the cohort's stays.

    Args:
        batch: text columns of the table plus ``ROW`` (1-based data row).
        table: the table's name (for errors and the ``TABLE`` column).
        stay_keys: ``SUBJECT_ID``, ``HADM_ID``, ``STAY_ID`` of the cohort's stays.

    Returns:
        The kept rows (typed, :data:`KEPT_SCHEMA`) and the batch's counts.

    Raises:
        Mimic3InputError: for an unparseable id or time (table, column and row named).
    """
    counts = EventValidation(input_rows=batch.height)
    subject = parse_int(batch, "SUBJECT_ID", table)
    subjects = stay_keys["SUBJECT_ID"].unique()
    batch = batch.with_columns(subject).filter(pl.col("SUBJECT_ID").is_in(subjects.implode()))
    counts.dropped[DROP_REASONS[0]] = counts.input_rows - batch.height

    batch = batch.with_columns(parse_int(batch, "HADM_ID", table))
    present = batch.filter(pl.col("HADM_ID").is_not_null())
    counts.dropped[DROP_REASONS[1]] = batch.height - present.height

    joined = present.join(
        stay_keys, on=["SUBJECT_ID", "HADM_ID"], how="inner", maintain_order="left"
    )
    counts.dropped[DROP_REASONS[2]] = present.height - joined.height

    joined = joined.with_columns(parse_int(joined, "ICUSTAY_ID", table))
    counts.recovered_icustay = int(joined["ICUSTAY_ID"].null_count())
    joined = joined.with_columns(pl.col("ICUSTAY_ID").fill_null(pl.col("STAY_ID")))
    same = joined.filter(pl.col("ICUSTAY_ID") == pl.col("STAY_ID"))
    counts.dropped[DROP_REASONS[3]] = joined.height - same.height

    same = same.with_columns(parse_time(same, "CHARTTIME", table), parse_int(same, "ITEMID", table))
    timed = same.filter(pl.col("CHARTTIME").is_not_null())
    counts.dropped[DROP_REASONS[4]] = same.height - timed.height

    kept = timed.select(
        "SUBJECT_ID",
        "HADM_ID",
        "ICUSTAY_ID",
        "CHARTTIME",
        "ITEMID",
        "VALUE",
        "VALUEUOM",
        pl.lit(EVENT_TABLES.index(table), dtype=pl.UInt8).alias("TABLE"),
        pl.col("ROW").cast(pl.UInt64),
    )
    counts.kept_rows = kept.height
    return kept, counts


class BucketWriter:
    """Append rows to Parquet files per subject bucket, flushing when a bucket's buffer is full.

    Files are ``<root>/b<bucket>/<table>-<seq>.parquet``, written under a temporary name and
    renamed, so a file that exists is complete.
    """

    def __init__(self, root: Path, n_buckets: int, table: str, flush_rows: int) -> None:
        self.root = Path(root)
        self.n_buckets = n_buckets
        self.table = table
        self.flush_rows = flush_rows
        self._buffers: dict[int, list[pl.DataFrame]] = {}
        self._buffered: dict[int, int] = {}
        self._sequence = 0

    def add(self, kept: pl.DataFrame) -> None:
        """Buffer the rows of ``kept`` by bucket and flush full buckets."""
        if kept.height == 0:
            return
        keyed = kept.with_columns((pl.col("SUBJECT_ID") % self.n_buckets).alias("_BUCKET"))
        for (bucket,), part in keyed.partition_by(
            "_BUCKET", as_dict=True, include_key=False
        ).items():
            self._buffers.setdefault(int(bucket), []).append(part)
            self._buffered[int(bucket)] = self._buffered.get(int(bucket), 0) + part.height
            if self._buffered[int(bucket)] >= self.flush_rows:
                self._flush(int(bucket))
        if sum(self._buffered.values()) >= self.flush_rows:
            for bucket in list(self._buffers):
                self._flush(bucket)

    def _flush(self, bucket: int) -> None:
        parts = self._buffers.pop(bucket, [])
        self._buffered.pop(bucket, None)
        if not parts:
            return
        folder = self.root / f"b{bucket:05d}"
        folder.mkdir(parents=True, exist_ok=True)
        self._sequence += 1
        target = folder / f"{self.table}-{self._sequence:06d}.parquet"
        temporary = target.with_name("." + target.name + ".tmp")
        pl.concat(parts).write_parquet(temporary, compression="lz4")
        temporary.replace(target)

    def close(self) -> None:
        """Flush every remaining buffer."""
        for bucket in list(self._buffers):
            self._flush(bucket)


def read_bucket(folder: Path) -> pl.DataFrame:
    """All kept event rows of one bucket (every table), in table and row order."""
    files = sorted(folder.glob("*.parquet"))
    if not files:
        return pl.DataFrame(schema=KEPT_SCHEMA)
    return pl.read_parquet(files).sort(["SUBJECT_ID", "TABLE", "ROW"])
