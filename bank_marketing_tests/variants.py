"""Files built at test time from the real bank-full.csv: the other published forms, broken ones."""

from __future__ import annotations

import io
import random
import zipfile

from bank_marketing.data.fields import UNKNOWN_ALLOWED


def lines_of(content: bytes) -> list[str]:
    return content.decode().splitlines()


def join(lines: list[str]) -> bytes:
    return ("\r\n".join(lines) + "\r\n").encode()


def nested_zip(content: bytes) -> bytes:
    """UCI's bank+marketing.zip: bank.zip (holding bank-full.csv) beside bank-additional.zip."""
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("bank-names.txt", "Bank Marketing\n")
        archive.writestr("bank-full.csv", content)
    other = io.BytesIO()
    with zipfile.ZipFile(other, "w") as archive:
        archive.writestr("bank-additional/bank-additional-full.csv", "age;job\n")
    outer = io.BytesIO()
    with zipfile.ZipFile(outer, "w") as archive:
        archive.writestr("bank-additional.zip", other.getvalue())
        archive.writestr("bank.zip", inner.getvalue())
    return outer.getvalue()


def flat_form(content: bytes) -> bytes:
    """UCI's data.csv: comma-separated, day_of_week for day, empty fields for 'unknown'."""
    lines = lines_of(content)
    header = lines[0].split(";")
    blank = [header.index(c) for c in UNKNOWN_ALLOWED]
    out = [",".join("day_of_week" if h == "day" else h for h in header)]
    for line in lines[1:]:
        fields = line.split(";")
        for i in blank:
            if fields[i] == "unknown":
                fields[i] = ""
        out.append(",".join(fields))
    return ("\n".join(out) + "\n").encode()


def set_field(content: bytes, column: str, value: str, data_lines: list[int]) -> bytes:
    """Set ``column`` to ``value`` on the given file line numbers (the header is line 1)."""
    lines = lines_of(content)
    index = lines[0].split(";").index(column)
    for number in data_lines:
        fields = lines[number - 1].split(";")
        fields[index] = value
        lines[number - 1] = ";".join(fields)
    return join(lines)


def shuffled(content: bytes, seed: int = 7) -> bytes:
    lines = lines_of(content)
    body = lines[1:]
    random.Random(seed).shuffle(body)
    return join([lines[0], *body])
