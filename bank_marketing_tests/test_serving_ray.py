"""The Ray Serve deployment over real HTTP: predictions, and rollover without failed requests."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient

from bank_marketing.data.source import load_contacts
from bank_marketing.training.candidates import fit_candidate
from bank_marketing.training.features import DEFAULT_INPUTS
from bank_marketing.training.registry import CHAMPION_ALIAS
from bank_marketing.training.tracking import MODEL_NAME, ensure_experiment, log_candidate

pytestmark = pytest.mark.integration

RECORD: dict[str, Any] = {
    "age": 41, "job": "technician", "balance": 1200, "housing": "yes", "contact": "cellular",
    "day": 15, "month": "may", "campaign": 2, "pdays": -1, "previous": 0, "poutcome": "unknown",
}  # fmt: skip


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory, bank_full_path: Path) -> dict[str, Any]:
    """Two registered versions of different families; the champion alias on the first."""
    folder = tmp_path_factory.mktemp("serve-registry")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    frame = load_contacts(str(bank_full_path), folder).frame.iloc[:8000]
    train, validation = frame.iloc[:6000], frame.iloc[6000:]
    families = {
        "logistic_regression": {"C": 1.0, "max_iter": 2000, "class_weight": "none"},
        "xgboost": {"n_estimators": 50, "learning_rate": 0.1, "max_depth": 3,
                    "min_child_weight": 1.0, "subsample": 1.0, "colsample_bytree": 1.0,
                    "reg_lambda": 1.0, "n_jobs": 1},
    }  # fmt: skip
    mlflow.set_tracking_uri(uri)
    versions = []
    try:
        mlflow.set_experiment(
            experiment_id=ensure_experiment("serve-test", (folder / "a").as_uri())
        )
        with mlflow.start_run(run_name="round"):
            for family, params in families.items():
                fitted = fit_candidate(family, params, DEFAULT_INPUTS, train, validation)
                record = log_candidate(
                    fitted, params=params, inputs=list(DEFAULT_INPUTS), train=train,
                    validation=validation, tags={"as_of": "2008-06", "window": "2008-05..2008-06"},
                    data_source=str(bank_full_path),
                )  # fmt: skip
                versions.append(record.model_version)
        MlflowClient(uri).set_registered_model_alias(MODEL_NAME, CHAMPION_ALIAS, versions[0])
    finally:
        mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    return {"uri": uri, "versions": versions, "validation": validation}


@pytest.fixture(scope="module")
def service(registry: dict[str, Any]) -> Iterator[str]:
    """Ray started once for the module, the app on 2 replicas of 0.25 CPU, over HTTP."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray
    from ray import serve

    from bank_marketing.serving.deployment import PredictionService

    port = _free_port()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(
            PredictionService.bind(tracking_uri=registry["uri"], poll_seconds=1.0),
            name="bank-marketing",
            route_prefix="/",
        )
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        yield url
    finally:
        serve.shutdown()
        ray.shutdown()


def test_served_predictions_equal_pyfunc_for_the_same_version(
    service: str, registry: dict[str, Any]
) -> None:
    records = registry["validation"].drop(columns="y").head(50)
    response = httpx.post(
        f"{service}/predict", json={"records": records.to_dict("records")}, timeout=30
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_version"] == registry["versions"][0]
    mlflow.set_tracking_uri(registry["uri"])
    try:
        pyfunc = mlflow.pyfunc.load_model(f"models:/{MODEL_NAME}/{registry['versions'][0]}")
        expected = np.asarray(pyfunc.predict(records))[:, 1]
    finally:
        mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
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
