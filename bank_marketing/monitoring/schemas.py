"""Pandera schemas of what monitoring writes: a month's predictions, a drift report's numbers,
the month's realized quality and retraining signals, and a day of served traffic. The assets'
blocking checks validate against them before anything reaches the monitoring database, the
sensors or the dashboard."""

from __future__ import annotations

from typing import Annotated

import pandas as pd
import pandera.pandas as pa
from pandera.typing.pandas import Index, Series

from bank_marketing.monitoring.served import LIVE, SHADOW

UtcTimestamp = Annotated[pd.DatetimeTZDtype, "ns", "UTC"]
SHARE = {"ge": 0.0, "le": 1.0}
NON_EMPTY = {"min_value": 1}
ROLES = [LIVE, SHADOW]


class Predictions(pa.DataFrameModel):
    """The champion's scores for one month: one row per validated contact."""

    line: Index[int] = pa.Field(ge=2, unique=True, description="Line number in the source CSV.")
    month: Series[pd.Timestamp] = pa.Field(description="First day of the contacts' month.")
    probability: Series[float] = pa.Field(
        **SHARE, description="Predicted probability that the client subscribes."
    )
    model_version: Series[str] = pa.Field(
        str_length=NON_EMPTY, description="Registered version of bank-marketing that scored it."
    )
    scored_at: Series[UtcTimestamp] = pa.Field(description="When the month was scored (UTC).")

    @pa.dataframe_check(description="One model version scored the whole month.")
    @classmethod
    def one_model_version(cls, frame: pd.DataFrame) -> bool:
        return frame["model_version"].nunique() <= 1

    class Config:
        strict = True
        ordered = True


def predictions_month_schema(month: pd.Timestamp, lines: pd.Index) -> pa.DataFrameSchema:
    """``Predictions`` for one month: every row in that month, one row per contact in ``lines``."""
    expected = pd.Index(lines).sort_values()
    schema = for_month(Predictions, month)
    schema.checks = [
        *schema.checks,
        pa.Check(
            lambda frame: frame.index.sort_values().equals(expected),
            name="one_row_per_contact",
            error=f"the predictions are not one row per contact of the month ({len(expected)})",
        ),
    ]
    return schema


class DriftMetrics(pa.DataFrameModel):
    """One month's drift report in numbers: the row the drift_reports table holds."""

    month: Series[pd.Timestamp] = pa.Field(description="First day of the month compared.")
    model_version: Series[str] = pa.Field(
        str_length=NON_EMPTY, description="The model whose reference data and scores are compared."
    )
    rows: Series[int] = pa.Field(ge=0, description="Contacts in the month.")
    reference_rows: Series[int] = pa.Field(ge=1, description="Rows of the reference data.")
    input_columns: Series[int] = pa.Field(ge=1, description="Model inputs checked for drift.")
    drifted_columns: Series[int] = pa.Field(ge=0, description="Inputs whose drift test failed.")
    drifted_share: Series[float] = pa.Field(
        **SHARE, nullable=True, description="drifted_columns / input_columns; NaN without rows."
    )
    prediction_drift: Series[float] = pa.Field(
        ge=0.0,
        nullable=True,
        description="Drift score of the predicted probability; NaN without rows.",
    )
    prediction_drift_method: Series[str] = pa.Field(
        str_length=NON_EMPTY, description="Evidently's name of the prediction drift method."
    )
    missing_share: Series[float] = pa.Field(
        **SHARE, nullable=True, description="Missing cells over all input cells; NaN without rows."
    )
    note: Series[str] = pa.Field(nullable=True, description="Why values are missing, if any.")
    report_path: Series[str] = pa.Field(str_length=NON_EMPTY, description="The HTML report.")
    computed_at: Series[UtcTimestamp] = pa.Field(description="When the report ran (UTC).")

    @pa.dataframe_check(description="No more drifted columns than columns checked.")
    @classmethod
    def counts_within_columns(cls, frame: pd.DataFrame) -> pd.Series:
        return frame["drifted_columns"] <= frame["input_columns"]

    @pa.dataframe_check(description="The drifted share is the drifted count over the inputs.")
    @classmethod
    def share_matches_count(cls, frame: pd.DataFrame) -> pd.Series:
        share = frame["drifted_columns"] / frame["input_columns"]
        return frame["drifted_share"].isna() | ((frame["drifted_share"] - share).abs() < 1e-9)

    @pa.dataframe_check(description="Drift values are missing exactly when the month has no rows.")
    @classmethod
    def missing_only_without_rows(cls, frame: pd.DataFrame) -> pd.Series:
        values = frame[["drifted_share", "prediction_drift", "missing_share"]]
        empty = frame["rows"] == 0
        return (empty & values.isna().all(axis=1) & (frame["drifted_columns"] == 0)) | (
            ~empty & values.notna().all(axis=1)
        )

    class Config:
        strict = True
        ordered = True


