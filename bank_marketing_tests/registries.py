"""Small MLflow registries for the tests: real models on real contacts, logged and registered
as a training round does it, in a temporary SQLite store. One helper, :func:`log_round`, for
all of them."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.pyfunc import PyFuncModel

from bank_marketing.data.months import recover_months
from bank_marketing.data.source import load_contacts
from bank_marketing.training.candidates import FittedCandidate, fit_candidate
from bank_marketing.training.features import DEFAULT_INPUTS
from bank_marketing.training.registry import CHAMPION_ALIAS
from bank_marketing.training.tracking import (
    MODEL_NAME,
    CandidateRecord,
    ensure_experiment,
    log_candidate,
)

TWO_FAMILIES: dict[str, dict[str, Any]] = {
    "logistic_regression": {"C": 1.0, "max_iter": 2000, "class_weight": "none"},
    "xgboost": {"n_estimators": 50, "learning_rate": 0.1, "max_depth": 3,
                "min_child_weight": 1.0, "subsample": 1.0, "colsample_bytree": 1.0,
                "reg_lambda": 1.0, "n_jobs": 1},
}  # fmt: skip


def first_contacts(bank_full_path: Path, folder: Path, rows: int) -> pd.DataFrame:
    """The first ``rows`` contacts, with their recovered month as ``contacts`` has it."""
    frame = load_contacts(str(bank_full_path), folder).frame.iloc[:rows]
    return frame.assign(contact_month=recover_months(frame["month"]))


def log_round(
    folder: Path,
    candidates: list[tuple[FittedCandidate, dict[str, Any]]],
    train: pd.DataFrame,
    validation: pd.DataFrame,
    *,
    champion: int | None = 0,
    data_source: str = "bank-full.csv",
    uri: str | None = None,
) -> tuple[str, list[CandidateRecord]]:
    """Log each fitted candidate with its params as one round (as of 2008-06) into a SQLite
    registry in ``folder`` (or the tracking server at ``uri``, which keeps the artifacts), register
    each as a version, and point the champion alias at the ``champion``-th (None: no alias).
    Returns the tracking URI and the records in order.

    The process-wide tracking URI is set for the round (log_candidate logs through MLflow's
    fluent API, as a training step does) and put back afterwards.
    """
    artifacts = None if uri else (folder / "a").as_uri()
    uri = uri or f"sqlite:///{folder / 'mlflow.db'}"
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        mlflow.set_experiment(experiment_id=ensure_experiment("test", artifacts))
        with mlflow.start_run(run_name="round"):
            records = [
                log_candidate(
                    fitted,
                    params=params,
                    inputs=list(DEFAULT_INPUTS),
                    train=train,
                    validation=validation,
                    tags={"as_of": "2008-06", "window": "2008-05..2008-06"},
                    data_source=data_source,
                )
                for fitted, params in candidates
            ]
    finally:
        mlflow.set_tracking_uri(previous)
    if champion is not None:
        MlflowClient(uri).set_registered_model_alias(
            MODEL_NAME, CHAMPION_ALIAS, records[champion].model_version
        )
    return uri, records


def load_pyfunc(uri: str, version: str) -> PyFuncModel:
    """The registered version as MLflow's pyfunc flavor loads it, read through a client of
    ``uri`` (the process-wide tracking URI is left alone)."""
    download = MlflowClient(uri).get_model_version_download_uri(MODEL_NAME, version)
    local = mlflow.artifacts.download_artifacts(
        artifact_uri=download, dst_path=tempfile.mkdtemp(prefix="pyfunc-"), tracking_uri=uri
    )
    return mlflow.pyfunc.load_model(local)


def register_two_versions(folder: Path, bank_full_path: Path) -> dict[str, Any]:
    """Two versions of different families on the first 8,000 contacts; the champion on the first.

    Returns the tracking URI, the versions in order and the validation frame.
    """
    frame = first_contacts(bank_full_path, folder, 8000)
    train, validation = frame.iloc[:6000], frame.iloc[6000:]
    fitted = [
        (fit_candidate(family, params, DEFAULT_INPUTS, train, validation), params)
        for family, params in TWO_FAMILIES.items()
    ]
    uri, records = log_round(folder, fitted, train, validation, data_source=str(bank_full_path))
    return {
        "uri": uri,
        "versions": [record.model_version for record in records],
        "validation": validation,
    }
