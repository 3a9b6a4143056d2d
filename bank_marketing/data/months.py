"""Recovering each contact's calendar month from the order of the rows.

``bank-full.csv`` is ordered by date from May 2008 to November 2010 but carries no year. The year
starts at 2008 and goes up by one each time the month number goes down from one row to the next.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bank_marketing.data.fields import MONTHS

FIRST_YEAR = 2008


def recover_months(month_names: pd.Series, first_year: int = FIRST_YEAR) -> pd.Series:
    """The first day of each row's month (``datetime64``), from the month names in file order.

    Month names must be UCI's three-letter lower-case names; the caller validates them first.
    """
    numbers = month_names.map({name: i + 1 for i, name in enumerate(MONTHS)})
    if numbers.isna().any():
        bad = month_names[numbers.isna()].unique()[:5].tolist()
        raise ValueError(f"unknown month names {bad}; expected one of {list(MONTHS)}")
    month_number = numbers.to_numpy(dtype=np.int64)
    went_down = np.concatenate([[0], (np.diff(month_number) < 0).astype(np.int64)])
    year = first_year + np.cumsum(went_down)
    starts = pd.to_datetime({"year": year, "month": month_number, "day": 1})
    return pd.Series(starts.to_numpy(), index=month_names.index, name="contact_month")


FIRST_MONTH = pd.Timestamp("2008-05-01")
LAST_MONTH = pd.Timestamp("2010-11-01")


class MonthOrderError(ValueError):
    """Rows are not in date order, so the recovered months leave the data's period."""


def check_months_in_range(
    months: pd.Series, month_names: pd.Series, where: str, examples: int = 5
) -> None:
    """Raise :class:`MonthOrderError` naming the first rows whose recovered month is out of range.

    The file carries no year: a file whose rows are not in date order (shuffled, sorted by another
    column, appended to) gives years that run past the end of the data, which is how it shows.
    """
    outside = (months < FIRST_MONTH) | (months > LAST_MONTH)
    if not outside.any():
        return
    rows = months[outside]
    shown = ", ".join(
        f"line {line}: {month_names[line]!r} -> {month:%Y-%m}"
        for line, month in rows.head(examples).items()
    )
    raise MonthOrderError(
        f"{where}: column 'month': {int(outside.sum())} row(s) fall outside "
        f"{FIRST_MONTH:%Y-%m}..{LAST_MONTH:%Y-%m} when the year is recovered from row order "
        f"(it starts at {FIRST_YEAR} and goes up each time the month goes down), e.g. {shown}. "
        f"The rows must stay in the file's original date order (the recovered months run up to "
        f"{months.max():%Y-%m})."
    )
