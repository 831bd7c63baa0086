"""From a subject's validated events to the benchmark's episodes (one per ICU stay).

For every subject of a bucket, vectorized over the bucket:

1. events with an empty ``VALUE`` are dropped;
2. ``ITEMID`` -> one of the 17 clinical variables through ``itemid_to_variable_map.csv``
   (rows with STATUS ``ready``, a LEVEL2 name and COUNT > 0); other items are dropped;
3. the paper's cleaning rules (:func:`clean_values`); values they reject are dropped;
4. one value per (subject, CHARTTIME, variable): the largest, compared as numbers for the
   cleaned variables and as text for the others (the authors sort on the value column and keep
   the last), duplicates are dropped;
5. a row per (CHARTTIME, ICUSTAY_ID) with the 17 variables as columns;
6. the episode of a stay = the rows of its ICUSTAY_ID or charted within ``[INTIME, OUTTIME]``,
   with ``Hours`` since ``INTIME``. Episodes are numbered by the stay's position among the
   subject's stays sorted by (INTIME, OUTTIME); a stay without rows has no episode.

Values are written as text exactly as the authors' pandas code writes them: uncleaned values
verbatim (``"4 Spontaneously"``, ``"86"``), cleaned values and hours as Python's ``repr`` of the
float (``"120.0"``, ``"36.666666666666664"``). One subtlety is reproduced: pandas reads a
subject's ``VALUE`` column as numbers when *every* value of that subject parses as a number;
uncleaned values of such a subject are then numbers too (written ``"86.0"`` and compared as
numbers).

Outlier removal (``variable_ranges.csv``) is off, as in the authors' current release.
"""

from __future__ import annotations

import csv
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import yaml

from lit_info.data.mimic3.files import atomic_path, write_csv

__all__ = [
    "CLEANED_VARIABLES",
    "DIAGNOSIS_CODES",
    "EpisodeCounts",
    "clean_values",
    "extract_episodes",
    "float_text",
    "read_variable_map",
]

CLEANED_VARIABLES = (
    "Capillary refill rate",
    "Diastolic blood pressure",
    "Systolic blood pressure",
    "Fraction inspired oxygen",
    "Oxygen saturation",
    "Glucose",
    "pH",
    "Temperature",
    "Weight",
    "Height",
)

# The 128 ICD-9 codes whose indicators the authors' episode files carry ("Diagnosis <code>").
DIAGNOSIS_CODES = (
    "4019 4280 41401 42731 25000 5849 2724 51881 53081 5990 2720 2859 2449 486 2762 2851 496 "
    "V5861 99592 311 0389 5859 5070 40390 3051 412 V4581 2761 41071 2875 4240 V1582 V4582 V5867 "
    "4241 40391 78552 5119 42789 32723 49390 9971 2767 2760 2749 4168 5180 45829 4589 73300 5845 "
    "78039 5856 4271 4254 4111 V1251 30000 3572 60000 27800 41400 2768 4439 27651 V4501 27652 "
    "99811 431 28521 2930 7907 E8798 5789 79902 V4986 V103 42832 E8788 00845 5715 99591 07054 "
    "42833 4275 49121 V1046 2948 70703 2809 5712 27801 42732 99812 4139 3004 2639 42822 25060 "
    "V1254 42823 28529 E8782 30500 78791 78551 E8889 78820 34590 2800 99859 V667 E8497 79092 "
    "5723 3485 5601 25040 570 71590 2869 2763 5770 V5865 99662 28860 36201 56210"
).split()

GENDER_CODES = {"F": 1, "M": 2, "": 0}  # anything else: 3
ETHNICITY_CODES = {
    "ASIAN": 1,
    "BLACK": 2,
    "CARIBBEAN ISLAND": 2,
    "HISPANIC": 3,
    "SOUTH AMERICAN": 3,
    "WHITE": 4,
    "MIDDLE EASTERN": 4,
    "PORTUGUESE": 4,
}  # everything else (other, unknown, declined, American Indian, ...): 0

_NUMBER = r"^(\d+(\.\d*)?|\.\d+)$"  # what the authors accept for lab values and O2 saturation


