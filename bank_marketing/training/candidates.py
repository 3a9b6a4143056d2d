"""Fitting one candidate: the family's estimator in the feature pipeline, scored on both splits."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline

from bank_marketing.training.families import BUILDERS, SCALED, sample_weights
from bank_marketing.training.features import build_pipeline, labels
from bank_marketing.training.metrics import classification_metrics
from bank_marketing.training.windows import LABEL


@dataclass(frozen=True)
class FittedCandidate:
    family: str
    pipeline: Pipeline
    train_metrics: dict[str, float]
    validation_metrics: dict[str, float]
    fit_seconds: float
    train_rows: int
    train_rows_capped: bool
    # The pipeline's probabilities for the validation rows, in their order.
    validation_probability: np.ndarray
    # Whether the pipeline derives the day of the year (and, with pdays, the previous contact's).
    day_of_year: bool = False


def fit_candidate(
    family: str,
    params: Mapping[str, Any],
    inputs: Sequence[str],
    train: pd.DataFrame,
    validation: pd.DataFrame,
    *,
    max_train_rows: int | None = None,
    seed: int = 0,
    day_of_year: bool = False,
) -> FittedCandidate:
    """Fit ``family`` with ``params`` on ``train`` (capped, stratified, when too slow to fit).

    ``day_of_year``: derive the day of the year from month and day inside the pipeline, and the
    previous contact's when ``pdays`` is an input.
    """
    capped = max_train_rows is not None and len(train) > max_train_rows
    if capped:
        train = train.groupby(LABEL, group_keys=False).sample(
            frac=max_train_rows / len(train), random_state=seed
        )
    estimator = BUILDERS[family](**params, seed=seed)
    pipeline = build_pipeline(
        inputs, estimator, scale_numeric=family in SCALED, day_of_year=day_of_year
    )
    y_train = labels(train)
    weights = sample_weights(family, str(params.get("class_weight", "none")), y_train)
    fit_params = {} if weights is None else {"model__sample_weight": weights}
    started = time.perf_counter()
    pipeline.fit(train, y_train, **fit_params)
    fit_seconds = time.perf_counter() - started
    validation_probability = pipeline.predict_proba(validation)[:, 1]
    return FittedCandidate(
        family=family,
        pipeline=pipeline,
        train_metrics=score(pipeline, train),
        validation_metrics=classification_metrics(labels(validation), validation_probability),
        fit_seconds=fit_seconds,
        train_rows=len(train),
        train_rows_capped=capped,
        validation_probability=validation_probability,
        day_of_year=day_of_year,
    )


def score(model: Any, frame: pd.DataFrame) -> dict[str, float]:
    """All metrics of ``model`` (anything with ``predict_proba``) on labelled contacts."""
    return classification_metrics(labels(frame), model.predict_proba(frame)[:, 1])
