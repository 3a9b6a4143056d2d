"""Metrics for an imbalanced target: ranking first (ROC AUC, PR AUC), then calibration and lift."""

from __future__ import annotations

import numpy as np
from sklearn import metrics as skm

METRIC_NAMES = ("roc_auc", "pr_auc", "log_loss", "brier", "accuracy", "f1", "lift_top10")


def classification_metrics(y_true: np.ndarray, probability: np.ndarray) -> dict[str, float]:
    """Every metric the system tracks, from labels (0/1) and predicted probabilities.

    ``accuracy`` and ``f1`` use the 0.5 threshold the HTTP API answers ``subscribed`` with;
    ``lift_top10`` is the subscription rate in the top 10 % by probability over the overall rate.
    """
    y_true = np.asarray(y_true)
    probability = np.asarray(probability, dtype=np.float64)
    if len(y_true) != len(probability):
        raise ValueError(f"{len(y_true)} labels but {len(probability)} probabilities")
    if len(np.unique(y_true)) < 2:
        raise ValueError("metrics need both classes in y_true")
    if not np.all(np.isfinite(probability)) or probability.min() < 0 or probability.max() > 1:
        raise ValueError("probabilities must be finite and within [0, 1]")
    predicted = probability >= 0.5
    return {
        "roc_auc": float(skm.roc_auc_score(y_true, probability)),
        "pr_auc": float(skm.average_precision_score(y_true, probability)),
        "log_loss": float(skm.log_loss(y_true, probability, labels=[0, 1])),
        "brier": float(skm.brier_score_loss(y_true, probability)),
        "accuracy": float(skm.accuracy_score(y_true, predicted)),
        "f1": float(skm.f1_score(y_true, predicted, zero_division=0.0)),
        "lift_top10": lift(y_true, probability, 0.10),
    }


def lift(y_true: np.ndarray, probability: np.ndarray, top_share: float) -> float:
    """Subscription rate among the ``top_share`` highest probabilities over the overall rate."""
    count = max(1, int(np.ceil(len(y_true) * top_share)))
    top = np.argsort(-probability, kind="stable")[:count]
    return float(np.mean(y_true[top]) / np.mean(y_true))
