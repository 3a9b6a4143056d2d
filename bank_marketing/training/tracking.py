"""MLflow tracking of candidates: one nested run each, under the Dagster run's MLflow run.

The logged model is the whole pipeline, saved with skops (MLflow 3's safe default) rather than
pickle, so loading a version cannot run arbitrary code. skops refuses a few types it cannot vouch
for; the ones our five families need are listed in ``SKOPS_TRUSTED_TYPES``. They are trusted
because every model in this registry is one this system trained itself.
"""

from __future__ import annotations

import hashlib
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from importlib.metadata import version
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.data.dataset import Dataset
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature

from bank_marketing.data.fields import LABEL
from bank_marketing.training.candidates import FittedCandidate
from bank_marketing.training.features import labels
from bank_marketing.training.metrics import roc_auc_standard_error
from bank_marketing.training.retries import idempotent
from bank_marketing.training.windows import call_days

MODEL_NAME = "bank-marketing"
EXPERIMENT_NAME = "bank-marketing"
SKOPS_TRUSTED_TYPES = [
    "xgboost.core.Booster",
    "xgboost.sklearn.XGBClassifier",
    "sklearn.tree._tree.Tree",
    "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
    "sklearn.model_selection._split.StratifiedKFold",  # the SVC calibration's shuffled folds
    # With model_inputs.day_of_year:
    "bank_marketing.training.features.DayOfYear",
    "bank_marketing.training.features.PreviousContactDay",
]
REFERENCE_ARTIFACT = "reference/validation.parquet"
INPUT_EXAMPLE_ROWS = 5
# What loading a logged pipeline needs, pinned to this environment's versions. Stated rather than
# inferred: MLflow's inference loads the model in a subprocess for every logged candidate,
# which costs seconds a candidate (BENCHMARKS.md, the replay notes).
MODEL_REQUIREMENTS = ("mlflow", "scikit-learn", "xgboost", "skops", "pandas", "numpy", "scipy")


def pip_requirements() -> list[str]:
    return [f"{name}=={version(name)}" for name in MODEL_REQUIREMENTS]


@dataclass(frozen=True)
class CandidateRecord:
    """What the registry needs of a trained candidate."""

    family: str
    run_id: str
    model_version: str
    model_uri: str
    train_metrics: dict[str, float]
    validation_metrics: dict[str, float]
    fit_seconds: float
    # Of validation_metrics["roc_auc"], by a bootstrap over call days (registry.select uses it).
    validation_roc_auc_standard_error: float


def ensure_experiment(name: str, artifact_location: str | None) -> str:
    """The experiment's id, creating it with ``artifact_location`` (None: the server's choice)."""
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    return mlflow.create_experiment(name, artifact_location=artifact_location)


