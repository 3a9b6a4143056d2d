"""The HTTP contract on the FastAPI app, with a real model from a real (SQLite) MLflow registry."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

from bank_marketing.data.source import load_contacts
from bank_marketing.serving.app import MAX_RECORDS, create_app
from bank_marketing.serving.http import MAX_BODY_BYTES
from bank_marketing.serving.model import ModelState
from bank_marketing.training.features import DEFAULT_INPUTS
from bank_marketing_tests.registries import load_pyfunc

RECORD: dict[str, Any] = {
    "age": 41, "job": "technician", "balance": 1200, "housing": "yes", "contact": "cellular",
    "day": 15, "month": "may", "campaign": 2, "pdays": -1, "previous": 0, "poutcome": "unknown",
}  # fmt: skip


@pytest.fixture(scope="module")
def client(state: ModelState) -> TestClient:
    return TestClient(create_app(state), raise_server_exceptions=False)


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_no_generated_request_gets_a_server_error(state: ModelState, mode: str) -> None:
    """Bodies generated from the OpenAPI schema, valid and invalid: 2xx or 4xx, never 5xx."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(state))
    generation = GenerationMode.POSITIVE if mode == "positive" else GenerationMode.NEGATIVE
    seen: list[int] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        if mode == "negative" and operation.method.upper() != "POST":
            continue  # nothing to break in a request without parameters or body

        @given(case=operation.as_strategy(generation_mode=generation))
        @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
        def check(case: Any) -> None:
            response = case.call()
            seen.append(response.status_code)
            assert response.status_code < 500, (case.path, case.body, response.text)

        check()
    assert len(seen) >= 20
    assert 422 in seen or mode == "positive"


def test_one_record_gets_a_probability_and_the_version(client: TestClient, state: ModelState):
    response = client.post("/predict", json=RECORD)
    assert response.status_code == 200
    body = response.json()
    assert body["model_version"] == state.model.version
    [prediction] = body["predictions"]
    expected = state.model.pipeline.predict_proba(pd.DataFrame([RECORD]))[0, 1]
    assert prediction["probability"] == pytest.approx(expected)
    assert prediction["subscribed"] is bool(expected >= 0.5)


def test_a_batch_matches_pyfunc_for_the_same_version(
    client: TestClient, state: ModelState, registry: str, bank_full_path: Path, tmp_path: Path
) -> None:
    assert state.model.featurizer is not None  # so this compares the compiled path
    frame = load_contacts(str(bank_full_path), tmp_path).frame.iloc[7000:7200].drop(columns="y")
    records = json.loads(frame.to_json(orient="records"))
    response = client.post("/predict", json={"records": records})
    assert response.status_code == 200
    served = [p["probability"] for p in response.json()["predictions"]]
    expected = np.asarray(load_pyfunc(registry, state.model.version).predict(frame))[:, 1]
    assert np.allclose(served, expected)


def test_the_original_clients_string_form_is_scored_the_same(client: TestClient) -> None:
    as_strings = {k: str(v) for k, v in RECORD.items()} | {"contact": "", "poutcome": "NaN"}
    plain = client.post("/predict", json=RECORD | {"contact": "unknown"}).json()
    assert client.post("/predict", json=as_strings).json() == plain


def test_health_and_model_describe_the_served_version(client: TestClient, state: ModelState):
    assert client.get("/healthz").json() == {"status": "ok", "model_version": state.model.version}
    info = client.get("/model").json()
    assert info["version"] == state.model.version
    assert info["training_window"] == "2008-05..2008-06"
    assert info["inputs"] == list(DEFAULT_INPUTS)
    assert 0.5 < info["validation_metrics"]["roc_auc"] <= 1


def test_openapi_documents_the_predict_body(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    body = schema["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]
    assert len(body["schema"]["oneOf"]) == 2
    assert client.get("/docs").status_code == 200


BAD_BODIES = [
    ("missing field", {k: v for k, v in RECORD.items() if k != "age"}, 422, ["age"]),
    ("wrong type", RECORD | {"balance": [1, 2]}, 422, ["balance"]),
    ("unknown category", RECORD | {"job": "astronaut"}, 422, ["job"]),
    ("out of range", RECORD | {"day": 45, "campaign": 0}, 422, ["day", "campaign"]),
    ("unknown field", RECORD | {"colour": "red"}, 422, ["colour"]),
    ("empty list", {"records": []}, 422, []),
    ("bad record in a batch", {"records": [RECORD, RECORD | {"age": "x"}]}, 422,
     ["records[1].age"]),
    ("not an object", [1, 2, 3], 422, []),
    ("too many records", {"records": [RECORD] * (MAX_RECORDS + 1)}, 413, []),
]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "body", "status", "fields"), BAD_BODIES, ids=[b[0] for b in BAD_BODIES]
)
def test_bad_bodies_get_4xx_with_one_message_per_field(
    client: TestClient, case: str, body: Any, status: int, fields: list[str]
) -> None:
    response = client.post("/predict", json=body)
    assert response.status_code == status, response.text
    payload = response.json()
    assert payload["detail"]
    assert [e["field"] for e in payload.get("errors", [])] == fields
    assert "Traceback" not in response.text


def test_a_body_over_the_size_limit_is_refused(client: TestClient) -> None:
    padding = " " * (MAX_BODY_BYTES + 1)
    response = client.post(
        "/predict",
        content=json.dumps(RECORD) + padding,
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 413
    assert "at most" in response.json()["detail"]


def test_a_body_that_is_not_json_is_refused(client: TestClient) -> None:
    response = client.post(
        "/predict", content=b"age=41&job=x", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["detail"].startswith("body is not valid JSON")


def test_a_wrong_content_type_is_refused(client: TestClient) -> None:
    response = client.post(
        "/predict", content=json.dumps(RECORD), headers={"content-type": "text/plain"}
    )
    assert response.status_code == 415


def test_without_a_model_health_and_predict_answer_503_with_a_reason(tmp_path: Path) -> None:
    state = ModelState(f"sqlite:///{tmp_path / 'empty.db'}")
    assert state.load() is None
    client = TestClient(create_app(state))
    health = client.get("/healthz")
    assert health.status_code == 503
    assert "cannot load models:/bank-marketing/@champion" in health.json()["reason"]
    response = client.post("/predict", json=RECORD)
    assert response.status_code == 503
    assert "no model is loaded" in response.json()["detail"]


def test_the_serve_config_is_valid_for_serve_deploy() -> None:
    import yaml
    from ray.serve.schema import ServeDeploySchema

    path = Path(__file__).parents[1] / "bank_marketing" / "serving" / "serve_config.yaml"
    config = ServeDeploySchema.model_validate(yaml.safe_load(path.read_text()))
    [application] = config.applications
    assert application.import_path == "bank_marketing.serving.deployment:app_builder"
    [deployment] = application.deployments
    assert deployment.ray_actor_options.num_cpus <= 0.5
    raw = yaml.safe_load(path.read_text())["applications"][0]["deployments"][0]
    replicas = raw["autoscaling_config"]["min_replicas"] if "autoscaling_config" in raw else None
    assert (
        replicas or deployment.num_replicas
    ) >= 2  # one replica reconfigures while another answers
    assert deployment.max_ongoing_requests >= int(application.args["max_batch_size"])
