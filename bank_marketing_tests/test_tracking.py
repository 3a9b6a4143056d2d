"""A logged candidate as MLflow 3 shows it: metrics on the logged model, tied to their datasets."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient
from mlflow.entities import LoggedModel
from mlflow.utils.mlflow_tags import MLFLOW_MODEL_VERSIONS

from bank_marketing.serving.model import load_version
from bank_marketing.training.candidates import fit_candidate
from bank_marketing.training.features import DEFAULT_INPUTS
from bank_marketing.training.registry import evaluate_version
from bank_marketing.training.tracking import MODEL_NAME, CandidateRecord, frame_digest
from bank_marketing_tests.registries import first_contacts, log_round

# MLflow on a real backend store (SQLite): run with the integration tests.
pytestmark = pytest.mark.integration

PARAMS = {"C": 1.0, "max_iter": 2000, "class_weight": "none"}
# log_round logs the round with the window 2008-05..2008-06.
TRAINING = "training 2008-05..2008-06"
VALIDATION = "validation 2008-05..2008-06"


@dataclass(frozen=True)
class Logged:
    client: MlflowClient
    record: CandidateRecord
    model: LoggedModel
    train: pd.DataFrame
    validation: pd.DataFrame


@pytest.fixture(scope="module")
def logged(bank_full_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Logged:
    """A logistic regression on the first 4,000 contacts, logged into a fresh SQLite registry."""
    folder = tmp_path_factory.mktemp("tracking")
    frame = first_contacts(bank_full_path, folder, 4000)
    train, validation = frame.iloc[:3000], frame.iloc[3000:]
    fitted = fit_candidate("logistic_regression", PARAMS, DEFAULT_INPUTS, train, validation)
    uri, [record] = log_round(folder, [(fitted, PARAMS)], train, validation, champion=None)
    client = MlflowClient(uri)
    version = client.get_model_version(MODEL_NAME, record.model_version)
    model_id = version.model_id or version.source.removeprefix("models:/")
    return Logged(client, record, client.get_logged_model(model_id), train, validation)


def _model_metrics(model: LoggedModel) -> dict[str, tuple[float, str | None, str | None]]:
    """The model's metrics by key: value, dataset name and digest. Each key must appear once."""
    metrics = model.metrics or []
    keys = [metric.key for metric in metrics]
    assert len(keys) == len(set(keys)), f"metrics logged more than once: {sorted(keys)}"
    return {m.key: (m.value, m.dataset_name, m.dataset_digest) for m in metrics}


def test_validation_metrics_are_on_the_model_with_the_validation_dataset(logged: Logged) -> None:
    metrics = _model_metrics(logged.model)
    digest = frame_digest(logged.validation)
    expected = {
        **{f"validation_{k}": v for k, v in logged.record.validation_metrics.items()},
        "validation_roc_auc_standard_error": logged.record.validation_roc_auc_standard_error,
    }
    assert "validation_roc_auc" in expected
    for key, value in expected.items():
        assert metrics[key] == (pytest.approx(value), VALIDATION, digest), key


def test_train_metrics_are_on_the_model_with_the_training_dataset(logged: Logged) -> None:
    metrics = _model_metrics(logged.model)
    digest = frame_digest(logged.train)
    assert logged.record.train_metrics
    for key, value in logged.record.train_metrics.items():
        assert metrics[f"train_{key}"] == (pytest.approx(value), TRAINING, digest), key


def test_fit_time_is_on_the_model_without_a_dataset(logged: Logged) -> None:
    metrics = _model_metrics(logged.model)
    assert metrics["fit_seconds"] == (pytest.approx(logged.record.fit_seconds), None, None)
    prefixed = {k for k in metrics if k.startswith(("train_", "validation_"))}
    assert set(metrics) == prefixed | {"fit_seconds"}


