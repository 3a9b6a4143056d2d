"""The sensors on a test instance: drift reports, stored Grafana alerts and champion changes in,
run requests (partition keys, run keys) and cursors out."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from bank_marketing.monitoring import alerts, store
from bank_marketing.monitoring.policy import RetrainRule
from bank_marketing.orchestration.definitions import build_definitions
from bank_marketing.orchestration.partitions import monthly_partitions
from bank_marketing.orchestration.resources import MonitoringDatabase
from bank_marketing.orchestration.sensors import (
    DriftReportContractError,
    LiveRecord,
    RetrainPolicy,
    cooldown_blocks,
    deploy_new_champion,
    judge_drift,
    judge_service,
    retrain_on_drift,
    retrain_on_grafana_alert,
)
from bank_marketing.serving.webhook import PATH, create_webhook_router
from bank_marketing.settings import Settings

NAN = float("nan")
# The scenarios use the share rule at 0.5 and a cooldown of one month, so each rule shows alone.
SCENARIO_POLICY = RetrainPolicy(
    signals=["prediction_drift", "drifted_share"], drifted_share_threshold=0.5, cooldown_months=1
)


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.DagsterInstance.ephemeral() as instance:
        yield instance


@pytest.fixture
def monitoring_db(tmp_path: Path) -> MonitoringDatabase:
    return MonitoringDatabase(url=f"sqlite:///{tmp_path / 'monitoring.db'}")


def report_drift(
    instance: dg.DagsterInstance,
    month: str,
    *,
    prediction_drift: float = 0.02,
    drifted_share: float = 0.18,
    rows: int = 1200,
) -> None:
    """A drift_report materialization with the metadata its asset records."""
    instance.report_runless_asset_event(
        dg.AssetMaterialization(
            asset_key="drift_report",
            partition=f"{month}-01",
            metadata={
                "month": month,
                "model_version": "3",
                "rows": rows,
                "drifted_columns": 0 if rows == 0 else round(drifted_share * 11),
                "drifted_share": drifted_share,
                "prediction_drift": prediction_drift,
                "prediction_drift_method": "psi",
                "missing_share": 0.0,
                "report_path": dg.MetadataValue.path(f"/reports/drift-{month}.html"),
            },
        )
    )


def tick(
    sensor: dg.SensorDefinition,
    instance: dg.DagsterInstance,
    cursor: str | None,
    **resources: Any,
) -> dg.SensorResult:
    resources.setdefault("retrain_policy", SCENARIO_POLICY)
    context = dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources)
    result = sensor(context)
    assert isinstance(result, dg.SensorResult)
    return result


def requested(result: dg.SensorResult) -> list[tuple[str | None, str | None]]:
    return [(r.partition_key, r.run_key) for r in result.run_requests or []]


def skip_message(result: dg.SensorResult) -> str:
    assert result.skip_reason is not None
    return result.skip_reason.skip_message or ""


# retrain_on_drift


def test_three_months_between_two_ticks_are_all_evaluated(instance: dg.DagsterInstance) -> None:
    first = tick(retrain_on_drift, instance, None)
    assert not first.run_requests
    assert "no drift_report" in skip_message(first)

    report_drift(instance, "2009-03", prediction_drift=0.04, drifted_share=0.18)  # calm
    report_drift(instance, "2009-04", prediction_drift=0.31, drifted_share=0.18)  # predictions
    report_drift(instance, "2009-05", prediction_drift=0.05, drifted_share=0.64)  # inputs

    second = tick(retrain_on_drift, instance, first.cursor)
    keys = requested(second)
    assert [partition for partition, _ in keys] == ["2009-04-01", "2009-05-01"]
    run_keys = [run_key for _, run_key in keys]
    assert run_keys[0].startswith("retrain-2009-04-drift-")
    assert run_keys[1].startswith("retrain-2009-05-drift-")
    assert second.cursor is not None and int(second.cursor) > 0
    reasons = [r.tags["bank_marketing/drift_reason"] for r in second.run_requests or []]
    assert "prediction drift 0.310 > 0.1" in reasons[0]
    assert "drifted share 0.64 > 0.5" in reasons[1]
    assert all(r.tags["bank_marketing/trigger"] == "retrain_on_drift" for r in second.run_requests)

    # The same tick again (e.g. after a crash before the cursor was saved): the same run keys,
    # which Dagster launches once.
    assert requested(tick(retrain_on_drift, instance, first.cursor)) == keys
    # The next tick starts after the three months.
    third = tick(retrain_on_drift, instance, second.cursor)
    assert not third.run_requests and third.cursor == second.cursor
    assert f"after storage id {second.cursor}" in skip_message(third)


def test_every_partition_is_seen_even_when_one_month_repeats(instance: dg.DagsterInstance):
    """asset_sensor would see only the newest event; a re-run month counts again."""
    report_drift(instance, "2009-04", prediction_drift=0.3)
    report_drift(instance, "2009-07", prediction_drift=0.3)
    report_drift(instance, "2009-04", prediction_drift=0.3)
    result = tick(
        retrain_on_drift,
        instance,
        None,
        retrain_policy=RetrainPolicy(
            signals=["prediction_drift", "drifted_share"],
            drifted_share_threshold=0.5,
            cooldown_months=0,
        ),
    )
    keys = requested(result)
    assert [p for p, _ in keys] == ["2009-04-01", "2009-07-01", "2009-04-01"]
    assert len({k for _, k in keys}) == 3  # two reports of a month: two events, two run keys


def test_a_calm_tick_says_why_nothing_was_requested(instance: dg.DagsterInstance) -> None:
    report_drift(instance, "2009-03", prediction_drift=0.04, drifted_share=0.18)
    message = skip_message(tick(retrain_on_drift, instance, None))
    assert "1 new event(s)" in message
    assert "2009-03: prediction drift 0.040 <= 0.1; drifted share 0.18 <= 0.5" in message


def test_an_empty_month_never_triggers(instance: dg.DagsterInstance) -> None:
    report_drift(instance, "2008-09", rows=0, prediction_drift=NAN, drifted_share=NAN)
    # Even a zero threshold: an empty month has nothing that could have drifted.
    strict = RetrainPolicy(
        signals=["prediction_drift", "drifted_share"],
        prediction_drift_threshold=0.0,
        drifted_share_threshold=0.0,
    )
    result = tick(retrain_on_drift, instance, None, retrain_policy=strict)
    assert not result.run_requests
    assert "2008-09: empty month (0 rows)" in skip_message(result)
    assert result.cursor is not None  # evaluated, not left for the next tick


def test_a_month_without_drift_numbers_does_not_trigger(instance: dg.DagsterInstance) -> None:
    report_drift(instance, "2009-02", rows=40, prediction_drift=NAN, drifted_share=0.0)
    result = tick(retrain_on_drift, instance, None, retrain_policy=SCENARIO_POLICY)
    assert not result.run_requests
    assert "prediction drift not computed" in skip_message(result)


def test_thresholds_are_configuration(instance: dg.DagsterInstance) -> None:
    report_drift(instance, "2009-04", prediction_drift=0.25, drifted_share=0.3)
    both = ["prediction_drift", "drifted_share"]
    lenient = RetrainPolicy(
        signals=both, prediction_drift_threshold=0.3, drifted_share_threshold=0.5
    )
    assert not tick(retrain_on_drift, instance, None, retrain_policy=lenient).run_requests
    strict = RetrainPolicy(
        signals=both, prediction_drift_threshold=0.5, drifted_share_threshold=0.2
    )
    assert requested(tick(retrain_on_drift, instance, None, retrain_policy=strict))


def test_the_default_policy_retrains_every_three_months_whatever_the_drift(
    instance: dg.DagsterInstance,
) -> None:
    for month in range(1, 8):
        report_drift(instance, f"2009-{month:02d}", prediction_drift=0.01, drifted_share=0.0)
    result = tick(retrain_on_drift, instance, None, retrain_policy=RetrainPolicy())
    assert [p for p, _ in requested(result)] == ["2009-01-01", "2009-04-01", "2009-07-01"]
    (first, *_) = result.run_requests or []
    assert first.tags["bank_marketing/drift_reason"] == "schedule: every 3 month(s) due"


def test_cooldown_skips_months_too_close_to_the_last_retrain(instance: dg.DagsterInstance):
    for month in ("2009-03", "2009-04", "2009-05", "2009-06"):
        report_drift(instance, month, prediction_drift=0.3)
    policy = RetrainPolicy(signals=["prediction_drift"], cooldown_months=2)
    first = tick(retrain_on_drift, instance, None, retrain_policy=policy)
    assert [p for p, _ in requested(first)] == ["2009-03-01", "2009-05-01"]

    no_cooldown = tick(retrain_on_drift, instance, None, retrain_policy=SCENARIO_POLICY)
    assert len(requested(no_cooldown)) == 4  # the default 1: one retrain per month at most


def _stub_training_job(fail: bool = False) -> dg.JobDefinition:
    """A job named like the real one, so its runs carry the same name and partition tag."""

    @dg.asset(partitions_def=monthly_partitions, name="champion_stub")
    def champion_stub() -> None:
        if fail:
            raise RuntimeError("training failed")

    defs = dg.Definitions(
        assets=[champion_stub],
        jobs=[dg.define_asset_job("training_job", selection=[champion_stub])],
    )
    return defs.resolve_job_def("training_job")


def test_cooldown_counts_training_runs_in_the_instance(instance: dg.DagsterInstance) -> None:
    job = _stub_training_job()
    job.execute_in_process(instance=instance, partition_key="2009-06-01")
    report_drift(instance, "2009-06", prediction_drift=0.3)
    report_drift(instance, "2009-05", prediction_drift=0.3)
    report_drift(instance, "2009-07", prediction_drift=0.3)
    result = tick(retrain_on_drift, instance, None)
    # 2009-05 is older than the run as of 2009-06, 2009-06 has one: only 2009-07 retrains.
    assert [p for p, _ in requested(result)] == ["2009-07-01"]


def test_a_failed_training_run_does_not_hold_the_cooldown(instance: dg.DagsterInstance) -> None:
    run = _stub_training_job(fail=True).execute_in_process(
        instance=instance, partition_key="2009-06-01", raise_on_error=False
    )
    assert not run.success
    report_drift(instance, "2009-06", prediction_drift=0.3)
    assert [p for p, _ in requested(tick(retrain_on_drift, instance, None))] == ["2009-06-01"]


def test_a_report_without_the_contract_metadata_fails_loudly(instance: dg.DagsterInstance):
    instance.report_runless_asset_event(
        dg.AssetMaterialization(
            asset_key="drift_report", partition="2009-04-01", metadata={"rows": 10}
        )
    )
    with pytest.raises(DriftReportContractError, match=r"2009-04 .*lacks"):
        tick(retrain_on_drift, instance, None)


@pytest.mark.parametrize(
    ("metadata", "drifted"),
    [
        ({"rows": 100, "prediction_drift": 0.1, "drifted_share": 0.5}, False),  # at, not above
        ({"rows": 100, "prediction_drift": 0.1001, "drifted_share": 0.0}, True),
        ({"rows": 100, "prediction_drift": 0.0, "drifted_share": 0.51}, True),
        ({"rows": 100, "prediction_drift": NAN, "drifted_share": 0.9}, True),
        ({"rows": 0, "prediction_drift": 0.9, "drifted_share": 0.9}, False),
        ({"rows": 0, "prediction_drift": NAN, "drifted_share": NAN}, False),
    ],
)
def test_judge_drift(metadata: dict[str, Any], drifted: bool) -> None:
    assert judge_drift("2009-04-01", metadata, SCENARIO_POLICY).retrain is drifted


@pytest.mark.parametrize(
    ("last", "month", "cooldown", "blocked"),
    [
        (None, "2009-04-01", 3, False),
        ("2009-04-01", "2009-04-01", 0, False),
        ("2009-04-01", "2009-04-01", 1, True),
        ("2009-04-01", "2009-05-01", 1, False),
        ("2009-04-01", "2009-06-01", 3, True),
        ("2009-11-01", "2010-02-01", 3, False),
        ("2009-06-01", "2009-04-01", 1, True),
    ],
)
def test_cooldown_blocks(last: str | None, month: str, cooldown: int, blocked: bool) -> None:
    assert (cooldown_blocks(last, month, cooldown) is not None) is blocked


def policy_from(env: dict[str, str]) -> RetrainRule:
    return Settings.from_env(env).retrain_rule


def test_policy_from_environment() -> None:
    """Read with the rest of the configuration (settings), once; the sensors' resource is built
    from it."""
    assert Settings.from_env({}).retrain_rule == RetrainRule()
    defaults = RetrainRule()
    assert (defaults.prediction_drift_threshold, defaults.drifted_share_threshold) == (0.1, 1.0)
    assert defaults.cooldown_months == 2
    policy = policy_from(
        {
            "BANK_MARKETING_RETRAIN_PREDICTION_DRIFT": "0.2",
            "BANK_MARKETING_RETRAIN_DRIFTED_SHARE": "0.4",
            "BANK_MARKETING_RETRAIN_COOLDOWN_MONTHS": "3",
            "BANK_MARKETING_RETRAIN_ALERT_NAMES": "Prediction drift, Drifted columns",
        }
    )
    assert policy.prediction_drift_threshold == 0.2
    assert policy.drifted_share_threshold == 0.4
    assert policy.cooldown_months == 3
    assert policy.alert_names == ["Prediction drift", "Drifted columns"]
    with pytest.raises(ValueError, match="BANK_MARKETING_RETRAIN_COOLDOWN_MONTHS"):
        policy_from({"BANK_MARKETING_RETRAIN_COOLDOWN_MONTHS": "two"})
    with pytest.raises(Exception, match="less than or equal to 1"):
        policy_from({"BANK_MARKETING_RETRAIN_DRIFTED_SHARE": "1.5"})


def test_the_definitions_build_the_policy_resource_from_the_settings(tmp_path) -> None:
    settings = Settings.from_env(
        {"BANK_MARKETING_HOME": str(tmp_path), "BANK_MARKETING_RETRAIN_COOLDOWN_MONTHS": "5"}
    )
    resource = build_definitions(settings).resources["retrain_policy"]
    assert isinstance(resource, RetrainPolicy) and resource.cooldown_months == 5


# retrain_on_grafana_alert


def firing(fingerprint: str = "3c2f0b8e1a9d4f70", month: str | None = "2009-04", **extra: Any):
    labels = {"alertname": "Prediction drift", **({"month": month} if month else {})}
    alert: dict[str, Any] = {
        "status": "firing",
        "labels": labels,
        "annotations": {"summary": "prediction drift above 0.1"},
        "startsAt": "2024-03-02T10:15:00.123456789Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://grafana:3000/alerting/grafana/drift/view",
        "fingerprint": fingerprint,
        "values": {"A": 0.31},
    }
    alert.update(extra)
    return alert


def notification(*alert_bodies: dict[str, Any]) -> dict[str, Any]:
    statuses = {a["status"] for a in alert_bodies}
    return {
        "receiver": "bank-marketing retraining",
        "status": "firing" if "firing" in statuses else "resolved",
        "orgId": 1,
        "alerts": list(alert_bodies),
        "groupLabels": {},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://grafana:3000/",
        "version": "1",
        "groupKey": "{}:{}",
        "truncatedAlerts": 0,
    }


@pytest.fixture
def webhook(monitoring_db: MonitoringDatabase) -> TestClient:
    app = FastAPI()
    app.include_router(create_webhook_router(monitoring_db.url, "token"))
    return TestClient(app)


def post(webhook: TestClient, body: dict[str, Any]) -> dict[str, Any]:
    response = webhook.post(PATH, json=body, headers={"Authorization": "Bearer token"})
    assert response.status_code == 202, response.text
    return response.json()


def alert_tick(
    instance: dg.DagsterInstance,
    monitoring_db: MonitoringDatabase,
    cursor: str | None = None,
    policy: RetrainPolicy | None = None,
) -> dg.SensorResult:
    return tick(
        retrain_on_grafana_alert,
        instance,
        cursor,
        retrain_policy=policy or SCENARIO_POLICY,
        monitoring_db=monitoring_db,
    )


def test_one_firing_alert_requests_one_retrain(
    instance: dg.DagsterInstance, monitoring_db: MonitoringDatabase, webhook: TestClient
) -> None:
    empty = alert_tick(instance, monitoring_db)
    assert not empty.run_requests and "no Grafana alert stored" in skip_message(empty)

    post(webhook, notification(firing()))
    result = alert_tick(instance, monitoring_db, empty.cursor)
    assert requested(result) == [("2009-04-01", "retrain-alert-Prediction drift-2009-04")]
    request = result.run_requests[0]
    assert request.tags["bank_marketing/trigger"] == "retrain_on_grafana_alert"
    assert request.tags["bank_marketing/alert_name"] == "Prediction drift"
    assert result.cursor == "1"
    after = alert_tick(instance, monitoring_db, result.cursor)
    assert not after.run_requests and after.cursor == "1"


def test_the_same_notification_twice_requests_one_retrain(
    instance: dg.DagsterInstance, monitoring_db: MonitoringDatabase, webhook: TestClient
) -> None:
    first = alert_tick(instance, monitoring_db)
    post(webhook, notification(firing()))
    assert post(webhook, notification(firing()))["new"] == 0  # Grafana's repeat, or a retry
    result = alert_tick(instance, monitoring_db, first.cursor)
    assert len(requested(result)) == 1
    # Posted again after the tick: still nothing new.
    post(webhook, notification(firing()))
    assert not alert_tick(instance, monitoring_db, result.cursor).run_requests


def test_resolved_alerts_request_nothing(
    instance: dg.DagsterInstance, monitoring_db: MonitoringDatabase, webhook: TestClient
) -> None:
    post(webhook, notification(firing(status="resolved", endsAt="2024-03-02T11:00:00Z")))
    result = alert_tick(instance, monitoring_db)
    assert not result.run_requests
    assert "resolved" in skip_message(result)
    assert result.cursor == "1"


def test_resolution_of_a_handled_alert_requests_nothing(
    instance: dg.DagsterInstance, monitoring_db: MonitoringDatabase, webhook: TestClient
) -> None:
    post(webhook, notification(firing()))
    first = alert_tick(instance, monitoring_db)
    assert len(requested(first)) == 1
    post(webhook, notification(firing(status="resolved", endsAt="2024-03-02T11:00:00Z")))
    assert not alert_tick(instance, monitoring_db, first.cursor).run_requests


def test_an_alert_naming_no_month_retrains_as_of_the_latest_drift_report(
    instance: dg.DagsterInstance, monitoring_db: MonitoringDatabase, webhook: TestClient
) -> None:
    post(webhook, notification(firing(month=None)))
    before = alert_tick(instance, monitoring_db)
    assert not before.run_requests
    assert "names no month and no drift_report exists yet" in skip_message(before)

    report_drift(instance, "2009-05")
    report_drift(instance, "2009-06")
    post(webhook, notification(firing(fingerprint="77aa", month=None)))
    after = alert_tick(instance, monitoring_db, before.cursor)
    assert [p for p, _ in requested(after)] == ["2009-06-01"]


def test_alerts_for_one_month_in_one_notification_train_once(
    instance: dg.DagsterInstance, monitoring_db: MonitoringDatabase, webhook: TestClient
) -> None:
    """Two rules fire on the same month: the default cooldown keeps it to one retrain."""
    post(webhook, notification(firing("aa01"), firing("bb02")))
    result = alert_tick(instance, monitoring_db)
    assert [p for p, _ in requested(result)] == ["2009-04-01"]


def test_alert_names_and_months_outside_the_data_are_filtered(
    instance: dg.DagsterInstance, monitoring_db: MonitoringDatabase, webhook: TestClient
) -> None:
    other = firing("cc03", labels={"alertname": "TestAlert", "month": "2009-04"})
    outside = firing("dd04", month="2015-01")
    post(webhook, notification(other, outside))
    policy = RetrainPolicy(alert_names=["Prediction drift"])
    result = alert_tick(instance, monitoring_db, policy=policy)
    assert not result.run_requests
    message = skip_message(result)
    assert "not one of ['Prediction drift']" in message
    assert "month 2015-01 is not a partition" in message


# deploy_new_champion


def champion(
    instance: dg.DagsterInstance, month: str, version: str, previous: str, promoted: bool
) -> None:
    instance.report_runless_asset_event(
        dg.AssetMaterialization(
            asset_key="champion_model",
            partition=f"{month}-01",
            metadata={
                "decision": "challenger beats champion" if promoted else "the champion stays",
                "promoted": promoted,
                "champion_version": version,
                "challenger_version": version if promoted else str(int(version) + 1),
                "previous_champion_version": previous,
            },
        )
    )


def test_a_new_champion_is_deployed_once(instance: dg.DagsterInstance) -> None:
    first = tick(deploy_new_champion, instance, None)
    assert not first.run_requests

    champion(instance, "2008-12", "1", "none", promoted=True)
    result = tick(deploy_new_champion, instance, first.cursor)
    assert [(r.run_key, r.partition_key) for r in result.run_requests] == [("deploy-v1", None)]
    assert result.run_requests[0].tags["bank_marketing/previous_champion_version"] == "none"

    champion(instance, "2009-04", "1", "1", promoted=False)
    kept = tick(deploy_new_champion, instance, result.cursor)
    assert not kept.run_requests
    assert "none changed the champion" in skip_message(kept)
    assert int(kept.cursor) > int(result.cursor)


def test_only_the_newest_of_several_champions_is_deployed(instance: dg.DagsterInstance) -> None:
    champion(instance, "2009-04", "6", "1", promoted=True)
    champion(instance, "2009-05", "6", "6", promoted=False)
    champion(instance, "2009-06", "11", "6", promoted=True)
    result = tick(deploy_new_champion, instance, None)
    assert [r.run_key for r in result.run_requests] == ["deploy-v11"]
    assert result.run_requests[0].tags["bank_marketing/champion_as_of"] == "2009-06"


# restore_live_version


def unknown_champion() -> str:
    raise AssertionError("the champion is read only for a deployment that followed it")


def test_the_service_is_in_line_when_it_answers_with_the_recorded_version() -> None:
    pinned = LiveRecord(version="3", shadow_version=None, pinned=True)
    assert judge_service(pinned, {"version": "3", "shadow_version": None}, unknown_champion) is None
    # A pinned version is not to be replaced by the champion's, whatever the replicas did.
    answer = {"version": "5", "shadow_version": None}
    assert judge_service(pinned, answer, lambda: "5") == "the service answers with v5"
    # Unless v5 became champion after the pin: the replicas follow the alias's move, and
    # deploy_new_champion deploys it.
    overtaken = LiveRecord(version="3", shadow_version=None, pinned=True, champion_since=True)
    assert judge_service(overtaken, answer, lambda: "5") is None
    assert judge_service(overtaken, {"version": "4"}, lambda: "5") == "the service answers with v4"


def test_a_deployment_that_followed_the_champion_may_answer_with_the_new_champion() -> None:
    followed = LiveRecord(version="3", shadow_version=None, pinned=False)
    assert judge_service(followed, {"version": "5"}, lambda: "5") is None
    assert judge_service(followed, {"version": "4"}, lambda: "5") == "the service answers with v4"


def test_no_answer_and_a_lost_shadow_are_departures() -> None:
    record = LiveRecord(version="3", shadow_version="4", pinned=True)
    assert judge_service(record, None, unknown_champion) == (
        "the service does not answer GET /model with a model"
    )
    lost = {"version": "3", "shadow_version": None}
    assert judge_service(record, lost, unknown_champion) == (
        "the service scores no version in shadow"
    )
    assert judge_service(record, {"version": "3", "shadow_version": "4"}, unknown_champion) is None


def deployed(
    instance: dg.DagsterInstance, version: str, pinned: bool, shadow: str = "none"
) -> None:
    instance.report_runless_asset_event(
        dg.AssetMaterialization(
            asset_key="production_deployment",
            metadata={"live_version": version, "pinned": pinned, "shadow_version": shadow},
        )
    )


def test_the_recorded_version_is_restored_after_two_ticks_without_it(
    instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    from bank_marketing.orchestration.resources import ServingCluster
    from bank_marketing.orchestration.sensors import restore_live_version
    from bank_marketing_tests.conftest import free_port

    # Nothing answers at this address: a Ray head that died.
    serving = ServingCluster(
        dashboard_url=f"http://127.0.0.1:{free_port()}",
        serve_url=f"http://127.0.0.1:{free_port()}",
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
    )

    def evaluate(cursor: str | None) -> dg.SensorResult:
        return tick(restore_live_version, instance, cursor, serving=serving)

    nothing = evaluate(None)
    assert not nothing.run_requests
    assert "no live version" in skip_message(nothing)

    deployed(instance, "7", pinned=True, shadow="8")
    first = evaluate(None)
    assert not first.run_requests and "next tick" in skip_message(first)
    second = evaluate(first.cursor)
    [request] = second.run_requests
    assert request.run_config == {
        "ops": {"production_deployment": {"config": {"model_version": "7", "shadow_version": "8"}}}
    }
    assert request.tags["bank_marketing/trigger"] == "restore_live_version"
    assert request.tags["bank_marketing/recorded_version"] == "7"

    # A deployment that followed the champion is restored to the champion, not pinned.
    deployed(instance, "9", pinned=False)
    again = evaluate(evaluate(None).cursor)
    assert again.run_requests[0].run_config == {"ops": {"production_deployment": {"config": {}}}}


# Wiring


def test_sensors_load_with_the_real_jobs_and_resources(tmp_path: Path) -> None:
    from bank_marketing.orchestration.definitions import build_definitions
    from bank_marketing.settings import Settings

    settings = Settings.from_env(
        {"BANK_MARKETING_HOME": str(tmp_path), "BANK_MARKETING_SENSOR_INTERVAL_SECONDS": "7"}
    )
    repository = build_definitions(settings).get_repository_def()
    jobs = {
        s.name: s.job_name
        for s in repository.sensor_defs
        if not isinstance(s, dg.AutomationConditionSensorDefinition)
    }
    assert jobs == {
        "validate_landed_files": "contacts_job",
        "retrain_on_drift": "training_job",
        "retrain_on_grafana_alert": "training_job",
        "deploy_new_champion": "deployment_job",
        "restore_live_version": "deployment_job",
    }
    automation = repository.get_sensor_def("score_new_months")
    assert isinstance(automation, dg.AutomationConditionSensorDefinition)
    assert automation.run_tags == {
        "bank_marketing/trigger": "score_new_months",
        "dagster/max_runtime": "1800",
    }
    assert all(s.default_status == dg.DefaultSensorStatus.RUNNING for s in repository.sensor_defs)
    assert {s.minimum_interval_seconds for s in repository.sensor_defs} == {7}


def test_the_sensor_interval_must_be_a_positive_number_of_seconds() -> None:
    from bank_marketing.settings import Settings

    with pytest.raises(ValueError, match="BANK_MARKETING_SENSOR_INTERVAL_SECONDS='0'"):
        Settings.from_env({"BANK_MARKETING_SENSOR_INTERVAL_SECONDS": "0"})


def test_alert_months_are_read_from_labels_or_annotations() -> None:
    assert alerts.month_named({"month": "2009-04"}, {}) == "2009-04"
    assert alerts.month_named({"month": "2009-04-01T00:00:00Z"}, {}) == "2009-04"
    assert alerts.month_named({}, {"month": "2010-11-01"}) == "2010-11"
    assert alerts.month_named({"month": "2009-13"}, {}) is None
    assert alerts.month_named({"month": "April"}, {}) is None
    assert alerts.month_named({}, {}) is None


@pytest.mark.integration
def test_sensors_on_the_stacks_postgres_instance_and_monitoring_schema(
    postgres_database: str, postgres_dagster_home: Path
) -> None:
    """Dagster storage and the alert table on PostgreSQL, configured as in the stack."""
    dagster_home = postgres_dagster_home
    url = f"postgresql://postgres@127.0.0.1:5432/{postgres_database}"
    monitoring_db = MonitoringDatabase(url=url, db_schema=store.POSTGRES_SCHEMA)
    app = FastAPI()
    app.include_router(create_webhook_router(url, "token"))
    webhook = TestClient(app)

    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        start = tick(retrain_on_drift, instance, None)
        report_drift(instance, "2009-03", prediction_drift=0.04)
        report_drift(instance, "2009-04", prediction_drift=0.31)
        report_drift(instance, "2009-05", drifted_share=0.64)
        drift = tick(retrain_on_drift, instance, start.cursor)
        assert [p for p, _ in requested(drift)] == ["2009-04-01", "2009-05-01"]
        assert requested(tick(retrain_on_drift, instance, start.cursor)) == requested(drift)

        post(webhook, notification(firing(month="2009-07")))
        post(webhook, notification(firing(month="2009-07")))
        alert = alert_tick(instance, monitoring_db)
        assert [p for p, _ in requested(alert)] == ["2009-07-01"]
        assert not alert_tick(instance, monitoring_db, alert.cursor).run_requests
