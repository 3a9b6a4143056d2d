"""The fault matrix under the Dagster daemon: the daemon killed during a run, and two training
rounds requested in the same tick.

Both start from ``test_daemon``'s loop: a home the replay filled up to 2009-01 on the embedded
instance (SQLite storage, the embedded ``dagster.yaml`` that ``Settings.prepare`` writes), and
``dagster-daemon run`` started on it in a process group of its own. The daemon starts a code
server in that group, and the default run launcher has that server start each run's process: a
crash of the daemon alone leaves both running; a crash of the whole group (a ``kill`` of the
group, a container stopped) takes the run's process with it.
"""

from __future__ import annotations

import os
import signal
import time
from datetime import UTC, datetime
from itertools import pairwise

import dagster as dg
import pytest
from dagster._core.definitions.selector import InstigatorSelector
from dagster._core.scheduler.instigation import TickStatus
from dagster._core.storage.tags import (
    MAX_RUNTIME_SECONDS_TAG,
    PARENT_RUN_ID_TAG,
    RUN_KEY_TAG,
)
from mlflow import MlflowClient

from bank_marketing.monitoring import alerts, store
from bank_marketing.settings import EMBEDDED_INSTANCE_YAML
from bank_marketing.training.registry import CHAMPION_ALIAS
from bank_marketing.training.tracking import MODEL_NAME
from bank_marketing_tests.daemon_loop import (
    ACTIVE,
    TRIGGER,
    Daemon,
    Loop,
    every_sensor_ticked,
    land,
    settled,
    wait_for,
)
from bank_marketing_tests.faults import FaultRow, record

pytestmark = [pytest.mark.integration, pytest.mark.faults]

PART = "Dagster daemon (embedded instance)"
MONTH = "2009-02"
MONTH_KEY = f"{MONTH}-01"
DRIFT = dg.AssetKey("drift_report")
CHAMPION = dg.AssetKey("champion_model")
# The embedded instance's limit on a run's time; a run whose process died is settled after it.
MAX_RUNTIME_S = 7200


def worker_pid(loop: Loop, run_id: str) -> int | None:
    """The pid of the run's process, once it has started (its "Started process" event)."""
    for entry in loop.instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
        data = entry.dagster_event.engine_event_data if entry.dagster_event else None
        if data is not None and data.metadata.get("pid") is not None:
            return int(data.metadata["pid"].value)
    return None


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def running_contacts_run(loop: Loop, timeout_s: float = 180) -> tuple[dg.DagsterRun, int]:
    """The month's contacts run, once it is STARTED and its process is up."""
    found: dict[str, tuple[dg.DagsterRun, int]] = {}

    def started() -> bool:
        for run in loop.runs("contacts_job"):
            if run.tags.get("dagster/partition") != MONTH_KEY:
                continue
            if run.status == dg.DagsterRunStatus.STARTED and (pid := worker_pid(loop, run.run_id)):
                found["run"] = (run, pid)
                return True
        return False

    deadline = time.monotonic() + timeout_s
    while not started():
        assert time.monotonic() < deadline, f"no {MONTH} contacts run started in {timeout_s} s"
        time.sleep(0.2)
    return found["run"]


def requesting_ticks(loop: Loop, sensor: str) -> list:
    """The sensor's ticks that requested runs (the many that skipped left out)."""
    selector = InstigatorSelector(
        location_name="bank_marketing", repository_name="__repository__", name=sensor
    ).get_id()
    return list(
        loop.instance.schedule_storage.get_ticks("", selector, statuses=[TickStatus.SUCCESS])
    )


def sensor_runs(loop: Loop) -> list[dg.DagsterRun]:
    """The runs the sensors and the automation requested (the replay's included, as it tags its
    runs the same way), not the retries run_retries made of them."""
    return [r for r in loop.runs() if TRIGGER in r.tags and PARENT_RUN_ID_TAG not in r.tags]


def run_keys(runs: list[dg.DagsterRun]) -> list[str]:
    """The run keys of ``runs`` (the automation's runs have none)."""
    return [r.tags[RUN_KEY_TAG] for r in runs if RUN_KEY_TAG in r.tags]


