"""served_traffic: a day of real records answered by real registered versions, with outcomes,
against each version's reference data; its replacement, its empty days, the retention purge, its
schedule; on SQLite, and the write path on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd
import pandera.pandas as pa
import pytest
import sqlalchemy as sa
from mlflow import MlflowClient
from sklearn.metrics import roc_auc_score

from bank_marketing.monitoring import schemas, store, traffic
from bank_marketing.monitoring.served import (
    LIVE,
    SHADOW,
    day_bounds,
    insert_served,
    read_served,
    record_outcome,
)
from bank_marketing.orchestration.assets.traffic import (
    RERUN_DAYS,
    SCHEDULE,
    build_traffic,
    days_to_run,
)
from bank_marketing.orchestration.definitions import build_definitions
from bank_marketing.orchestration.resources import MonitoringDatabase
from bank_marketing.orchestration.runner import failure_message
from bank_marketing.serving.model import load_version
from bank_marketing.settings import Settings, Traffic
from bank_marketing.training.features import DEFAULT_INPUTS
from bank_marketing_tests.conftest import make_settings
from bank_marketing_tests.registries import register_two_versions

INPUTS = list(DEFAULT_INPUTS)
TODAY = datetime.now(UTC).date()
# Days of traffic, all within retention and after the first partition.
DAY, SHIFTED, EMPTY, REPLACED = (TODAY - timedelta(days=n) for n in (2, 3, 4, 5))
RETENTION_DAYS = 20
# Of the validation records a day serves: the first SINGLE one per request, the rest in tens.
SINGLE = 1000
AGE_SHIFT = 30


@dataclass
class Served:
    """A registry of two versions, a home built on it, and what the tests serve."""

    settings: Settings
    instance: dg.DagsterInstance
    resources: dict[str, Any]
    engine: sa.Engine
    versions: list[str]
    records: pd.DataFrame  # the reference (validation) records, each version's probability
    models: dict[str, Any]

    @property
    def assets(self) -> list[dg.AssetsDefinition]:
        return [build_traffic(self.settings.traffic).asset]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, bank_full_path: Path) -> Iterator[Served]:
    """Two registered versions (v1 live, v2 in shadow) sharing one reference, and DAY's
    traffic: every reference record answered by v1 and scored by v2, a third with outcomes."""
    folder = tmp_path_factory.mktemp("traffic")
    registry = register_two_versions(folder / "registry", bank_full_path)
    settings = make_settings(
        folder / "home",
        bank_full_path,
        MLFLOW_TRACKING_URI=registry["uri"],
        BANK_MARKETING_TRAFFIC_START=(TODAY - timedelta(days=30)).isoformat(),
        BANK_MARKETING_SERVED_RETENTION_DAYS=str(RETENTION_DAYS),
    )
    client = MlflowClient(registry["uri"])
    models = {version: load_version(client, version) for version in registry["versions"]}
    records = registry["validation"][[*INPUTS, "y"]].copy()
    for version, model in models.items():
        records[f"p{version}"] = model.predict_proba(records)
    engine = store.connect(settings.db_url)
    serve_day(engine, records, DAY, "day", {(LIVE, "1"): "p1", (SHADOW, "2"): "p2"})
    report_outcomes(engine, records, "day", every=3)
    with dg.instance_for_test(temp_dir=str(settings.dagster_home)) as instance:
        yield Served(
            settings,
            instance,
            dict(build_definitions(settings).resources),
            engine,
            registry["versions"],
            records,
            models,
        )
    engine.dispose()


def request_of(position: int) -> tuple[int, int]:
    """(request number, record in the request) of the ``position``-th record served in a day."""
    if position < SINGLE:
        return position, 0
    return SINGLE + (position - SINGLE) // 10, (position - SINGLE) % 10


def serve_day(
    engine: sa.Engine,
    records: pd.DataFrame,
    day: date,
    prefix: str,
    scores: dict[tuple[str, str], str],
) -> int:
    """Store ``records`` as answered on ``day`` (requests ``prefix-N``), once per (role,
    version) with the probabilities of column ``scores[role, version]``."""
    start, _ = day_bounds(day)
    inputs = records[INPUTS].to_dict("records")
    rows = []
    for position, record in enumerate(inputs):
        request, index = request_of(position)
        for (role, version), column in scores.items():
            rows.append(
                {
                    "request_id": f"{prefix}-{request}",
                    "record": index,
                    "role": role,
                    "received_at": start + timedelta(seconds=40 * request),
                    "model_version": version,
                    "inputs": {k: v.item() if hasattr(v, "item") else v for k, v in record.items()},
                    "probability": float(records[column].iloc[position]),
                    "latency_ms": 3.0 if role == LIVE else None,
                }
            )
    return insert_served(engine, rows)


def report_outcomes(
    engine: sa.Engine, records: pd.DataFrame, prefix: str, every: int, offset: int = 0
) -> np.ndarray:
    """Report the real outcome of every ``every``-th record from ``offset``; returns which."""
    reported = np.zeros(len(records), dtype=bool)
    for position in range(offset, len(records), every):
        request, index = request_of(position)
        subscribed = bool(records["y"].iloc[position] == "yes")
        record_outcome(engine, f"{prefix}-{request}", subscribed, index)
        reported[position] = True
    return reported


def materialize(
    served: Served, day: date, resources: dict[str, Any] | None = None
) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        served.assets,
        partition_key=day.isoformat(),
        instance=served.instance,
        resources=resources or served.resources,
        raise_on_error=False,
    )


def metadata(result: dg.ExecuteInProcessResult) -> dict[str, Any]:
    [event] = result.asset_materializations_for_node("served_traffic")
    return {name: value.value for name, value in event.metadata.items()}


def expected(records: pd.DataFrame, column: str, labelled: np.ndarray) -> dict[str, Any]:
    """The row's figures, computed here from the records served."""
    probability = records[column].to_numpy()
    truth = (records["y"] == "yes").to_numpy()
    return {
        "rows": len(records),
        "requests": len({request_of(position)[0] for position in range(len(records))}),
        "mean_probability": pytest.approx(probability.mean(), abs=1e-12),
        "labelled_rows": int(labelled.sum()),
        "roc_auc": pytest.approx(roc_auc_score(truth[labelled], probability[labelled]), abs=1e-12),
        "accuracy": pytest.approx(
            np.mean((probability[labelled] >= 0.5) == truth[labelled]), abs=1e-12
        ),
        "subscription_rate": pytest.approx(truth[labelled].mean(), abs=1e-12),
    }


