"""predictions and drift_report on a real (temporary) instance, with a real SQLite MLflow registry:
a few real months, the empty one, and the faults: missing reference data, a database that fails.
"""

from __future__ import annotations

import dataclasses
import math
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import dagster as dg
import mlflow
import pandas as pd
import pytest
import sqlalchemy as sa
from mlflow import MlflowClient

from bank_marketing.monitoring import drift
from bank_marketing.orchestration.assets.contacts import contacts, raw_contacts
from bank_marketing.orchestration.assets.metadata import ROUNDING_ERROR
from bank_marketing.orchestration.assets.monitoring import drift_report, predictions
from bank_marketing.orchestration.definitions import build_definitions
from bank_marketing.orchestration.resources import MonitoringDatabase
from bank_marketing.orchestration.runner import backfill_contacts, failure_message
from bank_marketing.settings import Settings
from bank_marketing.training.registry import CHAMPION_ALIAS
from bank_marketing.training.tracking import EXPERIMENT_NAME, MODEL_NAME, REFERENCE_ARTIFACT
from bank_marketing_tests.conftest import ingested_copy, make_settings
from bank_marketing_tests.registries import register_two_versions

# MLflow with a real backend store and a Dagster instance: run with the integration tests.
pytestmark = pytest.mark.integration

EMPTY, SMALL, SPRING = "2008-09-01", "2008-10-01", "2009-03-01"
MONTHS = [EMPTY, SMALL, SPRING]
CONTRACT = {
    "month": str,
    "model_version": str,
    "rows": int,
    "drifted_columns": int,
    "drifted_share": float,
    "prediction_drift": float,
    "prediction_drift_method": str,
    "missing_share": float,
}
QUALITY = ("roc_auc", "pr_auc", "accuracy", "subscription_rate", "mean_probability")


@dataclass
class Monitored:
    settings: Settings
    instance: dg.DagsterInstance
    resources: dict[str, Any]
    client: MlflowClient
    versions: list[str]

    @property
    def db(self) -> MonitoringDatabase:
        return self.resources["monitoring_db"]


@pytest.fixture(scope="module")
def monitored(
    tmp_path_factory: pytest.TempPathFactory, bank_full_path: Path, ingested_home: Path
) -> Iterator[Monitored]:
    """Two registered versions (v1 the champion, trained on May 2008), and three months ingested."""
    folder = tmp_path_factory.mktemp("monitoring")
    registry = register_two_versions(folder / "registry", bank_full_path)
    home = ingested_copy(ingested_home, folder / "home")
    settings = make_settings(home, bank_full_path, MLFLOW_TRACKING_URI=registry["uri"])
    defs = build_definitions(settings)
    resources = {
        **defs.resources,
        "monitoring_db": MonitoringDatabase(
            url=settings.db_url, reports_dir=str(settings.home / "reports")
        ),
    }
    with dg.instance_for_test(temp_dir=str(settings.dagster_home)) as instance:
        assert all(o.success for o in backfill_contacts(defs, instance, MONTHS))
        yield Monitored(
            settings, instance, resources, MlflowClient(registry["uri"]), registry["versions"]
        )


def monitor(
    monitored: Monitored, month: str, resources: dict[str, Any] | None = None
) -> dg.ExecuteInProcessResult:
    """predictions and drift_report for one month, in one run, on the stored contacts."""
    return dg.materialize(
        [raw_contacts, contacts, predictions, drift_report],
        selection=[predictions, drift_report],
        partition_key=month,
        instance=monitored.instance,
        resources=resources or monitored.resources,
        raise_on_error=False,
    )


def report_metadata(result: dg.ExecuteInProcessResult) -> dict[str, Any]:
    [event] = result.asset_materializations_for_node("drift_report")
    return {name: value.value for name, value in event.metadata.items()}


def stored_contacts(monitored: Monitored, month: str) -> pd.DataFrame:
    return dg.Definitions(
        assets=[raw_contacts, contacts], resources=monitored.resources
    ).load_asset_value(contacts.key, partition_key=month, instance=monitored.instance)


@contextmanager
def champion(monitored: Monitored, version: str) -> Iterator[None]:
    monitored.client.set_registered_model_alias(MODEL_NAME, CHAMPION_ALIAS, version)
    try:
        yield
    finally:
        monitored.client.set_registered_model_alias(MODEL_NAME, CHAMPION_ALIAS, "1")