class MonthlyQuality(pa.DataFrameModel):
    """One month's realized quality of the model that scored it: the monthly_quality row."""

    month: Series[pd.Timestamp] = pa.Field(description="First day of the month scored.")
    model_version: Series[str] = pa.Field(str_length=NON_EMPTY, description="The scoring model.")
    rows: Series[int] = pa.Field(ge=1, description="Labelled contacts in the month.")
    roc_auc: Series[float] = pa.Field(
        **SHARE, nullable=True, description="ROC AUC; NaN when the month has a single label."
    )
    pr_auc: Series[float] = pa.Field(
        **SHARE, nullable=True, description="Average precision; NaN with a single label."
    )
    accuracy: Series[float] = pa.Field(**SHARE, description="Accuracy at the 0.5 threshold.")
    subscription_rate: Series[float] = pa.Field(**SHARE, description="Share that subscribed.")
    mean_probability: Series[float] = pa.Field(**SHARE, description="Mean predicted probability.")
    computed_at: Series[UtcTimestamp] = pa.Field(description="When it was measured (UTC).")

    class Config:
        strict = True
        ordered = True


class RetrainSignals(pa.DataFrameModel):
    """One month's retraining signals for the model that scored it: the retrain_signals row."""

    month: Series[pd.Timestamp] = pa.Field(description="First day of the month.")
    model_version: Series[str] = pa.Field(str_length=NON_EMPTY, description="The scoring model.")
    rows: Series[int] = pa.Field(ge=0, description="Contacts in the month.")
    prediction_drift: Series[float] = pa.Field(ge=0.0, nullable=True)
    drift_null_mean: Series[float] = pa.Field(ge=0.0, nullable=True)
    drift_null_sd: Series[float] = pa.Field(ge=0.0, nullable=True)
    drift_z: Series[float] = pa.Field(nullable=True)
    drift_p_value: Series[float] = pa.Field(gt=0.0, le=1.0, nullable=True)
    expected_roc_auc: Series[float] = pa.Field(**SHARE, nullable=True)
    expected_roc_auc_se: Series[float] = pa.Field(ge=0.0, nullable=True)
    realized_roc_auc: Series[float] = pa.Field(**SHARE, nullable=True)
    realized_roc_auc_se: Series[float] = pa.Field(ge=0.0, nullable=True)
    realized_z: Series[float] = pa.Field(nullable=True)
    estimated_roc_auc: Series[float] = pa.Field(**SHARE, nullable=True)
    estimated_roc_auc_error: Series[float] = pa.Field(ge=0.0, nullable=True)
    estimated_drop: Series[float] = pa.Field(ge=-1.0, le=1.0, nullable=True)
    note: Series[str] = pa.Field(nullable=True, description="Why a signal was not computed.")
    computed_at: Series[UtcTimestamp] = pa.Field(description="When they were measured (UTC).")

    @pa.dataframe_check(description="Drift signals are missing exactly when the month is empty.")
    @classmethod
    def drift_only_with_rows(cls, frame: pd.DataFrame) -> pd.Series:
        values = frame[["prediction_drift", "drift_p_value"]]
        empty = frame["rows"] == 0
        return (empty & values.isna().all(axis=1)) | (~empty & values.notna().all(axis=1))

    class Config:
        strict = True
        ordered = True


