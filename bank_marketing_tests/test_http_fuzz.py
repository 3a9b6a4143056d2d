"""Hostile HTTP input, over real TCP: the seeded fuzzer of ``bank_marketing.benchmarks.fuzz``
against the service run by uvicorn, with /feedback and the Grafana webhook on PostgreSQL.

CI sends requests for a fixed budget (``BANK_MARKETING_FUZZ_SECONDS``, 45 s by default) with a
fixed seed: request ``i`` of a seed is always the same bytes, so a failure names the request to
send again (``python -m bank_marketing.benchmarks.fuzz --seed 19 --case i --url ...``). A
shorter run goes through Ray Serve's proxy (marked integration). The long run's figures are in
RELIABILITY.md ("Hostile input").
"""

from __future__ import annotations

import json
import os
import socket
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from bank_marketing.benchmarks.fuzz import (
    ENDPOINTS,
    KINDS,
    Answer,
    Case,
    Target,
    exchange,
    local_service,
    report,
    run,
    tables,
)
from bank_marketing.serving.contract import EXAMPLE_RECORD as RECORD
from bank_marketing.serving.contract import SERVING_BOUNDS, bounds
from bank_marketing.serving.http import MAX_JSON_DEPTH
from bank_marketing_tests.conftest import (
    RayCluster,
    free_port,
    throwaway_database,
    wait_until_healthy,
)

# The service writes to PostgreSQL: every test here uses the real services.
pytestmark = pytest.mark.integration

SEED = 19
BUDGET_S = float(os.environ.get("BANK_MARKETING_FUZZ_SECONDS", "45"))
TOKEN = "fuzz-test-token"


@pytest.fixture(scope="module")
def monitoring_database(postgres_available: None) -> Iterator[str]:
    """A throwaway database on the machine's PostgreSQL for this module; its URL."""
    with throwaway_database("bank_marketing_fuzz") as name:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"


@pytest.fixture(scope="module")
def service(registry: str, monitoring_database: str) -> Iterator[Target]:
    port = free_port()
    with local_service(registry, monitoring_database, TOKEN, port) as process:
        yield Target("127.0.0.1", port, TOKEN)
        assert process.poll() is None, "the service died"


def predict(target: Target, body: Any) -> httpx.Response:
    return httpx.post(
        f"http://{target.host}:{target.port}{target.prefix}/predict", json=body, timeout=30
    )


def test_hostile_requests_get_no_5xx_and_every_refusal_names_what_was_wrong(
    service: Target,
) -> None:
    tally = run(service, SEED, seconds=BUDGET_S, workers=3)
    assert tally.server_errors == 0, report(tally)
    assert not tally.problems, report(tally)
    # The budget reached every endpoint with every kind of request, and the answers span the
    # contract's statuses.
    assert tally.requests >= 1000, tally.requests
    for endpoint in ENDPOINTS:
        assert sum(n for (e, _), n in tally.tried.items() if e == endpoint) >= 20, endpoint
    for kind in KINDS:
        assert sum(n for (_, k), n in tally.tried.items() if k == kind) >= 10, kind
    seen = {label[:3] for label in tally.statuses()}
    assert {"200", "201", "202", "400", "401", "404", "405", "413", "415", "422"} <= seen, seen
    # Still answering, and still right.
    after = predict(service, RECORD)
    assert after.status_code == 200, after.text
    assert 0 < after.json()["predictions"][0]["probability"] < 1


@pytest.mark.parametrize("name", sorted(SERVING_BOUNDS))
def test_a_value_beyond_its_bound_is_refused_naming_field_value_and_bound(
    service: Target, name: str
) -> None:
    low, high = bounds(name)
    base = RECORD | {"duration": 100}
    assert predict(service, base | {name: high}).status_code == 200
    assert predict(service, base | {name: low}).status_code == 200
    for value, bound, word in [(high + 1, high, "most"), (low - 1, low, "least")]:
        response = predict(service, base | {name: value})
        assert response.status_code == 422, response.text
        [error] = response.json()["errors"]
        assert error["field"] == name and error["value"] == value
        assert error["message"] == f"must be at {word} {bound}, not {value}"


