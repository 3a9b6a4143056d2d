"""POST /webhooks/grafana: bearer token, Grafana's body validated, each alert stored once."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient

from bank_marketing.monitoring import alerts, store
from bank_marketing.serving.webhook import (
    PATH,
    TOKEN_VARIABLE,
    create_webhook_router,
    webhook_router_from_env,
)

TOKEN = "s3cret-token-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MAX_BODY = 64 * 1024

# A notification as Grafana's webhook contact point sends it (payload version 1): the documented
# fields, the deprecated ones, nanosecond timestamps, and a field this receiver does not know.
NOTIFICATION: dict[str, Any] = {
    "receiver": "bank-marketing retraining",
    "status": "firing",
    "orgId": 1,
    "alerts": [
        {
            "status": "firing",
            "labels": {
                "alertname": "Prediction drift",
                "grafana_folder": "bank-marketing",
                "month": "2009-04",
            },
            "annotations": {"summary": "Prediction drift 0.31 in 2009-04 (threshold 0.1)"},
            "startsAt": "2024-03-02T10:15:00.123456789Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://grafana:3000/alerting/grafana/drift/view",
            "fingerprint": "3c2f0b8e1a9d4f70",
            "silenceURL": "http://grafana:3000/alerting/silence/new?matcher=month%3D2009-04",
            "dashboardURL": "",
            "panelURL": "",
            "values": {"A": 0.31, "C": 1},
            "valueString": "[ var='A' labels={month=2009-04} value=0.31 ]",
        },
        {
            "status": "firing",
            "labels": {"alertname": "Drifted columns", "month": "2009-04-01"},
            "annotations": {},
            "startsAt": "2024-03-02T12:15:00+02:00",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://grafana:3000/alerting/grafana/columns/view",
            "fingerprint": "9a11c04d27e3b5f6",
            "values": {"B": 0.64},
        },
    ],
    "groupLabels": {"alertname": "Prediction drift"},
    "commonLabels": {"month": "2009-04"},
    "commonAnnotations": {},
    "externalURL": "http://grafana:3000/",
    "version": "1",
    "groupKey": '{}/{month="2009-04"}:{alertname="Prediction drift"}',
    "truncatedAlerts": 0,
    "title": "[FIRING:2] (2009-04)",
    "state": "alerting",
    "message": "**Firing**\n\nLabels:\n - alertname = Prediction drift\n",
    "futureGrafanaField": {"anything": True},
}


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'monitoring.db'}"


def client_for(db_url: str, token: str | None = TOKEN) -> TestClient:
    app = FastAPI()
    app.include_router(create_webhook_router(db_url, token, max_body_bytes=MAX_BODY))
    return TestClient(app, raise_server_exceptions=False)


@pytest.fixture
def client(db_url: str) -> TestClient:
    return client_for(db_url)


def stored_rows(db_url: str) -> list[dict[str, Any]]:
    engine = store.connect(db_url)
    try:
        if not sa.inspect(engine).has_table("grafana_alerts"):
            return []
        with engine.connect() as connection:
            query = sa.select(store.grafana_alerts).order_by(store.grafana_alerts.c.id)
            return [dict(row._mapping) for row in connection.execute(query)]
    finally:
        engine.dispose()


def test_a_grafana_notification_is_stored_alert_by_alert(client: TestClient, db_url: str) -> None:
    response = client.post(PATH, json=NOTIFICATION, headers=AUTH)
    assert response.status_code == 202, response.text
    assert response.json() == {
        "received": 2,
        "new": 2,
        "new_firing": 2,
        "resolved": 0,
        "truncated": 0,
    }
    rows = stored_rows(db_url)
    assert [(r["fingerprint"], r["status"], r["month"]) for r in rows] == [
        ("3c2f0b8e1a9d4f70", "firing", "2009-04"),
        ("9a11c04d27e3b5f6", "firing", "2009-04"),
    ]
    first, second = rows
    assert first["alertname"] == "Prediction drift"
    assert first["trigger_values"] == {"A": 0.31, "C": 1}
    assert first["ends_at"] is None  # Grafana's 0001-01-01: not ended
    assert first["receiver"] == "bank-marketing retraining"
    assert first["starts_at"].isoformat().startswith("2024-03-02T10:15:00.123456")
    # +02:00 is stored in UTC, so one alert has one key however Grafana writes the time.
    assert second["starts_at"].isoformat().startswith("2024-03-02T10:15:00")


def test_the_same_notification_twice_is_stored_once(client: TestClient, db_url: str) -> None:
    assert client.post(PATH, json=NOTIFICATION, headers=AUTH).json()["new"] == 2
    again = client.post(PATH, json=NOTIFICATION, headers=AUTH)
    assert again.status_code == 202
    assert again.json()["new"] == 0 and again.json()["new_firing"] == 0
    assert len(stored_rows(db_url)) == 2


def test_a_resolved_notification_marks_the_alert_and_adds_nothing(
    client: TestClient, db_url: str
) -> None:
    client.post(PATH, json=NOTIFICATION, headers=AUTH)
    resolved = copy.deepcopy(NOTIFICATION)
    resolved["status"] = "resolved"
    resolved["alerts"] = [dict(resolved["alerts"][0])]
    resolved["alerts"][0].update(status="resolved", endsAt="2024-03-02T11:00:00Z")
    response = client.post(PATH, json=resolved, headers=AUTH)
    assert response.status_code == 202
    assert response.json() == {
        "received": 1,
        "new": 0,
        "new_firing": 0,
        "resolved": 1,
        "truncated": 0,
    }
    rows = stored_rows(db_url)
    assert len(rows) == 2
    assert rows[0]["status"] == "firing"  # as first received: the sensor acts on that
    assert rows[0]["resolved_at"] is not None
    assert rows[0]["ends_at"].isoformat().startswith("2024-03-02T11:00:00")
    # The same resolution again changes nothing.
    assert client.post(PATH, json=resolved, headers=AUTH).json()["resolved"] == 0


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": TOKEN},
    ],
    ids=["missing", "wrong", "longer", "basic-scheme", "no-scheme"],
)
def test_missing_or_wrong_token_is_401_and_stores_nothing(
    client: TestClient, db_url: str, headers: dict[str, str]
) -> None:
    response = client.post(PATH, json=NOTIFICATION, headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert TOKEN_VARIABLE in response.json()["detail"]
    assert TOKEN not in response.text
    engine = sa.create_engine(db_url)  # a plain engine: store.connect would create the table
    try:
        assert not sa.inspect(engine).has_table("grafana_alerts")
    finally:
        engine.dispose()


def test_unset_token_refuses_everything_and_says_why(db_url: str) -> None:
    for token in (None, ""):
        client = client_for(db_url, token=token)
        for headers in ({}, AUTH, {"Authorization": "Bearer "}):
            response = client.post(PATH, json=NOTIFICATION, headers=headers)
            assert response.status_code == 401
            assert f"{TOKEN_VARIABLE} is not set" in response.json()["detail"]


def test_router_from_env_reads_the_token_and_the_database(tmp_path: Path) -> None:
    env = {"BANK_MARKETING_HOME": str(tmp_path / "home")}
    (tmp_path / "home").mkdir()
    unset = FastAPI()
    unset.include_router(webhook_router_from_env(env))
    assert TestClient(unset).post(PATH, json=NOTIFICATION, headers=AUTH).status_code == 401

    app = FastAPI()
    app.include_router(webhook_router_from_env({**env, TOKEN_VARIABLE: TOKEN}))
    assert TestClient(app).post(PATH, json=NOTIFICATION, headers=AUTH).status_code == 202
    # The embedded default: the monitoring database in the home.
    assert len(stored_rows(f"sqlite:///{tmp_path / 'home' / 'monitoring.db'}")) == 2


def _without(body: dict[str, Any], *path: str | int) -> dict[str, Any]:
    broken = copy.deepcopy(body)
    target: Any = broken
    for step in path[:-1]:
        target = target[step]
    del target[path[-1]]
    return broken


def _with(body: dict[str, Any], value: Any, *path: str | int) -> dict[str, Any]:
    broken = copy.deepcopy(body)
    target: Any = broken
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return broken


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (_without(NOTIFICATION, "alerts", 0, "fingerprint"), "alerts.0.fingerprint"),
        (_without(NOTIFICATION, "alerts", 1, "startsAt"), "alerts.1.startsAt"),
        (_with(NOTIFICATION, "pending", "alerts", 0, "status"), "alerts.0.status"),
        (_with(NOTIFICATION, "yesterday", "alerts", 0, "startsAt"), "alerts.0.startsAt"),
        (_with(NOTIFICATION, ["month"], "alerts", 0, "labels"), "alerts.0.labels"),
        (_with(NOTIFICATION, "", "alerts", 0, "fingerprint"), "alerts.0.fingerprint"),
        (_with(NOTIFICATION, [], "alerts"), "alerts"),
        (_with(NOTIFICATION, "alerting", "status"), "status"),
        (_without(NOTIFICATION, "receiver"), "receiver"),
        ({"title": "[Alerting] legacy Grafana alert", "ruleId": 1, "evalMatches": []}, "alerts"),
    ],
    ids=[
        "no-fingerprint",
        "no-startsAt",
        "bad-alert-status",
        "bad-time",
        "labels-not-an-object",
        "empty-fingerprint",
        "no-alerts",
        "bad-status",
        "no-receiver",
        "legacy-format",
    ],
)
def test_malformed_body_is_422_with_a_message_per_field(
    client: TestClient, db_url: str, body: dict[str, Any], field: str
) -> None:
    response = client.post(PATH, json=body, headers=AUTH)
    assert response.status_code == 422, response.text
    errors = response.json()["errors"]
    assert field in {error["field"] for error in errors}, errors
    assert all(error["message"] for error in errors)


@pytest.mark.parametrize("body", [b"not json", b'{"receiver": ', b"\xff\xfe"])
def test_non_json_body_is_400(client: TestClient, body: bytes) -> None:
    response = client.post(PATH, content=body, headers={**AUTH, "Content-Type": "application/json"})
    assert response.status_code == 400
    assert "not valid JSON" in response.json()["detail"]


def test_a_json_array_is_422(client: TestClient) -> None:
    response = client.post(PATH, json=[NOTIFICATION], headers=AUTH)
    assert response.status_code == 422


def _oversized() -> dict[str, Any]:
    return _with(NOTIFICATION, "x" * MAX_BODY, "message")


def test_oversized_body_is_413_and_stores_nothing(client: TestClient, db_url: str) -> None:
    response = client.post(PATH, json=_oversized(), headers=AUTH)
    assert response.status_code == 413
    assert str(MAX_BODY) in response.json()["detail"]
    assert len(stored_rows(db_url)) == 0


def test_oversized_body_without_length_is_413(client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        raw = json.dumps(_oversized()).encode()
        for start in range(0, len(raw), 4096):
            yield raw[start : start + 4096]

    response = client.post(
        PATH, content=chunks(), headers={**AUTH, "Content-Type": "application/json"}
    )
    assert "content-length" not in {k.lower() for k in response.request.headers}
    assert response.status_code == 413


def test_unauthenticated_requests_are_refused_before_the_body_is_read(client: TestClient):
    assert client.post(PATH, content=b"not json").status_code == 401
    assert client.post(PATH, json=_oversized()).status_code == 401


def test_database_down_is_503_so_grafana_retries(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-folder" / "monitoring.db"
    response = client_for(f"sqlite:///{missing}").post(PATH, json=NOTIFICATION, headers=AUTH)
    assert response.status_code == 503
    assert "retry" in response.json()["detail"]


def test_openapi_documents_the_webhook(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    operation = schema["paths"][PATH]["post"]
    body = operation["requestBody"]["content"]["application/json"]["schema"]
    assert {"receiver", "status", "alerts"} <= set(body["required"])
    assert "fingerprint" in body["properties"]["alerts"]["items"]["properties"]
    assert {"202", "400", "401", "413", "422"} <= set(operation["responses"])
    assert operation["security"] == [{"HTTPBearer": []}]


@pytest.mark.integration
def test_alerts_are_stored_once_in_the_monitoring_schema_on_postgres(
    postgres_database: str,
) -> None:
    url = f"postgresql://postgres@127.0.0.1:5432/{postgres_database}"
    client = client_for(url)
    assert client.post(PATH, json=NOTIFICATION, headers=AUTH).json()["new"] == 2
    assert client.post(PATH, json=NOTIFICATION, headers=AUTH).json()["new"] == 0
    engine = sa.create_engine(url)
    try:
        assert sa.inspect(engine).has_table("grafana_alerts", schema=store.POSTGRES_SCHEMA)
        with engine.connect() as connection:
            count = connection.execute(
                sa.text(f"SELECT count(*) FROM {store.POSTGRES_SCHEMA}.grafana_alerts")
            ).scalar_one()
        assert count == 2
    finally:
        engine.dispose()
    engine = store.connect(url)
    try:
        stored = alerts.alerts_after(engine, 0)
    finally:
        engine.dispose()
    assert [(a.fingerprint, a.month, a.status) for a in stored] == [
        ("3c2f0b8e1a9d4f70", "2009-04", "firing"),
        ("9a11c04d27e3b5f6", "2009-04", "firing"),
    ]
    assert stored[0].starts_at.isoformat() == "2024-03-02T10:15:00.123456+00:00"
