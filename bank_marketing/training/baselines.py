"""Month-ahead baselines for the closed loop: a model frozen at a month, one retrained monthly.

Each month M is scored by a model that has seen nothing after M-1, the way the live champion
scores a new month. The replay compares its own loop with these two on the same months.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pandas as pd

from bank_marketing.training.candidates import FittedCandidate
from bank_marketing.training.features import labels
from bank_marketing.training.metrics import classification_metrics
from bank_marketing.training.windows import (
    TRAIN,
    VALIDATION,
    TrainingDataError,
    assemble_window,
    describe,
    split_window,
    window_months,
)


def by_month(frame: pd.DataFrame, months: pd.Series) -> dict[str, pd.DataFrame]:
    """Contacts keyed by partition key (``YYYY-MM-01``), from each row's recovered month.

    Each month's frame has ``contact_month`` as the ``contacts`` asset's months do.
    """
    keys = months.dt.strftime("%Y-%m-01")
    frame = frame.assign(contact_month=months)
    return {key: part for key, part in frame.groupby(keys.to_numpy(), sort=True)}


def month_roc_auc(model: Any, month: pd.DataFrame) -> float:
    """ROC AUC of ``model`` on a month of labelled contacts; NaN when the month has one class."""
    if month.empty or month["y"].nunique() < 2:
        return math.nan
    return classification_metrics(labels(month), model.predict_proba(month)[:, 1])["roc_auc"]


def frozen(
    model: Any, contacts: Mapping[str, pd.DataFrame], months: Sequence[str]
) -> dict[str, float]:
    """Each month scored by the same ``model``."""
    return {key: month_roc_auc(model, contacts.get(key, _empty(contacts))) for key in months}


def retrained_every_month(
    contacts: Mapping[str, pd.DataFrame],
    months: Sequence[str],
    *,
    fit: Callable[[pd.DataFrame, pd.DataFrame], FittedCandidate],
    window: int,
    validation_share: float,
    seed: int,
    split_by: str = "day",
    on_month: Callable[[str, float], None] | None = None,
) -> dict[str, float]:
    """Each month M scored by the model ``fit(train, validation)`` makes of the ``window`` months
    up to M-1, split as a training round splits them (stratified, seeded, by ``split_by``).

    A window that cannot train a model scores NaN.
    """
    scores = {}
    for key in months:
        as_of = pd.Timestamp(key) - pd.offsets.MonthBegin(1)
        history = {k: v for k, v in contacts.items() if k <= f"{as_of:%Y-%m-%d}"}
        try:
            frame = assemble_window(history, as_of, window)
            split = split_window(
                frame,
                validation_share,
                seed,
                describe(window_months(as_of, window)),
                by=split_by,
            )
        except TrainingDataError:
            scores[key] = math.nan
            continue
        fitted = fit(split[split["split"] == TRAIN], split[split["split"] == VALIDATION])
        scores[key] = month_roc_auc(fitted.pipeline, contacts.get(key, _empty(contacts)))
        if on_month is not None:
            on_month(key, scores[key])
    return scores


def mean_score(scores: Mapping[str, float]) -> float:
    """Mean over the months that have a score (months with one class have none)."""
    values = [value for value in scores.values() if not math.isnan(value)]
    return sum(values) / len(values) if values else math.nan


def _empty(contacts: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    return next(iter(contacts.values())).iloc[0:0]
