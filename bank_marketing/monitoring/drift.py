"""Drift of a month of contacts against a model's reference data: an Evidently report and its
numbers.

Both frames hold the model's inputs and its predicted probability (``prediction``). Every column
is listed in the ``DataDefinition``: Evidently types unlisted columns as unknown, and its drift
metrics fail on those. Per-column methods are Evidently's defaults, chosen by column type and
sample size; the prediction's method is set (see ``PREDICTION_DRIFT_METHOD``).

Evidently is imported where a report is built, not with this module: importing it takes several
seconds (BENCHMARKS.md, the replay notes), and every Dagster step process loads the whole code
location, including the training steps that never measure drift.
"""

from __future__ import annotations

import html
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from bank_marketing.training.features import check_inputs

if TYPE_CHECKING:
    from evidently import DataDefinition, Report
    from evidently.core.report import Snapshot

PREDICTION = "prediction"

# Evidently's "wasserstein": the Wasserstein-1 distance between the two distributions of the
# predicted probability over the reference's standard deviation; drift from 0.1 (its default, and
# the retraining threshold the design starts from). Chosen over PSI because Evidently bins a
# numeric column for PSI with Sturges' rule on both samples together and fills empty bins with a
# tiny epsilon, so on this data's small months (13 to 300 contacts) PSI is driven by empty bins and
# swings with the month's size; the normed Wasserstein distance needs no bins, moves smoothly with
# the probability mass, and reads as "moved by a tenth of the reference spread".
PREDICTION_DRIFT_METHOD = "wasserstein"
EMPTY_NOTE = "no contacts in this month: nothing to compare, drift values are NaN"


@dataclass(frozen=True)
class ColumnDrift:
    """One column's drift score, with the method and threshold Evidently applied."""

    column: str
    method: str
    score: float
    threshold: float | None
    drifted: bool


@dataclass(frozen=True)
class DriftResult:
    """The numbers of a drift report; NaN drift values (and a note) when the month is empty."""

    rows: int
    reference_rows: int
    inputs: tuple[str, ...]
    drifted_columns: int
    drifted_share: float
    prediction_drift: float
    prediction_drift_method: str
    prediction_drift_threshold: float | None
    prediction_drifted: bool
    missing_share: float
    columns: tuple[ColumnDrift, ...]
    tests_total: int
    tests_failed: int
    note: str | None = None
    snapshot: Snapshot | None = field(default=None, repr=False, compare=False)

    @property
    def input_columns(self) -> int:
        return len(self.inputs)

    def as_row(
        self, month: pd.Timestamp, model_version: str, report_path: Path, computed_at: pd.Timestamp
    ) -> pd.DataFrame:
        """The drift_reports row, as a one-row frame (schema ``DriftMetrics``)."""
        return pd.DataFrame(
            {
                "month": pd.Series([month], dtype="datetime64[ns]"),
                "model_version": [str(model_version)],
                "rows": [self.rows],
                "reference_rows": [self.reference_rows],
                "input_columns": [self.input_columns],
                "drifted_columns": [self.drifted_columns],
                "drifted_share": [float(self.drifted_share)],
                "prediction_drift": [float(self.prediction_drift)],
                "prediction_drift_method": [self.prediction_drift_method],
                "missing_share": [float(self.missing_share)],
                "note": pd.Series([self.note], dtype=object),
                "report_path": [str(report_path)],
                "computed_at": pd.Series([computed_at], dtype="datetime64[ns, UTC]"),
            }
        )

    def column_table(self) -> pd.DataFrame:
        """Drift per input column, drifted ones first, then the prediction's."""
        frame = pd.DataFrame(
            [vars(column) for column in self.columns],
            columns=["column", "method", "score", "threshold", "drifted"],
        )
        order = frame["column"].eq(PREDICTION).astype(int) * 2 + (~frame["drifted"]).astype(int)
        return frame.iloc[order.argsort(kind="stable")].reset_index(drop=True)

    def save_html(self, path: Path, title: str) -> None:
        """The Evidently report as HTML, or a page that says why there is none."""
        if self.snapshot is not None:
            self.snapshot.save_html(str(path))
            return
        path.write_text(
            "<!doctype html><html><head><meta charset='utf-8'>"
            f"<title>{html.escape(title)}</title></head><body>"
            f"<h1>{html.escape(title)}</h1><p>{html.escape(self.note or '')}</p>"
            f"<p>Reference rows: {self.reference_rows}. Inputs: "
            f"{html.escape(', '.join(self.inputs))}.</p></body></html>",
            encoding="utf-8",
        )


def data_definition(inputs: Sequence[str]) -> DataDefinition:
    """Every column typed: numeric inputs and the prediction numerical, the rest categorical."""
    from evidently import DataDefinition

    numeric, categorical = check_inputs(inputs)
    return DataDefinition(
        numerical_columns=[*numeric, PREDICTION], categorical_columns=list(categorical)
    )


