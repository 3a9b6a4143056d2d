"""The compiled featurizer: a fitted preprocessing step as plain lookups over validated records.

Scoring a few records through the whole sklearn pipeline costs milliseconds of pandas and
ColumnTransformer bookkeeping per call, several times the model itself (BENCHMARKS.md, "Serving").
So a loaded model also carries a :class:`Featurizer` compiled from the fitted ColumnTransformer:
plain column lookups that build the same feature matrix from validated records, which goes straight
to the pipeline's remaining steps. It is used only for pipelines whose every part it recognises,
only after it reproduced the pipeline exactly on probe records at load time, and only for records
whose every value it recognises; anything else is scored by the plain pipeline. The derived
calendar features come from the same functions training uses, ``day_of_year`` and
``previous_contact_day``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from math import isfinite
from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

from bank_marketing.data.fields import FIELDS_BY_NAME
from bank_marketing.training.features import (
    DAYS_BEFORE_MONTH,
    DayOfYear,
    PreviousContactDay,
    day_of_year,
    previous_contact_day,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Featurizer:
    """A fitted ColumnTransformer as lookups: numeric columns copied (and scaled), one-hot
    categories set by position, the day of the year and the previous contact's by training's own
    functions. ``transform`` returns None for any record it does not recognise.
    """

    width: int
    numeric: tuple[tuple[str, int], ...]
    categorical: tuple[tuple[str, dict[str, int]], ...]
    # (output positions, mean or None, scale or None) of each StandardScaler.
    scalers: tuple[tuple[np.ndarray, np.ndarray | None, np.ndarray | None], ...] = ()
    # Output positions of the day of the year and the previous contact's, when the pipeline
    # derives them.
    day_of_year: int | None = None
    previous_contact_day: int | None = None

    def transform(self, records: Sequence[dict[str, Any]]) -> np.ndarray | None:
        """The feature matrix of ``records``, or None when a value is not one it knows."""
        rows = []
        for record in records:
            row = [0.0] * self.width
            for name, position in self.numeric:
                value = record.get(name)
                # Exact types: bool is an int subclass, and None, strings or NaN are left to the
                # pipeline, whatever it makes of them.
                if type(value) is not int and (type(value) is not float or not isfinite(value)):
                    return None
                row[position] = value
            for name, positions in self.categorical:
                value = record.get(name)
                if type(value) is not str or value not in positions:
                    return None
                row[positions[value]] = 1.0
            if self.day_of_year is not None or self.previous_contact_day is not None:
                month, day = record.get("month"), record.get("day")
                if type(day) is not int or month not in DAYS_BEFORE_MONTH:
                    return None
                if self.day_of_year is not None:
                    row[self.day_of_year] = day_of_year(month, day)
                if self.previous_contact_day is not None:
                    pdays = record.get("pdays")
                    if type(pdays) is not int:
                        return None
                    row[self.previous_contact_day] = previous_contact_day(month, day, pdays)
            rows.append(row)
        features = np.array(rows, dtype=np.float64).reshape(len(rows), self.width)
        for positions, mean, scale in self.scalers:
            block = features[:, positions]
            if mean is not None:
                block -= mean
            if scale is not None:
                block /= scale
            features[:, positions] = block
        return features


def compile_featurizer(pipeline: Any, inputs: Sequence[str]) -> Featurizer | None:
    """The featurizer of ``pipeline``'s fitted ColumnTransformer, or None if any part is unknown.

    Recognised: a Pipeline whose first step is a dense ColumnTransformer over named input columns
    of numeric passthrough, StandardScaler and OneHotEncoder (no drop, no infrequent categories)
    transformers, and ``DayOfYear`` and ``PreviousContactDay`` (scaled or not); dropped columns
    are ignored.
    """
    if not isinstance(pipeline, Pipeline) or len(pipeline.steps) < 2:
        return None
    preprocess = pipeline.steps[0][1]
    if not isinstance(preprocess, ColumnTransformer) or not hasattr(preprocess, "transformers_"):
        return None
    if getattr(preprocess, "sparse_output_", True):
        return None
    numeric: list[tuple[str, int]] = []
    categorical: list[tuple[str, dict[str, int]]] = []
    scalers = []
    derived: dict[type[DayOfYear | PreviousContactDay], int] = {}
    width = 0
    for name, transformer, columns in preprocess.transformers_:
        if transformer == "drop":
            continue
        where = preprocess.output_indices_[name]
        width = max(width, where.stop)
        if not isinstance(columns, list | tuple) or not all(
            isinstance(c, str) and c in inputs for c in columns
        ):
            return None
        if _is_identity(transformer) or isinstance(transformer, StandardScaler):
            if not all(FIELDS_BY_NAME[c].is_numeric for c in columns):
                return None
            if where.stop - where.start != len(columns):
                return None
            numeric += [(c, where.start + i) for i, c in enumerate(columns)]
            if isinstance(transformer, StandardScaler):
                scalers.append(_scaling(transformer, where))
        elif (kind := _derivation(transformer)) is not None:
            if list(columns) != list(kind.inputs) or where.stop - where.start != 1:
                return None
            if kind in derived:
                return None
            derived[kind] = where.start
            if isinstance(transformer, Pipeline):
                scalers.append(_scaling(transformer.steps[1][1], where))
        elif isinstance(transformer, OneHotEncoder):
            if transformer.drop_idx_ is not None or getattr(
                transformer, "_infrequent_enabled", False
            ):
                return None
            offset = where.start
            for column, categories in zip(columns, transformer.categories_, strict=True):
                if not all(isinstance(c, str) for c in categories):
                    return None
                categorical.append((column, {c: offset + i for i, c in enumerate(categories)}))
                offset += len(categories)
            if offset != where.stop:
                return None
        else:
            return None
    if width != len(numeric) + sum(len(p) for _, p in categorical) + len(derived):
        return None
    featurizer = Featurizer(
        width,
        tuple(numeric),
        tuple(categorical),
        tuple(scalers),
        derived.get(DayOfYear),
        derived.get(PreviousContactDay),
    )
    return featurizer if _reproduces(featurizer, pipeline, inputs) else None


def _is_identity(transformer: Any) -> bool:
    """'passthrough', which a fitted ColumnTransformer holds as a FunctionTransformer."""
    if isinstance(transformer, str):
        return transformer == "passthrough"
    return (
        type(transformer) is FunctionTransformer
        and transformer.func is None
        and not transformer.validate
    )


def _scaling(
    scaler: StandardScaler, where: slice
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """A fitted StandardScaler as (output positions, mean or None, scale or None)."""
    mean = scaler.mean_ if scaler.with_mean else None
    scale = scaler.scale_ if scaler.with_std else None
    return np.arange(where.start, where.stop), mean, scale


_DERIVED = (DayOfYear, PreviousContactDay)


def _derivation(transformer: Any) -> type[DayOfYear | PreviousContactDay] | None:
    """``DayOfYear`` or ``PreviousContactDay``, alone or followed by a StandardScaler."""
    if type(transformer) in _DERIVED:
        return type(transformer)
    if (
        isinstance(transformer, Pipeline)
        and len(transformer.steps) == 2
        and type(transformer.steps[0][1]) in _DERIVED
        and type(transformer.steps[1][1]) is StandardScaler
    ):
        return type(transformer.steps[0][1])
    return None


def _probe_records(inputs: Sequence[str], rows: int = 24) -> list[dict[str, Any]]:
    """Records that visit every category of every input and a spread of numbers."""
    numbers = [0, 1, -1, 2, 7, 31, 100, -250, 12345, 18, 60, 999]
    records = []
    for row in range(rows):
        record: dict[str, Any] = {}
        for index, name in enumerate(inputs):
            categories = FIELDS_BY_NAME[name].categories
            if categories:
                record[name] = categories[(row + index) % len(categories)]
            else:
                record[name] = numbers[(row * 5 + index) % len(numbers)]
        records.append(record)
    return records


def _reproduces(featurizer: Featurizer, pipeline: Pipeline, inputs: Sequence[str]) -> bool:
    """True when the featurizer gives exactly the pipeline's features and probabilities."""
    records = _probe_records(inputs)
    features = featurizer.transform(records)
    if features is None:
        return False
    frame = pd.DataFrame.from_records(records, columns=list(inputs))
    try:
        expected = pipeline.steps[0][1].transform(frame)
        if not np.array_equal(np.asarray(expected, dtype=np.float64), features):
            return False
        return bool(
            np.array_equal(
                pipeline.predict_proba(frame), after_preprocess(pipeline).predict_proba(features)
            )
        )
    except Exception as error:  # any surprise means: keep the plain pipeline
        log.warning("the compiled featurizer does not fit this pipeline: %s", error)
        return False


def after_preprocess(pipeline: Pipeline) -> Any:
    """What follows the ColumnTransformer: the estimator itself, or the pipeline's tail."""
    return pipeline.steps[-1][1] if len(pipeline.steps) == 2 else pipeline[1:]
