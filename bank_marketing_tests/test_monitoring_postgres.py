"""The monitoring tables on the machine's PostgreSQL, in the schema Grafana reads."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from bank_marketing.monitoring import drift, quality
from bank_marketing.monitoring.scoring import score_month
from bank_marketing.orchestration.resources import MonitoringDatabase
from bank_marketing_tests.test_drift import INPUTS, MONTH, NOW, FixedScorer, contacts_frame
from bank_marketing_tests.test_monitoring_assets import failing_insert

pytestmark = pytest.mark.integration

EMPTY_MONTH = pd.Timestamp("2008-09-01")


@pytest.fixture
def db(postgres_database: str) -> MonitoringDatabase:
    return MonitoringDatabase(
        url=f"postgresql://postgres@127.0.0.1:5432/{postgres_database}", db_schema="monitoring"
    )


def _reports(month: pd.Timestamp, reference: pd.DataFrame, current: pd.DataFrame, version: str):
    result = drift.compare(current, reference, INPUTS)
    row = result.as_row(month, version, Path(f"/reports/drift_{month:%Y-%m}.html"), NOW)
    if current.empty:
        return row, None
    measured = quality.realized_quality(current, current[drift.PREDICTION].to_numpy())
    return row, quality.quality_row(month, version, measured, NOW)


def test_monitoring_tables_on_postgres(db: MonitoringDatabase) -> None:
    contacts = contacts_frame(1200)
    month = MONTH.date()

    for version in ("3", "4"):
        scores = score_month(FixedScorer(version), contacts, MONTH, NOW)
        assert db.replace_predictions(month, scores) == 1200
    stored = db.read_predictions(month)
    assert len(stored) == 1200 and set(stored["model_version"]) == {"4"}
    assert stored["line"].tolist() == contacts.index.tolist()
    assert stored["month"].unique().tolist() == [month]
    assert str(stored["scored_at"].iloc[0]) == str(NOW)

    current = contacts.assign(age=contacts["age"] + 20)
    db.replace_drift_report(month, *_reports(MONTH, contacts, current, "4"))
    db.replace_drift_report(EMPTY_MONTH.date(), *_reports(EMPTY_MONTH, contacts, current[:0], "4"))

    reports = db.read_drift_reports().set_index("month")
    assert reports.index.tolist() == [EMPTY_MONTH.date(), month]
    assert reports.loc[month, "drifted_columns"] == 1
    assert reports.loc[month, "prediction_drift_method"] == "wasserstein"
    empty = reports.loc[EMPTY_MONTH.date()]
    assert empty["rows"] == 0 and empty["note"] == drift.EMPTY_NOTE
    assert all(empty[k] is None or math.isnan(empty[k]) for k in ("drifted_share", "missing_share"))
    [measured] = db.read_monthly_quality().to_dict("records")
    assert measured["month"] == month and measured["rows"] == 1200

    # A write that fails after its DELETEs leaves the month's rows as they were.
    before = (db.read_drift_reports(month), db.read_monthly_quality(month))
    with failing_insert("monthly_quality"), pytest.raises(sa.exc.OperationalError):
        db.replace_drift_report(month, *_reports(MONTH, contacts, contacts, "5"))
    pd.testing.assert_frame_equal(db.read_drift_reports(month), before[0])
    pd.testing.assert_frame_equal(db.read_monthly_quality(month), before[1])

    engine = sa.create_engine(db.url)
    try:
        tables = set(sa.inspect(engine).get_table_names(schema="monitoring"))
    finally:
        engine.dispose()
    assert {"predictions", "drift_reports", "monthly_quality", "contact_rejects"} <= tables
