"""The month's realized quality: how the scores compare with what the clients then did."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from bank_marketing.data.fields import LABEL
from bank_marketing.training.features import labels
from bank_marketing.training.metrics import classification_metrics

QUALITY_METRICS = ("roc_auc", "pr_auc", "accuracy", "subscription_rate", "mean_probability")


def has_labels(contacts: pd.DataFrame) -> bool:
    """True when the month's outcomes are known: a label for every contact, at least one contact."""
    return LABEL in contacts.columns and len(contacts) > 0 and bool(contacts[LABEL].notna().all())


def realized_quality(contacts: pd.DataFrame, probability: np.ndarray) -> dict[str, float | int]:
    """ROC AUC, PR AUC, accuracy (at 0.5), subscription rate against mean probability, rows.

    With a single label in the month the ranking metrics are undefined and NaN.
    """
    if not has_labels(contacts):
        raise ValueError("realized quality needs a label for every contact of a non-empty month")
    truth = labels(contacts)
    probability = np.asarray(probability, dtype=np.float64)
    if len(probability) != len(truth):
        raise ValueError(f"{len(truth)} contacts but {len(probability)} probabilities")
    if len(np.unique(truth)) == 2:
        metrics = classification_metrics(truth, probability)
        roc_auc, pr_auc = metrics["roc_auc"], metrics["pr_auc"]
    else:
        roc_auc = pr_auc = math.nan
    return {
        "rows": len(truth),
        "roc_auc": roc_auc,
        "pr_auc": pr_auc,
        "accuracy": float(np.mean((probability >= 0.5) == truth)),
        "subscription_rate": float(truth.mean()),
        "mean_probability": float(probability.mean()),
    }


def quality_row(
    month: pd.Timestamp,
    model_version: str,
    quality: dict[str, float | int],
    computed_at: pd.Timestamp,
) -> pd.DataFrame:
    """The monthly_quality row, as a one-row frame (schema ``MonthlyQuality``)."""
    return pd.DataFrame(
        {
            "month": pd.Series([month], dtype="datetime64[ns]"),
            "model_version": [str(model_version)],
            "rows": [int(quality["rows"])],
            **{name: [float(quality[name])] for name in QUALITY_METRICS},
            "computed_at": pd.Series([computed_at], dtype="datetime64[ns, UTC]"),
        }
    )