def every_third(records: pd.DataFrame) -> np.ndarray:
    return np.arange(len(records)) % 3 == 0


@pytest.mark.integration
def test_a_day_is_measured_per_version_and_role(served: Served) -> None:
    result = materialize(served, DAY)

    assert result.success, failure_message(result)
    assert all(check.passed for check in result.get_asset_check_evaluations())
    rows = traffic.read_traffic(served.engine, DAY).set_index(["role", "model_version"])
    assert rows.index.tolist() == [(LIVE, "1"), (SHADOW, "2")]
    labelled = every_third(served.records)
    for key, column in (((LIVE, "1"), "p1"), ((SHADOW, "2"), "p2")):
        row = rows.loc[key]
        for name, value in expected(served.records, column, labelled).items():
            assert row[name] == value, (key, name)
        # The reference records themselves, scored by the version the reference is of: no drift.
        assert row["reference_rows"] == len(served.records)
        assert row["input_columns"] == len(INPUTS)
        assert row["drifted_columns"] == 0 and row["drifted_share"] == 0.0
        assert row["prediction_drift"] == pytest.approx(0.0, abs=1e-12)
        assert row["prediction_drift_method"] == "wasserstein"
        assert row["missing_share"] == 0.0
        assert row["day"] == DAY and pd.isna(row["note"])
    assert rows.loc[(LIVE, "1"), "requests"] == SINGLE + (len(served.records) - SINGLE) // 10

    meta = metadata(result)
    assert meta["day"] == DAY.isoformat() and meta["dagster/row_count"] == 2
    assert meta["records"] == 2 * len(served.records)
    assert meta["live_v1_rows"] == meta["shadow_v2_rows"] == len(served.records)
    assert meta["live_v1_labelled_rows"] == labelled.sum()
    assert meta["live_v1_drifted_columns"] == 0
    assert meta["live_v1_prediction_drift"] == pytest.approx(0.0, abs=1e-4)
    assert "| shadow" in meta["traffic"]
    assert meta["retention_days"] == RETENTION_DAYS


@pytest.mark.integration
def test_shifted_inputs_are_found_drifted(served: Served) -> None:
    shifted = served.records.assign(age=served.records["age"] + AGE_SHIFT)
    shifted["p1"] = served.models["1"].predict_proba(shifted)
    serve_day(served.engine, shifted, SHIFTED, "shifted", {(LIVE, "1"): "p1"})

    result = materialize(served, SHIFTED)

    assert result.success, failure_message(result)
    [row] = traffic.read_traffic(served.engine, SHIFTED).to_dict("records")
    # Only age moved: every other input is the reference's own column.
    assert row["drifted_columns"] == 1 and row["drifted_share"] == pytest.approx(1 / len(INPUTS))
    assert row["prediction_drift"] > 0
    assert row["labelled_rows"] == 0 and row["note"] == traffic.NO_OUTCOMES_NOTE
    assert all(pd.isna(row[name]) for name in ("roc_auc", "accuracy", "subscription_rate"))
    assert row["mean_probability"] == pytest.approx(shifted["p1"].mean(), abs=1e-12)


