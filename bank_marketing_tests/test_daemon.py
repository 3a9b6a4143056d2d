"""The loop under the real Dagster daemon: monthly files land, and everything follows by itself.

The instance is first filled as ``make run`` fills it: a replay (in this process) of a first
champion as of 2008-12 and the month 2009-01, landed, scored and rolled out. Then
``dagster-daemon run`` starts on it and, with no launch by the test, asks for nothing the replay
did, and turns two more landed months into contacts, predictions and drift_report runs, a retrain
as the policy decides and a rollover of the service on the test session's Ray. Then: a restart
requests nothing new, the same file again requests nothing, a broken file makes one failed run and
leaves the month's data, and a file outside the partitions is skipped with its reason.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import dagster as dg
import httpx
import pytest
from mlflow import MlflowClient

from bank_marketing.training.registry import CHAMPION_ALIAS
from bank_marketing.training.tracking import MODEL_NAME
from bank_marketing_tests.daemon_loop import (
    LANDED,
    REPLAYED,
    TRIGGER,
    Loop,
    every_sensor_ticked,
    land,
    settled,
    skip_reasons,
    wait_for,
)

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("loop", ["sqlite", "postgresql"], indirect=True)
def test_landed_months_run_the_whole_loop_under_the_daemon(
    loop: Loop, daemon: Callable[[], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    # On PostgreSQL storage the same loop without the retraining round and the bad files (which
    # SQLite storage shows): the policy's threshold is out of reach there.
    retrains = loop.storage == "sqlite"
    if not retrains:
        loop.environment["BANK_MARKETING_RETRAIN_PREDICTION_DRIFT"] = "1000"
    replayed = {run.run_id for run in loop.runs()}
    land(loop, LANDED[0], LANDED[-1])
    daemon()

    drift = dg.AssetKey("drift_report")
    keys = {f"{month}-01" for month in LANDED}
    wait_for(
        "drift reports of the landed months",
        lambda: keys <= loop.instance.get_materialized_partitions(drift),
        loop,
        timeout_s=300,
    )
    wait_for("the loop to settle", settled(loop), loop, timeout_s=600)

    # Every month went through contacts, then predictions and drift_report, each started by the
    # sensor or the automation, and every run succeeded.
    runs = loop.runs()
    assert [r for r in runs if r.status != dg.DagsterRunStatus.SUCCESS] == []
    # Nothing the replay did was asked for again: every run the daemon made is for a new month.
    daemon_runs = [r for r in runs if r.run_id not in replayed]
    assert all(r.tags.get("dagster/partition") != REPLAYED for r in daemon_runs)
    contacts = [r for r in daemon_runs if r.job_name == "contacts_job"]
    assert sorted(r.tags["dagster/partition"] for r in contacts) == sorted(keys)
    assert {r.tags[TRIGGER] for r in contacts} == {"validate_landed_files"}
    scoring = [r for r in daemon_runs if r.tags.get(TRIGGER) == "score_new_months"]
    assert sorted(r.tags["dagster/partition"] for r in scoring) == sorted(keys)
    for run in scoring:
        assert run.asset_selection == {dg.AssetKey("predictions"), drift}

    # Retraining as the policy decides: the default cooldown of two months after the first round
    # as of 2008-12 allows one round, as of 2009-02 or 2009-03 (whichever report came first).
    trainings = [r for r in daemon_runs if r.job_name == "training_job"]
    assert len(trainings) == int(retrains), [r.tags for r in trainings]
    for training in trainings:
        assert training.tags[TRIGGER] == "retrain_on_drift"
        assert training.tags["dagster/partition"] in {"2009-02-01", "2009-03-01"}
        # A round the daemon launches starts from the file of training defaults (the session's
        # quick one), as any round without run config of its own does.
        ops = training.run_config["ops"]
        assert ops["xgboost_candidate"]["config"] == {"n_estimators": 100, "learning_rate": 0.1}

    # The service serves the champion; every champion the loop saw was rolled out once.
    champion = MlflowClient(loop.settings.mlflow_tracking_uri).get_model_version_by_alias(
        MODEL_NAME, CHAMPION_ALIAS
    )
    # The replay's rollover of the first champion counts: the daemon did not repeat it.
    deployments = [r for r in runs if r.job_name == "deployment_job"]
    assert {r.tags[TRIGGER] for r in deployments} == {"deploy_new_champion"}
    deployed = [r.tags["bank_marketing/champion_version"] for r in deployments]
    assert len(deployed) == len(set(deployed)) and deployed[-1] == str(champion.version)
    model = httpx.get(f"{loop.settings.serve_url}/model", timeout=10).json()
    assert str(model["version"]) == str(champion.version)

    # A restart asks for nothing already done, and the same file landed again asks for nothing.
    before = len(loop.runs())
    land(loop, "2009-02")
    restarted = time.time()
    daemon()
    wait_for(
        "every sensor to tick twice after the restart",
        every_sensor_ticked(loop, restarted),
        loop,
        timeout_s=120,
    )
    assert len(loop.runs()) == before

    if loop.storage == "postgresql":
        # What follows is how the arrival sensor handles bad files, the same on either storage:
        # the SQLite instance shows it.
        return

    # A broken file: one failed run with the loader's message; the month keeps its data.
    contacts_key = dg.AssetKey("contacts")
    stored = loop.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=contacts_key, asset_partitions=["2009-02-01"]), limit=1
    ).records[0]
    february = loop.settings.landing_dir / "contacts-2009-02.csv"
    text = february.read_text()
    february.write_text(text[: len(text) // 2].rsplit(";", 1)[0])  # cut inside a record
    # A file outside the partitions: skipped with its reason, no run.
    (loop.settings.landing_dir / "contacts-2011-01.csv").write_text(text.replace('"feb"', '"jan"'))
    wait_for(
        "the broken file's run",
        lambda: any(
            r.tags.get("bank_marketing/landed_file") == "contacts-2009-02.csv"
            and r.status == dg.DagsterRunStatus.FAILURE
            for r in loop.runs("contacts_job")
        ),
        loop,
        timeout_s=180,
    )
    wait_for("the loop to settle after the broken file", settled(loop), loop, timeout_s=120)
    new = loop.runs()[before:]
    assert [(r.job_name, r.status) for r in new] == [("contacts_job", dg.DagsterRunStatus.FAILURE)]
    failure = loop.instance.all_logs(new[0].run_id, of_type=dg.DagsterEventType.STEP_FAILURE)
    message = failure[0].dagster_event.step_failure_data.user_failure_data.description
    assert "contacts-2009-02.csv" in message and "truncated" in message
    latest = loop.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=contacts_key, asset_partitions=["2009-02-01"]), limit=1
    ).records[0]
    assert latest.storage_id == stored.storage_id
    # The sensor's latest skipped tick says why the file outside the partitions starts nothing.
    reason = skip_reasons(loop, "validate_landed_files")[0]
    assert "contacts-2011-01.csv names 2011-01, outside the data's months 2008-05..2010-11" in (
        reason
    )
