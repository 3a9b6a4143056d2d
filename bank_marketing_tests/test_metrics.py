"""Metrics of a candidate: ranking, threshold, calibration and lift, on hand-worked cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from bank_marketing.training.metrics import (
    METRIC_NAMES,
    classification_metrics,
    roc_auc_standard_error,
)


def test_perfect_ranking_scores_one_and_reversed_ranking_zero() -> None:
    y = np.array([0, 0, 1, 1])
    perfect = classification_metrics(y, np.array([0.1, 0.2, 0.8, 0.9]))
    assert perfect["roc_auc"] == 1.0 and perfect["pr_auc"] == 1.0
    assert classification_metrics(y, np.array([0.9, 0.8, 0.2, 0.1]))["roc_auc"] == 0.0


@pytest.mark.parametrize(
    ("rows", "positives", "expected"),
    [
        # 20 rows, 4 subscribers: the top 2 hold 1 of them -> 0.5 / 0.2
        (20, [0, 5, 10, 15], 2.5),
        # 10 rows, 2 subscribers: the top 1 is one -> 1.0 / 0.2
        (10, [0, 7], 5.0),
        # 15 rows: the top 10 % rounds up to 2 rows, one a subscriber -> 0.5 / (3 / 15)
        (15, [0, 9, 12], 2.5),
    ],
)
def test_lift_is_the_top_tenth_rate_over_the_overall_rate(
    rows: int, positives: list[int], expected: float
) -> None:
    y = np.zeros(rows, dtype=int)
    y[positives] = 1
    probability = np.linspace(0.95, 0.05, rows)  # row 0 ranks first, row 1 second, ...
    assert classification_metrics(y, probability)["lift_top10"] == pytest.approx(expected)


def test_accuracy_and_f1_count_probability_half_as_subscribed() -> None:
    y = np.array([0, 0, 1, 1, 1])
    result = classification_metrics(y, np.array([0.1, 0.5, 0.49, 0.7, 0.9]))
    # predicted 0, 1, 0, 1, 1: three right; TP 2, FP 1, FN 1 -> precision = recall = 2/3
    assert result["accuracy"] == pytest.approx(3 / 5)
    assert result["f1"] == pytest.approx(2 / 3)


def test_brier_and_log_loss_on_a_tiny_example() -> None:
    result = classification_metrics(np.array([0, 1, 1]), np.array([0.2, 0.6, 0.9]))
    assert result["brier"] == pytest.approx((0.2**2 + 0.4**2 + 0.1**2) / 3)
    assert result["log_loss"] == pytest.approx(-(math.log(0.8) + math.log(0.6) + math.log(0.9)) / 3)


def test_every_tracked_metric_is_returned_as_a_float() -> None:
    result = classification_metrics(np.array([0, 1, 0, 1]), np.array([0.3, 0.6, 0.4, 0.2]))
    assert set(result) == set(METRIC_NAMES)
    assert all(isinstance(value, float) and math.isfinite(value) for value in result.values())


@pytest.mark.parametrize(
    ("y", "probability", "problem"),
    [
        ([1, 1, 1], [0.2, 0.5, 0.9], "both classes"),
        ([0, 1, 1], [0.2, 0.5], "3 labels but 2 probabilities"),
        ([0, 1], [0.2, math.nan], "finite"),
        ([0, 1], [0.2, math.inf], "finite"),
        ([0, 1], [0.2, 1.2], "within [0, 1]"),
        ([0, 1], [-0.1, 0.8], "within [0, 1]"),
    ],
)
def test_unusable_inputs_are_refused(y: list[int], probability: list[float], problem: str) -> None:
    with pytest.raises(ValueError) as raised:
        classification_metrics(np.array(y), np.array(probability))
    assert problem in str(raised.value)


def _hanley_mcneil(roc_auc: float, positives: int, negatives: int) -> float:
    """The closed-form standard error for independent rows (Radiology 143(1), 1982, eq. 1)."""
    q1, q2 = roc_auc / (2 - roc_auc), 2 * roc_auc**2 / (1 + roc_auc)
    variance = (
        roc_auc * (1 - roc_auc)
        + (positives - 1) * (q1 - roc_auc**2)
        + (negatives - 1) * (q2 - roc_auc**2)
    ) / (positives * negatives)
    return math.sqrt(variance)


def test_with_one_group_per_row_the_standard_error_is_the_independent_rows_one() -> None:
    rng = np.random.default_rng(0)
    # Exponential scores: the model behind Hanley and McNeil's formula.
    scores = np.concatenate([rng.exponential(2.5, 300), rng.exponential(1.0, 2700)])
    y = np.r_[np.ones(300), np.zeros(2700)]
    expected = _hanley_mcneil(roc_auc_score(y, scores), 300, 2700)
    assert roc_auc_standard_error(y, scores, np.arange(len(y))) == pytest.approx(expected, rel=0.1)


def _calls(rng: np.random.Generator, days: int = 40, calls: int = 50) -> tuple[np.ndarray, ...]:
    """A validation set of whole call days; each day's campaign moves its rate and its scores."""
    day = np.repeat(np.arange(days), calls)
    campaign = rng.normal(0.0, 1.0, days)[day]
    x = rng.normal(0.0, 1.0, len(day))
    y = (rng.random(len(day)) < 1 / (1 + np.exp(2 - x - campaign))).astype(np.int64)
    return y, x - campaign, day  # the model gets each day's campaign wrong


def test_calls_of_one_day_are_resampled_together() -> None:
    rng = np.random.default_rng(0)
    spread = float(np.std([roc_auc_score(*_calls(rng)[:2]) for _ in range(400)]))
    y, scores, day = _calls(np.random.default_rng(1))
    by_day = roc_auc_standard_error(y, scores, day)
    by_row = roc_auc_standard_error(y, scores, np.arange(len(y)))
    # One validation set's estimate against the spread over 400 sets drawn with new days.
    assert 0.7 * spread < by_day < 1.4 * spread
    assert by_row < 0.6 * spread  # counting each call as a draw understates the noise


def test_the_standard_error_is_seeded_and_a_single_group_is_resampled_by_rows() -> None:
    y, scores, day = _calls(np.random.default_rng(2))
    assert roc_auc_standard_error(y, scores, day) == roc_auc_standard_error(y, scores, day)
    assert roc_auc_standard_error(y, scores, day, seed=1) != roc_auc_standard_error(y, scores, day)
    one_day = np.zeros(len(y))
    assert roc_auc_standard_error(y, scores, one_day) == roc_auc_standard_error(
        y, scores, np.arange(len(y))
    )


def test_the_standard_error_refuses_one_label_and_mismatched_lengths() -> None:
    with pytest.raises(ValueError, match="needs both labels; the 3 rows have one"):
        roc_auc_standard_error(np.zeros(3), np.array([0.1, 0.2, 0.3]), np.arange(3))
    with pytest.raises(ValueError, match=r"labels \(3\), probabilities \(2\) and groups \(3\)"):
        roc_auc_standard_error(np.array([0, 1, 1]), np.array([0.1, 0.2]), np.arange(3))