def test_a_month_is_scored_and_reported_with_its_quality(monitored: Monitored) -> None:
    result = monitor(monitored, SMALL)

    assert result.success, failure_message(result)
    assert all(check.passed for check in result.get_asset_check_evaluations())
    month = date(2008, 10, 1)
    stored = monitored.db.read_predictions(month)
    lines = stored_contacts(monitored, SMALL).index
    assert len(stored) == len(lines) == 80
    assert stored["line"].tolist() == sorted(lines)
    assert set(stored["model_version"]) == {"1"}
    assert stored["probability"].between(0, 1).all()

    meta = report_metadata(result)
    for key, kind in CONTRACT.items():
        assert isinstance(meta[key], kind), key
    assert meta["month"] == "2008-10" and meta["model_version"] == "1" and meta["rows"] == 80
    assert meta["prediction_drift_method"] == "wasserstein"
    assert 0 <= meta["drifted_share"] <= 1 and 0 <= meta["drifted_columns"] <= 11
    assert meta["missing_share"] == 0.0
    assert meta["input_columns"] == 11
    path = Path(meta["report_path"])
    assert path == monitored.settings.home / "reports" / "drift_2008-10.html"
    assert "Value Drift for column prediction" in path.read_text()
    assert not list(path.parent.glob(".*partial"))

    [row] = monitored.db.read_drift_reports(month).to_dict("records")
    assert row["rows"] == 80 and row["model_version"] == "1"
    assert row["drifted_columns"] == meta["drifted_columns"]
    # The sensor compares prediction drift with its threshold: the metadata keeps every digit,
    # as the table does.
    assert row["prediction_drift"] == pytest.approx(meta["prediction_drift"], rel=1e-12)
    assert row["report_path"] == str(path) and row["note"] is None

    [quality] = monitored.db.read_monthly_quality(month).to_dict("records")
    assert quality["rows"] == 80
    assert quality["subscription_rate"] == pytest.approx(49 / 80)
    for name in QUALITY:
        assert 0 <= meta[name] <= 1, name
        assert quality[name] == pytest.approx(meta[name], abs=ROUNDING_ERROR), name
    assert meta["mean_probability"] == pytest.approx(
        stored["probability"].mean(), abs=ROUNDING_ERROR
    )

    # The retraining signals: in their table, and in the metadata the sensor reads.
    [signals] = monitored.db.read_retrain_signals(month).to_dict("records")
    assert signals["model_version"] == "1" and signals["rows"] == 80
    assert signals["prediction_drift"] == pytest.approx(row["prediction_drift"], rel=1e-9)
    assert 0 < signals["drift_p_value"] <= 1 and signals["drift_null_sd"] > 0
    assert signals["drift_z"] == pytest.approx(
        (signals["prediction_drift"] - signals["drift_null_mean"]) / signals["drift_null_sd"]
    )
    assert signals["realized_roc_auc"] == pytest.approx(quality["roc_auc"], abs=1e-12)
    combined = math.hypot(signals["realized_roc_auc_se"], signals["expected_roc_auc_se"])
    assert signals["realized_z"] == pytest.approx(
        (signals["realized_roc_auc"] - signals["expected_roc_auc"]) / combined
    )
    assert signals["estimated_drop"] == pytest.approx(
        signals["expected_roc_auc"] - signals["estimated_roc_auc"]
    )
    for key in ("drift_p_value", "drift_z", "realized_z", "estimated_drop"):
        assert meta[key] == pytest.approx(signals[key], rel=1e-12), key

    run = monitored.client.get_run(meta["mlflow_run_id"])
    assert run.data.tags["kind"] == "drift_report" and run.data.tags["month"] == "2008-10"
    assert run.data.tags["model_version"] == "1"
    assert run.data.metrics["prediction_drift"] == pytest.approx(meta["prediction_drift"])
    assert run.info.status == "FINISHED"
    artifacts = [a.path for a in monitored.client.list_artifacts(run.info.run_id, "drift")]
    assert artifacts == ["drift/drift_2008-10.html"]
    # One click from the asset page: the run and its HTML report in the MLflow UI.
    ui = monitored.settings.mlflow_ui_url
    page = f"{ui}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"
    assert meta["mlflow_run"] == page
    assert meta["report_in_mlflow"] == f"{page}/artifacts/drift/drift_2008-10.html"