def assert_nothing_requested_twice(loop: Loop) -> None:
    """Each run key once, and one contacts run and one scoring run for the month."""
    requested = sensor_runs(loop)
    keys = run_keys(requested)
    assert len(keys) == len(set(keys)), sorted(keys)
    month = [r for r in requested if r.tags.get("dagster/partition") == MONTH_KEY]
    assert sorted(r.tags[TRIGGER] for r in month) == ["score_new_months", "validate_landed_files"]


def test_daemon_process_killed_during_a_run_and_restarted(loop: Loop, daemon: Daemon) -> None:
    """SIGKILL of the daemon's own process, as a crash of it: the run it launched goes on."""
    loop.environment["BANK_MARKETING_RETRAIN_PREDICTION_DRIFT"] = "1000"  # no training round
    land(loop, MONTH)
    daemon()
    run, pid = running_contacts_run(loop)
    killed = daemon.process
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    killed_at, killed_wall = time.monotonic(), time.time()
    # The daemon's code server and the run's process are in its group, and survive it.
    assert alive(pid), "the run's process died with the daemon"
    daemon()  # restarted at once, as a supervisor (systemd, compose's restart policy) would

    wait_for(
        "the killed daemon's run to end",
        lambda: loop.instance.get_run_by_id(run.run_id).is_finished,
        loop,
        timeout_s=120,
    )
    ended = loop.instance.get_run_record_by_id(run.run_id)
    assert ended.dagster_run.status == dg.DagsterRunStatus.SUCCESS
    # The run was still running when its daemon died.
    assert ended.end_time is not None and ended.end_time > killed_wall
    run_s = ended.end_time - killed_wall
    wait_for(
        f"{MONTH}'s drift report",
        lambda: MONTH_KEY in loop.instance.get_materialized_partitions(DRIFT),
        loop,
        timeout_s=180,
    )
    month_s = time.monotonic() - killed_at
    wait_for("the loop to settle", settled(loop), loop, timeout_s=120)

    assert [
        (r.job_name, r.status) for r in loop.runs() if r.status != dg.DagsterRunStatus.SUCCESS
    ] == []
    assert_nothing_requested_twice(loop)
    assert daemon.process.poll() is None, "the restarted daemon exited"
    record(
        FaultRow(
            part=PART,
            fault="daemon process killed (SIGKILL, its pid only), restarted at once",
            strikes=f"while the {MONTH} contacts run it launched executes (run process up)",
            outcome=f"the run's process (a child of the code server, which outlived the daemon) "
            f"went on and the run succeeded {run_s:.1f} s after the kill; the restarted daemon "
            f"scored the month ({month_s:.1f} s after the kill); every run key once, one contacts "
            f"and one scoring run for the month",
            requests_failed=None,
            rows_lost=0,
            recovery_s=run_s,
        )
    )


