"""Drift numbers, scores, realized quality and their schemas, on small hand-made frames."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pandera.pandas as pa
import pytest

from bank_marketing.data.fields import FIELDS_BY_NAME
from bank_marketing.monitoring import drift, quality, schemas
from bank_marketing.monitoring.scoring import score_month
from bank_marketing.training.features import DEFAULT_INPUTS

INPUTS = list(DEFAULT_INPUTS)
MONTH = pd.Timestamp("2009-03-01")
NOW = pd.Timestamp("2009-04-02 08:00", tz="UTC")


def contacts_frame(rows: int = 1500, seed: int = 0) -> pd.DataFrame:
    """Contacts with every input (UCI names and values) and a label, indexed by source line."""
    rng = np.random.default_rng(seed)
    columns = {}
    for name in INPUTS:
        spec = FIELDS_BY_NAME[name]
        if spec.categories:
            columns[name] = rng.choice(spec.categories, rows)
        else:
            low = spec.ge if spec.ge is not None else -500
            high = spec.le if spec.le is not None else 3000
            columns[name] = rng.integers(low, min(high, low + 60) + 1, rows)
    frame = pd.DataFrame(columns, index=pd.RangeIndex(2, rows + 2, name="line"))
    frame["y"] = np.where(rng.random(rows) < 0.3, "yes", "no")
    frame[drift.PREDICTION] = rng.beta(2, 5, rows)
    return frame


@pytest.fixture(scope="module")
def reference() -> pd.DataFrame:
    return contacts_frame()


def test_identical_frames_show_no_drift(reference: pd.DataFrame) -> None:
    result = drift.compare(reference.copy(), reference, INPUTS)

    assert result.rows == result.reference_rows == len(reference)
    assert result.input_columns == len(INPUTS)
    assert result.drifted_columns == 0 and result.drifted_share == 0.0
    assert result.prediction_drift == pytest.approx(0.0, abs=1e-12)
    assert result.prediction_drift_method == "wasserstein"
    assert result.prediction_drift_threshold == pytest.approx(0.1)
    assert not result.prediction_drifted
    assert result.missing_share == 0.0
    assert [c.column for c in result.columns] == [*INPUTS, drift.PREDICTION]
    assert not any(c.drifted for c in result.columns)
    assert result.tests_total > len(INPUTS) and result.tests_failed == 0


@pytest.mark.parametrize(
    ("column", "shift"),
    [
        ("age", lambda s: s + 20),
        ("balance", lambda s: s * 5 + 1000),
        ("job", lambda s: s.where(s.index % 4 != 0, "student")),
        ("contact", lambda s: pd.Series("telephone", index=s.index)),
    ],
)
def test_one_shifted_column_drifts_alone(reference: pd.DataFrame, column: str, shift) -> None:
    current = reference.copy()
    current[column] = shift(current[column])

    result = drift.compare(current, reference, INPUTS)

    drifted = [c.column for c in result.columns if c.drifted]
    assert drifted == [column]
    assert result.drifted_columns == 1
    assert result.drifted_share == pytest.approx(1 / len(INPUTS))
    assert math.isfinite(result.prediction_drift) and not result.prediction_drifted
    table = result.column_table()
    assert table.loc[0, "column"] == column and bool(table.loc[0, "drifted"])


def test_prediction_drift_is_measured_apart_from_the_inputs(reference: pd.DataFrame) -> None:
    current = reference.copy()
    current[drift.PREDICTION] = (current[drift.PREDICTION] + 0.2).clip(upper=1.0)

    result = drift.compare(current, reference, INPUTS)

    assert result.drifted_columns == 0
    assert result.prediction_drifted
    assert result.prediction_drift > 0.5  # a shift of 0.2 against a spread of about 0.16
    psi = drift.compare(current, reference, INPUTS, prediction_method="psi")
    assert psi.prediction_drift_method == "psi" and psi.prediction_drift > 0.1


def test_a_category_the_reference_never_had_is_compared(reference: pd.DataFrame) -> None:
    without_students = reference[reference["job"] != "student"]
    current = reference.copy()

    result = drift.compare(current, without_students, INPUTS)

    assert result.rows == len(reference)
    assert {c.column for c in result.columns if c.drifted} <= {"job"}
    assert next(c for c in result.columns if c.column == "job").score > 0


@pytest.mark.parametrize(("reference_rows", "kind"), [(600, "p_value"), (1500, "distance")])
def test_input_methods_follow_evidently_s_defaults(reference_rows: int, kind: str) -> None:
    """Statistical tests up to 1,000 reference rows, distances above; the prediction's is set."""
    result = drift.compare(contacts_frame(75, seed=1), contacts_frame(reference_rows), INPUTS)

    assert result.rows == 75
    methods = {c.column: c.method for c in result.columns}
    assert all(kind in methods[name].lower().replace("-", "_") for name in INPUTS), methods
    assert methods[drift.PREDICTION] == "wasserstein"
    assert math.isfinite(result.prediction_drift)