class ServedTraffic(pa.DataFrameModel):
    """One day of live traffic for one model version and role against that version's reference
    data: the rows the served_traffic table holds (``monitoring.traffic``)."""

    day: Series[pd.Timestamp] = pa.Field(description="UTC day of the answers.")
    model_version: Series[str] = pa.Field(
        str_length=NON_EMPTY, description="The version that scored the records."
    )
    role: Series[str] = pa.Field(
        isin=ROLES, description="'live': the answers returned; 'shadow': a challenger's scores."
    )
    requests: Series[int] = pa.Field(ge=1, description="Requests answered (distinct ids).")
    rows: Series[int] = pa.Field(ge=1, description="Records scored.")
    reference_rows: Series[int] = pa.Field(ge=1, description="Rows of the reference data.")
    input_columns: Series[int] = pa.Field(ge=1, description="Model inputs checked for drift.")
    drifted_columns: Series[int] = pa.Field(ge=0, description="Inputs whose drift test failed.")
    drifted_share: Series[float] = pa.Field(**SHARE, description="drifted / input columns.")
    prediction_drift: Series[float] = pa.Field(
        ge=0.0, description="Drift score of the served probability."
    )
    prediction_drift_method: Series[str] = pa.Field(
        str_length=NON_EMPTY, description="Evidently's name of the prediction drift method."
    )
    missing_share: Series[float] = pa.Field(
        **SHARE, description="Missing cells over all input cells."
    )
    mean_probability: Series[float] = pa.Field(**SHARE, description="Mean served probability.")
    labelled_rows: Series[int] = pa.Field(ge=0, description="Records with a reported outcome.")
    roc_auc: Series[float] = pa.Field(
        **SHARE, nullable=True, description="On labelled records; NaN with fewer than two labels."
    )
    accuracy: Series[float] = pa.Field(
        **SHARE, nullable=True, description="At 0.5, on labelled records; NaN without any."
    )
    subscription_rate: Series[float] = pa.Field(
        **SHARE, nullable=True, description="Share of labelled records subscribed; NaN without any."
    )
    note: Series[str] = pa.Field(nullable=True, description="Why values are missing, if any.")
    computed_at: Series[UtcTimestamp] = pa.Field(description="When it was measured (UTC).")

    @pa.dataframe_check(description="No more drifted columns than columns checked.")
    @classmethod
    def counts_within_columns(cls, frame: pd.DataFrame) -> pd.Series:
        return frame["drifted_columns"] <= frame["input_columns"]

    @pa.dataframe_check(description="The drifted share is the drifted count over the inputs.")
    @classmethod
    def share_matches_count(cls, frame: pd.DataFrame) -> pd.Series:
        share = frame["drifted_columns"] / frame["input_columns"]
        return (frame["drifted_share"] - share).abs() < 1e-9

    @pa.dataframe_check(
        description="A request answers at least one record; outcomes are of records scored."
    )
    @classmethod
    def counts_within_rows(cls, frame: pd.DataFrame) -> pd.Series:
        return (frame["requests"] <= frame["rows"]) & (frame["labelled_rows"] <= frame["rows"])

    @pa.dataframe_check(
        description="Accuracy and subscription rate are missing exactly when no "
        "outcome is reported; ROC AUC also when every outcome is the same."
    )
    @classmethod
    def quality_only_with_outcomes(cls, frame: pd.DataFrame) -> pd.Series:
        unlabelled = frame["labelled_rows"] == 0
        rates = frame[["accuracy", "subscription_rate"]]
        one_label = frame["subscription_rate"].isin([0.0, 1.0])
        return (unlabelled & rates.isna().all(axis=1) & frame["roc_auc"].isna()) | (
            ~unlabelled & rates.notna().all(axis=1) & (frame["roc_auc"].isna() == one_label)
        )

    class Config:
        strict = True
        ordered = True
        unique = ("day", "model_version", "role")


def for_day(model: type[pa.DataFrameModel], day: pd.Timestamp) -> pa.DataFrameSchema:
    """``model``'s schema with every row's day equal to ``day`` (the daily partition)."""
    return model.to_schema().update_columns({"day": {"checks": [pa.Check.eq(day)]}})


def for_month(model: type[pa.DataFrameModel], month: pd.Timestamp) -> pa.DataFrameSchema:
    """``model``'s schema with every row's month equal to ``month`` (the partition)."""
    return model.to_schema().update_columns({"month": {"checks": [pa.Check.eq(month)]}})