def test_daemon_group_killed_during_a_run_and_restarted(loop: Loop, daemon: Daemon) -> None:
    """SIGKILL of the daemon's whole process group: the run's process dies too. Run monitoring
    (the embedded dagster.yaml's ``max_runtime_seconds``) ends the run, and run_retries runs it
    again.

    The default run launcher cannot see that a run's process died, so the run is only settled
    once it exceeds its maximum runtime: two hours as configured. The test does not wait two
    hours: once the dead run has been seen STARTED under the restarted daemon, it gives that one
    run a limit already passed (the ``dagster/max_runtime`` tag), as two hours passing would.
    """
    assert f"max_runtime_seconds: {MAX_RUNTIME_S}" in EMBEDDED_INSTANCE_YAML
    assert loop.instance.run_monitoring_enabled and loop.instance.run_retries_enabled
    loop.environment["BANK_MARKETING_RETRAIN_PREDICTION_DRIFT"] = "1000"  # no training round
    land(loop, MONTH)
    daemon()
    run, pid = running_contacts_run(loop)
    killed = daemon.process
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait()
    killed_at = time.monotonic()
    deadline = time.monotonic() + 30
    while alive(pid):
        assert time.monotonic() < deadline, "the run's process outlived its group's SIGKILL"
        time.sleep(0.2)
    restarted = time.time()
    daemon()

    # Nothing else settles it: after every sensor ticked twice the run is still STARTED, and the
    # month is not scored (its contacts never materialized).
    wait_for(
        "every sensor to tick twice after the restart",
        every_sensor_ticked(loop, restarted),
        loop,
        timeout_s=120,
    )
    assert loop.instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.STARTED
    assert MONTH_KEY not in loop.instance.get_materialized_partitions(DRIFT)
    stuck_s = time.monotonic() - killed_at

    loop.instance.add_run_tags(run.run_id, {MAX_RUNTIME_SECONDS_TAG: "1"})
    limit_passed = time.monotonic()
    wait_for(
        "run monitoring to fail the dead run",
        lambda: loop.instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE,
        loop,
        timeout_s=150,
    )
    settled_s = time.monotonic() - limit_passed
    # Ended for its runtime (the dead code server cannot be asked to terminate it, so run
    # monitoring marks it failed itself).
    said = [entry.message for entry in loop.instance.all_logs(run.run_id)]
    assert any("exceeding maximum runtime of 1 seconds" in message for message in said), said

    def retried() -> list[dg.DagsterRun]:
        return [r for r in loop.runs("contacts_job") if r.tags.get(PARENT_RUN_ID_TAG) == run.run_id]

    wait_for(
        "run_retries' run of the month's contacts to succeed",
        lambda: [r.status for r in retried()] == [dg.DagsterRunStatus.SUCCESS],
        loop,
        timeout_s=180,
    )
    wait_for(
        f"{MONTH}'s drift report",
        lambda: MONTH_KEY in loop.instance.get_materialized_partitions(DRIFT),
        loop,
        timeout_s=180,
    )
    recovered_s = time.monotonic() - limit_passed
    wait_for("the loop to settle", settled(loop), loop, timeout_s=120)

    assert not loop.instance.get_runs(dg.RunsFilter(statuses=list(ACTIVE)))
    unsuccessful = [r.run_id for r in loop.runs() if r.status != dg.DagsterRunStatus.SUCCESS]
    assert unsuccessful == [run.run_id]
    assert_nothing_requested_twice(loop)
    record(
        FaultRow(
            part=PART,
            fault="daemon's process group killed (SIGKILL: daemon, code server, run process), "
            "restarted at once",
            strikes=f"while the {MONTH} contacts run it launched executes",
            outcome=f"the dead run stayed STARTED ({stuck_s:.0f} s checked; the launcher cannot "
            f"see a dead process), counting against the queue's limits, the month unscored, "
            f"until run monitoring's "
            f"max_runtime_seconds ({MAX_RUNTIME_S} s as configured; the test shortened the "
            f"dead run's limit) failed it {settled_s:.1f} s after the limit passed "
            f"(poll_interval_seconds 60); run_retries ran it again, it succeeded and the month "
            f"was scored {recovered_s:.1f} s after the limit; every run key once",
            requests_failed=None,
            rows_lost=0,
            recovery_s=recovered_s,
        )
    )


ALERT = "PredictionDrift"
ALERT_MONTHS = ["2008-12", "2009-01"]