def drift_report(inputs: Sequence[str], prediction_method: str = PREDICTION_DRIFT_METHOD) -> Report:
    """Drift of every input (count and share of drifted ones), of the prediction, and missing
    values per input; with Evidently's tests."""
    from evidently import Report
    from evidently.metrics import MissingValueCount, ValueDrift
    from evidently.presets import DataDriftPreset

    return Report(
        [
            DataDriftPreset(columns=list(inputs)),
            ValueDrift(column=PREDICTION, method=prediction_method),
            *(MissingValueCount(column=name) for name in inputs),
        ],
        include_tests=True,
    )


def compare(
    current: pd.DataFrame,
    reference: pd.DataFrame,
    inputs: Sequence[str],
    prediction_method: str = PREDICTION_DRIFT_METHOD,
    metadata: Mapping[str, str] | None = None,
) -> DriftResult:
    """Run the drift report of ``current`` against ``reference`` and read its numbers back."""
    inputs = tuple(inputs)
    columns = [*inputs, PREDICTION]
    for name, frame in (("current", current), ("reference", reference)):
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise ValueError(f"the {name} data lacks column(s) {missing}")
    if reference.empty:
        raise ValueError("the reference data has no rows: drift cannot be measured against it")
    if current.empty:
        return _empty(len(reference), inputs, prediction_method)
    from evidently import Dataset

    definition = data_definition(inputs)
    with warnings.catch_warnings():
        # Evidently's statistics divide by zero on constant columns (pdays is -1 throughout the
        # early months) and handle the NaN themselves; numpy's warnings about it are noise.
        warnings.simplefilter("ignore", RuntimeWarning)
        snapshot = drift_report(inputs, prediction_method).run(
            Dataset.from_pandas(current[columns], data_definition=definition),
            Dataset.from_pandas(reference[columns], data_definition=definition),
            metadata=dict(metadata or {}),
        )
    return _read(snapshot, len(current), len(reference), inputs)


def _read(
    snapshot: Snapshot, rows: int, reference_rows: int, inputs: tuple[str, ...]
) -> DriftResult:
    """The numbers, from the snapshot's dict form (Evidently's documented way out)."""
    content = snapshot.dict()
    failed_by_metric: dict[str, bool] = {}
    for test in content["tests"]:
        metric_id = test["metric_config"]["metric_id"]
        failed_by_metric[metric_id] = failed_by_metric.get(metric_id, False) or _failed(test)
    count: dict[str, float] | None = None
    drifts: dict[str, ColumnDrift] = {}
    missing: dict[str, float] = {}
    for metric in content["metrics"]:
        config: dict[str, Any] = metric["config"]
        kind = config["type"].rsplit(":", 1)[-1]
        if kind == "DriftedColumnsCount":
            count = metric["value"]
        elif kind == "ValueDrift":
            drifts[config["column"]] = ColumnDrift(
                column=config["column"],
                method=str(config.get("method")),
                score=float(metric["value"]),
                threshold=config.get("threshold"),
                drifted=failed_by_metric.get(metric["id"], False),
            )
        elif kind == "MissingValueCount":
            missing[config["column"]] = float(metric["value"]["share"])
    if count is None or PREDICTION not in drifts or set(missing) != set(inputs):
        raise RuntimeError("the Evidently snapshot lacks a metric the drift report asks for")
    prediction = drifts.pop(PREDICTION)
    return DriftResult(
        rows=rows,
        reference_rows=reference_rows,
        inputs=inputs,
        drifted_columns=round(count["count"]),
        drifted_share=float(count["share"]),
        prediction_drift=prediction.score,
        prediction_drift_method=prediction.method,
        prediction_drift_threshold=prediction.threshold,
        prediction_drifted=prediction.drifted,
        # Every column has the month's rows, so the mean share is missing cells over all cells.
        missing_share=float(sum(missing.values()) / len(missing)),
        columns=(*(drifts[name] for name in inputs), prediction),
        tests_total=len(content["tests"]),
        tests_failed=sum(_failed(test) for test in content["tests"]),
        snapshot=snapshot,
    )


def _failed(test: Mapping[str, Any]) -> bool:
    from evidently.core.metric_types import TestStatus

    return test["status"] == TestStatus.FAIL


def _empty(reference_rows: int, inputs: tuple[str, ...], prediction_method: str) -> DriftResult:
    return DriftResult(
        rows=0,
        reference_rows=reference_rows,
        inputs=inputs,
        drifted_columns=0,
        drifted_share=math.nan,
        prediction_drift=math.nan,
        prediction_drift_method=prediction_method,
        prediction_drift_threshold=None,
        prediction_drifted=False,
        missing_share=math.nan,
        columns=(),
        tests_total=0,
        tests_failed=0,
        note=EMPTY_NOTE,
    )