def test_the_registered_version_points_at_the_model_of_the_candidate_run(logged: Logged) -> None:
    """The version's source is the logged model (the UI's "Source Model" link; the SQL registry
    leaves ``model_id`` unset), and the model lists the version among its registrations."""
    version = logged.client.get_model_version(MODEL_NAME, logged.record.model_version)
    assert version.source == f"models:/{logged.model.model_id}"
    assert version.model_id in (None, logged.model.model_id)
    assert version.run_id == logged.record.run_id
    registrations = json.loads(logged.model.tags[MLFLOW_MODEL_VERSIONS])
    assert {"name": MODEL_NAME, "version": int(logged.record.model_version)} in registrations
    assert logged.model.source_run_id == logged.record.run_id
    assert logged.model.params["C"] == "1.0"
    assert logged.model.params["inputs"] == ",".join(DEFAULT_INPUTS)
    assert logged.model.params["validation_rows"] == str(len(logged.validation))


def test_the_run_keeps_its_metrics_and_one_input_per_dataset(logged: Logged) -> None:
    """Serving reads a version's validation metrics from its run; logging the metrics against
    the model and the datasets must not add a context-less input for either, nor make the run's
    own output an input of it."""
    run = logged.client.get_run(logged.record.run_id)
    model_metrics = {key: value for key, (value, _, _) in _model_metrics(logged.model).items()}
    assert run.data.metrics == pytest.approx(model_metrics)
    inputs = {
        (i.dataset.name, i.dataset.digest): {t.key: t.value for t in i.tags}.get(
            "mlflow.data.context"
        )
        for i in run.inputs.dataset_inputs
    }
    assert len(run.inputs.dataset_inputs) == 2
    assert not run.inputs.model_inputs
    assert [o.model_id for o in run.outputs.model_outputs] == [logged.model.model_id]
    assert inputs == {
        (TRAINING, frame_digest(logged.train)): "training",
        (VALIDATION, frame_digest(logged.validation)): "validation",
    }


def test_a_version_is_read_through_its_client_whatever_the_process_tracking_uri(
    logged: Logged,
) -> None:
    """Serving and the promotion rule read a version through the client they are given; the
    process-wide tracking URI (here one that leads nowhere) is neither used nor changed."""
    elsewhere = "sqlite:////nonexistent/elsewhere.db"
    mlflow.set_tracking_uri(elsewhere)
    version = logged.record.model_version
    model = load_version(logged.client, version)
    assert mlflow.get_tracking_uri() == elsewhere
    assert model.version == version and model.inputs == list(DEFAULT_INPUTS)
    evaluation = evaluate_version(logged.client, version, logged.validation)
    assert mlflow.get_tracking_uri() == elsewhere
    assert evaluation.problem is None
    assert evaluation.roc_auc == pytest.approx(logged.record.validation_metrics["roc_auc"])


@pytest.mark.parametrize(
    ("fails", "status"), [(True, "FAILED"), (False, "FINISHED")], ids=["failed", "succeeded"]
)
def test_a_run_left_open_ends_as_its_dagster_run_did(
    tmp_path: Path, fails: bool, status: str
) -> None:
    """In one process (in-process jobs, the replay) the next run's MLflow resource ends an MLflow
    run an earlier Dagster run left open: FAILED when that Dagster run failed, not FINISHED."""
    import dagster as dg

    from bank_marketing.orchestration.resources import _end_leftover_runs

    @dg.op
    def step() -> None:
        if fails:
            raise ValueError("the round's step failed")

    @dg.job
    def round_job() -> None:
        step()

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    with dg.instance_for_test() as instance:
        result = round_job.execute_in_process(instance=instance, raise_on_error=False)
        assert result.success is not fails
        # An experiment of this store: the process may remember another store's as active.
        leftover = mlflow.start_run(experiment_id=mlflow.create_experiment("leftovers"))
        mlflow.set_tags({"dagster_run_id": result.run_id})
        _end_leftover_runs(instance)
    assert mlflow.active_run() is None
    assert mlflow.get_run(leftover.info.run_id).info.status == status
