"""A short replay through the real instance and sensors, on the machine's PostgreSQL."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import dagster as dg
import pytest

from bank_marketing.definitions import build_definitions
from bank_marketing.replay import replay
from bank_marketing.settings import Settings
from bank_marketing.training.families import FAMILIES

pytestmark = pytest.mark.integration


def test_a_short_replay_monitors_each_month_and_retrains_where_the_sensor_asks(
    postgres_database: str,
    postgres_dagster_home: Path,
    bank_full_path: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    dagster_home = postgres_dagster_home
    db_url = f"postgresql://postgres@127.0.0.1:5432/{postgres_database}"
    home = tmp_path / "home"
    # The replay's training rounds rebuild the definitions from the environment.
    for name, value in {
        "DAGSTER_HOME": str(dagster_home),
        "BANK_MARKETING_HOME": str(home),
        "BANK_MARKETING_SOURCE": str(bank_full_path),
        "BANK_MARKETING_DB_URL": db_url,
        "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}",
    }.items():
        monkeypatch.setenv(name, value)
    settings = Settings.from_env()
    settings.prepare()
    defs = build_definitions(settings)

    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        result = replay(
            defs, instance, first_as_of="2010-06-01", last_month="2010-09-01", serve=False
        )
        trainings = instance.get_run_records(dg.RunsFilter(job_name="training_job"))

    assert [month.month for month in result.months] == ["2010-07", "2010-08", "2010-09"]
    assert result.first_champion and result.rounds[0] == "2010-06-01"
    assert result.first_champion_family in FAMILIES
    for month in result.months:
        assert month.champion_family in FAMILIES  # read from champion_model's metadata
        assert month.rows > 0 and 0.0 <= month.subscription_rate <= 1.0
        assert not math.isnan(month.prediction_drift) and not math.isnan(month.roc_auc)
    # Each retrain is the one the sensor asked for: as of the drifted month, at most one a month,
    # never in the month right after one (the default cooldown), and run as a real training_job.
    retrained = [f"{m.month}-01" for m in result.months if m.retrained]
    assert result.rounds == ["2010-06-01", *retrained]
    assert sorted(r.dagster_run.tags["dagster/partition"] for r in trainings) == sorted(
        result.rounds
    )
    for earlier, later in itertools.pairwise(retrained):
        assert (int(later[5:7]) - int(earlier[5:7])) % 12 >= 2
    for record in trainings:
        if record.dagster_run.tags["dagster/partition"] != "2010-06-01":
            assert record.dagster_run.tags["bank_marketing/trigger"] == "retrain_on_drift"
    # The numbers are in the monitoring tables on PostgreSQL, one row per month.
    monitoring = defs.resources["monitoring_db"]
    reports = monitoring.read_drift_reports()
    assert sorted(str(m)[:7] for m in reports["month"]) == ["2010-07", "2010-08", "2010-09"]
    quality = monitoring.read_monthly_quality()
    assert len(quality) == 3
    predictions = monitoring.read_predictions()
    assert len(predictions) == sum(month.rows for month in result.months)