def read_variable_map(path: str | Path) -> pl.DataFrame:
    """``ITEMID``, ``VARIABLE`` (LEVEL2) and ``MIMIC_LABEL`` of the benchmark's items.

    Raises:
        ValueError: for a file without the needed columns or with a non-integer ITEMID / COUNT.
    """
    table = pl.read_csv(path, infer_schema=False)
    needed = {"LEVEL2", "STATUS", "ITEMID", "MIMIC LABEL", "COUNT"}
    if not needed <= set(table.columns):
        raise ValueError(f"{path}: the variable map lacks {sorted(needed - set(table.columns))}")
    table = table.with_columns(pl.col(c).fill_null("") for c in ("LEVEL2", "STATUS", "MIMIC LABEL"))
    table = table.with_columns(pl.col("COUNT").cast(pl.Int64))
    table = table.filter(
        (pl.col("LEVEL2") != "") & (pl.col("COUNT") > 0) & (pl.col("STATUS") == "ready")
    )
    return table.select(
        pl.col("ITEMID").cast(pl.Int64),
        pl.col("LEVEL2").alias("VARIABLE"),
        pl.col("MIMIC LABEL").alias("MIMIC_LABEL"),
    )


def divisor(frame: pl.DataFrame, value: float) -> pl.Series:
    """A column of ``value`` as long as ``frame``, to divide by exactly.

    polars divides by a scalar through its reciprocal (``x * (1 / d)``), which differs from
    ``x / d`` in the last bit for about a third of the values; pandas, and so the authors'
    benchmark, divide exactly. Dividing by a materialized column is an exact IEEE division.
    """
    return pl.Series(np.full(frame.height, value, dtype=np.float64))


def float_text(values: pl.Series) -> pl.Series:
    """Python's ``repr`` of Float64 values (what pandas writes); null stays null.

    polars prints the same shortest round-trip digits as ``repr`` except in exponent notation
    (below 1e-4 and from 1e16 on), where the rare values go through ``repr`` itself.
    """
    text = values.cast(pl.String)
    odd = (
        ((values.abs() < 1e-4) & (values != 0)) | (values.abs() >= 1e16) | values.is_nan()
    ).fill_null(False)
    if odd.any():
        positions = odd.arg_true()
        exact = pl.Series(
            [repr(float(value)) for value in values.gather(positions)], dtype=pl.String
        )
        text = text.scatter(positions, exact)
    return text.alias(values.name)


