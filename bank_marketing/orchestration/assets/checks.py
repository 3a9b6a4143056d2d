"""How the monitoring assets check what they are about to write, and how they fail.

A blocking Pandera check runs before anything is written: its result lists a sample of the
failure cases. A database fault, or a registered model that cannot be loaded, fails the run
with a message that says what went wrong and what was kept.
"""

from collections.abc import Callable
from typing import Any, TypeVar

import dagster as dg
import pandas as pd
import pandera.pandas as pa
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from sqlalchemy.exc import SQLAlchemyError

from bank_marketing.orchestration.resources import MonitoringDatabase
from bank_marketing.serving.model import LoadedModel, load_version
from bank_marketing.training.tracking import MODEL_NAME

# Failure cases shown in a check's metadata, and in a failed run's message.
FAILURE_SAMPLE = 10
SUMMARY_CASES = 5
T = TypeVar("T")


def schema_failures(schema: pa.DataFrameSchema, frame: pd.DataFrame) -> pd.DataFrame | None:
    """The schema's failure cases on ``frame``, or None when it passes."""
    try:
        schema.validate(frame, lazy=True)
    except pa.errors.SchemaErrors as errors:
        return errors.failure_cases
    return None


def check_result(
    name: str, failures: pd.DataFrame | None, metadata: dict[str, Any]
) -> dg.AssetCheckResult:
    """The blocking check's result: passed when ``failures`` is None, else a sample of them."""
    details = {**metadata, "failed_checks": 0 if failures is None else len(failures)}
    if failures is not None:
        sample = failures.head(FAILURE_SAMPLE)[["column", "check", "failure_case", "index"]]
        details["failure_cases"] = dg.MetadataValue.md(sample.to_markdown(index=False))
    return dg.AssetCheckResult(
        check_name=name,
        passed=failures is None,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata=details,
    )


def failure_summary(failures: pd.DataFrame) -> str:
    """The first failure cases in one line: column, check and the value found."""
    return "; ".join(
        f"{row.column or 'frame'}: {row.check} (got {row.failure_case})"
        for row in failures.head(SUMMARY_CASES).itertuples()
    )


def database_write(db: MonitoringDatabase, what: str, write: Callable[[], T]) -> T:
    """Run one transactional write; a database fault fails the run with what was kept."""
    try:
        return write()
    except SQLAlchemyError as error:
        raise dg.Failure(
            description=f"{what}: the monitoring database {db.describe()} failed during the "
            f"write ({type(error).__name__}: {getattr(error, 'orig', None) or error}). The "
            f"transaction was rolled back: the stored rows are as they were."
        ) from error


def load_registered(client: MlflowClient, version: str) -> LoadedModel:
    """A registered version of the model, or a failure naming it and the tracking server."""
    try:
        return load_version(client, version)
    except (MlflowException, OSError, ValueError) as error:
        raise dg.Failure(
            description=f"{MODEL_NAME} v{version} cannot be loaded from {client.tracking_uri}: "
            f"{error}",
            allow_retries=False,
        ) from error
