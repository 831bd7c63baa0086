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

Each batch's kept rows become one Parquet file sorted by bucket (``SUBJECT_ID mod n_buckets``)
with small row groups, so the next stage reads one bucket at a time in bounded memory.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from lit_info.data.mimic3.files import atomic_path
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
    """Write each batch's kept rows as one Parquet file sorted by subject bucket.

    Files are ``<root>/<table>-<seq>.parquet`` (written under a temporary name and renamed, so
    a file that exists is complete) with small row groups: reading one bucket back
    (:func:`read_bucket`) skips, by the row groups' statistics, the rows of other buckets.
    """

    def __init__(self, root: Path, n_buckets: int, table: str) -> None:
        self.root = Path(root)
        self.n_buckets = n_buckets
        self.table = table
        self._sequence = 0

    def add(self, kept: pl.DataFrame) -> None:
        """Write the rows of ``kept`` (one file), sorted by bucket."""
        if kept.height == 0:
            return
        keyed = kept.with_columns(
            (pl.col("SUBJECT_ID") % self.n_buckets).cast(pl.UInt32).alias("BUCKET")
        )
        keyed = keyed.sort("BUCKET", maintain_order=True)
        self._sequence += 1
        target = self.root / f"{self.table}-{self._sequence:06d}.parquet"
        with atomic_path(target) as temporary:
            keyed.write_parquet(
                temporary, compression="lz4", row_group_size=32_768, statistics=True
            )


def read_bucket(root: Path, bucket: int) -> pl.DataFrame:
    """All kept event rows of one bucket (every table), in subject, table and row order."""
    files = sorted(Path(root).glob("*.parquet"))
    if not files:
        return pl.DataFrame(schema=KEPT_SCHEMA)
    rows = pl.scan_parquet(files).filter(pl.col("BUCKET") == bucket).drop("BUCKET").collect()
    return rows.sort(["SUBJECT_ID", "TABLE", "ROW"])