def clean_values(events: pl.DataFrame) -> pl.DataFrame:
    """Add ``NUM`` (Float64) and ``TEXT`` (the value as written) by the paper's cleaning rules.

    ``events`` needs ``VARIABLE``, ``VALUE`` (text), ``VALUEUOM``, ``MIMIC_LABEL`` and
    ``NUMERIC_SUBJECT`` (whether pandas would read the subject's values as numbers). A null
    ``NUM`` of a cleaned variable means the rule rejects the value. The rules (the authors'):

    * capillary refill: ``Normal <3 secs`` / ``Brisk`` -> 0, ``Abnormal >3 secs`` / ``Delayed``
      -> 1, anything else rejected;
    * systolic / diastolic pressure: ``"120/80"`` -> the first / second number, else the number;
    * FiO2: the number, divided by 100 unless the unit contains ``torr`` (the released Python 3
      code divides every such value, whatever its size: its ``is_str`` test is always true);
    * O2 saturation, glucose, pH: text that is not a plain unsigned decimal is rejected; O2
      saturation <= 1 is multiplied by 100;
    * temperature: values >= 79 are Fahrenheit, converted to Celsius (the authors' unit tests
      on ``'F' in s.lower()`` can never be true);
    * weight: ounces (``oz`` in the unit or label) / 16, then ounces or pounds (``lb``) x
      0.453592; height: inches (``in``) x 2.54, rounded half to even.

    A value that is not a number where the rule needs one is rejected here; the authors' code
    stops with an exception instead (it never happens on MIMIC-III v1.4).
    """
    value = pl.col("VALUE")
    variable = pl.col("VARIABLE")
    numeric_subject = pl.col("NUMERIC_SUBJECT")
    number = value.str.strip_chars().cast(pl.Float64, strict=False)
    unit = pl.col("VALUEUOM").fill_null("").str.to_lowercase()
    label = pl.col("MIMIC_LABEL").fill_null("").str.to_lowercase()
    plain_decimal = (
        pl.when(numeric_subject)
        .then(number)
        .otherwise(pl.when(value.str.contains(_NUMBER)).then(number).otherwise(None))
    )
    # pandas' astype(str) of a numeric subject's value is a float's repr: never a "120/80" pair
    # nor a capillary-refill word, so those rules only look at text subjects' values
    has_slash = ~numeric_subject & value.str.contains("/", literal=True)
    pair = value.str.extract_groups(r"^(\d+)/(\d+)$")
    systolic = pl.when(has_slash).then(pair.struct.field("1").cast(pl.Float64)).otherwise(number)
    diastolic = pl.when(has_slash).then(pair.struct.field("2").cast(pl.Float64)).otherwise(number)
    refill = (
        pl.when(~numeric_subject & value.is_in(["Normal <3 secs", "Brisk"]))
        .then(pl.lit(0.0))
        .when(~numeric_subject & value.is_in(["Abnormal >3 secs", "Delayed"]))
        .then(pl.lit(1.0))
        .otherwise(None)
    )
    by_100, by_9, by_16 = (divisor(events, d) for d in (100.0, 9.0, 16.0))
    fio2 = pl.when(~unit.str.contains("torr", literal=True)).then(number / by_100).otherwise(number)
    saturation = pl.when(plain_decimal <= 1).then(plain_decimal * 100.0).otherwise(plain_decimal)
    temperature = pl.when(number >= 79).then((number - 32) * 5.0 / by_9).otherwise(number)
    ounces = unit.str.contains("oz", literal=True) | label.str.contains("oz", literal=True)
    pounds = ounces | unit.str.contains("lb", literal=True) | label.str.contains("lb", literal=True)
    weight = pl.when(ounces).then(number / by_16).otherwise(number)
    weight = pl.when(pounds).then(weight * 0.453592).otherwise(weight)
    inches = unit.str.contains("in", literal=True) | label.str.contains("in", literal=True)
    height = pl.when(inches).then((number * 2.54).round(0, mode="half_to_even")).otherwise(number)
    cleaned = (
        pl.when(variable == "Capillary refill rate")
        .then(refill)
        .when(variable == "Diastolic blood pressure")
        .then(diastolic)
        .when(variable == "Systolic blood pressure")
        .then(systolic)
        .when(variable == "Fraction inspired oxygen")
        .then(fio2)
        .when(variable == "Oxygen saturation")
        .then(saturation)
        .when(variable.is_in(["Glucose", "pH"]))
        .then(plain_decimal)
        .when(variable == "Temperature")
        .then(temperature)
        .when(variable == "Weight")
        .then(weight)
        .when(variable == "Height")
        .then(height)
        .otherwise(number)
    )
    is_cleaned = variable.is_in(list(CLEANED_VARIABLES))
    events = events.with_columns(cleaned.alias("NUM"), is_cleaned.alias("CLEANED"))
    numeric = pl.col("CLEANED") | numeric_subject
    events = events.with_columns(float_text(events["NUM"]).alias("_NUM_TEXT"))
    return events.with_columns(
        pl.when(numeric).then(pl.col("_NUM_TEXT")).otherwise(value).alias("TEXT"),
        pl.when(numeric).then(pl.col("NUM")).otherwise(None).alias("NUM"),
    ).drop("_NUM_TEXT")


@dataclass
class EpisodeCounts:
    """Counts of one bucket: dropped event rows by reason per table, episodes and subjects."""

    dropped: dict[str, Counter] = field(default_factory=dict)
    rejected_by_variable: Counter = field(default_factory=Counter)
    kept: Counter = field(default_factory=Counter)
    subjects_with_events: int = 0
    episodes: int = 0
    episodes_without_diagnoses: int = 0
    stays_without_events: int = 0

    def add(self, other: EpisodeCounts) -> None:
        """Accumulate another bucket's counts."""
        for table, counter in other.dropped.items():
            self.dropped.setdefault(table, Counter()).update(counter)
        self.rejected_by_variable.update(other.rejected_by_variable)
        self.kept.update(other.kept)
        self.subjects_with_events += other.subjects_with_events
        self.episodes += other.episodes
        self.episodes_without_diagnoses += other.episodes_without_diagnoses
        self.stays_without_events += other.stays_without_events


EPISODE_DROP_REASONS = (
    "empty VALUE",
    "ITEMID not one of the 17 variables",
    "value rejected by the cleaning rules",
    "duplicate (same subject, CHARTTIME and variable)",
)


def _drop_counts(counts: EpisodeCounts, reason: str, rows: pl.DataFrame) -> None:
    for table, size in rows.group_by("TABLE").len().iter_rows():
        counts.dropped.setdefault(int(table), Counter())[reason] += size


