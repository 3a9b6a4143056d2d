"""Fault matrix rows of the prediction service on Ray Serve (RELIABILITY.md).

Each test strikes the service as deployed (the Ray Serve app over HTTP, its monitoring database
on PostgreSQL), asserts what a user relies on, and records its figures (``faults.record``).
"""

from __future__ import annotations

import os
import random
import signal
import statistics
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import dagster as dg
import httpx
import pytest
import sqlalchemy as sa

from bank_marketing.monitoring import store
from bank_marketing.orchestration.resources import MonitoringDatabase
from bank_marketing.orchestration.sensors import BATCH, RetrainPolicy, retrain_on_grafana_alert
from bank_marketing.serving.contract import EXAMPLE_RECORD
from bank_marketing.serving.webhook import PATH as WEBHOOK_PATH
from bank_marketing_tests.conftest import RayCluster, throwaway_database, wait_until_healthy
from bank_marketing_tests.faults import FaultRow, Probe, percentile, record

pytestmark = [pytest.mark.integration, pytest.mark.faults]

TOKEN = "faults-service-token"
APP, ROUTE = "faults", "/faults"


@pytest.fixture(scope="module")
def monitoring_url(postgres_available: None) -> Iterator[str]:
    """A throwaway monitoring database on the machine's PostgreSQL, for this module."""
    with throwaway_database("bank_marketing_faults") as name:
        url = f"postgresql://postgres@127.0.0.1:5432/{name}"
        store.connect(url).dispose()  # the tables, before any replica writes
        yield url


