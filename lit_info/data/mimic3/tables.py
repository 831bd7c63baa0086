"""Reading the raw MIMIC-III v1.4 tables: location, columns, types, streaming, one-line errors.

Every table is read with all columns as text (``polars``, no type inference) and converted here,
so that a bad value is reported with the table, the column and its data-row number (1-based,
the header not counted) instead of being coerced or dropped silently. File names may be
upper-case (the full v1.4 export: ``CHARTEVENTS.csv``) or lower-case (the PhysioNet demo
release), plain ``.csv`` or ``.csv.gz``; header names are compared case-insensitively.

The event tables (CHARTEVENTS is about 33 GB) are never read whole: :func:`event_batches`
streams them in batches of a given number of rows with polars' streaming engine (gzip is
decompressed on the fly; a truncated archive is an error naming the file).

Missing values follow the authors' pandas reading: an empty field or one of pandas' default
NA strings (``NA``, ``N/A``, ``NULL``, ``nan``, ...) is missing, so rows that their pipeline drops
for a missing value are dropped (and counted) here too.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import polars as pl

__all__ = [
    "EVENT_TABLES",
    "NA_STRINGS",
    "TABLE_COLUMNS",
    "TIME_FORMAT",
    "Mimic3InputError",
    "event_batches",
    "find_table",
    "parse_float",
    "parse_int",
    "parse_time",
    "read_table",
    "require_unique",
    "table_columns",
]

TIME_FORMAT = "%Y-%m-%d %H:%M:%S"

# pandas' default ``na_values`` (``pandas.io.parsers.STR_NA_VALUES``): the strings the authors'
# pipeline reads as missing. Kept literal so the behaviour does not change with pandas.
NA_STRINGS: tuple[str, ...] = (
    "",
    "#N/A",
    "#N/A N/A",
    "#NA",
    "-1.#IND",
    "-1.#QNAN",
    "-NaN",
    "-nan",
    "1.#IND",
    "1.#QNAN",
    "<NA>",
    "N/A",
    "NA",
    "NULL",
    "NaN",
    "None",
    "n/a",
    "nan",
    "null",
)

# The columns the pipeline reads from each table (others are ignored).
TABLE_COLUMNS: dict[str, tuple[str, ...]] = {
    "PATIENTS": ("SUBJECT_ID", "GENDER", "DOB", "DOD"),
    "ADMISSIONS": (
        "SUBJECT_ID",
        "HADM_ID",
        "ADMITTIME",
        "DISCHTIME",
        "DEATHTIME",
        "ETHNICITY",
        "DIAGNOSIS",
    ),
    "ICUSTAYS": (
        "SUBJECT_ID",
        "HADM_ID",
        "ICUSTAY_ID",
        "DBSOURCE",
        "FIRST_CAREUNIT",
        "LAST_CAREUNIT",
        "FIRST_WARDID",
        "LAST_WARDID",
        "INTIME",
        "OUTTIME",
        "LOS",
    ),
    "DIAGNOSES_ICD": ("SUBJECT_ID", "HADM_ID", "SEQ_NUM", "ICD9_CODE"),
    "D_ICD_DIAGNOSES": ("ICD9_CODE", "SHORT_TITLE", "LONG_TITLE"),
    "CHARTEVENTS": (
        "SUBJECT_ID",
        "HADM_ID",
        "ICUSTAY_ID",
        "ITEMID",
        "CHARTTIME",
        "VALUE",
        "VALUEUOM",
    ),
    "LABEVENTS": ("SUBJECT_ID", "HADM_ID", "ITEMID", "CHARTTIME", "VALUE", "VALUEUOM"),
    "OUTPUTEVENTS": (
        "SUBJECT_ID",
        "HADM_ID",
        "ICUSTAY_ID",
        "ITEMID",
        "CHARTTIME",
        "VALUE",
        "VALUEUOM",
    ),
}

EVENT_TABLES: tuple[str, ...] = ("CHARTEVENTS", "LABEVENTS", "OUTPUTEVENTS")


class Mimic3InputError(ValueError):
    """A raw MIMIC-III table is missing, damaged or holds a value that cannot be read.

    The message is one line naming the file, the column and (for a value) the data row.
    """


def find_table(mimic_dir: str | Path, table: str) -> Path:
    """The file of ``table`` in ``mimic_dir``: ``TABLE.csv``, ``TABLE.csv.gz`` or lower case.

    Raises:
        Mimic3InputError: when none of them exists (the message lists the names looked for).
    """
    folder = Path(mimic_dir)
    if not folder.is_dir():
        raise Mimic3InputError(f"--mimic-dir {folder}: no such folder")
    names = [f"{base}{suffix}" for base in (table, table.lower()) for suffix in (".csv", ".csv.gz")]
    for name in names:
        if (folder / name).is_file():
            return folder / name
    raise Mimic3InputError(f"{folder}: table {table} is missing (looked for {', '.join(names)})")


def table_columns(path: Path, table: str) -> dict[str, str]:
    """Map upper-cased header names to the file's own names; check the needed ones are there.

    Raises:
        Mimic3InputError: for an unreadable file or header, or missing columns (named).
    """
    try:
        names = pl.scan_csv(path, infer_schema=False, n_rows=0).collect_schema().names()
    except Exception as error:  # polars raises several types for damaged files
        raise Mimic3InputError(
            f"{path}: cannot read the header of {table} ({_short(error)})"
        ) from None
    by_upper = {name.strip().upper(): name for name in names}
    missing = [column for column in TABLE_COLUMNS[table] if column not in by_upper]
    if missing:
        raise Mimic3InputError(
            f"{path}: {table} lacks the column(s) {', '.join(missing)} "
            f"(found {', '.join(names[:20])})"
        )
    return by_upper


def _lazy(path: Path, table: str) -> pl.LazyFrame:
    """The needed columns of ``table`` as text, renamed to upper case, with a row number."""
    by_upper = table_columns(path, table)
    columns = TABLE_COLUMNS[table]
    return (
        pl.scan_csv(path, infer_schema=False, null_values=list(NA_STRINGS))
        .with_row_index("ROW", offset=1)
        .select(["ROW", *[pl.col(by_upper[column]).alias(column) for column in columns]])
    )


def read_table(mimic_dir: str | Path, table: str) -> pl.DataFrame:
    """Read a small table (everything but the event tables) whole, all columns as text.

    Raises:
        Mimic3InputError: for a missing or damaged file or missing columns.
    """
    path = find_table(mimic_dir, table)
    try:
        return _lazy(path, table).collect()
    except Mimic3InputError:
        raise
    except Exception as error:
        raise Mimic3InputError(f"{path}: cannot read {table} ({_short(error)})") from None


def event_batches(path: Path, table: str, batch_rows: int) -> Iterator[pl.DataFrame]:
    """Stream an event table in batches of about ``batch_rows`` rows (text columns + ``ROW``).

    Raises:
        Mimic3InputError: for a damaged file (for example a truncated gzip archive).
    """
    lazy = _lazy(path, table)
    if "ICUSTAY_ID" not in TABLE_COLUMNS[table]:
        lazy = lazy.with_columns(pl.lit(None, dtype=pl.String).alias("ICUSTAY_ID"))
    try:
        yield from lazy.collect_batches(chunk_size=batch_rows)
    except Mimic3InputError:
        raise
    except Exception as error:
        kind = "truncated or damaged gzip archive" if path.suffix == ".gz" else "damaged file"
        raise Mimic3InputError(f"{path}: cannot read {table}: {kind} ({_short(error)})") from None


def _short(error: BaseException) -> str:
    """The first line of an exception's message, shortened."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return text[:200]