@pytest.mark.parametrize(
    "value", [10**30, -(10**30), 1e30, "1e30", "1" + "0" * 400, 1e308, "1e999999"]
)
def test_a_balance_far_beyond_anything_seen_is_refused_not_scored(
    service: Target, value: Any
) -> None:
    response = predict(service, RECORD | {"balance": value})
    assert response.status_code == 422, response.text
    [error] = response.json()["errors"]
    assert error["field"] == "balance"
    low, high = bounds("balance")
    expected = (
        f"must be at least {low}" if str(value).startswith("-") else f"must be at most {high}"
    )
    assert error["message"].startswith(expected), error["message"]


def test_the_bounds_are_in_the_openapi_schema(service: Target) -> None:
    schema = httpx.get(f"http://{service.host}:{service.port}/openapi.json", timeout=30).json()
    body = schema["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]
    properties = body["schema"]["oneOf"][0]["properties"]
    for name in SERVING_BOUNDS:
        low, high = bounds(name)
        assert (properties[name]["minimum"], properties[name]["maximum"]) == (low, high), name


STRICT_JSON = [
    ("NaN", b'{"age": NaN}', "NaN is not a JSON value"),
    ("Infinity", b'{"records": [{"balance": -Infinity}]}', "-Infinity is not a JSON value"),
    ("beyond a double", b'{"balance": 1e400}', "beyond the range of a double"),
    ("4,301 digits", b'{"balance": ' + b"1" * 4301 + b"}", "4300 digits"),
    ("duplicate key", b'{"age": 41, "age": 42}', "the key 'age' appears twice"),
    ("nesting", b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1), "nested deeper"),
    ("nesting past the parser", b"[" * 100_000 + b"]" * 100_000, "nested deeper"),
    ("NUL", b'{"job": "a\\u0000"}', "body.job holds the NUL character"),
    ("lone surrogate", b'{"records": [{"\\udc00": 1}]}', "a key of body.records[0] holds a lone"),
    ("invalid UTF-8", b'{"job": "\xc3\x28"}', "'utf-8' codec can't decode"),
    ("encoded surrogate", b'{"job": "\xed\xa0\x80"}', "'utf-8' codec can't decode"),
]