def extract_episodes(
    events: pl.DataFrame,
    stays: pl.DataFrame,
    diagnoses: pl.DataFrame,
    variable_map: pl.DataFrame,
    folder_of: Callable[[int], Path],
) -> EpisodeCounts:
    """Write ``events.csv``, ``episode{i}.csv`` and ``episode{i}_timeseries.csv`` per subject.

    Args:
        events: the bucket's validated events (:func:`lit_info.data.mimic3.events.read_bucket`).
        stays: the cohort's stays (all subjects; those of the bucket are used).
        diagnoses: the cohort's diagnoses with ``ICUSTAY_ID``.
        variable_map: :func:`read_variable_map`.
        folder_of: the folder of a subject (by ``SUBJECT_ID``).

    Returns:
        The bucket's :class:`EpisodeCounts`.
    """
    counts = EpisodeCounts()
    variables = sorted(variable_map["VARIABLE"].unique().to_list())
    for (subject,), rows in events.partition_by(
        "SUBJECT_ID", as_dict=True, maintain_order=True
    ).items():
        write_csv(
            rows.select(
                "SUBJECT_ID", "HADM_ID", "ICUSTAY_ID", "CHARTTIME", "ITEMID", "VALUE", "VALUEUOM"
            ),
            folder_of(int(subject)) / "events.csv",
        )

    numeric = events.group_by("SUBJECT_ID").agg(
        (
            pl.col("VALUE").is_null()
            | pl.col("VALUE").str.strip_chars().cast(pl.Float64, strict=False).is_not_null()
        )
        .all()
        .alias("NUMERIC_SUBJECT")
    )
    events = events.join(numeric, on="SUBJECT_ID", how="left", maintain_order="left")

    empty = events.filter(pl.col("VALUE").is_null())
    _drop_counts(counts, EPISODE_DROP_REASONS[0], empty)
    events = events.filter(pl.col("VALUE").is_not_null())

    mapped = events.join(variable_map, on="ITEMID", how="inner", maintain_order="left")
    unmapped = events.join(variable_map, on="ITEMID", how="anti")
    _drop_counts(counts, EPISODE_DROP_REASONS[1], unmapped)

    cleaned = clean_values(mapped)
    rejected = cleaned.filter(pl.col("CLEANED") & pl.col("NUM").is_null())
    _drop_counts(counts, EPISODE_DROP_REASONS[2], rejected)
    counts.rejected_by_variable.update(dict(rejected.group_by("VARIABLE").len().iter_rows()))
    cleaned = cleaned.filter(~(pl.col("CLEANED") & pl.col("NUM").is_null()))

    # one value per (subject, time, variable): the last after sorting on the value, as the authors
    ordered = cleaned.with_columns(pl.int_range(pl.len()).alias("_ORDER")).sort(
        ["SUBJECT_ID", "CHARTTIME", "VARIABLE", "NUM", "TEXT", "_ORDER"], nulls_last=False
    )
    last = ordered.unique(
        subset=["SUBJECT_ID", "CHARTTIME", "VARIABLE"], keep="last", maintain_order=True
    )
    duplicates = ordered.join(last.select("_ORDER"), on="_ORDER", how="anti")
    _drop_counts(counts, EPISODE_DROP_REASONS[3], duplicates)
    for table, size in last.group_by("TABLE").len().iter_rows():
        counts.kept[int(table)] += size

    metadata = cleaned.select("SUBJECT_ID", "CHARTTIME", "ICUSTAY_ID").unique()
    if last.height:
        wide = last.pivot(on="VARIABLE", index=["SUBJECT_ID", "CHARTTIME"], values="TEXT")
    else:
        wide = pl.DataFrame(schema={"SUBJECT_ID": pl.Int64, "CHARTTIME": pl.Datetime("us")})
    for name in variables:
        if name not in wide.columns:
            wide = wide.with_columns(pl.lit(None, dtype=pl.String).alias(name))
    rows = wide.join(metadata, on=["SUBJECT_ID", "CHARTTIME"], how="inner")

    bucket_stays = stays.join(events.select("SUBJECT_ID").unique(), on="SUBJECT_ID", how="semi")
    bucket_stays = bucket_stays.sort(["SUBJECT_ID", "INTIME", "OUTTIME"]).with_columns(
        (pl.int_range(pl.len()).over("SUBJECT_ID") + 1).alias("EPISODE")
    )
    subjects_with_rows = rows["SUBJECT_ID"].unique()
    counts.subjects_with_events = subjects_with_rows.len()
    candidate_stays = bucket_stays.filter(pl.col("SUBJECT_ID").is_in(subjects_with_rows.implode()))
    pairs = rows.join(
        candidate_stays.select(
            "SUBJECT_ID", pl.col("ICUSTAY_ID").alias("STAY_ID"), "INTIME", "OUTTIME", "EPISODE"
        ),
        on="SUBJECT_ID",
        how="inner",
    ).filter(
        (
            (pl.col("ICUSTAY_ID") == pl.col("STAY_ID"))
            | (
                (pl.col("CHARTTIME") >= pl.col("INTIME"))
                & (pl.col("CHARTTIME") <= pl.col("OUTTIME"))
            )
        ).fill_null(False)
    )
    micros = (pl.col("CHARTTIME") - pl.col("INTIME")).dt.total_microseconds().cast(pl.Float64)
    by_60, by_1e6 = divisor(pairs, 60.0), divisor(pairs, 1e6)
    pairs = pairs.with_columns((micros / by_1e6 / by_60 / by_60).alias("HOURS")).sort(
        ["SUBJECT_ID", "EPISODE", "HOURS", "CHARTTIME"]
    )
    pairs = pairs.with_columns(float_text(pairs["HOURS"]).alias("Hours"))

    # only this bucket's diagnoses (the cohort's are many on the full database)
    diagnoses = diagnoses.join(candidate_stays.select("ICUSTAY_ID"), on="ICUSTAY_ID", how="semi")
    with_diagnoses = set(diagnoses["ICUSTAY_ID"].unique().to_list())
    episodic = _episodic_rows(candidate_stays, diagnoses)
    written = set()
    for (subject, episode), group in pairs.partition_by(
        ["SUBJECT_ID", "EPISODE"], as_dict=True, maintain_order=True
    ).items():
        folder = folder_of(int(subject))
        stay_id = int(group["STAY_ID"][0])
        write_csv(group.select(["Hours", *variables]), folder / f"episode{episode}_timeseries.csv")
        _write_episode_labels(episodic.get(stay_id), group, folder / f"episode{episode}.csv")
        written.add(stay_id)
        counts.episodes += 1
        if stay_id not in with_diagnoses:
            counts.episodes_without_diagnoses += 1
    counts.stays_without_events = bucket_stays.height - len(written)
    return counts