@pytest.mark.integration
def test_a_second_run_replaces_the_days_rows_with_late_outcomes(served: Served) -> None:
    records = served.records.iloc[:300]
    serve_day(served.engine, records, REPLACED, "replaced", {(LIVE, "1"): "p1"})
    early = report_outcomes(served.engine, records, "replaced", every=10)
    assert materialize(served, REPLACED).success
    [first] = traffic.read_traffic(served.engine, REPLACED).to_dict("records")
    assert first["labelled_rows"] == early.sum()

    late = report_outcomes(served.engine, records, "replaced", every=10, offset=5)
    result = materialize(served, REPLACED)

    assert result.success, failure_message(result)
    [row] = traffic.read_traffic(served.engine, REPLACED).to_dict("records")
    labelled = early | late
    for name, value in expected(records, "p1", labelled).items():
        if name != "requests":
            assert row[name] == value, name
    assert row["requests"] == 300 and row["computed_at"] > first["computed_at"]


@pytest.mark.integration
def test_a_day_without_traffic_writes_nothing(served: Served) -> None:
    before = traffic.read_traffic(served.engine)

    result = materialize(served, EMPTY)

    assert result.success, failure_message(result)
    [check] = result.get_asset_check_evaluations()
    assert check.passed
    meta = metadata(result)
    assert meta["dagster/row_count"] == 0 and meta["records"] == 0
    assert meta["note"].startswith(f"no answers stored for {EMPTY}")
    after = traffic.read_traffic(served.engine)
    assert traffic.read_traffic(served.engine, EMPTY).empty
    assert after[["day", "model_version", "role"]].equals(before[["day", "model_version", "role"]])


@pytest.mark.integration
def test_the_purge_deletes_answers_past_retention_and_keeps_recent_ones(served: Served) -> None:
    records = served.records.iloc[:20]
    old, recent = TODAY - timedelta(days=RETENTION_DAYS + 5), TODAY - timedelta(days=RETENTION_DAYS)
    serve_day(served.engine, records, old, "old", {(LIVE, "1"): "p1", (SHADOW, "2"): "p2"})
    serve_day(served.engine, records, recent, "recent", {(LIVE, "1"): "p1"})
    report_outcomes(served.engine, records, "old", every=2)
    report_outcomes(served.engine, records, "recent", every=2)
    kept_before = len(read_served(served.engine, start=day_bounds(recent)[0]))

    result = materialize(served, EMPTY)

    assert result.success, failure_message(result)
    meta = metadata(result)
    assert (meta["purged_answers"], meta["purged_outcomes"]) == (40, 10)
    assert meta["purged_before"] == day_bounds(recent)[0].isoformat()
    assert read_served(served.engine, *day_bounds(old)).empty
    kept = read_served(served.engine, start=day_bounds(recent)[0])
    assert len(kept) == kept_before
    assert kept.loc[kept["request_id"].str.startswith("recent-"), "subscribed"].notna().sum() == 10
    with served.engine.connect() as connection:
        orphans = connection.execute(
            sa.select(sa.func.count())
            .select_from(store.served_outcomes)
            .where(store.served_outcomes.c.request_id.like("old-%"))
        ).scalar_one()
    assert orphans == 0


@pytest.mark.integration
def test_the_day_is_written_and_replaced_on_postgres(
    served: Served, postgres_database: str
) -> None:
    url = f"postgresql://postgres@127.0.0.1:5432/{postgres_database}"
    engine = store.connect(url)
    try:
        records = served.records.iloc[:400]
        serve_day(engine, records, DAY, "pg", {(LIVE, "1"): "p1", (SHADOW, "2"): "p2"})
        labelled = report_outcomes(engine, records, "pg", every=3)
        resources = {
            **served.resources,
            "monitoring_db": MonitoringDatabase(url=url, db_schema="monitoring"),
        }
        for _ in range(2):
            result = materialize(served, DAY, resources)
            assert result.success, failure_message(result)

        rows = traffic.read_traffic(engine).set_index(["role", "model_version"])
        assert rows.index.tolist() == [(LIVE, "1"), (SHADOW, "2")]
        for key, column in (((LIVE, "1"), "p1"), ((SHADOW, "2"), "p2")):
            for name, value in expected(records, column, labelled).items():
                if name != "requests":
                    assert rows.loc[key, name] == value, (key, name)
        assert rows["day"].tolist() == [DAY, DAY]
        assert rows["computed_at"].dt.tz is not None
        with engine.connect() as connection:
            schema = connection.execute(
                sa.text(
                    "select table_schema from information_schema.tables "
                    "where table_name = 'served_traffic'"
                )
            ).scalar_one()
        assert schema == "monitoring"
    finally:
        engine.dispose()


