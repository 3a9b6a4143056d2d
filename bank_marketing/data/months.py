"""Recovering each contact's calendar month from the order of the rows.

``bank-full.csv`` is ordered by date from May 2008 to November 2010 but carries no year. The year
starts at 2008 and goes up by one each time the month number goes down from one row to the next.
A file whose rows are not in date order (shuffled, sorted by another column, appended to) gives
years past the end of the data: that is how a wrong order shows, and it is refused.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bank_marketing.data.fields import MONTHS

FIRST_YEAR = 2008
FIRST_MONTH = pd.Timestamp("2008-05-01")
LAST_MONTH = pd.Timestamp("2010-11-01")
EXAMPLES = 5


class MonthOrderError(ValueError):
    """Rows are not in date order, so the recovered months leave the data's period."""


def recover_months(month_names: pd.Series, where: str = "the file") -> pd.Series:
    """The first day of each row's month (``datetime64``), from the month names in file order.

    Raises :class:`MonthOrderError` when a recovered month falls outside 2008-05 .. 2010-11.
    """
    numbers = month_names.map({name: i + 1 for i, name in enumerate(MONTHS)})
    if numbers.isna().any():
        bad = month_names[numbers.isna()].unique()[:EXAMPLES].tolist()
        raise ValueError(f"unknown month names {bad}; expected one of {list(MONTHS)}")
    month = numbers.to_numpy(dtype=np.int64)
    went_down = np.concatenate([[0], (np.diff(month) < 0).astype(np.int64)])
    year = FIRST_YEAR + np.cumsum(went_down)
    ordinal = pd.Series(year * 12 + month - 1, index=month_names.index)
    first = FIRST_MONTH.year * 12 + FIRST_MONTH.month - 1
    last = LAST_MONTH.year * 12 + LAST_MONTH.month - 1
    outside = (ordinal < first) | (ordinal > last)
    if outside.any():
        raise MonthOrderError(_order_message(ordinal, outside, month_names, where))
    starts = pd.to_datetime({"year": year, "month": month, "day": 1})
    return pd.Series(starts.to_numpy(), index=month_names.index, name="contact_month")


def _order_message(
    ordinal: pd.Series, outside: pd.Series, month_names: pd.Series, where: str
) -> str:
    def label(value: int) -> str:
        return f"{value // 12}-{value % 12 + 1:02d}"

    shown = ", ".join(
        f"line {line}: {month_names[line]!r} -> {label(value)}"
        for line, value in ordinal[outside].head(EXAMPLES).items()
    )
    return (
        f"{where}: column 'month': {int(outside.sum())} row(s) fall outside "
        f"{FIRST_MONTH:%Y-%m}..{LAST_MONTH:%Y-%m} when the year is recovered from row order "
        f"(it starts at {FIRST_YEAR} and goes up each time the month goes down), e.g. {shown}; "
        f"the recovered months run up to {label(int(ordinal.max()))}. The rows must stay in the "
        f"file's original date order."
    )
