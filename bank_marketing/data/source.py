"""Reading UCI Bank Marketing contacts from any of their published forms into one typed frame.

A source is a local path or an ``http(s)``/``file`` URL to one of:
- UCI's archive ``bank+marketing.zip``, which holds ``bank.zip``, which holds ``bank-full.csv``;
- ``bank-full.csv`` itself (``;``-separated, column ``day``, ``unknown`` for missing answers);
- UCI's flat ``data.csv`` (``,``-separated, column ``day_of_week``, empty missing answers).

Every form gives the same frame: UCI's 17 columns in UCI's order, integers as ``int64``, answers as
strings, indexed by ``line``, the record's line number in the CSV file (the header is line 1).
Anything that is not such a file raises :class:`SourceError` naming the file, the column and
example lines, before anything is written.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from bank_marketing.data.fields import COLUMNS, MONTHS, NUMERIC_COLUMNS, UNKNOWN_ALLOWED

UCI_ARCHIVE_URL = "https://archive.ics.uci.edu/static/public/222/bank+marketing.zip"
CSV_NAME = "bank-full.csv"
INNER_ARCHIVE_NAME = "bank.zip"
EXAMPLES = 5
DOWNLOAD_TIMEOUT_S = 120

_FLAT_RENAMES = {"day_of_week": "day"}


class SourceError(ValueError):
    """The data source cannot be read as UCI Bank Marketing contacts."""


@dataclass(frozen=True)
class LoadedContacts:
    """A typed contacts frame and where it came from."""

    frame: pd.DataFrame
    source: str
    location: str
    form: str
    sha256: str
    source_sha256: str

    @property
    def rows(self) -> int:
        return len(self.frame)


def load_contacts(source: str, cache_dir: Path) -> LoadedContacts:
    """Fetch ``source`` (downloading URLs into ``cache_dir`` once) and read it as typed contacts."""
    path = fetch(source, cache_dir)
    content = _read_file(path)
    try:
        csv_bytes, location = _extract_csv(content, str(path))
        frame, form = parse_contacts_csv(csv_bytes, location)
    except SourceError:
        if _is_url(source):
            # A bad download (an error page, a cut-off archive) must not be served from the cache.
            path.unlink(missing_ok=True)
        raise
    return LoadedContacts(
        frame=frame,
        source=source,
        location=location,
        form=form,
        sha256=hashlib.sha256(csv_bytes).hexdigest(),
        source_sha256=hashlib.sha256(content).hexdigest(),
    )


def fetch(source: str, cache_dir: Path) -> Path:
    """The local file for ``source``: the path itself, or a cached download of the URL."""
    if _is_url(source):
        return _download(source, cache_dir)
    if urllib.parse.urlparse(source).scheme == "file":
        path = Path(urllib.request.url2pathname(urllib.parse.urlparse(source).path))
    else:
        path = Path(source).expanduser()
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "does not exist"
        raise SourceError(
            f"{path}: {what}. Set BANK_MARKETING_SOURCE to the path or URL of UCI's "
            f"bank+marketing.zip, bank-full.csv or data.csv."
        )
    return path


def _is_url(source: str) -> bool:
    return urllib.parse.urlparse(source).scheme in ("http", "https")


def _download(url: str, cache_dir: Path) -> Path:
    name = Path(urllib.parse.unquote(urllib.parse.urlparse(url).path)).name or "download"
    target = cache_dir / name
    if target.is_file():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    # Download beside the target and rename, so an interrupted download never looks cached.
    fd, partial = tempfile.mkstemp(dir=cache_dir, prefix=f".{name}.", suffix=".part")
    try:
        with (
            os.fdopen(fd, "wb") as out,
            urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response,
        ):
            shutil.copyfileobj(response, out)
        os.replace(partial, target)
    except (urllib.error.URLError, TimeoutError, OSError) as error:
        Path(partial).unlink(missing_ok=True)
        raise SourceError(
            f"{url}: download failed ({error}). Without internet, point BANK_MARKETING_SOURCE "
            f"at a local copy of bank-full.csv or bank+marketing.zip."
        ) from error
    return target


def _read_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise SourceError(f"{path}: cannot be read ({error.strerror}).") from error


def _extract_csv(content: bytes, where: str) -> tuple[bytes, str]:
    """The bytes of ``bank-full.csv`` in ``content`` (a CSV, or a zip holding it, maybe nested)."""
    if not content.startswith(b"PK"):
        return content, where
    try:
        archive = zipfile.ZipFile(io.BytesIO(content))
        names = archive.namelist()
        for name in names:
            if Path(name).name == CSV_NAME:
                return archive.read(name), f"{where} > {name}"
        inner = sorted(
            (n for n in names if n.endswith(".zip")),
            key=lambda n: Path(n).name != INNER_ARCHIVE_NAME,
        )
        for name in inner:
            inner_content = archive.read(name)
            found = _find_in_zip(inner_content)
            if found is not None:
                member, data = found
                return data, f"{where} > {name} > {member}"
    except (zipfile.BadZipFile, EOFError) as error:
        raise SourceError(
            f"{where}: not a complete zip archive ({error}); the download may have been cut off."
        ) from error
    raise SourceError(
        f"{where}: the archive holds no {CSV_NAME} (members: {', '.join(names) or 'none'})."
    )


def _find_in_zip(content: bytes) -> tuple[str, bytes] | None:
    with zipfile.ZipFile(io.BytesIO(content)) as archive:
        for name in archive.namelist():
            if Path(name).name == CSV_NAME:
                return name, archive.read(name)
    return None


def parse_contacts_csv(content: bytes, where: str) -> tuple[pd.DataFrame, str]:
    """Parse either CSV form into the typed frame; returns the frame and the form's name."""
    text = _decode(content, where)
    header_line = text.split("\n", 1)[0].rstrip("\r")
    delimiter, form = _detect_form(header_line, where)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    try:
        header = [name.strip() for name in next(reader)]
        records: list[list[str]] = []
        lines: list[int] = []
        short: list[tuple[int, int]] = []
        long: list[tuple[int, int]] = []
        for record in reader:
            if not record:
                continue
            if len(record) != len(header):
                (short if len(record) < len(header) else long).append(
                    (reader.line_num, len(record))
                )
                continue
            records.append(record)
            lines.append(reader.line_num)
    except csv.Error as error:
        raise SourceError(
            f"{where}: line {reader.line_num} cannot be parsed ({error}); "
            f"the file may be truncated."
        ) from error
    if short or long:
        raise SourceError(
            _field_count_message(where, len(header), delimiter, short, long, reader.line_num)
        )
    if not records:
        raise SourceError(f"{where}: the file has a header but no contact records.")

    frame = pd.DataFrame(records, columns=[_FLAT_RENAMES.get(n, n) for n in header])
    frame.index = pd.Index(lines, name="line", dtype="int64")
    frame = frame[list(COLUMNS)]
    for column in frame.columns:
        frame[column] = frame[column].str.strip()
    for column in UNKNOWN_ALLOWED:
        frame[column] = frame[column].mask(frame[column] == "", "unknown")
    _check_month_names(frame, where)
    return _type_numbers(frame, where), form