def redacted(uri: str) -> str:
    """``uri`` with any password replaced by ``***``, for messages and metadata."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def frame_digest(frame: pd.DataFrame) -> str:
    """A short content digest of a frame, stable across processes."""
    hashed = pd.util.hash_pandas_object(frame, index=True).to_numpy().tobytes()
    return hashlib.sha256(hashed).hexdigest()[:16]


def log_candidate(
    fitted: FittedCandidate,
    *,
    params: Mapping[str, Any],
    inputs: Sequence[str],
    train: pd.DataFrame,
    validation: pd.DataFrame,
    tags: Mapping[str, str],
    data_source: str,
) -> CandidateRecord:
    """Log ``fitted`` as a nested run of the active run and register it as a model version.

    The logged model takes the run's params (``log_model`` copies them) and each split's metrics,
    tied to the split's dataset. Besides those metrics comes ``validation_roc_auc_standard_error``:
    the standard error of the validation ROC AUC by a bootstrap over the validation's call days.
    """
    if mlflow.active_run() is None:
        raise RuntimeError("log_candidate needs an active MLflow run to nest the candidate under")
    standard_error = roc_auc_standard_error(
        labels(validation), fitted.validation_probability, call_days(validation)
    )
    run = mlflow.start_run(
        run_name=f"{fitted.family} as of {tags.get('as_of', '?')}",
        nested=True,
        tags={**tags, "family": fitted.family},
    )
    try:
        with warnings.catch_warnings(), run:
            # Inputs are validated before they reach a model (Pandera, the API's schema), so the
            # hints about integer columns and about how to read a path as a dataset source are
            # noise.
            warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer")
            warnings.filterwarnings("ignore", message="The specified dataset source can be")
            mlflow.log_params(
                {
                    **params,
                    "inputs": ",".join(inputs),
                    "day_of_year": fitted.day_of_year,
                    "train_rows": fitted.train_rows,
                    "train_rows_capped": fitted.train_rows_capped,
                    "validation_rows": len(validation),
                }
            )
            datasets = {
                context: mlflow.data.from_pandas(
                    frame,
                    source=data_source,
                    targets=LABEL,
                    name=f"{context} {tags.get('window', '')}".strip(),
                    digest=frame_digest(frame),
                )
                for frame, context in ((train, "training"), (validation, "validation"))
            }
            for context, dataset in datasets.items():
                mlflow.log_input(dataset, context=context)
            _log_reference(validation)
            example = validation[list(inputs)].head(INPUT_EXAMPLE_ROWS)
            info = mlflow.sklearn.log_model(
                fitted.pipeline,
                name="model",
                signature=infer_signature(example, fitted.pipeline.predict_proba(example)),
                input_example=example,
                pyfunc_predict_fn="predict_proba",
                serialization_format="skops",
                skops_trusted_types=SKOPS_TRUSTED_TYPES,
                registered_model_name=MODEL_NAME,
                pip_requirements=pip_requirements(),
            )
            _log_model_metrics(fitted, info.model_id, datasets, standard_error)
    except MlflowException:
        # The store failed under the run (its database restarting, say): ending the run FAILED
        # on the way out failed with it, and the run would show RUNNING for ever. It is ended
        # once the store answers again, or the error saying why it could not be joins this one.
        idempotent(partial(MlflowClient().set_terminated, run.info.run_id, "FAILED"))
        raise
    return CandidateRecord(
        family=fitted.family,
        run_id=run.info.run_id,
        model_version=str(info.registered_model_version),
        model_uri=f"models:/{MODEL_NAME}/{info.registered_model_version}",
        train_metrics=fitted.train_metrics,
        validation_metrics=fitted.validation_metrics,
        fit_seconds=fitted.fit_seconds,
        validation_roc_auc_standard_error=standard_error,
    )


def _log_model_metrics(
    fitted: FittedCandidate,
    model_id: str,
    datasets: Mapping[str, Dataset],
    standard_error: float,
) -> None:
    """Each split's metrics against the logged model and the dataset they were computed on.

    That is where MLflow 3 shows a model's metrics, with their datasets: on the logged model's
    page, which the registered version's page links to as its source model. They follow
    ``log_model`` because the model's id exists only then, and metrics already on the run when it
    runs would be copied to the model without their datasets. The same calls record them on the
    active run under the same prefixed keys, where serving's ``GET /model`` and comparisons
    across runs read them.
    """
    mlflow.log_metrics(
        {f"train_{k}": v for k, v in fitted.train_metrics.items()},
        model_id=model_id,
        dataset=datasets["training"],
    )
    mlflow.log_metrics(
        {
            **{f"validation_{k}": v for k, v in fitted.validation_metrics.items()},
            "validation_roc_auc_standard_error": standard_error,
        },
        model_id=model_id,
        dataset=datasets["validation"],
    )
    mlflow.log_metric("fit_seconds", fitted.fit_seconds, model_id=model_id)


def _log_reference(validation: pd.DataFrame) -> None:
    """The validation set, kept with the model: drift reports compare new months against it."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / Path(REFERENCE_ARTIFACT).name
        validation.to_parquet(path)
        mlflow.log_artifact(str(path), artifact_path=str(Path(REFERENCE_ARTIFACT).parent))
