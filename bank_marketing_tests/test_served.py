"""What the service keeps of its traffic, on the FastAPI app with real models and real databases.

The writer (``ServedLog``), the request ids, ``POST /feedback`` and the shadow challenger, on
SQLite and on a PostgreSQL server of the test's own that is stopped and restarted. The same
behaviour over HTTP on Ray Serve is in ``test_served_ray``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from bank_marketing.monitoring import served, store
from bank_marketing.serving.app import create_app
from bank_marketing.serving.capture import Answer, ServedLog
from bank_marketing.serving.contract import EXAMPLE_RECORD
from bank_marketing.serving.feedback import create_feedback_router
from bank_marketing.serving.http import REQUEST_ID_HEADER
from bank_marketing.serving.model import ModelState
from bank_marketing_tests.conftest import free_port, in_ci
from bank_marketing_tests.examples import records
from bank_marketing_tests.private_postgres import binaries, private_postgres
from bank_marketing_tests.registries import register_two_versions

TOKEN = "feedback-test-token"
BEARER = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def two_versions(tmp_path_factory: pytest.TempPathFactory, bank_full_path: Path) -> dict[str, Any]:
    return register_two_versions(tmp_path_factory.mktemp("served-registry"), bank_full_path)


@pytest.fixture(scope="module")
def champion(two_versions: dict[str, Any]) -> ModelState:
    state = ModelState(two_versions["uri"])
    assert state.load(two_versions["versions"][0]) is not None, state.problem
    return state


@pytest.fixture(scope="module")
def challenger(two_versions: dict[str, Any]) -> ModelState:
    state = ModelState(two_versions["uri"])
    assert state.load(two_versions["versions"][1]) is not None, state.problem
    return state


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'monitoring.db'}"


@pytest.fixture
def served_log(db_url: str) -> Iterator[ServedLog]:
    log = ServedLog(db_url, flush_seconds=0.2)
    yield log
    log.close(timeout_s=5)


def app_client(
    state: ModelState,
    db_url: str,
    served_log: ServedLog | None,
    shadow: ModelState | None = None,
    token: str | None = TOKEN,
) -> TestClient:
    app = create_app(
        state,
        served_log=served_log,
        shadow=shadow,
        feedback=create_feedback_router(db_url, token),
    )
    return TestClient(app, raise_server_exceptions=False)


def kept(db_url: str, role: str | None = None) -> Any:
    engine = store.connect(db_url)
    try:
        return served.read_served(engine, role=role)
    finally:
        engine.dispose()


# -- request ids -----------------------------------------------------------------------------------


def test_every_response_carries_a_request_id_the_clients_own_when_it_sent_one(
    champion: ModelState,
) -> None:
    client = TestClient(create_app(champion), raise_server_exceptions=False)
    generated = client.post("/predict", json=EXAMPLE_RECORD)
    assert generated.status_code == 200
    assert uuid.UUID(generated.headers[REQUEST_ID_HEADER])
    again = client.post("/predict", json=EXAMPLE_RECORD)
    assert again.headers[REQUEST_ID_HEADER] != generated.headers[REQUEST_ID_HEADER]

    own = client.post("/predict", json=EXAMPLE_RECORD, headers={REQUEST_ID_HEADER: "crm-2026-0001"})
    assert own.headers[REQUEST_ID_HEADER] == "crm-2026-0001"
    # Refusals and other routes carry one too.
    refused = client.post("/predict", json={"age": "old"}, headers={REQUEST_ID_HEADER: "crm-2"})
    assert refused.status_code == 422 and refused.headers[REQUEST_ID_HEADER] == "crm-2"
    for path in ("/healthz", "/model", "/nowhere"):
        assert REQUEST_ID_HEADER in client.get(path).headers


@pytest.mark.parametrize("bad", [b"", b"x" * 129, b"has space", "naïve".encode()])
def test_an_invalid_request_id_is_refused_with_a_reason(champion: ModelState, bad: bytes) -> None:
    client = TestClient(create_app(champion), raise_server_exceptions=False)
    response = client.post(
        "/predict", json=EXAMPLE_RECORD, headers={REQUEST_ID_HEADER.encode(): bad}
    )
    assert response.status_code == 400
    assert REQUEST_ID_HEADER in response.json()["detail"]
    assert uuid.UUID(response.headers[REQUEST_ID_HEADER])


# -- what is kept ----------------------------------------------------------------------------------


def test_the_kept_rows_equal_the_answered_records(
    champion: ModelState, db_url: str, served_log: ServedLog
) -> None:
    client = app_client(champion, db_url, served_log)
    answers = {}
    for index, body in enumerate(
        [EXAMPLE_RECORD, {"records": records(5)}, {"records": records(3, 7)}]
    ):
        headers = {REQUEST_ID_HEADER: f"client-{index}"} if index != 1 else {}
        response = client.post("/predict", json=body, headers=headers)
        assert response.status_code == 200
        answers[response.headers[REQUEST_ID_HEADER]] = (body, response.json())
    assert served_log.flush(timeout_s=10)

    rows = kept(db_url)
    assert set(rows["role"]) == {served.LIVE}
    assert len(rows) == 1 + 5 + 3 == served_log.counts.kept
    for request_id, (body, answer) in answers.items():
        mine = rows[rows["request_id"] == request_id].sort_values("record")
        sent = body.get("records", [body])
        assert list(mine["record"]) == list(range(len(sent)))
        assert set(mine["model_version"]) == {answer["model_version"]}
        np.testing.assert_allclose(
            mine["probability"], [p["probability"] for p in answer["predictions"]], rtol=1e-12
        )
        for stored, record in zip(mine["inputs"], sent, strict=True):
            assert {key: stored[key] for key in record} == record
        assert (mine["latency_ms"] > 0).all()
        assert mine["subscribed"].isna().all()
    # Answers are stamped when they arrive, in UTC.
    assert rows["received_at"].max() <= datetime.now(UTC)


def test_a_reused_request_id_keeps_the_first_answer_and_counts_the_repeat(
    champion: ModelState, db_url: str, served_log: ServedLog
) -> None:
    client = app_client(champion, db_url, served_log)
    first = client.post("/predict", json=EXAMPLE_RECORD, headers={REQUEST_ID_HEADER: "same"})
    second = client.post(
        "/predict", json={**EXAMPLE_RECORD, "age": 70}, headers={REQUEST_ID_HEADER: "same"}
    )
    assert first.status_code == second.status_code == 200
    assert served_log.flush(timeout_s=10)
    rows = kept(db_url)
    assert len(rows) == 1
    assert rows["probability"][0] == pytest.approx(first.json()["predictions"][0]["probability"])
    assert (served_log.counts.kept, served_log.counts.duplicate) == (1, 1)


def test_sampling_keeps_whole_requests_at_about_the_rate(champion: ModelState, db_url: str) -> None:
    log = ServedLog(db_url, sample_rate=0.5, flush_seconds=0.2)
    client = app_client(champion, db_url, log)
    for _ in range(200):
        assert client.post("/predict", json={"records": records(2)}).status_code == 200
    log.close(timeout_s=10)
    rows = kept(db_url)
    per_request = rows.groupby("request_id").size()
    assert (per_request == 2).all()
    assert 60 <= len(per_request) <= 140  # binomial(200, 0.5): outside this once in 10^8
    assert log.counts.kept + log.counts.sampled_out == 400


def test_the_shadow_scores_every_answer_and_only_the_champion_answers(
    champion: ModelState,
    challenger: ModelState,
    db_url: str,
    served_log: ServedLog,
) -> None:
    client = app_client(champion, db_url, served_log, shadow=challenger)
    assert client.get("/model").json()["shadow_version"] == challenger.model.version
    response = client.post("/predict", json={"records": records(6)})
    assert response.json()["model_version"] == champion.model.version
    assert served_log.flush(timeout_s=10)

    rows = kept(db_url)
    live, shadow = (rows[rows["role"] == role].sort_values("record") for role in ("live", "shadow"))
    assert list(live["record"]) == list(shadow["record"]) == list(range(6))
    assert set(live["model_version"]) == {champion.model.version}
    assert set(shadow["model_version"]) == {challenger.model.version}
    np.testing.assert_allclose(
        live["probability"], [p["probability"] for p in response.json()["predictions"]]
    )
    np.testing.assert_allclose(
        shadow["probability"], challenger.model.predict_records(records(6)), rtol=1e-12
    )
    assert not np.allclose(live["probability"], shadow["probability"])
    assert shadow["latency_ms"].isna().all()


# -- outcomes --------------------------------------------------------------------------------------


def test_feedback_needs_the_bearer_token(champion: ModelState, db_url: str) -> None:
    body = {"request_id": "any", "subscribed": True}
    client = app_client(champion, db_url, None)
    for headers, reason in (({}, "missing"), ({"Authorization": "Bearer nope"}, "wrong")):
        response = client.post("/feedback", json=body, headers=headers)
        assert response.status_code == 401 and reason in response.json()["detail"]
        assert response.headers["WWW-Authenticate"] == "Bearer"
    unset = app_client(champion, db_url, None, token=None).post(
        "/feedback", json=body, headers=BEARER
    )
    assert unset.status_code == 401
    assert "BANK_MARKETING_WEBHOOK_TOKEN is not set" in unset.json()["detail"]


def test_feedback_is_idempotent_and_each_refusal_says_why(
    champion: ModelState, db_url: str, served_log: ServedLog
) -> None:
    client = app_client(champion, db_url, served_log)
    one = client.post("/predict", json=EXAMPLE_RECORD).headers[REQUEST_ID_HEADER]
    many = client.post("/predict", json={"records": records(3)}).headers[REQUEST_ID_HEADER]
    assert served_log.flush(timeout_s=10)

    def report(**body: Any) -> Any:
        return client.post("/feedback", json=body, headers=BEARER)

    first = report(request_id=one, subscribed=True)
    assert first.status_code == 201, first.text
    assert first.json() == {
        "request_id": one, "record": 0, "subscribed": True, "status": "recorded",
    }  # fmt: skip
    assert report(request_id=one, subscribed=True).status_code == 200  # the same, again
    conflict = report(request_id=one, subscribed=False)
    assert conflict.status_code == 409 and "subscribed=true" in conflict.json()["detail"]

    unknown = report(request_id="never-answered", subscribed=True)
    assert unknown.status_code == 404 and "never-answered" in unknown.json()["detail"]
    which = report(request_id=many, subscribed=True)
    assert which.status_code == 422 and "'record'" in which.json()["detail"]
    beyond = report(request_id=many, record=3, subscribed=True)
    assert beyond.status_code == 404 and "3 record(s)" in beyond.json()["detail"]
    assert report(request_id=many, record=2, subscribed=False).status_code == 201

    bad = report(request_id=one, subscribed="yes")
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "subscribed"
    extra = report(request_id=one, subscribed=True, month="may")
    assert extra.status_code == 422
    not_json = client.post("/feedback", content=b"{", headers=BEARER)
    assert not_json.status_code == 400

    outcomes = kept(db_url).dropna(subset=["subscribed"])
    assert sorted(
        zip(outcomes["request_id"], outcomes["record"], outcomes["subscribed"], strict=True)
    ) == sorted([(one, 0, True), (many, 2, False)])


def test_feedback_with_the_database_down_is_503(champion: ModelState, tmp_path: Path) -> None:
    unreachable = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres?connect_timeout=2"
    client = app_client(champion, unreachable, None)
    response = client.post(
        "/feedback", json={"request_id": "x", "subscribed": True}, headers=BEARER
    )
    assert response.status_code == 503 and "retry" in response.json()["detail"]


# -- when the database is away ---------------------------------------------------------------------


def answer(state: ModelState, request_id: str, count: int = 3) -> Answer:
    batch = records(count)
    return Answer(
        request_id=request_id,
        received_at=datetime.now(UTC),
        model=state.model,
        records=batch,
        probabilities=state.model.predict_records(batch).tolist(),
        latency_ms=1.0,
    )


def test_what_cannot_be_held_is_counted_never_silently_lost(champion: ModelState) -> None:
    """No database answers: the queue holds up to its capacity, the rest is counted as dropped,
    and what is still held at shutdown is counted too."""
    unreachable = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres?connect_timeout=2"
    log = ServedLog(unreachable, capacity=10, flush_seconds=0.1)
    for index in range(5):
        log.keep(answer(champion, f"r{index}"))  # 3 records each: the 4th and 5th overflow
    assert log.counts.dropped == 6
    assert log.pending == 9
    assert log.close(timeout_s=1) == 9
    assert (log.counts.kept, log.counts.dropped) == (0, 15)


@pytest.fixture
def own_postgres() -> Iterator[Any]:
    if binaries() is None:
        if in_ci():
            pytest.fail("CI=true but no PostgreSQL server binaries to start a private server")
        pytest.skip("no PostgreSQL server binaries under /usr/lib/postgresql")
    with private_postgres() as server:
        yield server


@pytest.mark.integration
def test_writing_resumes_by_itself_after_the_database_comes_back(
    champion: ModelState, own_postgres: Any
) -> None:
    log = ServedLog(own_postgres.url, flush_seconds=0.1, max_retry_seconds=0.5)
    try:
        log.keep(answer(champion, "before"))
        assert log.flush(timeout_s=10)
        own_postgres.stop()
        for index in range(4):
            log.keep(answer(champion, f"during-{index}"))
        time.sleep(1.0)  # several failed attempts
        assert log.pending == 12 and log.counts.kept == 3
        own_postgres.start()
        assert log.flush(timeout_s=20), f"{log.pending} record(s) still pending"
        log.keep(answer(champion, "after"))
        assert log.flush(timeout_s=10)
    finally:
        log.close(timeout_s=5)
    assert (log.counts.kept, log.counts.dropped) == (18, 0)
    rows = kept(own_postgres.url)
    assert sorted(set(rows["request_id"])) == sorted(
        ["before", "after", *(f"during-{index}" for index in range(4))]
    )
    engine = sa.create_engine(own_postgres.url)
    with engine.connect() as connection:
        schema = connection.execute(
            sa.text(
                "select table_schema from information_schema.tables "
                "where table_name = 'served_predictions'"
            )
        ).scalar_one()
    engine.dispose()
    assert schema == store.POSTGRES_SCHEMA


def test_the_shadows_evidence_compares_both_versions_on_the_same_records(
    champion: ModelState,
    challenger: ModelState,
    db_url: str,
    served_log: ServedLog,
) -> None:
    """What production_deployment records when a version that ran in shadow goes live."""
    client = app_client(champion, db_url, served_log, shadow=challenger)
    batch = records(40)
    response = client.post("/predict", json={"records": batch})
    request_id = response.headers[REQUEST_ID_HEADER]
    assert served_log.flush(timeout_s=10)
    outcomes = [record["age"] % 3 == 0 for record in batch]
    for index, subscribed in enumerate(outcomes[:30]):  # the last 10 never get an outcome
        reported = client.post(
            "/feedback",
            json={"request_id": request_id, "record": index, "subscribed": subscribed},
            headers=BEARER,
        )
        assert reported.status_code == 201

    engine = store.connect(db_url)
    evidence = served.shadow_evidence(engine, challenger.model.version)
    assert served.shadow_evidence(engine, "999") is None
    engine.dispose()
    live = np.array([p["probability"] for p in response.json()["predictions"]])
    shadow = challenger.model.predict_records(batch)
    assert evidence is not None
    assert (evidence.records, evidence.labelled) == (40, 30)
    assert evidence.live_versions == [champion.model.version]
    assert evidence.agreement == pytest.approx(np.mean((live >= 0.5) == (shadow >= 0.5)))
    assert evidence.mean_abs_difference == pytest.approx(np.mean(np.abs(live - shadow)))
    # ROC AUC as the share of (subscribed, not subscribed) pairs ranked right, ties half.
    labels = np.array(outcomes[:30])

    def pairs_ranked_right(scores: np.ndarray) -> float:
        positive, negative = scores[:30][labels], scores[:30][~labels]
        difference = positive[:, None] - negative[None, :]
        return float(np.mean((difference > 0) + 0.5 * (difference == 0)))

    assert evidence.live_roc_auc == pytest.approx(pairs_ranked_right(live))
    assert evidence.shadow_roc_auc == pytest.approx(pairs_ranked_right(shadow))


@pytest.mark.integration
def test_on_postgresql_the_kept_rows_are_exactly_what_was_sent_whatever_the_characters(
    postgres_database: str,
) -> None:
    """PostgreSQL takes the rows by COPY: tabs, newlines, backslashes, quotes and accents in
    ids and inputs come back unchanged, floats to the last digit, and repeats stay out."""
    engine = store.connect(f"postgresql://postgres@127.0.0.1:5432/{postgres_database}")
    odd = "a\\b\tc\nd\"e'f,g\\N\r"
    now = datetime.now(UTC)
    rows = [
        {"request_id": odd, "record": 0, "role": served.LIVE, "received_at": now,
         "model_version": "1", "inputs": {"job": odd, "age": 41, "note": None},
         "probability": 1 / 3, "latency_ms": 2.5},
        {"request_id": "plain", "record": 1, "role": served.SHADOW, "received_at": now,
         "model_version": "12", "inputs": {"job": "técnico"}, "probability": 0.1,
         "latency_ms": None},
    ]  # fmt: skip
    try:
        assert served.insert_served(engine, rows) == 2
        assert served.insert_served(engine, rows) == 0
        back = served.read_served(engine).set_index("request_id")
    finally:
        engine.dispose()
    assert back.loc[odd, "inputs"] == rows[0]["inputs"]
    assert back.loc["plain", "inputs"] == rows[1]["inputs"]
    assert back.loc[odd, "probability"] == 1 / 3 and back.loc[odd, "latency_ms"] == 2.5
    assert np.isnan(back.loc["plain", "latency_ms"])
    assert (back["received_at"] == now).all()
    assert list(back["role"]) == [served.LIVE, served.SHADOW]