@pytest.fixture(scope="module")
def service(registry: str, monitoring_url: str, ray_cluster: RayCluster) -> Iterator[str]:
    """The service's two replicas at a route of their own, with the webhook and the feedback
    endpoint on the module's monitoring database."""
    from ray import serve

    from bank_marketing.serving.deployment import PredictionService

    environment = {
        "BANK_MARKETING_WEBHOOK_TOKEN": TOKEN,
        "BANK_MARKETING_DB_URL": monitoring_url,
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    application = PredictionService.options(
        num_replicas=2,
        ray_actor_options={"num_cpus": 0.25, "runtime_env": {"env_vars": environment}},
    ).bind(tracking_uri=registry, db_url=monitoring_url, poll_seconds=3600.0)
    serve.run(application, name=APP, route_prefix=ROUTE)
    url = f"{ray_cluster.http_url}{ROUTE}"
    wait_until_healthy(url)
    try:
        yield url
    finally:
        serve.delete(APP)


# -- a burst of alerts -------------------------------------------------------------------------

ALERT_NAMES = ("Prediction drift", "Prediction drift beyond noise")
ALERT_MONTHS = ("2009-01", "2009-02", "2009-03", "2009-04", "2009-05")
DISTINCT_ALERTS = 200
REPEATS = 5  # Grafana repeats a firing alert, and retries what it could not deliver
SENDERS = 16


def alert_notification(index: int) -> dict[str, Any]:
    """The ``index``-th distinct alert (a rule, a month and a series), as Grafana posts it."""
    name = ALERT_NAMES[index % len(ALERT_NAMES)]
    month = ALERT_MONTHS[(index // len(ALERT_NAMES)) % len(ALERT_MONTHS)]
    return {
        "receiver": "bank-marketing retraining",
        "status": "firing",
        "orgId": 1,
        "alerts": [
            {
                "status": "firing",
                "labels": {"alertname": name, "month": month, "series": str(index)},
                "annotations": {"summary": f"{name} in {month}"},
                "startsAt": f"2026-12-06T10:{index // 60:02d}:{index % 60:02d}Z",
                "endsAt": "0001-01-01T00:00:00Z",
                "fingerprint": f"{index:016x}",
                "values": {"A": 0.3},
            }
        ],
        "groupKey": f"{{}}:{{alertname={name!r}}}",
        "truncatedAlerts": 0,
        "version": "1",
    }


def test_a_burst_of_alerts_keeps_the_service_answering_and_retrains_once_per_alert_and_month(
    service: str, monitoring_url: str, instance: dg.DagsterInstance
) -> None:
    """1,000 alerts (200 distinct, each 5 times) from 16 senders while the retraining sensor
    ticks: predictions keep being answered, every alert is stored once, and the sensor asks for
    one retrain per alert rule and month, none lost to alerts committed out of order."""
    posts = [index for index in range(DISTINCT_ALERTS) for _ in range(REPEATS)]
    random.Random(19).shuffle(posts)
    headers = {"Authorization": f"Bearer {TOKEN}"}

    baseline = Probe(service, EXAMPLE_RECORD)
    baseline.start()
    time.sleep(3)
    baseline.finish()

    # Without a cooldown every firing alert may retrain: the bound must come from the run keys.
    policy = RetrainPolicy(signals=["prediction_drift"], cooldown_months=0)
    monitoring_db = MonitoringDatabase(url=monitoring_url)
    run_keys: list[str] = []
    cursor: str | None = None

    def tick() -> None:
        nonlocal cursor
        context = dg.build_sensor_context(
            instance=instance,
            cursor=cursor,
            resources={"retrain_policy": policy, "monitoring_db": monitoring_db},
        )
        result = retrain_on_grafana_alert(context)
        assert isinstance(result, dg.SensorResult)
        run_keys.extend(request.run_key for request in result.run_requests or [])
        cursor = result.cursor

    def send(index: int) -> int:
        with httpx.Client(base_url=service, timeout=60) as client:
            response = client.post(WEBHOOK_PATH, json=alert_notification(index), headers=headers)
        assert response.status_code == 202, response.text
        return response.json()["new"]

    probe = Probe(service, EXAMPLE_RECORD)
    probe.start()
    started = time.monotonic()
    with ThreadPoolExecutor(SENDERS) as senders:
        answers = [senders.submit(send, index) for index in posts]
        # The sensor ticks as the daemon would, while the alerts arrive.
        while not all(answer.done() for answer in answers):
            tick()
            time.sleep(0.2)
        new = sum(answer.result() for answer in answers)
    burst_s = time.monotonic() - started
    probe.finish()

    caught_up = time.monotonic()
    for _ in range(DISTINCT_ALERTS * REPEATS // BATCH + 5):
        tick()
    catch_up_s = time.monotonic() - caught_up

    engine = sa.create_engine(monitoring_url)
    try:
        with engine.connect() as connection:
            stored = connection.execute(
                sa.text("SELECT count(*) FROM monitoring.grafana_alerts")
            ).scalar_one()
    finally:
        engine.dispose()

    expected_keys = {(name, month) for name in ALERT_NAMES for month in ALERT_MONTHS}
    assert new == DISTINCT_ALERTS
    assert stored == DISTINCT_ALERTS
    assert not probe.failures, probe.failures[:5]
    assert len(set(run_keys)) == len(expected_keys), sorted(set(run_keys))
    assert max(probe.latencies_ms) < 5_000
    record(
        FaultRow(
            part="service: webhook",
            fault=f"a burst of {len(posts):,} alerts ({DISTINCT_ALERTS} distinct, each "
            f"{REPEATS} times) from {SENDERS} senders, the retraining sensor ticking meanwhile",
            strikes="while the service answers predictions",
            outcome=f"all answered 202 in {burst_s:.1f} s; {stored} alerts stored once each; "
            f"predictions p50 {statistics.median(probe.latencies_ms):.0f} ms, p99 "
            f"{percentile(probe.latencies_ms, 0.99):.0f} ms (before: p50 "
            f"{statistics.median(baseline.latencies_ms):.0f} ms); "
            f"{len(set(run_keys))} retrains requested, one per rule and month",
            requests_failed=len(probe.failures),
            rows_lost=DISTINCT_ALERTS - stored,
            recovery_s=catch_up_s,
        )
    )


# -- the Serve proxy killed ----------------------------------------------------------------------


def test_the_serve_proxy_killed_under_load_comes_back_by_itself(
    service: str, ray_cluster: RayCluster
) -> None:
    """SIGKILL to Serve's HTTP proxy while clients stream requests: Serve's controller starts a
    new one, the service answers again by itself with the same version, and the requests that
    failed meanwhile are counted."""
    from ray.util.state import list_actors

    before = httpx.get(f"{service}/model", timeout=10).json()["version"]

    def proxies_alive() -> list[Any]:
        # This session's Ray, by its dashboard: other test processes run Rays of their own.
        return list_actors(
            address=ray_cluster.dashboard_url,
            filters=[("class_name", "=", "ProxyActor"), ("state", "=", "ALIVE")],
        )

    proxies = proxies_alive()
    assert proxies, "no live Serve proxy"
    probes = [Probe(service, EXAMPLE_RECORD) for _ in range(2)]
    for probe in probes:
        probe.start()
    time.sleep(2)
    killed = time.monotonic()
    os.kill(proxies[0].pid, signal.SIGKILL)
    # Back when a request succeeds after the last failure, and keeps succeeding for 5 s.
    deadline = killed + 120
    while time.monotonic() < deadline:
        time.sleep(1)
        last_failure = max((t for p in probes for t in p.failed_at), default=killed)
        if time.monotonic() - last_failure > 5 and all(p.answered() for p in probes):
            break
    for probe in probes:
        probe.finish()
    last_failure = max((t for p in probes for t in p.failed_at), default=killed)
    recovery_s = last_failure - killed
    failed = sum(len(p.failures) for p in probes)
    answered = sum(p.answered() for p in probes)

    after = httpx.get(f"{service}/model", timeout=10).json()["version"]
    assert after == before
    assert time.monotonic() - last_failure > 5, "the service did not come back within 120 s"
    new_proxies = proxies_alive()
    assert new_proxies and new_proxies[0].pid != proxies[0].pid
    record(
        FaultRow(
            part="serving: Ray Serve",
            fault="the HTTP proxy actor killed (SIGKILL)",
            strikes="under 2 clients streaming single-record requests",
            outcome=f"Serve's controller started a new proxy; answers resumed by themselves "
            f"with the same version (v{after}); {answered} requests answered, {failed} failed "
            f"(connection refused or reset while no proxy listened)",
            requests_failed=failed,
            rows_lost=None,
            recovery_s=recovery_s,
        )
    )
