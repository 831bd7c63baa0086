"""The benchmark cohort: ICU stays, their admissions and patients, diagnoses and phenotypes.

The filters are the paper's, in the authors' order (each step's counts go to the report):

1. drop ICU stays with a ward or care-unit transfer (``FIRST_WARDID != LAST_WARDID`` or
   ``FIRST_CAREUNIT != LAST_CAREUNIT``; a missing ward or unit counts as a transfer, as a NaN
   comparison does in pandas);
2. join the admission (``SUBJECT_ID``, ``HADM_ID``) and the patient (``SUBJECT_ID``);
3. keep admissions with exactly one remaining ICU stay;
4. age at ICU admission ``(INTIME - DOB)`` in years of 365 days, negative ages (patients over 89,
   whose DOB is shifted) set to 90; keep ``AGE >= 18``.

Mortality labels: ``MORTALITY_INUNIT`` when the date of death (``DOD``) or the hospital
``DEATHTIME`` falls within ``[INTIME, OUTTIME]``; ``MORTALITY`` = ``MORTALITY_INHOSPITAL`` when
either falls within ``[ADMITTIME, DISCHTIME]``.

Diagnoses are the ``DIAGNOSES_ICD`` rows whose code is in ``D_ICD_DIAGNOSES`` (an inner join, as
the authors') of the cohort's admissions, with the HCUP CCS 2015 group of each code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from lit_info.data.mimic3.episodes import divisor
from lit_info.data.mimic3.tables import (
    parse_float,
    parse_int,
    parse_time,
    read_table,
    require_unique,
)

__all__ = [
    "Cohort",
    "build_cohort",
    "hcup_groups",
    "phenotype_label_matrix",
    "read_cohort_tables",
]

STAY_COLUMNS = (
    "SUBJECT_ID",
    "HADM_ID",
    "ICUSTAY_ID",
    "LAST_CAREUNIT",
    "DBSOURCE",
    "INTIME",
    "OUTTIME",
    "LOS",
    "ADMITTIME",
    "DISCHTIME",
    "DEATHTIME",
    "ETHNICITY",
    "DIAGNOSIS",
    "GENDER",
    "DOB",
    "DOD",
    "AGE",
    "MORTALITY_INUNIT",
    "MORTALITY",
    "MORTALITY_INHOSPITAL",
)


@dataclass
class Cohort:
    """The cohort's stays and diagnoses, the counts after each filter and the drops per table."""

    stays: pl.DataFrame
    diagnoses: pl.DataFrame
    steps: dict[str, dict[str, int]]
    tables: dict[str, dict] = field(default_factory=dict)


def read_cohort_tables(mimic_dir: str | Path) -> dict[str, pl.DataFrame]:
    """Read and type PATIENTS, ADMISSIONS, ICUSTAYS, DIAGNOSES_ICD and D_ICD_DIAGNOSES.

    Raises:
        Mimic3InputError: for a missing table or column, an unparseable id, time or number, or a
            repeated key (the message names the table, column and row).
    """
    patients = read_table(mimic_dir, "PATIENTS")
    patients = patients.with_columns(
        parse_int(patients, "SUBJECT_ID", "PATIENTS", required=True),
        parse_time(patients, "DOB", "PATIENTS", required=True),
        parse_time(patients, "DOD", "PATIENTS"),
    )
    require_unique(patients, ["SUBJECT_ID"], "PATIENTS")

    admissions = read_table(mimic_dir, "ADMISSIONS")
    admissions = admissions.with_columns(
        parse_int(admissions, "SUBJECT_ID", "ADMISSIONS", required=True),
        parse_int(admissions, "HADM_ID", "ADMISSIONS", required=True),
        parse_time(admissions, "ADMITTIME", "ADMISSIONS", required=True),
        parse_time(admissions, "DISCHTIME", "ADMISSIONS", required=True),
        parse_time(admissions, "DEATHTIME", "ADMISSIONS"),
    )
    require_unique(admissions, ["HADM_ID"], "ADMISSIONS")

    icustays = read_table(mimic_dir, "ICUSTAYS")
    icustays = icustays.with_columns(
        parse_int(icustays, "SUBJECT_ID", "ICUSTAYS", required=True),
        parse_int(icustays, "HADM_ID", "ICUSTAYS", required=True),
        parse_int(icustays, "ICUSTAY_ID", "ICUSTAYS", required=True),
        parse_int(icustays, "FIRST_WARDID", "ICUSTAYS"),
        parse_int(icustays, "LAST_WARDID", "ICUSTAYS"),
        parse_time(icustays, "INTIME", "ICUSTAYS", required=True),
        parse_time(icustays, "OUTTIME", "ICUSTAYS"),
        parse_float(icustays, "LOS", "ICUSTAYS"),
    )
    require_unique(icustays, ["ICUSTAY_ID"], "ICUSTAYS")

    codes = read_table(mimic_dir, "D_ICD_DIAGNOSES")
    diagnoses = read_table(mimic_dir, "DIAGNOSES_ICD")
    diagnoses = diagnoses.with_columns(
        parse_int(diagnoses, "SUBJECT_ID", "DIAGNOSES_ICD", required=True),
        parse_int(diagnoses, "HADM_ID", "DIAGNOSES_ICD", required=True),
    )
    return {
        "PATIENTS": patients,
        "ADMISSIONS": admissions,
        "ICUSTAYS": icustays,
        "DIAGNOSES_ICD": diagnoses,
        "D_ICD_DIAGNOSES": codes,
    }


