"""Features inside the model: every candidate is one sklearn Pipeline that takes raw contacts.

The preprocessing is part of the logged model, so serving needs nothing else and cannot skew
from training. Categories are one-hot encoded over every value UCI allows; a value never seen
at all (not in ``fields.py``) encodes as all zeros instead of failing.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.compose import ColumnTransformer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from bank_marketing.data.fields import FIELDS_BY_NAME, LABEL

# The original project's inputs; marital, education, default, loan and duration are left out.
DEFAULT_INPUTS: tuple[str, ...] = (
    "age", "job", "balance", "housing", "contact", "day", "month", "campaign", "pdays",
    "previous", "poutcome",
)  # fmt: skip


def check_inputs(inputs: Sequence[str]) -> tuple[list[str], list[str]]:
    """The numeric and categorical inputs, refusing unknown columns and after-the-call fields."""
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
    numeric = [name for name in inputs if FIELDS_BY_NAME[name].is_numeric]
    categorical = [name for name in inputs if not FIELDS_BY_NAME[name].is_numeric]
    return numeric, categorical


def build_pipeline(
    inputs: Sequence[str], estimator: BaseEstimator, *, scale_numeric: bool
) -> Pipeline:
    """Preprocessing plus ``estimator``, taking a frame of raw contact records."""
    numeric, categorical = check_inputs(inputs)
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
    preprocess = ColumnTransformer(transformers, remainder="drop", verbose_feature_names_out=False)
    return Pipeline([("preprocess", preprocess), ("model", estimator)])


def labels(frame: pd.DataFrame) -> np.ndarray:
    """1 where the client subscribed (``y == "yes"``), else 0."""
    return (frame[LABEL] == "yes").to_numpy(dtype=np.int64)
