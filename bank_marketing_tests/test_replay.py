"""A short replay through the real instance and sensors, on the machine's PostgreSQL.

The replay is the session's ``replayed_stack`` (conftest), which Grafana's tests read too.
"""

from __future__ import annotations

import itertools
import math

import pytest

from bank_marketing.orchestration import replay_report
from bank_marketing.orchestration.assets.metadata import ROUNDING_ERROR
from bank_marketing.settings import Settings
from bank_marketing.training.families import FAMILIES
from bank_marketing_tests.conftest import REPLAYED_MONTHS, ReplayedStack

pytestmark = pytest.mark.integration


def test_a_short_replay_monitors_each_month_and_retrains_where_the_sensor_asks(
    replayed_stack: ReplayedStack,
) -> None:
    result, trainings = replayed_stack.result, replayed_stack.trainings
    assert type(replayed_stack.instance.run_storage).__name__ == "PostgresRunStorage"
    assert [month.month for month in result.months] == REPLAYED_MONTHS
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
    monitoring = replayed_stack.defs.resources["monitoring_db"]
    reports = monitoring.read_drift_reports()
    assert sorted(str(m)[:7] for m in reports["month"]) == REPLAYED_MONTHS
    quality = monitoring.read_monthly_quality()
    assert len(quality) == 3
    predictions = monitoring.read_predictions()
    assert len(predictions) == sum(month.rows for month in result.months)


def test_the_baselines_score_the_replayed_months_as_the_report_shows_them(
    replayed_stack: ReplayedStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    for variable, value in replayed_stack.environment.items():
        monkeypatch.setenv(variable, value)
    result = replayed_stack.result
    scores = replay_report.baselines(Settings.from_env(), result)
    frozen = scores.pop(f"{replay_report.FROZEN} (v{result.first_champion})")
    monthly = scores.pop(replay_report.MONTHLY)
    [(best_name, best)] = scores.items()
    assert best_name.startswith(f"{replay_report.BEST_SCHEDULE}: every ")
    keys = [f"{month}-01" for month in REPLAYED_MONTHS]
    assert sorted(frozen) == sorted(monthly) == sorted(best) == keys
    assert all(0.5 < frozen[key] < 1 and 0.5 < monthly[key] < 1 for key in keys)
    # Every series scores the first month with the first champion.
    assert frozen[keys[0]] == monthly[keys[0]] == best[keys[0]]
    # Where the loop's month was scored by the first champion, the frozen baseline is that score.
    first = [m for m in result.months if m.scored_by == result.first_champion]
    assert first
    for month in first:
        # The loop's score is drift_report's metadata, shown to 4 decimals.
        assert frozen[f"{month.month}-01"] == pytest.approx(
            month.roc_auc, abs=1e-6 + ROUNDING_ERROR
        )