def _counts(stays: pl.DataFrame) -> dict[str, int]:
    return {
        "icu_stays": stays["ICUSTAY_ID"].n_unique(),
        "admissions": stays["HADM_ID"].n_unique(),
        "subjects": stays["SUBJECT_ID"].n_unique(),
    }


def hcup_groups(definitions: dict) -> tuple[dict[str, str], list[str]]:
    """``code -> HCUP group`` and the sorted names of the groups used in the benchmark.

    Raises:
        ValueError: when a code belongs to two groups (the definitions must be a partition).
    """
    code_to_group: dict[str, str] = {}
    for group, spec in definitions.items():
        for code in spec["codes"]:
            if code_to_group.setdefault(str(code), group) != group:
                raise ValueError(
                    f"HCUP definitions: code {code} is in {code_to_group[code]!r} and {group!r}"
                )
    benchmark = sorted(group for group, spec in definitions.items() if spec["use_in_benchmark"])
    return code_to_group, benchmark


def build_cohort(tables: dict[str, pl.DataFrame], definitions: dict) -> Cohort:
    """Apply the paper's cohort filters; label mortality; attach diagnoses and HCUP groups.

    Args:
        tables: the output of :func:`read_cohort_tables`.
        definitions: the HCUP CCS 2015 definitions (``hcup_ccs_2015_definitions.yaml``).

    Returns:
        The :class:`Cohort`, with the per-table input / kept / dropped row counts.
    """
    icustays = tables["ICUSTAYS"]
    admissions = tables["ADMISSIONS"].select(
        "SUBJECT_ID", "HADM_ID", "ADMITTIME", "DISCHTIME", "DEATHTIME", "ETHNICITY", "DIAGNOSIS"
    )
    patients = tables["PATIENTS"].select("SUBJECT_ID", "GENDER", "DOB", "DOD")
    steps = {"all ICU stays": _counts(icustays)}
    dropped: dict[str, int] = {}

    no_transfer = (pl.col("FIRST_WARDID") == pl.col("LAST_WARDID")) & (
        pl.col("FIRST_CAREUNIT") == pl.col("LAST_CAREUNIT")
    )
    stays = icustays.filter(no_transfer.fill_null(False))
    dropped["ward or care-unit transfer"] = icustays.height - stays.height
    steps["no ward or care-unit transfer"] = _counts(stays)
    stays = stays.select(
        "SUBJECT_ID",
        "HADM_ID",
        "ICUSTAY_ID",
        "LAST_CAREUNIT",
        "DBSOURCE",
        "INTIME",
        "OUTTIME",
        "LOS",
    )

    joined = stays.join(
        admissions, on=["SUBJECT_ID", "HADM_ID"], how="inner", maintain_order="left"
    )
    dropped["admission not in ADMISSIONS"] = stays.height - joined.height
    stays = joined
    joined = stays.join(patients, on="SUBJECT_ID", how="inner", maintain_order="left")
    dropped["subject not in PATIENTS"] = stays.height - joined.height
    stays = joined

    per_admission = stays.group_by("HADM_ID").len()
    single = per_admission.filter(pl.col("len") == 1).select("HADM_ID")
    kept = stays.join(single, on="HADM_ID", how="semi", maintain_order="left")
    dropped["admission with several ICU stays"] = stays.height - kept.height
    stays = kept
    steps["one ICU stay per admission"] = _counts(stays)

    # exact divisions (a materialized divisor: polars divides by a scalar via its reciprocal)
    micros = (pl.col("INTIME") - pl.col("DOB")).dt.total_microseconds().cast(pl.Float64)
    by = {d: divisor(stays, d) for d in (1e6, 3600.0, 24.0, 365.0)}
    age = micros / by[1e6] / by[3600.0] / by[24.0] / by[365.0]
    stays = stays.with_columns(pl.when(age < 0).then(90.0).otherwise(age).alias("AGE"))

    def within(time: str, start: str, end: str) -> pl.Expr:
        return (
            pl.col(time).is_not_null()
            & (pl.col(start) <= pl.col(time))
            & (pl.col(end) >= pl.col(time))
        ).fill_null(False)

    in_unit = within("DOD", "INTIME", "OUTTIME") | within("DEATHTIME", "INTIME", "OUTTIME")
    in_hospital = within("DOD", "ADMITTIME", "DISCHTIME") | within(
        "DEATHTIME", "ADMITTIME", "DISCHTIME"
    )
    stays = stays.with_columns(
        in_unit.cast(pl.Int64).alias("MORTALITY_INUNIT"),
        in_hospital.cast(pl.Int64).alias("MORTALITY"),
        in_hospital.cast(pl.Int64).alias("MORTALITY_INHOSPITAL"),
    )
    adults = stays.filter(pl.col("AGE") >= 18)
    dropped["age below 18"] = stays.height - adults.height
    stays = adults.select(STAY_COLUMNS)
    steps["adults (age >= 18)"] = _counts(stays)

    table_report = {
        "ICUSTAYS": _reconcile(icustays.height, stays.height, dropped),
        "ADMISSIONS": _reconcile(
            tables["ADMISSIONS"].height,
            stays["HADM_ID"].n_unique(),
            {
                "no ICU stay in the cohort": tables["ADMISSIONS"].height
                - stays["HADM_ID"].n_unique()
            },
        ),
        "PATIENTS": _reconcile(
            patients.height,
            stays["SUBJECT_ID"].n_unique(),
            {"no ICU stay in the cohort": patients.height - stays["SUBJECT_ID"].n_unique()},
        ),
    }
    diagnoses, diagnosis_report = _cohort_diagnoses(tables, stays, definitions)
    table_report["DIAGNOSES_ICD"] = diagnosis_report
    return Cohort(stays=stays, diagnoses=diagnoses, steps=steps, tables=table_report)