def test_the_empty_month_gets_a_report_that_says_so(monitored: Monitored) -> None:
    result = monitor(monitored, EMPTY)

    assert result.success, failure_message(result)
    meta = report_metadata(result)
    assert meta["rows"] == 0 and meta["drifted_columns"] == 0
    for key in ("drifted_share", "prediction_drift", "missing_share"):
        assert math.isnan(meta[key]), key
    assert "no contacts in this month" in meta["note"]
    assert not set(QUALITY) & set(meta)
    assert "no contacts in this month" in Path(meta["report_path"]).read_text()
    month = date(2008, 9, 1)
    assert monitored.db.read_predictions(month).empty
    [row] = monitored.db.read_drift_reports(month).to_dict("records")
    assert row["rows"] == 0 and row["note"] == meta["note"]
    assert all(row[k] is None or math.isnan(row[k]) for k in ("drifted_share", "prediction_drift"))
    assert monitored.db.read_monthly_quality(month).empty
    [signals] = monitored.db.read_retrain_signals(month).to_dict("records")
    assert signals["rows"] == 0
    assert all(
        signals[k] is None or math.isnan(signals[k]) for k in ("drift_p_value", "realized_z")
    )


def test_categories_never_seen_in_training_are_scored(monitored: Monitored) -> None:
    march = stored_contacts(monitored, SPRING)
    # v1 trained on the first 6,000 contacts: May 2008 only, before any previous campaign.
    assert set(march["month"]) == {"mar"}
    assert {"success", "failure"} <= set(march["poutcome"])

    result = monitor(monitored, SPRING)

    assert result.success, failure_message(result)
    stored = monitored.db.read_predictions(date(2009, 3, 1))
    assert len(stored) == len(march) == 258 and stored["probability"].between(0, 1).all()
    meta = report_metadata(result)
    assert meta["rows"] == 258 and meta["drifted_columns"] >= 2
    assert "| month " in meta["column_drift"] and "| poutcome " in meta["column_drift"]


def test_materializing_again_replaces_the_month_with_the_current_champion(
    monitored: Monitored,
) -> None:
    assert monitor(monitored, SMALL).success
    with champion(monitored, monitored.versions[1]):
        result = monitor(monitored, SMALL)
    assert result.success, failure_message(result)

    month = date(2008, 10, 1)
    stored = monitored.db.read_predictions(month)
    assert len(stored) == 80 and set(stored["model_version"]) == {"2"}
    reports = monitored.db.read_drift_reports()
    assert (reports["month"] == month).sum() == 1
    assert reports.loc[reports["month"] == month, "model_version"].item() == "2"
    assert monitored.db.read_monthly_quality(month)["model_version"].tolist() == ["2"]
    assert report_metadata(result)["model_version"] == "2"


def test_missing_reference_data_is_a_clear_error(monitored: Monitored, tmp_path: Path) -> None:
    assert monitor(monitored, SMALL).success
    before = monitored.db.read_drift_reports(date(2008, 10, 1))
    run_id = monitored.client.get_model_version(MODEL_NAME, "1").run_id
    artifact = _local(monitored.client.get_run(run_id).info.artifact_uri) / REFERENCE_ARTIFACT
    shutil.move(artifact, tmp_path / "validation.parquet")
    try:
        result = monitor(monitored, SMALL)
    finally:
        shutil.move(tmp_path / "validation.parquet", artifact)

    assert not result.success
    message = failure_message(result)
    assert f"MLflow run {run_id}" in message and REFERENCE_ARTIFACT in message, message
    assert "bank-marketing v1" in message
    assert not result.asset_materializations_for_node("drift_report")
    pd.testing.assert_frame_equal(monitored.db.read_drift_reports(date(2008, 10, 1)), before)


def test_without_a_champion_nothing_is_scored_and_the_error_says_why(
    monitored: Monitored,
) -> None:
    assert monitor(monitored, SMALL).success
    before = monitored.db.read_predictions(date(2008, 10, 1))
    monitored.client.delete_registered_model_alias(MODEL_NAME, CHAMPION_ALIAS)
    try:
        result = monitor(monitored, SMALL)
    finally:
        monitored.client.set_registered_model_alias(MODEL_NAME, CHAMPION_ALIAS, "1")

    assert not result.success
    message = failure_message(result)
    assert "no champion to monitor: models:/bank-marketing@champion at " in message, message
    assert "is not set; train one first (training_job)" in message
    assert not result.asset_materializations_for_node("predictions")
    pd.testing.assert_frame_equal(monitored.db.read_predictions(date(2008, 10, 1)), before)


