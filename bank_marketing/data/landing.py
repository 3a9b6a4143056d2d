"""Monthly extracts in the landing location: one calendar month of contacts per file.

A bank's monthly extract carries no year in its rows (UCI's ``month`` column is a month name), so
the file's name says which month it holds (``contacts-2009-01.csv``): the rows must all carry that
month's name. Any form the loader reads (the zip, ``bank-full.csv``, ``data.csv``) may land.
Plain Python (no Dagster): the arrival sensor, the ``contacts`` asset and ``bank-marketing land``
share it.
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
    """One landed file read as typed contacts of the month its name gives.

    ``frame`` holds UCI's 17 columns typed as the loader types them, plus ``contact_month`` (the
    name's month on every row), indexed by ``line``: the record's line in the landed file (the
    header is line 1), not its line in the whole history. ``sha256`` is the digest of the bytes
    the frame was read from; ``form`` is the loader's name of the CSV form (``bank-full.csv`` or
    ``data.csv``).
    """

    path: Path
    month: pd.Timestamp
    sha256: str
    frame: pd.DataFrame
    form: str


def month_in_name(path: Path) -> pd.Timestamp | None:
    """The month the file's name holds (its first ``YYYY-MM``, as the month's first day), or None.

    The rows carry no year, so the name is what places a file in time; ``2009-13`` is no month.
    """
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
    """The regular files directly in ``folder``, by name; none when it is absent.

    Hidden files (``.name.partial``) are writes still under way, so they are not landed yet.
    """
    if not folder.is_dir():
        return []
    return sorted(
        path for path in folder.iterdir() if path.is_file() and not path.name.startswith(".")
    )


def _valid_range(first: pd.Timestamp = FIRST_MONTH, last: pd.Timestamp = LAST_MONTH) -> str:
    return f"{first:%Y-%m}..{last:%Y-%m}"


def read_landed(
    path: Path,
    cache_dir: Path,
    first: pd.Timestamp = FIRST_MONTH,
    last: pd.Timestamp = LAST_MONTH,
) -> LandedMonth:
    """Read a landed file as the month its name gives.

    Raises :class:`LandingError` when the name holds no month of ``first..last`` (checked before
    the file is read) or any row carries another month's name, and the loader's ``SourceError``
    unchanged when the file is not readable contacts.
    """
    month = month_in_name(path)
    valid = _valid_range(first, last)
    if month is None:
        raise LandingError(
            f"{path.name} names no month: expected YYYY-MM in the file name, a month of {valid}."
        )
    if not first <= month <= last:
        raise LandingError(f"{path.name} names {month:%Y-%m}, outside the data's months {valid}.")
    loaded = load_contacts(str(path), cache_dir)
    name = MONTHS[month.month - 1]
    counts = loaded.frame["month"].value_counts()
    if set(counts.index) != {name}:
        # The loader admits only the twelve names, so each has a place in the calendar.
        found = sorted(counts.items(), key=lambda item: (-item[1], MONTHS.index(item[0])))
        said = ", ".join(f"{label!r} ({count})" for label, count in found)
        other = loaded.rows - int(counts.get(name, 0))
        raise LandingError(
            f"{path.name} names {month:%Y-%m} ({name!r}) but {other} of {loaded.rows} rows are "
            f"of another month: rows say {said}. A landed file holds one month of {valid}, "
            f"every row carrying that month's name."
        )
    frame = loaded.frame.assign(
        contact_month=pd.Series(month, index=loaded.frame.index, dtype="datetime64[ns]")
    )
    return LandedMonth(path, month, loaded.source_sha256, frame, loaded.form)


def cut_months(
    source: str, cache_dir: Path, folder: Path, first: str, through: str | None = None
) -> list[Path]:
    """Write each month ``first..through`` (``YYYY-MM``, inclusive) of the UCI history as a file.

    The history is ``source`` read with the loader, each row's month recovered from row order.
    Each month goes to ``folder/contacts-YYYY-MM.csv`` (``folder`` is created) in
    ``bank-full.csv``'s form: ``;``-separated, strings quoted, a header, UCI's 17 columns. It is
    written to the hidden ``.contacts-YYYY-MM.csv.partial`` first and renamed, so a scanner never
    sees half a file, and the same month always writes the same bytes (so the same digest).

    ``through`` None cuts ``first`` alone. Months outside 2008-05..2010-11, or ``through`` before
    ``first``, raise :class:`LandingError` before anything is read. A month without calls
    (2008-09) gets no file: it is absent from the returned list of the files written.
    """
    start = _month_arg(first)
    end = _month_arg(through) if through is not None else start
    if end < start:
        raise LandingError(
            f"through {through} is before the first month {first}: give months of "
            f"{_valid_range()}, the first not after the last."
        )
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
        try:
            rows[list(COLUMNS)].to_csv(
                partial, sep=";", index=False, quoting=csv.QUOTE_NONNUMERIC, lineterminator="\n"
            )
            os.replace(partial, path)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        written.append(path)
    return written


def _month_arg(text: str) -> pd.Timestamp:
    """A ``YYYY-MM`` argument as the month's first day; it must be a month of the data."""
    if not re.fullmatch(r"\d{4}-\d{2}", text) or month_in_name(Path(text)) is None:
        raise LandingError(
            f"{text!r} is not a month (YYYY-MM); the data's months are {_valid_range()}."
        )
    month = pd.Timestamp(f"{text}-01")
    if not FIRST_MONTH <= month <= LAST_MONTH:
        raise LandingError(f"{text} is outside the data's months {_valid_range()}.")
    return month