def _reconcile(input_rows: int, kept_rows: int, dropped: dict[str, int]) -> dict:
    """A report entry; raises when ``input != kept + dropped`` (a bug, never bad input)."""
    if input_rows != kept_rows + sum(dropped.values()):
        raise AssertionError(
            f"row counts do not reconcile: {input_rows} != {kept_rows} + {dropped}"
        )
    return {"input_rows": input_rows, "kept_rows": kept_rows, "dropped": dict(dropped)}


def _cohort_diagnoses(
    tables: dict[str, pl.DataFrame], stays: pl.DataFrame, definitions: dict
) -> tuple[pl.DataFrame, dict]:
    """Diagnoses of the cohort's admissions with their stay, title and HCUP group."""
    raw = tables["DIAGNOSES_ICD"]
    codes = tables["D_ICD_DIAGNOSES"].select("ICD9_CODE", "SHORT_TITLE", "LONG_TITLE")
    codes = codes.unique(subset="ICD9_CODE", keep="first", maintain_order=True)
    known = raw.join(codes, on="ICD9_CODE", how="inner", maintain_order="left")
    dropped = {"ICD9_CODE not in D_ICD_DIAGNOSES": raw.height - known.height}
    known = known.with_columns(parse_int(known, "SEQ_NUM", "DIAGNOSES_ICD", required=True))
    keys = stays.select("SUBJECT_ID", "HADM_ID", "ICUSTAY_ID").unique(maintain_order=True)
    diagnoses = known.join(keys, on=["SUBJECT_ID", "HADM_ID"], how="inner", maintain_order="left")
    dropped["admission not in the cohort"] = known.height - diagnoses.height

    code_to_group, _ = hcup_groups(definitions)
    use = {group: int(bool(spec["use_in_benchmark"])) for group, spec in definitions.items()}
    group = diagnoses["ICD9_CODE"].replace_strict(
        code_to_group, default=None, return_dtype=pl.String
    )
    diagnoses = diagnoses.with_columns(
        group.alias("HCUP_CCS_2015"),
        group.replace_strict(use, default=None, return_dtype=pl.Int64).alias("USE_IN_BENCHMARK"),
    ).select(
        "SUBJECT_ID",
        "HADM_ID",
        "SEQ_NUM",
        "ICD9_CODE",
        "SHORT_TITLE",
        "LONG_TITLE",
        "ICUSTAY_ID",
        "HCUP_CCS_2015",
        "USE_IN_BENCHMARK",
    )
    return diagnoses, _reconcile(raw.height, diagnoses.height, dropped)


def phenotype_label_matrix(diagnoses: pl.DataFrame, stays: pl.DataFrame) -> pl.DataFrame:
    """0/1 matrix of the benchmark HCUP groups per cohort stay (rows sorted by ``ICUSTAY_ID``).

    Columns are the groups that occur among the cohort's benchmark diagnoses, sorted, as the
    authors' ``phenotype_labels.csv``; stays without such a diagnosis are all zeros.
    """
    used = (
        diagnoses.filter(pl.col("USE_IN_BENCHMARK") > 0)
        .select("ICUSTAY_ID", "HCUP_CCS_2015")
        .unique()
    )
    groups = sorted(used["HCUP_CCS_2015"].unique().to_list())
    matrix = stays.select("ICUSTAY_ID").sort("ICUSTAY_ID")
    for name in groups:
        members = used.filter(pl.col("HCUP_CCS_2015") == name)["ICUSTAY_ID"]
        matrix = matrix.with_columns(
            pl.col("ICUSTAY_ID").is_in(members.implode()).cast(pl.Int64).alias(name)
        )
    return matrix.drop("ICUSTAY_ID")