def _first_bad(frame: pl.DataFrame, column: str, parsed: pl.Series) -> tuple[int, str] | None:
    """(row, text) of the first value of ``column`` that is present but did not parse."""
    bad = frame[column].is_not_null() & parsed.is_null()
    if not bad.any():
        return None
    index = int(bad.arg_true()[0])
    return int(frame["ROW"][index]), str(frame[column][index])


def parse_int(frame: pl.DataFrame, column: str, table: str, *, required: bool = False) -> pl.Series:
    """``column`` as Int64; an unparseable (or, when ``required``, missing) value is an error.

    Raises:
        Mimic3InputError: naming the table, column, data row and the offending text.
    """
    text = frame[column].str.strip_chars()
    parsed = text.cast(pl.Int64, strict=False)
    if (parsed.is_null() & text.is_not_null()).any():
        # ids written as floats by some exports ("1234.0"); only then parsed a second time
        as_float = text.cast(pl.Float64, strict=False)
        whole = as_float.is_not_null() & (as_float == as_float.round(0)) & (as_float.abs() < 2**53)
        parsed = pl.select(
            pl.when(parsed.is_null() & whole)
            .then(as_float.cast(pl.Int64, strict=False))
            .otherwise(parsed)
        ).to_series()
    bad = _first_bad(frame, column, parsed)
    if bad is not None:
        raise Mimic3InputError(
            f"{table}: column {column}, row {bad[0]}: {bad[1]!r} is not an integer"
        )
    if required and parsed.null_count():
        row = int(frame["ROW"][int(parsed.is_null().arg_true()[0])])
        raise Mimic3InputError(f"{table}: column {column}, row {row}: the value is missing")
    return parsed.alias(column)


