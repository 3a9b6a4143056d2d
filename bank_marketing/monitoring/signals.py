"""Retraining signals for one month of contacts scored by the champion: drift of its predicted
probability measured against the noise of a month that size, its realized ROC AUC against the
level it was expected to hold, and that ROC AUC estimated before the labels arrive (CBPE).

Each signal is a number on a scale that does not depend on the month's size, so one threshold
can serve a 75-row month and a 5,000-row month alike: a p-value or z against the month-sized
null for drift, a z over the combined standard errors for realized performance, and an estimate
with its stated error for the estimated performance.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata, wasserstein_distance
from sklearn.isotonic import IsotonicRegression
from sklearn.metrics import auc, roc_auc_score

from bank_marketing.training.metrics import BOOTSTRAP_RESAMPLES, roc_auc_standard_error

# Resamples of the drift null distribution: p-values in steps of 1/501, fine enough for a
# threshold at 0.01, at a few tens of milliseconds per month.
DRIFT_RESAMPLES = 500
# Label draws behind the CBPE estimate's stated error: a standard deviation from 200 draws is
# within about 10 % of its value (two standard errors).
CBPE_RESAMPLES = 200
# Evidently's floor on the reference's standard deviation, so a constant reference does not
# divide by zero.
_MIN_NORM = 0.001
# Cells of the resample-by-reference matrix held at once: 2 MB of floats, which stay in the
# processor's cache; measured two to four times faster than one matrix of all resamples.
_CHUNK_CELLS = 1 << 18
# Floor of a denominator that may be zero (a null with no spread, two zero standard errors).
_TINY = 1e-12


def normed_wasserstein(reference: np.ndarray, current: np.ndarray) -> float:
    """Evidently's ``wasserstein`` drift score: the Wasserstein-1 distance between the two
    samples over the reference's standard deviation (ddof 0, floored at 0.001), as in Evidently
    0.7's ``evidently/legacy/calculations/stattests/wasserstein_distance_norm.py``."""
    reference = _finite(reference, "reference")
    current = _finite(current, "current")
    return float(wasserstein_distance(reference, current) / max(np.std(reference), _MIN_NORM))


@dataclass(frozen=True)
class DriftAgainstNoise:
    """A month's normed Wasserstein distance, and where it falls among months of its size drawn
    from the reference itself."""

    statistic: float
    null_mean: float
    null_sd: float
    z: float
    p_value: float
    resamples: int
    rows: int