def test_missing_share_is_missing_cells_over_all_input_cells(reference: pd.DataFrame) -> None:
    current = reference.copy().astype({"age": float})
    current.loc[current.index[:30], "age"] = np.nan

    result = drift.compare(current, reference, INPUTS)

    assert result.missing_share == pytest.approx(30 / (len(current) * len(INPUTS)))


def test_an_empty_month_gives_a_report_that_says_so(
    reference: pd.DataFrame, tmp_path: Path
) -> None:
    result = drift.compare(reference.iloc[:0], reference, INPUTS)

    assert result.rows == 0 and result.drifted_columns == 0
    assert math.isnan(result.drifted_share) and math.isnan(result.prediction_drift)
    assert math.isnan(result.missing_share)
    assert result.note == drift.EMPTY_NOTE and result.snapshot is None
    page = tmp_path / "drift.html"
    result.save_html(page, "Drift of 2008-09")
    assert "no contacts in this month" in page.read_text()
    row = result.as_row(pd.Timestamp("2008-09-01"), "3", page, NOW)
    schemas.for_month(schemas.DriftMetrics, pd.Timestamp("2008-09-01")).validate(row)


def test_the_html_report_is_evidently_s(reference: pd.DataFrame, tmp_path: Path) -> None:
    result = drift.compare(reference.iloc[:300], reference, INPUTS, metadata={"month": "2009-03"})
    page = tmp_path / "drift.html"
    result.save_html(page, "unused")
    assert page.stat().st_size > 10_000
    assert "Value Drift for column prediction" in page.read_text()


@pytest.mark.parametrize(
    ("frames", "message"),
    [
        (lambda r: (r, r.iloc[:0]), "reference data has no rows"),
        (lambda r: (r.drop(columns="age"), r), "current data lacks column(s) ['age']"),
        (lambda r: (r, r.drop(columns=drift.PREDICTION)), "reference data lacks column(s)"),
    ],
)
def test_unusable_frames_are_refused(reference: pd.DataFrame, frames, message: str) -> None:
    current, ref = frames(reference)
    with pytest.raises(ValueError, match=re.escape(message)):
        drift.compare(current, ref, INPUTS)


# The drift metrics row and its schema


@pytest.fixture(scope="module")
def row(reference: pd.DataFrame) -> pd.DataFrame:
    current = reference.copy()
    current["age"] = current["age"] + 20
    result = drift.compare(current, reference, INPUTS)
    return result.as_row(MONTH, "7", Path("/reports/drift_2009-03.html"), NOW)


def test_a_sound_row_passes(row: pd.DataFrame) -> None:
    schemas.for_month(schemas.DriftMetrics, MONTH).validate(row)
    assert row.loc[0, "drifted_columns"] == 1 and row.loc[0, "input_columns"] == len(INPUTS)


@pytest.mark.parametrize(
    ("change", "check"),
    [
        ({"month": pd.Timestamp("2009-04-01")}, "equal_to"),
        ({"drifted_columns": 12, "drifted_share": 12 / 11}, "counts_within_columns"),
        ({"drifted_share": 0.5}, "share_matches_count"),
        ({"missing_share": 1.5}, "less_than_or_equal_to"),
        ({"prediction_drift": float("nan")}, "missing_only_without_rows"),
        ({"rows": 0}, "missing_only_without_rows"),
        ({"model_version": ""}, "str_length"),
    ],
)
def test_a_broken_row_fails_its_schema(row: pd.DataFrame, change: dict, check: str) -> None:
    broken = row.assign(**{k: [v] for k, v in change.items()})
    with pytest.raises(pa.errors.SchemaErrors) as errors:
        schemas.for_month(schemas.DriftMetrics, MONTH).validate(broken, lazy=True)
    assert errors.value.failure_cases["check"].astype(str).str.contains(check).any()


