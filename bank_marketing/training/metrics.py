"""Metrics for an imbalanced target: ranking first (ROC AUC, PR AUC), then calibration and lift."""

from __future__ import annotations

import numpy as np
from scipy.stats import bootstrap, rankdata
from sklearn import metrics as skm

METRIC_NAMES = ("roc_auc", "pr_auc", "log_loss", "brier", "accuracy", "f1", "lift_top10")
# Resamples of the bootstrap behind roc_auc_standard_error.
BOOTSTRAP_RESAMPLES = 1000


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


def roc_auc_standard_error(
    y_true: np.ndarray,
    probability: np.ndarray,
    groups: np.ndarray,
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
) -> float:
    """The standard error of the ROC AUC of ``probability``, by a bootstrap over ``groups``.

    Whole groups are resampled with replacement (a cluster bootstrap, as for hierarchical data
    in Davison and Hinkley, "Bootstrap Methods and their Application", 1997), and the standard
    error is the spread of the ROC AUC over the resamples. A round's validation rows are grouped
    by call day: calls of one day share a campaign and an outcome rate, so they are not
    independent draws, and a formula that counts each row as one (Hanley and McNeil's)
    understates the noise on this data's windows (BENCHMARKS.md, the replay notes). With one
    group per row, or when there is only one group, this is the ordinary bootstrap over rows.
    Resamples holding one label are left out. Seeded: the same inputs give the same standard error.
    """
    positive = np.asarray(y_true) == 1
    probability = np.asarray(probability, dtype=np.float64)
    _, group_of_row = np.unique(np.asarray(groups), return_inverse=True)
    if not len(positive) == len(probability) == len(group_of_row):
        raise ValueError(
            f"labels ({len(positive)}), probabilities ({len(probability)}) and groups "
            f"({len(group_of_row)}) differ in length"
        )
    if positive.all() or not positive.any():
        raise ValueError(f"a ROC AUC needs both labels; the {len(positive)} rows have one")
    if group_of_row.max() == 0:
        group_of_row = np.arange(len(positive))
    order = np.argsort(group_of_row, kind="stable")
    rows_of = np.split(order, np.flatnonzero(np.diff(group_of_row[order])) + 1)

    def resampled_roc_auc(picked: np.ndarray) -> float:
        # Mann-Whitney's U over the product of the label counts: roc_auc_score's value (ties
        # count half) at a fraction of its cost (BENCHMARKS.md, the replay notes), which
        # matters over a thousand resamples.
        rows = np.concatenate([rows_of[group] for group in picked])
        positives = int(positive[rows].sum())
        negatives = len(rows) - positives
        if positives == 0 or negatives == 0:
            return np.nan
        rank_sum = rankdata(probability[rows])[positive[rows]].sum()
        return float((rank_sum - positives * (positives + 1) / 2) / (positives * negatives))

    result = bootstrap(
        (np.arange(len(rows_of)),),
        resampled_roc_auc,
        n_resamples=resamples,
        vectorized=False,
        method="percentile",
        random_state=np.random.default_rng(seed),
    )
    distribution = result.bootstrap_distribution
    return float(np.std(distribution[np.isfinite(distribution)], ddof=1))
