"""The champion's reference data: the validation frame logged with its MLflow run."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence

import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from bank_marketing.training.tracking import REFERENCE_ARTIFACT


class ReferenceDataMissing(RuntimeError):
    """A model's reference data cannot be read from its run."""


def load_reference(client: MlflowClient, run_id: str, inputs: Sequence[str]) -> pd.DataFrame:
    """The validation frame logged with ``run_id``, checked to hold the model's inputs."""
    with tempfile.TemporaryDirectory() as folder:
        try:
            path = client.download_artifacts(run_id, REFERENCE_ARTIFACT, folder)
            frame = pd.read_parquet(path)
        except (MlflowException, OSError) as error:
            raise ReferenceDataMissing(
                f"the reference data of MLflow run {run_id} cannot be read: artifact "
                f"{REFERENCE_ARTIFACT} is missing or unreadable at {_artifact_uri(client, run_id)} "
                f"({error}). Drift is measured against it; restore the artifact or train a new "
                f"champion, which logs its own."
            ) from error
    missing = [name for name in inputs if name not in frame.columns]
    if missing:
        raise ReferenceDataMissing(
            f"the reference data of MLflow run {run_id} ({REFERENCE_ARTIFACT}) lacks the model's "
            f"input column(s) {missing}"
        )
    if frame.empty:
        raise ReferenceDataMissing(
            f"the reference data of MLflow run {run_id} ({REFERENCE_ARTIFACT}) has no rows"
        )
    return frame


def _artifact_uri(client: MlflowClient, run_id: str) -> str:
    try:
        return f"{client.get_run(run_id).info.artifact_uri}/{REFERENCE_ARTIFACT}"
    except MlflowException:
        return f"runs:/{run_id}/{REFERENCE_ARTIFACT}"