# Scores and their schema


@dataclass(frozen=True)
class FixedScorer:
    """A stand-in model: P(subscribed) from age, the inputs a real model takes."""

    version: str = "4"
    inputs: tuple[str, ...] = tuple(INPUTS)

    def predict_proba(self, records: pd.DataFrame) -> np.ndarray:
        return ((records["age"] - 18) / 100).clip(0, 1).to_numpy(dtype=float)


def test_scores_are_one_row_per_contact(reference: pd.DataFrame) -> None:
    scores = score_month(FixedScorer(), reference, MONTH, NOW)

    schemas.predictions_month_schema(MONTH, reference.index).validate(scores)
    assert list(scores.columns) == ["month", "probability", "model_version", "scored_at"]
    assert scores.index.equals(reference.index)
    assert set(scores["model_version"]) == {"4"}


def test_an_empty_month_scores_to_an_empty_frame(reference: pd.DataFrame) -> None:
    scores = score_month(FixedScorer(), reference.iloc[:0], MONTH, NOW)
    schemas.predictions_month_schema(MONTH, reference.index[:0]).validate(scores)
    assert scores.empty


@pytest.mark.parametrize(
    ("breakage", "check"),
    [
        (lambda s: s.iloc[1:], "not one row per contact"),
        (lambda s: s.assign(probability=s["probability"] + 1), "less_than_or_equal_to"),
        (lambda s: s.assign(model_version=""), "str_length"),
        (lambda s: s.assign(model_version=["4", "5"] * (len(s) // 2)), "one_model_version"),
        (lambda s: s.assign(month=pd.Timestamp("2009-02-01")), "equal_to"),
    ],
)
def test_broken_scores_fail_their_schema(reference: pd.DataFrame, breakage, check: str) -> None:
    scores = breakage(score_month(FixedScorer(), reference, MONTH, NOW))
    with pytest.raises(pa.errors.SchemaErrors) as errors:
        schemas.predictions_month_schema(MONTH, reference.index).validate(scores, lazy=True)
    assert errors.value.failure_cases["check"].astype(str).str.contains(check).any()


def test_a_model_without_its_inputs_cannot_score(reference: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match=r"needs input column\(s\) \['age'\]"):
        score_month(FixedScorer(), reference.drop(columns="age"), MONTH, NOW)


# Realized quality


def test_realized_quality_compares_scores_with_outcomes() -> None:
    contacts = pd.DataFrame({"y": ["no", "no", "yes", "yes"]})
    measured = quality.realized_quality(contacts, np.array([0.1, 0.6, 0.4, 0.9]))

    assert measured["rows"] == 4
    assert measured["roc_auc"] == pytest.approx(0.75)
    assert measured["accuracy"] == pytest.approx(0.5)
    assert measured["subscription_rate"] == 0.5
    assert measured["mean_probability"] == pytest.approx(0.5)
    row = quality.quality_row(MONTH, "4", measured, NOW)
    schemas.for_month(schemas.MonthlyQuality, MONTH).validate(row)


def test_a_month_with_one_label_has_no_ranking_metrics() -> None:
    measured = quality.realized_quality(pd.DataFrame({"y": ["no"] * 3}), np.array([0.1, 0.2, 0.7]))
    assert math.isnan(measured["roc_auc"]) and math.isnan(measured["pr_auc"])
    assert measured["accuracy"] == pytest.approx(2 / 3)
    schemas.MonthlyQuality.validate(quality.quality_row(MONTH, "4", measured, NOW))


def test_without_labels_there_is_no_quality() -> None:
    assert not quality.has_labels(pd.DataFrame({"age": [30]}))
    assert not quality.has_labels(pd.DataFrame({"y": []}))
    with pytest.raises(ValueError, match="needs a label"):
        quality.realized_quality(pd.DataFrame({"age": [30]}), np.array([0.5]))