def test_the_schedule_runs_yesterday_and_the_week_before(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {
            "BANK_MARKETING_HOME": str(tmp_path),
            "BANK_MARKETING_TRAFFIC_START": (TODAY - timedelta(days=30)).isoformat(),
        }
    )
    repository = build_definitions(settings).get_repository_def()
    schedule = repository.get_schedule_def(SCHEDULE)
    tick = datetime.combine(TODAY, datetime.min.time(), tzinfo=UTC) + timedelta(minutes=15)

    requests = schedule.evaluate_tick(
        dg.build_schedule_context(scheduled_execution_time=tick, repository_def=repository)
    )

    days = [TODAY - timedelta(days=n) for n in range(1, RERUN_DAYS + 1)]
    assert [r.partition_key for r in requests.run_requests] == [d.isoformat() for d in days]
    assert [r.run_key for r in requests.run_requests] == [f"{d}@{TODAY}" for d in days]
    assert {r.tags["bank_marketing/trigger"] for r in requests.run_requests} == {SCHEDULE}
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    assert schedule.execution_timezone == "UTC" and schedule.cron_schedule == "15 0 * * *"


def test_the_schedule_starts_at_the_first_day() -> None:
    first = date(2026, 1, 1)
    assert days_to_run(datetime(2026, 1, 3, 0, 15, tzinfo=UTC), first) == [
        date(2026, 1, 2),
        date(2026, 1, 1),
    ]
    assert days_to_run(datetime(2026, 1, 1, 0, 15, tzinfo=UTC), first) == []
    schedule = build_traffic(Traffic(first_day="2026-01-01")).schedule
    context = dg.build_schedule_context(
        scheduled_execution_time=datetime(2026, 1, 1, 0, 15, tzinfo=UTC)
    )
    assert schedule.evaluate_tick(context).skip_message


def test_the_retention_cutoff_is_a_utc_midnight() -> None:
    now = datetime(2026, 5, 20, 23, 30, tzinfo=UTC)
    assert traffic.retention_cutoff(now, 90) == datetime(2026, 2, 19, tzinfo=UTC)
    with pytest.raises(ValueError, match="at least one day"):
        traffic.retention_cutoff(now, 0)


def traffic_row(**changes: Any) -> pd.DataFrame:
    row = {
        "day": pd.Timestamp("2026-03-10"),
        "model_version": "3",
        "role": LIVE,
        "requests": 8,
        "rows": 10,
        "reference_rows": 500,
        "input_columns": 11,
        "drifted_columns": 2,
        "drifted_share": 2 / 11,
        "prediction_drift": 0.05,
        "prediction_drift_method": "wasserstein",
        "missing_share": 0.0,
        "mean_probability": 0.2,
        "labelled_rows": 4,
        "roc_auc": 0.75,
        "accuracy": 0.75,
        "subscription_rate": 0.5,
        "note": None,
        "computed_at": pd.Timestamp("2026-03-11 00:15", tz="UTC"),
    }
    return traffic.traffic_frame([{**row, **changes}])


@pytest.mark.parametrize(
    "changes",
    [
        {"role": "canary"},
        {"requests": 11},
        {"labelled_rows": 12},
        {"drifted_share": 0.5},
        {"drifted_columns": 12, "drifted_share": 12 / 11},
        {"roc_auc": 1.2},
        {"labelled_rows": 0},
        {"roc_auc": np.nan},
        {"subscription_rate": 1.0},
        {"model_version": ""},
        {"day": pd.Timestamp("2026-03-11")},
    ],
    ids=lambda changes: ",".join(changes),
)
def test_served_traffic_rows_that_cannot_be_true_fail_their_schema(
    changes: dict[str, Any],
) -> None:
    schema = schemas.for_day(schemas.ServedTraffic, pd.Timestamp("2026-03-10"))
    schema.validate(traffic_row())
    with pytest.raises(pa.errors.SchemaErrors):
        schema.validate(traffic_row(**changes), lazy=True)


def test_one_row_per_version_and_role() -> None:
    frame = pd.concat([traffic_row(), traffic_row()], ignore_index=True)
    with pytest.raises(pa.errors.SchemaErrors):
        schemas.ServedTraffic.validate(frame, lazy=True)
    shadow = pd.concat([traffic_row(), traffic_row(role=SHADOW)], ignore_index=True)
    schemas.ServedTraffic.validate(shadow)
