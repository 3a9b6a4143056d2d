"""What the asset pages in the Dagster UI show: numbers at a readable precision, MLflow as links.

Only the Dagster metadata is rounded; MLflow and the monitoring database keep every digit.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import dagster as dg

# Scores, shares, rates, probabilities and drift statistics: the sensors' thresholds (0.1 for
# prediction drift) and the ROC AUC differences the benchmarks compare (BENCHMARKS.md) are far
# above 1e-4.
DIGITS = 4
SECONDS_DIGITS = 2
# The most a score in the metadata differs from the number MLflow and the database keep.
ROUNDING_ERROR = 0.5 * 10**-DIGITS
SECONDS_SUFFIX = "_seconds"


def rounded(metadata: Mapping[str, Any], exact: tuple[str, ...] = ()) -> dict[str, Any]:
    """``metadata`` with its floats rounded: ``*_seconds`` to 2 decimals, every other to 4.

    Ints, bools, strings and ``MetadataValue`` objects pass unchanged, and NaN stays NaN, so the
    sensors read the same types as before. Keys in ``exact`` keep every digit: numbers a sensor
    compares with a threshold, so it decides as Grafana does on the database's numbers.
    """
    return {key: value if key in exact else _rounded(key, value) for key, value in metadata.items()}


def _rounded(key: str, value: Any) -> Any:
    if not isinstance(value, numbers.Real) or isinstance(value, numbers.Integral):
        return value
    digits = SECONDS_DIGITS if key.endswith(SECONDS_SUFFIX) else DIGITS
    return round(float(value), digits)


def mlflow_run_url(
    ui_url: str, experiment_id: str, run_id: str, artifact: str | None = None
) -> str:
    """The run's page in the MLflow UI at ``ui_url``, or one of its artifacts on that page.

    The routes are the MLflow 3 UI's (a hash router): ``#/experiments/E/runs/R`` and
    ``#/experiments/E/runs/R/artifacts/PATH``, as the UI itself links a run's artifact.
    """
    url = f"{ui_url.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"
    if artifact:
        url += f"/artifacts/{quote(artifact.strip('/'))}"
    return url


def mlflow_run_links(
    ui_url: str, experiment_id: str, run_id: str, name: str = "mlflow_run"
) -> dict[str, Any]:
    """``{name}_id``: the run id as text; ``name``: a link to the run's page in the MLflow UI."""
    return {
        f"{name}_id": run_id,
        name: dg.MetadataValue.url(mlflow_run_url(ui_url, experiment_id, run_id)),
    }


def mlflow_model_version_url(ui_url: str, model_name: str, version: str) -> str:
    """A registered model version's page in the MLflow UI at ``ui_url``."""
    return f"{ui_url.rstrip('/')}/#/models/{quote(model_name, safe='')}/versions/{version}"