@pytest.mark.parametrize(("case", "raw", "said"), STRICT_JSON, ids=[c[0] for c in STRICT_JSON])
def test_json_the_service_cannot_read_faithfully_is_refused_with_the_reason(
    service: Target, case: str, raw: bytes, said: str
) -> None:
    response = httpx.post(
        f"http://{service.host}:{service.port}/predict",
        content=raw,
        headers={"content-type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 400, response.text
    assert said in response.json()["detail"]


def test_a_malformed_request_line_is_refused_by_uvicorn_and_the_service_goes_on(
    service: Target,
) -> None:
    """What the app never sees: uvicorn answers 400 in plain text and closes the connection."""
    with socket.create_connection((service.host, service.port), timeout=10) as sock:
        sock.sendall(b"GET /healthz HTTP/9.9\r\nHost: x\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert answer.endswith(b"Invalid HTTP request received.")
    assert predict(service, RECORD).status_code == 200


RAY_BUDGET_S = float(os.environ.get("BANK_MARKETING_FUZZ_RAY_SECONDS", "20"))


@pytest.fixture(scope="module")
def through_ray(
    registry: str, monitoring_database: str, ray_cluster: RayCluster
) -> Iterator[Target]:
    """The app as Ray Serve deploys it, behind Serve's HTTP proxy, at a route of its own."""
    from ray import serve

    from bank_marketing.serving.deployment import PredictionService

    environment = {
        "BANK_MARKETING_WEBHOOK_TOKEN": TOKEN,
        "BANK_MARKETING_DB_URL": monitoring_database,
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    application = PredictionService.options(
        num_replicas=1,
        ray_actor_options={"num_cpus": 0.25, "runtime_env": {"env_vars": environment}},
    ).bind(
        tracking_uri=registry, db_url=monitoring_database, poll_seconds=3600.0, flush_seconds=0.5
    )
    serve.run(application, name="fuzz", route_prefix="/fuzz")
    url = f"{ray_cluster.http_url}/fuzz"
    try:
        wait_until_healthy(url)
        yield Target.from_url(url, TOKEN)
    finally:
        serve.delete("fuzz")


def test_through_ray_serves_proxy_the_same_rules_hold(through_ray: Target) -> None:
    tally = run(through_ray, SEED, seconds=RAY_BUDGET_S, workers=2)
    print(f"\n{tally.requests} requests through Ray Serve's proxy\n{tables(tally)}")
    assert tally.server_errors == 0, report(tally)
    assert not tally.problems, report(tally)
    after = predict(through_ray, RECORD)
    assert after.status_code == 200, after.text


# Serve's proxy reads every x-request-id as UTF-8 before the app runs, and answered 500 in plain
# text to one that is not; bank_marketing.serving.proxy refuses it in front of Serve instead.
UNREADABLE_REQUEST_IDS = {
    "Latin-1": [b"x-request-id: caf\xe9"],
    "a lone continuation byte": [b"x-request-id: \x80abc"],
    "a truncated sequence": [b"x-request-id: ok\xc3"],
    "an encoded surrogate": [b"x-request-id: \xed\xa0\x80"],
    "the second of two": [b"x-request-id: crm-1", b"x-request-id: \xff"],
}


@pytest.mark.parametrize("lines", UNREADABLE_REQUEST_IDS.values(), ids=list(UNREADABLE_REQUEST_IDS))
def test_through_ray_a_request_id_that_is_not_utf_8_is_refused_naming_the_header(
    through_ray: Target, lines: list[bytes]
) -> None:
    [answer] = send_raw(through_ray, "/predict", lines, json.dumps(RECORD).encode())
    assert answer.status == 400, answer
    assert answer.headers["content-type"] == "application/json", answer.headers
    detail = json.loads(answer.body)["detail"]
    assert detail.startswith("header x-request-id must be 1 to 128 visible ASCII characters")
    # Answered under an id of its own, as the app answers any request it refuses.
    assert uuid.UUID(answer.headers["x-request-id"])


def test_through_ray_a_valid_request_id_still_reaches_the_app_and_comes_back(
    through_ray: Target,
) -> None:
    lines = [b"x-request-id: crm-2026-0001"]
    [answer] = send_raw(through_ray, "/predict", lines, json.dumps(RECORD).encode())
    assert answer.status == 200, answer
    assert answer.headers["x-request-id"] == "crm-2026-0001"
    assert 0 < json.loads(answer.body)["predictions"][0]["probability"] < 1


def test_through_ray_a_websocket_handshake_with_an_unreadable_request_id_is_refused(
    through_ray: Target,
) -> None:
    lines = [
        b"Connection: Upgrade", b"Upgrade: websocket", b"Sec-WebSocket-Version: 13",
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", b"x-request-id: caf\xe9",
    ]  # fmt: skip
    [answer] = send_raw(through_ray, "/predict", lines, method="GET")
    assert answer.status == 403, answer


def send_raw(
    target: Target, path: str, lines: list[bytes], body: bytes = b"", method: str = "POST"
) -> list[Answer]:
    """The answers to one request written byte for byte: its header ``lines`` after Host."""
    head = f"{method} {target.prefix}{path} HTTP/1.1\r\nHost: {target.host}:{target.port}\r\n"
    if body:
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    raw = head.encode() + b"".join(line + b"\r\n" for line in lines) + b"\r\n" + body
    answers, ended = exchange(target, Case(0, path, "headers", raw))
    assert answers, f"no answer (connection {ended})"
    return answers