def test_two_training_rounds_requested_at_once(loop: Loop, daemon: Daemon) -> None:
    """Two Grafana alerts, for two months, stored in one notification: retrain_on_grafana_alert
    asks for both rounds in one tick. The queue runs one training round at a time, and each
    round's promotion compares its challenger with the champion the round before it left."""
    loop.environment["BANK_MARKETING_RETRAIN_COOLDOWN_MONTHS"] = "0"
    # retrain_on_drift asks for no round of its own: the two alerted rounds are the daemon's only
    # ones, two being enough to show one at a time and the champion each really replaces.
    loop.environment["BANK_MARKETING_RETRAIN_PREDICTION_DRIFT"] = "1000"
    client = MlflowClient(loop.settings.mlflow_tracking_uri)
    first_champion = str(client.get_model_version_by_alias(MODEL_NAME, CHAMPION_ALIAS).version)
    replayed = {run.run_id for run in loop.runs()}
    now = datetime.now(UTC)
    engine = store.connect(loop.settings.db_url)
    try:
        stored = alerts.store_notification(
            engine,
            [
                alerts.ReceivedAlert(
                    fingerprint=f"drift-{month}",
                    starts_at=now,
                    status=alerts.FIRING,
                    labels={"alertname": ALERT, "month": month},
                    annotations={},
                )
                for month in ALERT_MONTHS
            ],
        )
    finally:
        engine.dispose()
    assert stored.new_firing == len(ALERT_MONTHS)
    started = time.monotonic()
    daemon()

    def rounds() -> list[dg.RunRecord]:
        """The daemon's training rounds, in the order they started."""
        records = loop.instance.get_run_records(dg.RunsFilter(job_name="training_job"))
        return sorted(
            (r for r in records if r.dagster_run.run_id not in replayed),
            key=lambda r: r.start_time or float("inf"),
        )

    def alerted() -> list[dg.RunRecord]:
        return [
            r for r in rounds() if r.dagster_run.tags.get(TRIGGER) == "retrain_on_grafana_alert"
        ]

    wait_for(
        "both training rounds to end",
        lambda: len(alerted()) == 2 and all(r.dagster_run.is_finished for r in alerted()),
        loop,
        # A quick round takes about 2 minutes here (each step's process starts in 5-15 s).
        timeout_s=600,
    )
    trained_s = time.monotonic() - started
    wait_for("the loop to settle", settled(loop), loop, timeout_s=180)

    by_alert = alerted()
    assert sorted(r.dagster_run.tags["bank_marketing/alert_month"] for r in by_alert) == (
        ALERT_MONTHS
    )
    # Requested in the same tick: one tick of the sensor holds both runs.
    both = {r.dagster_run.run_id for r in by_alert}
    requesting = [tick.run_ids for tick in requesting_ticks(loop, "retrain_on_grafana_alert")]
    assert any(both <= set(run_ids) for run_ids in requesting), requesting
    # The daemon ran those two rounds and no other, both succeeded, one at a time: the second
    # started after the first ended.
    ran = rounds()
    assert [r.dagster_run.run_id for r in ran] == [r.dagster_run.run_id for r in by_alert]
    assert [r.dagster_run.status for r in ran] == [dg.DagsterRunStatus.SUCCESS] * len(ran)
    gaps_s = [later.start_time - earlier.end_time for earlier, later in pairwise(ran)]
    assert all(gap >= 0 for gap in gaps_s), f"rounds overlapped: gaps {gaps_s} s"

    def decision(run: dg.RunRecord) -> dict[str, object]:
        records = loop.instance.fetch_materializations(
            dg.AssetRecordsFilter(
                asset_key=CHAMPION,
                asset_partitions=[run.dagster_run.tags["dagster/partition"]],
            ),
            limit=10,
        ).records
        (materialization,) = [r for r in records if r.run_id == run.dagster_run.run_id]
        metadata = materialization.asset_materialization.metadata
        return {name: value.value for name, value in metadata.items()}

    # Each round compares with the champion it really replaces: the first with the replay's
    # champion, each later one with whatever the round before it left (its challenger if
    # promoted, else the same champion). The registry's promotion tags say the same.
    decisions = [decision(r) for r in ran]
    # (Dagster's metadata keeps a version as a number or a string, as it was given.)
    replaced = [first_champion] + [str(d["champion_version"]) for d in decisions[:-1]]
    assert [str(d["previous_champion_version"]) for d in decisions] == replaced
    for run_decision, champion in zip(decisions, replaced, strict=True):
        tags = client.get_model_version(MODEL_NAME, str(run_decision["challenger_version"])).tags
        assert tags["promotion_champion_version"] == champion
        assert tags["promotion_promoted"] == str(run_decision["promoted"])
    final = str(client.get_model_version_by_alias(MODEL_NAME, CHAMPION_ALIAS).version)
    assert final == str(decisions[-1]["champion_version"])

    requested = run_keys(sensor_runs(loop))
    assert len(requested) == len(set(requested))
    deployed = [r.tags["bank_marketing/champion_version"] for r in loop.runs("deployment_job")]
    assert len(deployed) == len(set(deployed))
    chain = ", ".join(
        f"{r.dagster_run.tags['dagster/partition'][:7]} compared with v{champion} "
        f"(promoted: {d['promoted']})"
        for r, d, champion in zip(ran, decisions, replaced, strict=True)
    )
    record(
        FaultRow(
            part=PART,
            fault="two training rounds requested at once",
            strikes=f"two firing Grafana alerts (months {', '.join(ALERT_MONTHS)}) in one "
            f"notification: retrain_on_grafana_alert requests both rounds in one tick",
            outcome=f"the queue ran {len(ran)} rounds one at a time (each started "
            f"{min(gaps_s):.1f} s or more after the one before ended); each compared with the "
            f"champion the round before left: {chain}; the alias, the promotion tags and the "
            f"rollovers agree; all rounds ended {trained_s:.0f} s after the daemon started",
            requests_failed=None,
            rows_lost=0,
            recovery_s=None,
        )
    )