EPISODE_HEADER = [
    "Icustay",
    "Ethnicity",
    "Gender",
    "Age",
    "Height",
    "Weight",
    "Length of Stay",
    "Mortality",
    *[f"Diagnosis {code}" for code in DIAGNOSIS_CODES],
]


def _ethnicity_code(text: str | None) -> int:
    if text is None:
        return 0
    head = text.replace(" OR ", "/").split(" - ")[0].split("/")[0]
    return ETHNICITY_CODES.get(head, 0)


def _episodic_rows(stays: pl.DataFrame, diagnoses: pl.DataFrame) -> dict[int, list]:
    """The static row of each stay that has at least one diagnosis (Height/Weight filled later).

    Stays without any diagnosis get no row: the authors' label file is then empty (their
    inner join with the diagnosis indicators), and every task skips such an episode.
    """
    codes_by_stay: dict[int, set[str]] = {}
    for stay_id, code in diagnoses.select("ICUSTAY_ID", "ICD9_CODE").iter_rows():
        codes_by_stay.setdefault(int(stay_id), set()).add(code)
    rows = {}
    for stay in stays.iter_rows(named=True):
        stay_id = int(stay["ICUSTAY_ID"])
        if stay_id not in codes_by_stay:
            continue
        gender = stay["GENDER"] or ""
        present = codes_by_stay[stay_id]
        rows[stay_id] = [
            stay_id,
            _ethnicity_code(stay["ETHNICITY"]),
            GENDER_CODES.get(gender, 3),
            stay["AGE"],
            math.nan,
            math.nan,
            stay["LOS"],
            stay["MORTALITY"],
            *[int(code in present) for code in DIAGNOSIS_CODES],
        ]
    return rows


def _first_valid(group: pl.DataFrame, column: str) -> float:
    values = group[column].drop_nulls()
    return float(values[0]) if values.len() else math.nan


def _text(value: object) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else repr(value)
    return "" if value is None else str(value)


def _write_episode_labels(row: list | None, group: pl.DataFrame, path: Path) -> None:
    with atomic_path(path) as temporary, open(temporary, "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(EPISODE_HEADER)
        if row is not None:
            row = list(row)
            row[4] = _first_valid(group, "Height")
            row[5] = _first_valid(group, "Weight")
            writer.writerow([_text(value) for value in row])


def load_definitions(path: str | Path) -> dict:
    """The HCUP CCS definitions (YAML)."""
    with open(path) as handle:
        return yaml.safe_load(handle)