def parse_float(frame: pl.DataFrame, column: str, table: str) -> pl.Series:
    """``column`` as Float64 (missing stays missing); an unparseable value is an error.

    Raises:
        Mimic3InputError: naming the table, column, data row and the offending text.
    """
    parsed = frame[column].str.strip_chars().cast(pl.Float64, strict=False)
    bad = _first_bad(frame, column, parsed)
    if bad is not None:
        raise Mimic3InputError(
            f"{table}: column {column}, row {bad[0]}: {bad[1]!r} is not a number"
        )
    return parsed.alias(column)


def parse_time(
    frame: pl.DataFrame, column: str, table: str, *, required: bool = False
) -> pl.Series:
    """``column`` as Datetime (``YYYY-MM-DD HH:MM:SS``, or a date alone at midnight).

    Raises:
        Mimic3InputError: for a timestamp in another format (table, column, row, text given),
            or a missing one where ``required``.
    """
    text = frame[column].str.strip_chars()
    full = text.str.to_datetime(TIME_FORMAT, strict=False, time_unit="us")
    date_only = text.str.to_datetime("%Y-%m-%d", strict=False, time_unit="us")
    parsed = full.fill_null(date_only)
    bad = _first_bad(frame, column, parsed)
    if bad is not None:
        raise Mimic3InputError(
            f"{table}: column {column}, row {bad[0]}: {bad[1]!r} is not a timestamp "
            "(expected YYYY-MM-DD HH:MM:SS)"
        )
    if required and parsed.null_count():
        row = int(frame["ROW"][int(parsed.is_null().arg_true()[0])])
        raise Mimic3InputError(f"{table}: column {column}, row {row}: the timestamp is missing")
    return parsed.alias(column)


def require_unique(frame: pl.DataFrame, columns: Sequence[str], table: str) -> None:
    """Raise when the key ``columns`` repeat (the cohort joins rely on unique keys).

    Raises:
        Mimic3InputError: naming the table, the key and the first repeated value's row.
    """
    duplicated = frame.select(pl.struct(list(columns)).is_duplicated()).to_series()
    if duplicated.any():
        row = int(frame["ROW"][int(duplicated.arg_true()[0])])
        raise Mimic3InputError(
            f"{table}: {'+'.join(columns)} repeats (row {row}); the table must have one row per key"
        )