def test_an_unreachable_database_fails_the_run_and_records_nothing(monitored: Monitored) -> None:
    down = MonitoringDatabase(
        url="postgresql+psycopg2://postgres@127.0.0.1:9/monitoring?connect_timeout=3",
        db_schema="monitoring",
        reports_dir=str(monitored.settings.home / "reports"),
    )
    result = monitor(monitored, SPRING, {**monitored.resources, "monitoring_db": down})

    assert not result.success
    message = failure_message(result)
    assert "predictions 2009-03: the monitoring database" in message, message
    assert "127.0.0.1:9" in message and "rolled back" in message
    assert not result.asset_materializations_for_node("predictions")
    assert not result.asset_materializations_for_node("drift_report")


@contextmanager
def failing_insert(table: str) -> Iterator[None]:
    """Every INSERT into ``table`` fails, as a database that goes away mid-transaction would."""

    def fail(conn, cursor, statement, parameters, context, executemany) -> None:
        if re.match(rf"\s*INSERT INTO (\w+\.)?{table}\b", statement):
            raise sa.exc.OperationalError(statement, parameters, Exception("connection lost"))

    sa.event.listen(sa.Engine, "before_cursor_execute", fail)
    try:
        yield
    finally:
        sa.event.remove(sa.Engine, "before_cursor_execute", fail)


def test_a_write_failing_mid_transaction_leaves_the_month_as_it_was(
    monitored: Monitored,
) -> None:
    assert monitor(monitored, SMALL).success
    month = date(2008, 10, 1)
    tables = ("predictions", "drift_reports", "monthly_quality")
    before = {t: _read(monitored, t, month) for t in tables}
    report = monitored.settings.home / "reports" / "drift_2008-10.html"
    report_before = report.read_bytes()

    # predictions: its DELETE runs, its INSERT fails.
    with champion(monitored, monitored.versions[1]), failing_insert("predictions"):
        result = monitor(monitored, SMALL)
    assert not result.success
    assert "rolled back" in failure_message(result)
    assert not result.asset_materializations_for_node("predictions")
    for table in tables:
        pd.testing.assert_frame_equal(_read(monitored, table, month), before[table])

    # drift_report: both DELETEs and the drift_reports INSERT run, the monthly_quality INSERT fails.
    with champion(monitored, monitored.versions[1]), failing_insert("monthly_quality"):
        result = monitor(monitored, SMALL)
    assert not result.success
    assert "drift_report 2008-10: the monitoring database" in failure_message(result)
    assert result.asset_materializations_for_node("predictions")
    assert not result.asset_materializations_for_node("drift_report")
    for table in ("drift_reports", "monthly_quality"):
        pd.testing.assert_frame_equal(_read(monitored, table, month), before[table])
    assert report.read_bytes() == report_before
    assert not list(report.parent.glob(".*partial"))
    failed = _drift_runs(monitored, "2008-10", "FAILED")
    assert failed and failed[0].data.tags["model_version"] == "2"


def test_numbers_that_fail_their_schema_are_blocked(
    monitored: Monitored, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert monitor(monitored, SMALL).success
    month = date(2008, 10, 1)
    before = monitored.db.read_drift_reports(month)
    compare = drift.compare

    def broken(*args: Any, **kwargs: Any) -> drift.DriftResult:
        return dataclasses.replace(compare(*args, **kwargs), drifted_columns=99)

    monkeypatch.setattr(drift, "compare", broken)
    result = monitor(monitored, SMALL)

    assert not result.success
    [check] = [c for c in result.get_asset_check_evaluations() if not c.passed]
    assert check.check_name == "valid_drift_metrics" and check.asset_key == drift_report.key
    assert "counts_within_columns" in check.metadata["failure_cases"].value
    assert "nothing was written" in failure_message(result)
    assert not result.asset_materializations_for_node("drift_report")
    pd.testing.assert_frame_equal(monitored.db.read_drift_reports(month), before)


def _read(monitored: Monitored, table: str, month: date) -> pd.DataFrame:
    read = getattr(monitored.db, f"read_{table}")
    return read(month)


def _local(uri: str) -> Path:
    return Path(unquote(urlparse(uri).path)) if uri.startswith("file:") else Path(uri)


def _drift_runs(monitored: Monitored, month: str, status: str) -> list[mlflow.entities.Run]:
    experiment = monitored.client.get_experiment_by_name(EXPERIMENT_NAME)
    return monitored.client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.kind = 'drift_report' and tags.month = '{month}' "
        f"and attributes.status = '{status}'",
        order_by=["attributes.start_time DESC"],
    )
