"""Monthly extracts in the landing location: one calendar month of contacts per file.

A bank's monthly extract carries no year in its rows (UCI's ``month`` column is a month name), so
the file's name says which month it holds (``contacts-2009-01.csv``): the rows must all carry that
month's name. Any form the loader reads (the zip, ``bank-full.csv``, ``data.csv``) may land.
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from bank_marketing.data.fields import COLUMNS, MONTHS
from bank_marketing.data.months import FIRST_MONTH, LAST_MONTH, recover_months
from bank_marketing.data.source import load_contacts

_MONTH_IN_NAME = re.compile(r"(\d{4})-(\d{2})")
_CHUNK = 1 << 20


class LandingError(ValueError):
    """A landed file cannot be a month of the data: its name or its rows say otherwise."""


@dataclass(frozen=True)
class LandedMonth:
    """One landed file read as typed contacts of the month its name gives."""

    path: Path
    month: pd.Timestamp
    sha256: str
    frame: pd.DataFrame  # UCI's columns and contact_month, indexed by line in the landed file
    form: str


def month_in_name(path: Path) -> pd.Timestamp | None:
    """The month the file's name holds (its first ``YYYY-MM``), or None."""
    found = _MONTH_IN_NAME.search(path.name)
    if found is None or not 1 <= int(found.group(2)) <= 12:
        return None
    return pd.Timestamp(year=int(found.group(1)), month=int(found.group(2)), day=1)


def sha256(path: Path) -> str:
    """The hex digest of the file's bytes: what tells a changed file from one seen before."""
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def landed_files(folder: Path) -> list[Path]:
    """The files in ``folder`` by name; hidden ones (partial writes) are not landed yet."""
    if not folder.is_dir():
        return []
    return sorted(
        path for path in folder.iterdir() if path.is_file() and not path.name.startswith(".")
    )


def _valid_range() -> str:
    return f"{FIRST_MONTH:%Y-%m}..{LAST_MONTH:%Y-%m}"


def read_landed(
    path: Path,
    cache_dir: Path,
    first: pd.Timestamp = FIRST_MONTH,
    last: pd.Timestamp = LAST_MONTH,
) -> LandedMonth:
    """Read a landed file as the month its name gives.

    Raises :class:`LandingError` when the name holds no month of ``first..last`` or the rows are
    of another month, and the loader's ``SourceError`` when the file is not readable contacts.
    """
    month = month_in_name(path)
    if month is None:
        raise LandingError(
            f"{path.name} names no month: expected YYYY-MM in the file name, a month of "
            f"{first:%Y-%m}..{last:%Y-%m}"
        )
    if not first <= month <= last:
        raise LandingError(
            f"{path.name} names {month:%Y-%m}, outside the data's months "
            f"{first:%Y-%m}..{last:%Y-%m}"
        )
    loaded = load_contacts(str(path), cache_dir)
    name = MONTHS[month.month - 1]
    counts = loaded.frame["month"].value_counts()
    other = counts.drop(index=name, errors="ignore")
    if len(other):
        said = ", ".join(f"{label!r} ({count})" for label, count in other.items())
        raise LandingError(
            f"{path.name} names {month:%Y-%m} ({name!r}) but {int(other.sum())} of "
            f"{loaded.rows} rows say {said}"
        )
    frame = loaded.frame.assign(
        contact_month=pd.Series(month, index=loaded.frame.index, dtype="datetime64[ns]")
    )
    return LandedMonth(path, month, sha256(path), frame, loaded.form)


def cut_months(
    source: str, cache_dir: Path, folder: Path, first: str, through: str | None = None
) -> list[Path]:
    """Write each month ``first..through`` (``YYYY-MM``) of the UCI history as a landed file.

    Each month goes to ``folder/contacts-YYYY-MM.csv`` in ``bank-full.csv``'s form, written to a
    hidden file first and renamed, so a scanner never sees half a file; the same month writes the
    same bytes. A month without calls (2008-09) has no file. Returns the files written.
    """
    start = _month_arg(first)
    end = _month_arg(through) if through else start
    if end < start:
        raise LandingError(f"--through {through} is before {first}")
    loaded = load_contacts(source, cache_dir)
    months = recover_months(loaded.frame["month"], loaded.location)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for month in pd.date_range(start, end, freq="MS"):
        rows = loaded.frame[months == month]
        if rows.empty:
            continue
        path = folder / f"contacts-{month:%Y-%m}.csv"
        partial = folder / f".{path.name}.partial"
        rows[list(COLUMNS)].to_csv(
            partial, sep=";", index=False, quoting=csv.QUOTE_NONNUMERIC, lineterminator="\n"
        )
        os.replace(partial, path)
        written.append(path)
    return written


def _month_arg(text: str) -> pd.Timestamp:
    if not re.fullmatch(r"\d{4}-\d{2}", text) or month_in_name(Path(text)) is None:
        raise LandingError(
            f"{text!r} is not a month (YYYY-MM); the data's months are {_valid_range()}"
        )
    month = pd.Timestamp(f"{text}-01")
    if not FIRST_MONTH <= month <= LAST_MONTH:
        raise LandingError(f"{text} is outside the data's months {_valid_range()}")
    return month
