"""A month's retraining signals for the model that scored it, in one place: ``drift_report``
records them and the policy backtest replays them with this same code.

The model's reference is its round's validation data (what ``drift_report`` already compares
with, and data the model did not train on): the prediction drift is judged against months of the
same size drawn from it, the expected level is the model's ROC AUC on it (its validation ROC AUC)
with the day-bootstrap standard error, and CBPE is calibrated on it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from bank_marketing.monitoring import signals
from bank_marketing.monitoring.policy import MonthSignals
from bank_marketing.training.metrics import roc_auc_standard_error

# The columns of the retrain_signals table after month and model_version, in order.
SIGNAL_COLUMNS = (
    "rows",
    "prediction_drift",
    "drift_null_mean",
    "drift_null_sd",
    "drift_z",
    "drift_p_value",
    "expected_roc_auc",
    "expected_roc_auc_se",
    "realized_roc_auc",
    "realized_roc_auc_se",
    "realized_z",
    "estimated_roc_auc",
    "estimated_roc_auc_error",
    "estimated_drop",
    "note",
)


@dataclass(frozen=True)
class Reference:
    """What a model's month is measured against: its probabilities and the outcomes on its
    reference data, the expected level, and CBPE calibrated there."""

    probability: np.ndarray
    expected_roc_auc: float
    expected_roc_auc_se: float
    cbpe: signals.CBPE

    @classmethod
    def build(
        cls,
        probability: np.ndarray,
        y_true: np.ndarray,
        days: np.ndarray,
        *,
        expected_roc_auc: float | None = None,
        expected_roc_auc_se: float | None = None,
        seed: int = 0,
    ) -> Reference:
        """From the model's probabilities on its reference rows, their outcomes and call days.

        The expected level and its standard error are computed unless given (the backtest has
        them from the fit; they are the same numbers).
        """
        probability = np.asarray(probability, dtype=np.float64)
        y_true = np.asarray(y_true)
        if expected_roc_auc is None:
            from sklearn.metrics import roc_auc_score

            expected_roc_auc = float(roc_auc_score(y_true, probability))
        if expected_roc_auc_se is None:
            expected_roc_auc_se = roc_auc_standard_error(y_true, probability, days, seed=seed)
        return cls(
            probability=probability,
            expected_roc_auc=float(expected_roc_auc),
            expected_roc_auc_se=float(expected_roc_auc_se),
            cbpe=signals.CBPE.fit(probability, y_true),
        )


@dataclass(frozen=True)
class Measurement:
    """A month's signals, with the numbers behind them; NaN where not computed."""

    rows: int
    prediction_drift: float = math.nan
    drift_null_mean: float = math.nan
    drift_null_sd: float = math.nan
    drift_z: float = math.nan
    drift_p_value: float = math.nan
    expected_roc_auc: float = math.nan
    expected_roc_auc_se: float = math.nan
    realized_roc_auc: float = math.nan
    realized_roc_auc_se: float = math.nan
    realized_z: float = math.nan
    estimated_roc_auc: float = math.nan
    estimated_roc_auc_error: float = math.nan
    estimated_drop: float = math.nan
    note: str | None = None  # why a signal was not computed, when one was not

    def signals(self, month: str, drifted_share: float = math.nan) -> MonthSignals:
        """What the policy judges (``month``: the partition key)."""
        return MonthSignals(
            month=month,
            rows=self.rows,
            prediction_drift=self.prediction_drift,
            drifted_share=drifted_share,
            drift_p_value=self.drift_p_value,
            drift_z=self.drift_z,
            realized_z=self.realized_z,
            estimated_drop=self.estimated_drop,
        )

    def as_row(
        self, month: pd.Timestamp, model_version: str, computed_at: pd.Timestamp
    ) -> pd.DataFrame:
        """The retrain_signals row, as a one-row frame (schema ``RetrainSignals``)."""
        values = asdict(self)
        return pd.DataFrame(
            {
                "month": pd.Series([month], dtype="datetime64[ns]"),
                "model_version": [str(model_version)],
                "rows": [self.rows],
                **{name: [float(values[name])] for name in SIGNAL_COLUMNS[1:-1]},
                "note": pd.Series([self.note], dtype=object),
                "computed_at": pd.Series([computed_at], dtype="datetime64[ns, UTC]"),
            }
        )


def measure(
    reference: Reference,
    probability: np.ndarray,
    y_true: np.ndarray | None,
    days: np.ndarray,
    *,
    seed: int = 0,
) -> Measurement:
    """The month's signals: ``probability`` of its contacts, their outcomes (None before the
    labels are in) and call days. An empty month has none."""
    probability = np.asarray(probability, dtype=np.float64)
    if len(probability) == 0:
        return Measurement(rows=0)
    drift = signals.drift_against_noise(reference.probability, probability, seed=seed)
    estimated: dict[str, Any] = {}
    try:
        estimate = signals.estimate_performance(
            reference.cbpe, probability, expected_roc_auc=reference.expected_roc_auc, seed=seed
        )
    except ValueError as error:
        # A month whose calibrated probabilities leave no ranking to estimate (all in the
        # calibration's 0 or 1 step, as a handful of contacts can be): no estimate, and why.
        estimated["note"] = f"CBPE not computed: {error}"
    else:
        estimated = {
            "estimated_roc_auc": estimate.estimated_roc_auc,
            "estimated_roc_auc_error": estimate.error,
            "estimated_drop": estimate.drop,
        }
    realized: dict[str, float] = {}
    if y_true is not None and len(np.unique(y_true)) == 2:
        performance = signals.realized_against_expected(
            y_true,
            probability,
            days,
            expected_roc_auc=reference.expected_roc_auc,
            expected_se=reference.expected_roc_auc_se,
            seed=seed,
        )
        realized = {
            "realized_roc_auc": performance.realized_roc_auc,
            "realized_roc_auc_se": performance.realized_se,
            "realized_z": performance.z,
        }
    return Measurement(
        rows=len(probability),
        prediction_drift=drift.statistic,
        drift_null_mean=drift.null_mean,
        drift_null_sd=drift.null_sd,
        drift_z=drift.z,
        drift_p_value=drift.p_value,
        expected_roc_auc=reference.expected_roc_auc,
        expected_roc_auc_se=reference.expected_roc_auc_se,
        **estimated,
        **realized,
    )
