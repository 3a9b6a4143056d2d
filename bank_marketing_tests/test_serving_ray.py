"""The Ray Serve deployment over real HTTP: predictions, and rollover without failed requests."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from mlflow import MlflowClient

from bank_marketing.training.registry import CHAMPION_ALIAS
from bank_marketing.training.tracking import MODEL_NAME
from bank_marketing_tests.conftest import RayCluster, wait_until_healthy
from bank_marketing_tests.registries import load_pyfunc, register_two_versions

pytestmark = pytest.mark.integration

APP = "bank-marketing"

RECORD: dict[str, Any] = {
    "age": 41, "job": "technician", "balance": 1200, "housing": "yes", "contact": "cellular",
    "day": 15, "month": "may", "campaign": 2, "pdays": -1, "previous": 0, "poutcome": "unknown",
}  # fmt: skip


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory, bank_full_path: Path) -> dict[str, Any]:
    """Two registered versions of different families; the champion alias on the first."""
    return register_two_versions(tmp_path_factory.mktemp("serve-registry"), bank_full_path)


@pytest.fixture(scope="module")
def service(registry: dict[str, Any], ray_cluster: RayCluster) -> Iterator[str]:
    """The app on the session's Ray, 2 replicas of 0.25 CPU, over HTTP; deleted afterwards."""
    from ray import serve

    from bank_marketing.serving.deployment import PredictionService

    serve.run(
        PredictionService.bind(tracking_uri=registry["uri"], poll_seconds=1.0),
        name=APP,
        route_prefix="/",
    )
    wait_until_healthy(ray_cluster.http_url)
    try:
        yield ray_cluster.http_url
    finally:
        serve.delete(APP)


def test_served_predictions_equal_pyfunc_for_the_same_version(
    service: str, registry: dict[str, Any]
) -> None:
    # The contacts' UCI fields, as a client sends them (not the label or the recovered month).
    records = registry["validation"].drop(columns=["y", "contact_month"]).head(50)
    response = httpx.post(
        f"{service}/predict", json={"records": records.to_dict("records")}, timeout=30
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_version"] == registry["versions"][0]
    pyfunc = load_pyfunc(registry["uri"], registry["versions"][0])
    expected = np.asarray(pyfunc.predict(records))[:, 1]
    assert np.allclose([p["probability"] for p in body["predictions"]], expected)
    assert httpx.get(f"{service}/model", timeout=10).json()["version"] == registry["versions"][0]


def test_moving_the_alias_switches_the_version_without_failed_requests(
    service: str, registry: dict[str, Any]
) -> None:
    first, second = registry["versions"]
    outcomes: list[tuple[int, str | None]] = []
    stop = threading.Event()

    def stream() -> None:
        with httpx.Client(timeout=10) as client:
            deadline = time.monotonic() + 60
            while not stop.is_set() and time.monotonic() < deadline:
                try:
                    response = client.post(f"{service}/predict", json=RECORD)
                    version = response.json().get("model_version")
                    outcomes.append((response.status_code, version))
                except httpx.HTTPError as error:
                    outcomes.append((0, str(error)))

    threads = [threading.Thread(target=stream) for _ in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(2)
    MlflowClient(registry["uri"]).set_registered_model_alias(MODEL_NAME, CHAMPION_ALIAS, second)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        recent = outcomes[-20:]
        if len(recent) == 20 and all(v == second for _, v in recent):
            break
        time.sleep(0.5)
    time.sleep(1)
    stop.set()
    for thread in threads:
        thread.join()

    failures = [o for o in outcomes if o[0] != 200]
    assert not failures, failures[:5]
    versions = [v for _, v in outcomes]
    assert versions[0] == first and versions[-1] == second
    assert len(outcomes) > 50


def test_a_replica_killed_under_load_is_replaced_and_the_failures_counted(
    service: str, ray_cluster: RayCluster, record_property: Any
) -> None:
    from ray import serve
    from ray.util.state import list_actors

    def running_replicas() -> list[Any]:
        return [
            actor
            for actor in list_actors(
                address=ray_cluster.dashboard_url, filters=[("state", "=", "ALIVE")]
            )
            if actor.class_name == f"ServeReplica:{APP}:PredictionService"
        ]

    outcomes: list[tuple[float, int]] = []
    stop = threading.Event()

    def stream() -> None:
        with httpx.Client(timeout=10) as client:
            while not stop.is_set():
                try:
                    status = client.post(f"{service}/predict", json=RECORD).status_code
                except httpx.HTTPError:
                    status = 0
                outcomes.append((time.monotonic(), status))

    threads = [threading.Thread(target=stream) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(2)
        before = running_replicas()
        assert len(before) == 2, before
        victim = before[0]
        os.kill(victim.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        deadline = killed_at + 120
        replaced = False
        while time.monotonic() < deadline and not replaced:
            time.sleep(0.5)
            alive = running_replicas()
            states = serve.status().applications[APP].deployments["PredictionService"]
            replaced = (
                victim.actor_id not in {a.actor_id for a in alive}
                and len(alive) == 2
                and states.replica_states.get("RUNNING") == 2
            )
        replaced_after = time.monotonic() - killed_at
        time.sleep(3)
    finally:
        stop.set()
        for thread in threads:
            thread.join()

    failed = [status for _, status in outcomes if status != 200]
    after = [status for at, status in outcomes if at > killed_at + replaced_after]
    record_property("requests", len(outcomes))
    record_property("failed_requests", len(failed))
    record_property("replaced_after_s", round(replaced_after, 1))
    print(
        f"killed replica {victim.actor_id} (pid {victim.pid}) under 4 concurrent streams: "
        f"{len(failed)} of {len(outcomes)} requests failed {sorted(set(failed))}; "
        f"replaced after {replaced_after:.1f} s"
    )
    assert replaced, "Serve did not replace the killed replica within 120 s"
    assert after and all(status == 200 for status in after), "failures after the replacement"
    assert len(failed) <= 8, f"{len(failed)} failed requests for one killed replica"
