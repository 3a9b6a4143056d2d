"""Live traffic kept, measured and shadowed, over real HTTP on Ray Serve with PostgreSQL.

The service writes to a PostgreSQL server of this module's own (``private_postgres``), so the
outage test can stop it without touching the machine's, which other tests use meanwhile.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from bank_marketing.monitoring import served, store
from bank_marketing.serving.contract import EXAMPLE_RECORD
from bank_marketing.serving.metrics import exported_sum, exported_text
from bank_marketing_tests.conftest import RayCluster, in_ci, wait_until_healthy
from bank_marketing_tests.examples import records
from bank_marketing_tests.private_postgres import PrivatePostgres, binaries
from bank_marketing_tests.registries import load_pyfunc, register_two_versions

pytestmark = pytest.mark.integration

TOKEN = "served-ray-token"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
# Small, so that a few seconds without the database overflow it.
QUEUE_RECORDS = 100
SERIES = (
    "ray_bank_marketing_requests_total",
    "ray_bank_marketing_request_latency_ms_bucket",
    "ray_bank_marketing_probability_bucket",
    "ray_bank_marketing_served_records_total",
    "ray_bank_marketing_served_queue",
)


@pytest.fixture(scope="module")
def two_versions(tmp_path_factory: pytest.TempPathFactory, bank_full_path: Path) -> dict[str, Any]:
    return register_two_versions(tmp_path_factory.mktemp("served-ray-registry"), bank_full_path)


@pytest.fixture(scope="module")
def database() -> Iterator[PrivatePostgres]:
    if binaries() is None:
        if in_ci():
            pytest.fail("CI=true but no PostgreSQL server binaries to start a private server")
        pytest.skip("no PostgreSQL server binaries under /usr/lib/postgresql")
    server = PrivatePostgres()
    try:
        server.start()
        store.connect(server.url).dispose()  # the tables, before any replica writes
        yield server
    finally:
        server.remove()


def deploy(
    name: str,
    route: str,
    registry: dict[str, Any],
    db_url: str,
    user_config: dict[str, Any],
    replicas: int,
    flush_seconds: float,
) -> None:
    from ray import serve

    from bank_marketing.serving.deployment import PredictionService

    environment = {
        "BANK_MARKETING_WEBHOOK_TOKEN": TOKEN,
        "BANK_MARKETING_SERVED_QUEUE": str(QUEUE_RECORDS),
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    application = PredictionService.options(
        num_replicas=replicas,
        user_config=user_config,
        ray_actor_options={"num_cpus": 0.25, "runtime_env": {"env_vars": environment}},
    ).bind(
        tracking_uri=registry["uri"],
        db_url=db_url,
        poll_seconds=3600.0,
        flush_seconds=flush_seconds,
    )
    serve.run(application, name=name, route_prefix=route)


@pytest.fixture(scope="module")
def service(
    two_versions: dict[str, Any], database: PrivatePostgres, ray_cluster: RayCluster
) -> Iterator[str]:
    """Two replicas serving the first version, writing every 0.2 s to the private database."""
    from ray import serve

    config = {"model_version": two_versions["versions"][0]}
    # A route of its own: other modules deploy at / on the same Ray.
    deploy("served", "/served", two_versions, database.url, config, replicas=2, flush_seconds=0.2)
    url = f"{ray_cluster.http_url}/served"
    wait_until_healthy(url)
    try:
        yield url
    finally:
        serve.delete("served")


def kept(database: PrivatePostgres, role: str | None = None) -> Any:
    engine = store.connect(database.url)
    try:
        return served.read_served(engine, role=role)
    finally:
        engine.dispose()


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s:.0f} s: {what}")
        time.sleep(0.5)


def metric_sum(text: str, name: str, **labels: str) -> float:
    """``name``'s sum over the replicas of the application ``served`` only: other modules'
    applications on the same Ray export the same series."""
    return exported_sum(text, name, application="served", **labels)


def test_the_kept_rows_equal_the_answered_records(
    service: str, database: PrivatePostgres, two_versions: dict[str, Any]
) -> None:
    answers: dict[str, tuple[list[dict[str, Any]], dict[str, Any]]] = {}
    with httpx.Client(base_url=service, timeout=30) as client:
        for index in range(24):
            batch = records(1 + index % 4, start=10 * index)
            body = batch[0] if len(batch) == 1 else {"records": batch}
            headers = {"x-request-id": f"kept-{index}"} if index % 2 else {}
            response = client.post("/predict", json=body, headers=headers)
            assert response.status_code == 200, response.text
            request_id = response.headers["x-request-id"]
            assert len(response.headers.get_list("x-request-id")) == 1
            if index % 2:
                assert request_id == f"kept-{index}"
            answers[request_id] = (batch, response.json())
    expected = sum(len(batch) for batch, _ in answers.values())

    def all_kept() -> bool:
        rows = kept(database)
        return int(rows["request_id"].isin(list(answers)).sum()) >= expected

    wait_for(all_kept, 30, f"{expected} answered records in served_predictions")
    rows = kept(database)
    rows = rows[rows["request_id"].isin(list(answers))]
    assert len(rows) == expected and set(rows["role"]) == {served.LIVE}
    assert set(rows["model_version"]) == {two_versions["versions"][0]}
    for request_id, (batch, answer) in answers.items():
        mine = rows[rows["request_id"] == request_id].sort_values("record")
        assert list(mine["record"]) == list(range(len(batch)))
        np.testing.assert_allclose(
            mine["probability"], [p["probability"] for p in answer["predictions"]], rtol=1e-12
        )
        assert [{key: stored[key] for key in sent} for stored, sent in zip(
            mine["inputs"], batch, strict=True)] == batch  # fmt: skip


def test_feedback_over_http_needs_the_token_and_answers_each_case(
    service: str, database: PrivatePostgres
) -> None:
    with httpx.Client(base_url=service, timeout=30) as client:
        request_id = client.post("/predict", json=EXAMPLE_RECORD).headers["x-request-id"]
        wait_for(
            lambda: request_id in set(kept(database)["request_id"]), 20, "the answer to be kept"
        )
        body = {"request_id": request_id, "subscribed": True}
        assert client.post("/feedback", json=body).status_code == 401
        wrong = {"Authorization": "Bearer wrong"}
        assert client.post("/feedback", json=body, headers=wrong).status_code == 401
        assert client.post("/feedback", json=body, headers=BEARER).status_code == 201
        assert client.post("/feedback", json=body, headers=BEARER).status_code == 200
        conflict = {**body, "subscribed": False}
        assert client.post("/feedback", json=conflict, headers=BEARER).status_code == 409
        unknown = {**body, "request_id": "never-answered"}
        assert client.post("/feedback", json=unknown, headers=BEARER).status_code == 404
    rows = kept(database)
    assert rows.loc[rows["request_id"] == request_id, "subscribed"].tolist() == [True]


def test_the_metrics_endpoint_carries_the_named_series_after_traffic(
    service: str, two_versions: dict[str, Any]
) -> None:
    version = two_versions["versions"][0]
    with httpx.Client(base_url=service, timeout=30) as client:
        for index in range(10):
            assert client.post("/predict", json=records(1, index)[0]).status_code == 200
        assert client.post("/predict", json={"age": "old"}).status_code == 422

    def counts(text: str) -> dict[str, float]:
        return {
            "answered": metric_sum(
                text, "ray_bank_marketing_requests_total", model_version=version, status="200"
            ),
            "refused": metric_sum(
                text, "ray_bank_marketing_requests_total", status="422", route="/predict"
            ),
            "timed": metric_sum(
                text, "ray_bank_marketing_request_latency_ms_count", model_version=version,
                route="/predict",
            ),
            "scored": metric_sum(
                text, "ray_bank_marketing_probability_count", model_version=version, role="live"
            ),
            "kept": metric_sum(text, "ray_bank_marketing_served_records_total", outcome="kept"),
        }  # fmt: skip

    wanted = {"answered": 10, "refused": 1, "timed": 11, "scored": 10, "kept": 10}

    def exported() -> bool:
        # Each replica exports on its own schedule: wait for both.
        text = exported_text()
        found = counts(text)
        return all(name in text for name in SERIES) and all(
            found[key] >= least for key, least in wanted.items()
        )

    wait_for(exported, 90, f"every series of {SERIES} exported by Ray, with this traffic")
    found = counts(exported_text())
    assert all(found[key] >= least for key, least in wanted.items()), found


def test_the_database_stopped_under_load_fails_no_request_and_loses_nothing_uncounted(
    service: str, database: PrivatePostgres
) -> None:
    """Steady load; the database stops for 8 s and comes back. Every request is answered; the
    records the queue could not hold are counted as dropped; writing resumes by itself."""
    before = kept(database)

    def exported_up_to_date() -> bool:
        # Ray exports every few seconds: the baseline must count every record kept so far,
        # and no traffic has been dropped before this test.
        return metric_sum(
            exported_text(), "ray_bank_marketing_served_records_total", outcome="kept"
        ) == len(before)

    wait_for(exported_up_to_date, 60, "the exported counts to catch up with the table")
    baseline = exported_text()
    outcomes: Counter[str] = Counter()
    stop = threading.Event()

    def load(worker: int) -> None:
        with httpx.Client(base_url=service, timeout=30) as client:
            index = 0
            while not stop.is_set():
                try:
                    response = client.post("/predict", json=records(1, worker * 100_000 + index)[0])
                    ok = response.status_code == 200
                    outcomes["answered" if ok else f"failed {response.status_code}"] += 1
                except httpx.HTTPError as error:
                    outcomes[f"failed {type(error).__name__}"] += 1
                index += 1

    threads = [threading.Thread(target=load, args=(worker,)) for worker in range(2)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(3)
        database.stop()
        down_from = outcomes["answered"]
        time.sleep(8)
        answered_while_down = outcomes["answered"] - down_from
        database.start()
        restarted_at = time.time()
        time.sleep(4)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        if not database.running():
            database.start()

    assert set(outcomes) == {"answered"}, outcomes
    assert answered_while_down > 2 * QUEUE_RECORDS, "too little load to overflow the queues"
    answered = outcomes["answered"]

    def counted() -> tuple[float, float]:
        text = exported_text()
        return tuple(
            metric_sum(text, "ray_bank_marketing_served_records_total", outcome=outcome)
            - metric_sum(baseline, "ray_bank_marketing_served_records_total", outcome=outcome)
            for outcome in ("kept", "dropped")
        )

    wait_for(lambda: sum(counted()) >= answered, 60, "every answered record kept or dropped")
    kept_now, dropped = counted()
    new_rows = len(kept(database)) - len(before)
    assert kept_now + dropped == answered
    assert new_rows == kept_now
    assert dropped > 0
    after_restart = kept(database)["received_at"].max().timestamp()
    assert after_restart > restarted_at


@pytest.fixture
def buffered(
    two_versions: dict[str, Any], database: PrivatePostgres, ray_cluster: RayCluster
) -> Iterator[str]:
    """One replica writing only when it must (every hour), with the second version in shadow."""
    from ray import serve

    first, second = two_versions["versions"]
    config = {"model_version": first, "shadow_version": second}
    deploy("served-buffered", "/buffered", two_versions, database.url, config, 1, 3600.0)
    url = f"{ray_cluster.http_url}/buffered"
    wait_until_healthy(url)
    try:
        yield url
    finally:
        serve.delete("served-buffered")


def test_a_rollover_and_a_graceful_shutdown_lose_nothing_buffered_and_the_shadow_is_kept(
    buffered: str, database: PrivatePostgres, two_versions: dict[str, Any], ray_cluster: RayCluster
) -> None:
    from ray import serve

    first, second = two_versions["versions"]
    ids: dict[str, list[str]] = {"before": [], "after": []}
    with httpx.Client(base_url=buffered, timeout=30) as client:
        assert client.get("/model").json()["shadow_version"] == second
        for index in range(10):
            response = client.post("/predict", json={"records": records(2, 2 * index)})
            assert response.json()["model_version"] == first
            ids["before"].append(response.headers["x-request-id"])
        time.sleep(1.0)
        assert not set(ids["before"]) & set(kept(database)["request_id"]), "written too early"

        # The rollover: the same replica reconfigured to the second version, no shadow.
        deploy("served-buffered", "/buffered", two_versions, database.url,
               {"model_version": second}, 1, 3600.0)  # fmt: skip
        wait_for(lambda: client.get("/model").json()["version"] == second, 60, "the rollover")
        rows = kept(database)
        rows = rows[rows["request_id"].isin(ids["before"])]
        assert Counter(zip(rows["role"], rows["model_version"], strict=True)) == {
            (served.LIVE, first): 20, (served.SHADOW, second): 20,
        }  # fmt: skip
        shadow = rows[rows["role"] == served.SHADOW].sort_values(["request_id", "record"])
        pyfunc = load_pyfunc(two_versions["uri"], second)
        expected = np.asarray(pyfunc.predict(pd.DataFrame(list(shadow["inputs"]))))[:, 1]
        np.testing.assert_allclose(shadow["probability"], expected, rtol=1e-9)

        for index in range(10):
            response = client.post("/predict", json=records(1, 100 + index)[0])
            assert response.json()["model_version"] == second
            ids["after"].append(response.headers["x-request-id"])
    # The graceful shutdown: deleting the application ends the replica, which writes first.
    serve.delete("served-buffered")
    rows = kept(database)
    rows = rows[rows["request_id"].isin(ids["after"])]
    assert Counter(zip(rows["role"], rows["model_version"], strict=True)) == {
        (served.LIVE, second): 10
    }