def _decode(content: bytes, where: str) -> str:
    head = content[:2048].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if head.startswith((b"<!doctype html", b"<html", b"<?xml", b"<head")) or b"<html" in head:
        raise SourceError(
            f"{where}: this is an HTML page, not a CSV file (a proxy, login or error page "
            f"answered instead of the data). Download the data by hand and point "
            f"BANK_MARKETING_SOURCE at the local copy."
        )
    try:
        return content.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise SourceError(
            f"{where}: not a UTF-8 text file (byte {error.start} cannot be decoded); "
            f"expected UCI's bank-full.csv or data.csv."
        ) from error


def _detect_form(header_line: str, where: str) -> tuple[str, str]:
    for delimiter, form in ((";", "bank-full.csv"), (",", "data.csv")):
        names = [n.strip().strip('"') for n in header_line.split(delimiter)]
        if len(names) < 2:
            continue
        renamed = [_FLAT_RENAMES.get(n, n) for n in names]
        missing = [c for c in COLUMNS if c not in renamed]
        extra = [n for n, r in zip(names, renamed, strict=True) if r not in COLUMNS]
        duplicated = sorted({n for n in renamed if renamed.count(n) > 1})
        problems = []
        if missing:
            problems.append(f"missing column(s) {_quoted(missing)}")
        if extra:
            problems.append(f"unexpected column(s) {_quoted(extra)}")
        if duplicated:
            problems.append(f"repeated column(s) {_quoted(duplicated)}")
        if problems:
            raise SourceError(
                f"{where}: header (line 1) has {'; '.join(problems)}. "
                f"Expected the columns {_quoted(COLUMNS)} ('day_of_week' may stand for 'day')."
            )
        return delimiter, form
    raise SourceError(
        f"{where}: the header (line 1) does not split into columns with ';' (bank-full.csv) or "
        f"',' (data.csv): {header_line[:120]!r}. Is the file written with another delimiter?"
    )


def _field_count_message(
    where: str,
    expected: int,
    delimiter: str,
    short: list[tuple[int, int]],
    long: list[tuple[int, int]],
    last_line: int,
) -> str:
    parts = []
    for rows, kind in ((short, "fewer"), (long, "more")):
        if rows:
            examples = ", ".join(f"line {line}: {count}" for line, count in rows[:EXAMPLES])
            parts.append(f"{len(rows)} line(s) have {kind} than {expected} fields ({examples})")
    if not long and len(short) == 1 and short[0][0] == last_line:
        hint = f"the file ends inside line {last_line}: it looks truncated"
    else:
        hint = f"check that every line uses the delimiter {delimiter!r}"

    return f"{where}: {'; '.join(parts)}; {hint}."


def _check_month_names(frame: pd.DataFrame, where: str) -> None:
    bad = ~frame["month"].isin(MONTHS)
    if bad.any():
        raise SourceError(
            f"{where}: column 'month' must hold {_quoted(MONTHS)}, which the calendar month of "
            f"each row is recovered from; {int(bad.sum())} row(s) do not: "
            f"{_examples(frame.loc[bad, 'month'])}."
        )


def _type_numbers(frame: pd.DataFrame, where: str) -> pd.DataFrame:
    problems = []
    for column in NUMERIC_COLUMNS:
        numbers = pd.to_numeric(frame[column], errors="coerce")
        bad = numbers.isna() | (numbers % 1 != 0)
        if bad.any():
            problems.append(
                f"column {column!r} must hold whole numbers; {int(bad.sum())} row(s) do not: "
                f"{_examples(frame.loc[bad, column])}"
            )
            continue
        frame[column] = numbers.astype("int64")
    if problems:
        raise SourceError(f"{where}: " + "; ".join(problems) + ".")
    return frame


def _examples(values: pd.Series) -> str:
    shown = ", ".join(f"line {line}: {value!r}" for line, value in values.head(EXAMPLES).items())
    more = len(values) - EXAMPLES
    return shown + (f" and {more} more" if more > 0 else "")


def _quoted(names: Iterable[str]) -> str:
    return ", ".join(repr(n) for n in names)
