"""Features inside the model: every candidate is one sklearn Pipeline that takes raw contacts.

The preprocessing is part of the logged model, so serving needs nothing else and cannot skew
from training. Categories are one-hot encoded over every value UCI allows; a value never seen
at all (not in ``fields.py``) encodes as all zeros instead of failing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Self

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.compose import ColumnTransformer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from bank_marketing.data.fields import FIELDS_BY_NAME, LABEL, MONTHS

# The original project's inputs; marital, education, default, loan and duration are left out.
DEFAULT_INPUTS: tuple[str, ...] = (
    "age", "job", "balance", "housing", "contact", "day", "month", "campaign", "pdays",
    "previous", "poutcome",
)  # fmt: skip


# The day of the year before each month's first day, in a year without 29 February.
DAYS_BEFORE_MONTH: dict[str, int] = dict(
    zip(MONTHS, np.cumsum([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30]).tolist(), strict=True)
)
CALENDAR_INPUTS = ("month", "day")


def day_of_year(month: str, day: int) -> int:
    """The day of the year (1 to 365) of ``day`` in the month named ``month`` (one of MONTHS).

    Training derives the feature with it row by row and the served model's compiled featurizer
    record by record, so the two cannot drift apart.
    """
    return DAYS_BEFORE_MONTH[month] + day


def previous_contact_day(month: str, day: int, pdays: int) -> int:
    """The day of the year of the contact ``pdays`` days before the call on ``month`` ``day``."""
    return day_of_year(month, day) - pdays


PREVIOUS_CONTACT_INPUTS = (*CALENDAR_INPUTS, "pdays")


class _CalendarFeature(TransformerMixin, BaseEstimator):
    """One feature, ``derive`` of each row's ``inputs``: the month's name first, then numbers."""

    inputs: tuple[str, ...]
    feature_name: str
    derive: Callable[..., int]

    def fit(self, X: pd.DataFrame, y: object = None) -> Self:
        self.n_features_in_ = len(self.inputs)
        return self

    def transform(self, X: pd.DataFrame) -> np.ndarray:
        frame = pd.DataFrame(X, columns=list(self.inputs))
        months = frame["month"]
        unknown = months[~months.isin(DAYS_BEFORE_MONTH)]
        if len(unknown):
            raise ValueError(
                f"month must be one of {list(MONTHS)} to derive the day of the year; got "
                f"{sorted(set(map(str, unknown)))[:5]}"
            )
        numbers = [pd.to_numeric(frame[name], errors="raise").tolist() for name in self.inputs[1:]]
        derived = list(map(self.derive, months.tolist(), *numbers))
        return np.array(derived, dtype=np.float64).reshape(-1, 1)

    def get_feature_names_out(self, input_features: object = None) -> np.ndarray:
        return np.array([self.feature_name], dtype=object)


class DayOfYear(_CalendarFeature):
    """The day of the year of each call (1 to 365), from its ``month`` name and ``day``."""

    inputs = CALENDAR_INPUTS
    feature_name = "day_of_year"
    derive = staticmethod(day_of_year)


class PreviousContactDay(_CalendarFeature):
    """The day of the year of the client's previous contact, counted from the call's year.

    ``day of the year - pdays``: below 1 when the previous campaign reached the client in an
    earlier year, which tells a model something of when the call was made although the year is
    not an input. Clients never contacted before have ``pdays`` -1, so theirs is the day after
    the call; ``pdays`` itself tells a model which clients those are.
    """

    inputs = PREVIOUS_CONTACT_INPUTS
    feature_name = "previous_contact_day_of_year"
    derive = staticmethod(previous_contact_day)


# Every field known before the call: all but duration (and the label).
PRE_CALL_INPUTS: tuple[str, ...] = tuple(
    name for name, field in FIELDS_BY_NAME.items() if not field.known_after_call
)


def check_inputs(
    inputs: Sequence[str], *, day_of_year: bool = False
) -> tuple[list[str], list[str]]:
    """The numeric and categorical inputs, refusing unknown columns and after-the-call fields.

    With ``day_of_year``, also refuses inputs that lack the month or the day it is derived from.
    """
    unknown = [name for name in inputs if name not in FIELDS_BY_NAME]
    if unknown:
        raise ValueError(f"unknown input column(s) {unknown}; choose from {list(FIELDS_BY_NAME)}")
    leaking = [name for name in inputs if FIELDS_BY_NAME[name].known_after_call]
    if leaking:
        raise ValueError(
            f"input column(s) {leaking} are known only after the call (they leak the label) and "
            f"can never be model inputs"
        )
    if len(set(inputs)) != len(inputs) or not inputs:
        raise ValueError(f"inputs must be a non-empty list without repeats: {list(inputs)}")
    missing = [name for name in CALENDAR_INPUTS if name not in inputs]
    if day_of_year and missing:
        raise ValueError(
            f"the day of the year is derived from month and day, and the inputs lack {missing}"
        )
    numeric = [name for name in inputs if FIELDS_BY_NAME[name].is_numeric]
    categorical = [name for name in inputs if not FIELDS_BY_NAME[name].is_numeric]
    return numeric, categorical


def build_pipeline(
    inputs: Sequence[str],
    estimator: BaseEstimator,
    *,
    scale_numeric: bool,
    day_of_year: bool = False,
) -> Pipeline:
    """Preprocessing plus ``estimator``, taking a frame of raw contact records.

    ``day_of_year`` adds the feature ``DayOfYear`` derives from ``month`` and ``day`` (both must
    be inputs) and, when ``pdays`` is an input too, the one ``PreviousContactDay`` derives; both
    scaled like the other numbers.
    """
    numeric, categorical = check_inputs(inputs, day_of_year=day_of_year)
    encoder = OneHotEncoder(
        categories=[list(FIELDS_BY_NAME[name].categories or ()) for name in categorical],
        handle_unknown="ignore",
        sparse_output=False,
        dtype=np.float64,
    )
    transformers = [("categorical", encoder, categorical)]
    if numeric:
        transformers.insert(
            0, ("numeric", StandardScaler() if scale_numeric else "passthrough", numeric)
        )
    if day_of_year:
        transformers.append(
            ("day_of_year", _derived(DayOfYear(), scale_numeric), list(CALENDAR_INPUTS))
        )
        if "pdays" in inputs:
            transformers.append(
                (
                    "previous_contact_day",
                    _derived(PreviousContactDay(), scale_numeric),
                    list(PREVIOUS_CONTACT_INPUTS),
                )
            )
    preprocess = ColumnTransformer(transformers, remainder="drop", verbose_feature_names_out=False)
    return Pipeline([("preprocess", preprocess), ("model", estimator)])


def _derived(transformer: BaseEstimator, scale: bool) -> BaseEstimator:
    if not scale:
        return transformer
    return Pipeline([("derive", transformer), ("scale", StandardScaler())])


def labels(frame: pd.DataFrame) -> np.ndarray:
    """1 where the client subscribed (``y == "yes"``), else 0."""
    return (frame[LABEL] == "yes").to_numpy(dtype=np.int64)
