"""Small MLflow registries for the serving tests: real models, registered like a training round."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient

from bank_marketing.data.months import recover_months
from bank_marketing.data.source import load_contacts
from bank_marketing.training.candidates import fit_candidate
from bank_marketing.training.features import DEFAULT_INPUTS
from bank_marketing.training.registry import CHAMPION_ALIAS
from bank_marketing.training.tracking import MODEL_NAME, ensure_experiment, log_candidate

TWO_FAMILIES: dict[str, dict[str, Any]] = {
    "logistic_regression": {"C": 1.0, "max_iter": 2000, "class_weight": "none"},
    "xgboost": {"n_estimators": 50, "learning_rate": 0.1, "max_depth": 3,
                "min_child_weight": 1.0, "subsample": 1.0, "colsample_bytree": 1.0,
                "reg_lambda": 1.0, "n_jobs": 1},
}  # fmt: skip


def register_two_versions(folder: Path, bank_full_path: Path) -> dict[str, Any]:
    """Two versions of different families on the first 8,000 contacts; the champion on the first.

    Returns the tracking URI, the versions in order and the validation frame.
    """
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    frame = load_contacts(str(bank_full_path), folder).frame.iloc[:8000]
    frame = frame.assign(contact_month=recover_months(frame["month"]))  # as `contacts` has
    train, validation = frame.iloc[:6000], frame.iloc[6000:]
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    versions = []
    try:
        mlflow.set_experiment(
            experiment_id=ensure_experiment("serve-test", (folder / "a").as_uri())
        )
        with mlflow.start_run(run_name="round"):
            for family, params in TWO_FAMILIES.items():
                fitted = fit_candidate(family, params, DEFAULT_INPUTS, train, validation)
                record = log_candidate(
                    fitted, params=params, inputs=list(DEFAULT_INPUTS), train=train,
                    validation=validation, tags={"as_of": "2008-06", "window": "2008-05..2008-06"},
                    data_source=str(bank_full_path),
                )  # fmt: skip
                versions.append(record.model_version)
        MlflowClient(uri).set_registered_model_alias(MODEL_NAME, CHAMPION_ALIAS, versions[0])
    finally:
        mlflow.set_tracking_uri(os.environ.get("MLFLOW_TRACKING_URI") or previous)
    return {"uri": uri, "versions": versions, "validation": validation}
