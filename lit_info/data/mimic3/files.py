"""Atomic writes of the benchmark build: a file that exists is complete."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import polars as pl

__all__ = ["TIME_FORMAT_OUT", "atomic_path", "write_csv", "write_text"]

TIME_FORMAT_OUT = "%Y-%m-%d %H:%M:%S"


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A hidden temporary name beside ``path``; renamed to ``path`` if the block succeeds.

    On an error the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    temporary = path.with_name("." + path.name + ".tmp")
    try:
        yield temporary
        temporary.replace(path)
    finally:
        temporary.unlink(missing_ok=True)


def write_csv(frame: pl.DataFrame, path: Path) -> None:
    """``frame`` as CSV (times ``YYYY-MM-DD HH:MM:SS``, missing values empty), atomically."""
    with atomic_path(path) as temporary:
        frame.write_csv(temporary, datetime_format=TIME_FORMAT_OUT, null_value="")


def write_text(path: Path, text: str) -> None:
    """``text`` to ``path``, atomically."""
    with atomic_path(path) as temporary:
        temporary.write_text(text)