def drift_against_noise(
    reference: np.ndarray,
    current: np.ndarray,
    *,
    resamples: int = DRIFT_RESAMPLES,
    seed: int = 0,
) -> DriftAgainstNoise:
    """The normed Wasserstein distance of ``current`` from ``reference``, with its z and p-value
    against months of ``len(current)`` rows that did not drift.

    The raw distance of a 75-row month and of a 5,000-row month are not on one scale: a small
    month's sampling noise alone puts it far from the reference (the expected distance shrinks
    like one over the square root of the size). A p-value or z against the distances of
    undrifted months of the same size is on one scale. Undrifted months are drawn with
    replacement from the reference: a bootstrap of the null, which takes the reference to stand
    for the population the month would come from without drift. With a reference many times the
    month's size the approximation is close; with one hardly bigger than the month, the null is
    too narrow by the reference's own noise and the p-values too small.

    The p-value counts the statistic itself among the resamples, ``(1 + #{null >= statistic}) /
    (1 + resamples)``, so it is never zero. Seeded: the same inputs give the same result.
    """
    reference = _finite(reference, "reference")
    current = _finite(current, "current")
    if resamples < 1:
        raise ValueError(f"the drift null needs at least one resample, not {resamples}")
    rng = np.random.default_rng(seed)
    rows = len(current)
    sorted_reference = np.sort(reference)
    null = np.empty(resamples)
    chunk = max(1, _CHUNK_CELLS // len(reference))
    for start in range(0, resamples, chunk):
        size = min(chunk, resamples - start)
        # Positions drawn in the sorted reference, offset per resample so that one bincount
        # counts them all: a row of counts per resample.
        drawn = rng.integers(0, len(reference), size=(size, rows))
        drawn += np.arange(size)[:, None] * len(reference)
        counts = np.bincount(drawn.ravel(), minlength=size * len(reference))
        null[start : start + size] = _null_statistics(
            sorted_reference, counts.reshape(size, len(reference))
        )
    statistic = normed_wasserstein(reference, current)
    null_mean = float(np.mean(null))
    null_sd = float(np.std(null, ddof=1)) if resamples > 1 else 0.0
    return DriftAgainstNoise(
        statistic=statistic,
        null_mean=null_mean,
        null_sd=null_sd,
        z=(statistic - null_mean) / max(null_sd, _TINY),
        p_value=float((1 + np.count_nonzero(null >= statistic)) / (1 + resamples)),
        resamples=resamples,
        rows=rows,
    )


def _null_statistics(sorted_reference: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The normed Wasserstein distance from the reference of each resample, given as counts of
    draws per position of the sorted reference (one row per resample).

    Both distribution functions step only at reference values, so the distance is the sum, over
    the gaps between consecutive sorted values, of the gap's length times the difference of the
    two functions on it; tied values make gaps of length zero.
    """
    size = len(sorted_reference)
    # In place: one matrix of the chunk's size, whatever the number of steps.
    difference = np.cumsum(counts[:, :-1], axis=1, dtype=np.float64)
    difference /= counts.sum(axis=1, keepdims=True)
    difference -= np.arange(1, size) / size
    np.abs(difference, out=difference)
    distance = difference @ np.diff(sorted_reference)
    return distance / max(np.std(sorted_reference), _MIN_NORM)


@dataclass(frozen=True)
class RealizedPerformance:
    """A month's ROC AUC, once its labels are in, against the level the model was expected to
    hold; ``z`` below zero is worse than expected."""

    realized_roc_auc: float
    realized_se: float
    expected_roc_auc: float
    expected_se: float
    z: float


def realized_against_expected(
    y_true: np.ndarray,
    probability: np.ndarray,
    groups: np.ndarray,
    *,
    expected_roc_auc: float,
    expected_se: float,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
) -> RealizedPerformance:
    """The month's ROC AUC, its standard error by a bootstrap over ``groups`` (call days, see
    ``roc_auc_standard_error``), and its z against the expected level: the difference over the
    two standard errors combined, since the expected level (a validation ROC AUC) is itself a
    measurement with an error."""
    y_true = np.asarray(y_true)
    if len(np.unique(y_true)) < 2:
        raise ValueError(f"a realized ROC AUC needs both labels; the {len(y_true)} rows have one")
    realized_se = roc_auc_standard_error(
        y_true, probability, groups, resamples=resamples, seed=seed
    )
    realized = float(roc_auc_score(y_true, probability))
    combined_se = np.hypot(realized_se, expected_se)
    return RealizedPerformance(
        realized_roc_auc=realized,
        realized_se=realized_se,
        expected_roc_auc=float(expected_roc_auc),
        expected_se=float(expected_se),
        z=float((realized - expected_roc_auc) / max(combined_se, _TINY)),
    )


@dataclass(frozen=True)
class CBPE:
    """Confidence-based performance estimation (NannyML's CBPE, see
    https://nannyml.readthedocs.io/en/stable/how_it_works/performance_estimation.html): the ROC
    AUC a month of scores is expected to reach, before its labels arrive.

    The model's scores are calibrated on the reference (rows whose labels are known), and each
    row of a month then counts as ``p`` expected subscriber and ``1 - p`` expected
    non-subscriber, ``p`` its calibrated probability. From these expected counts the ROC curve,
    and so its area, follows without a label. The estimate holds under covariate shift (the
    scores' distribution moves, the chance of subscribing at a given score does not), which is
    the shift a drifting month of contacts brings; it cannot see a change in that chance
    (concept drift). Calibration is isotonic, as in NannyML (which first checks, by
    cross-validated calibration error, that calibrating helps; here it is always applied).

    The stated error (``estimate_error``) is the label noise of a month that size; it leaves out
    the calibration's own error, which shrinks slowly with the reference's rows and is largest
    where the month's scores fall where the reference has few. Measured on synthetic scores with
    a 5,000-row reference: about 0.005 of ROC AUC, seed to seed, for months like the reference,
    and up to 0.05 for months moved into the reference's sparse upper tail, where the
    calibration reaches 0 or 1 on a handful of rows.
    """

    calibrator: IsotonicRegression
    reference_rows: int

    @classmethod
    def fit(cls, reference_probability: np.ndarray, reference_labels: np.ndarray) -> CBPE:
        """Calibrate on the reference: P(subscribed | score), non-decreasing in the score."""
        probability = _finite(reference_probability, "reference probability")
        labels = np.asarray(reference_labels)
        if len(labels) != len(probability):
            raise ValueError(
                f"{len(labels)} reference labels but {len(probability)} reference probabilities"
            )
        if len(np.unique(labels)) < 2:
            raise ValueError(
                f"CBPE's calibration needs both labels; the {len(labels)} rows have one"
            )
        calibrator = IsotonicRegression(out_of_bounds="clip", y_min=0, y_max=1)
        calibrator.fit(probability, labels)
        return cls(calibrator=calibrator, reference_rows=len(probability))

    def calibrated(self, probability: np.ndarray) -> np.ndarray:
        """The calibrated probability of each score."""
        return np.asarray(self.calibrator.predict(_finite(probability, "probability")))

    def estimate_roc_auc(self, probability: np.ndarray) -> float:
        """The ROC AUC the month's scores are expected to reach, if the calibration holds."""
        probability = _finite(probability, "probability")
        return _expected_roc_auc(probability, self.calibrated(probability))

    def estimate_error(
        self, probability: np.ndarray, *, resamples: int = CBPE_RESAMPLES, seed: int = 0
    ) -> float:
        """The spread of the realized ROC AUC around the estimate, if the calibration holds: the
        standard deviation of the ROC AUC over label vectors drawn from the calibrated
        probabilities. Draws with one label are left out. Seeded."""
        probability = _finite(probability, "probability")
        expected = self.calibrated(probability)
        labels = np.random.default_rng(seed).random((resamples, len(probability))) < expected
        positives = labels.sum(axis=1)
        negatives = len(probability) - positives
        both = (positives > 0) & (negatives > 0)
        if np.count_nonzero(both) < 2:
            raise ValueError(
                f"the calibrated probabilities of the {len(probability)} rows give both labels in "
                f"{np.count_nonzero(both)} of {resamples} draws: too few for a spread"
            )
        # Mann-Whitney's U over the product of the label counts: each draw's ROC AUC (ties
        # count half) from one ranking of the scores, for all draws at once.
        ranks = rankdata(probability)
        rank_sums = labels[both] @ ranks
        positives, negatives = positives[both], negatives[both]
        roc_auc = (rank_sums - positives * (positives + 1) / 2) / (positives * negatives)
        return float(np.std(roc_auc, ddof=1))


@dataclass(frozen=True)
class EstimatedPerformance:
    """A month's CBPE estimate of its ROC AUC against the expected level; ``drop`` above zero
    is worse than expected."""

    estimated_roc_auc: float
    error: float
    expected_roc_auc: float
    drop: float


def estimate_performance(
    cbpe: CBPE, probability: np.ndarray, *, expected_roc_auc: float, seed: int = 0
) -> EstimatedPerformance:
    """The month's estimated ROC AUC, its stated error and its drop from the expected level."""
    estimated = cbpe.estimate_roc_auc(probability)
    return EstimatedPerformance(
        estimated_roc_auc=estimated,
        error=cbpe.estimate_error(probability, seed=seed),
        expected_roc_auc=float(expected_roc_auc),
        drop=float(expected_roc_auc - estimated),
    )


def _expected_roc_auc(score: np.ndarray, expected: np.ndarray) -> float:
    """The area under the ROC curve of expected counts: ``score`` ranks the rows, and each row
    is ``expected`` of a positive and ``1 - expected`` of a negative.

    NannyML's estimator: thresholds at each distinct score, expected true positives above a
    threshold the sum of ``expected`` there, false positives the sum of ``1 - expected``, each
    over its total. Rows are ranked by the model's score, as NannyML's current release does (its
    first releases ranked by the calibrated probability): the realized ROC AUC ranks by the
    score, and an isotonic calibration ties many scores. Both rankings give the same area, since
    the calibration is non-decreasing and a run of tied calibrated values adds the same expected
    counts per row, a straight piece of the curve either way.
    """
    order = np.argsort(-score, kind="stable")
    score, expected = score[order], expected[order]
    positives = np.concatenate([[0.0], np.cumsum(expected)])
    negatives = np.concatenate([[0.0], np.cumsum(1 - expected)])
    if positives[-1] <= 0 or negatives[-1] <= 0:
        raise ValueError(
            f"the calibrated probabilities of the {len(score)} rows expect only one label: "
            "no ROC AUC to estimate"
        )
    # A threshold at each distinct score: the last row of each run of tied scores.
    keep = np.concatenate([[True], score[1:] != score[:-1], [True]])
    return float(auc(negatives[keep] / negatives[-1], positives[keep] / positives[-1]))


def _finite(values: np.ndarray, name: str) -> np.ndarray:
    """``values`` as a flat float array; empty or non-finite values raise, naming ``name``."""
    values = np.asarray(values, dtype=np.float64).ravel()
    if len(values) == 0:
        raise ValueError(f"the {name} values are empty")
    if not np.all(np.isfinite(values)):
        raise ValueError(f"the {name} values hold NaN or infinite values")
    return values
