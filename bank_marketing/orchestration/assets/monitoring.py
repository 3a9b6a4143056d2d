"""Monthly monitoring: the champion's ``predictions`` for a month's contacts, and the month's
``drift_report`` against the champion's reference data, with its realized quality and its
retraining signals.

Each is guarded by a blocking Pandera check that runs before anything is written to the
monitoring database, so a broken report reaches neither the sensors nor the dashboard.
"""

import os
import warnings
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd
from dagster_pandera import pandera_schema_to_dagster_type
from mlflow import MlflowClient
from mlflow.entities import RunInfo
from mlflow.exceptions import MlflowException
from pydantic import Field

from bank_marketing.monitoring import drift, quality, schemas
from bank_marketing.monitoring.measure import SIGNAL_COLUMNS, Measurement, Reference, measure
from bank_marketing.monitoring.reference import ReferenceDataMissing, load_reference
from bank_marketing.monitoring.scoring import PROBABILITY, probabilities, score_month
from bank_marketing.orchestration.assets import checks
from bank_marketing.orchestration.assets.metadata import mlflow_run_links, mlflow_run_url, rounded
from bank_marketing.orchestration.partitions import monthly_partitions
from bank_marketing.orchestration.resources import MonitoringDatabase
from bank_marketing.serving.model import LoadedModel
from bank_marketing.training import registry
from bank_marketing.training.features import labels
from bank_marketing.training.tracking import MODEL_NAME
from bank_marketing.training.windows import call_days

GROUP = "monitoring"
PREDICTIONS_CHECK = "valid_predictions"
DRIFT_CHECK = "valid_drift_metrics"
# The numbers of the retrain_signals row, in the metadata and the monitoring run's metrics.
SIGNALS = SIGNAL_COLUMNS[1:-1]
# Signals the retraining sensor compares with thresholds: kept with every digit in the metadata.
EXACT_SIGNALS = ("drift_p_value", "drift_z", "realized_z", "estimated_drop", "estimated_roc_auc")

with warnings.catch_warnings():
    warnings.simplefilter("ignore", dg.BetaWarning)
    PredictionsType = pandera_schema_to_dagster_type(schemas.Predictions)

# A month is scored by itself once: when its contacts (or, for drift_report, its predictions)
# newly materialize and it was never scored. Not eager(): that would look at the latest month
# only, and rescore a month whenever its contacts change. A later champion may have trained on
# an old month, and rescoring would overwrite the month-ahead record, so a rescore is always a
# deliberate run (monitoring_job from the UI).
NEVER_SCORED = (
    dg.AutomationCondition.missing()
    & dg.AutomationCondition.any_deps_updated().since_last_handled()
    & ~dg.AutomationCondition.any_deps_missing()
    & ~dg.AutomationCondition.any_deps_in_progress()
    & ~dg.AutomationCondition.in_progress()
).with_label("month never scored and its inputs just arrived")


@dg.asset(
    group_name=GROUP,
    partitions_def=monthly_partitions,
    automation_condition=NEVER_SCORED,
    dagster_type=PredictionsType,
    required_resource_keys={"mlflow", "monitoring_db"},
    kinds={"pandas", "pandera", "mlflow"},
    check_specs=[
        dg.AssetCheckSpec(
            PREDICTIONS_CHECK,
            asset="predictions",
            blocking=True,
            description="One row per contact of the month, every probability in [0, 1], one "
            "model version present; checked before the predictions table is written.",
        )
    ],
)
def predictions(
    context: dg.AssetExecutionContext, contacts: pd.DataFrame
) -> Iterator[dg.Output | dg.AssetCheckResult]:
    """The champion's P(subscribed) for every contact of the month, with the version that scored
    it; also in the monitoring database's predictions table."""
    db: MonitoringDatabase = context.resources.monitoring_db
    month = pd.Timestamp(context.partition_key)
    client = MlflowClient()
    model = checks.load_registered(client, _champion_version(client))
    scores = score_month(model, contacts, month, pd.Timestamp.now(tz="UTC"))
    failures = checks.schema_failures(
        schemas.predictions_month_schema(month, contacts.index), scores
    )
    yield checks.check_result(PREDICTIONS_CHECK, failures, {"model_version": model.version})
    if failures is not None:
        raise dg.Failure(
            description=f"predictions {month:%Y-%m} by v{model.version} fail their schema; "
            f"nothing was written. {checks.failure_summary(failures)}",
            allow_retries=False,
        )
    stored = checks.database_write(
        db, f"predictions {month:%Y-%m}", lambda: db.replace_predictions(month.date(), scores)
    )
    yield dg.Output(
        scores,
        metadata=rounded(
            {
                "month": f"{month:%Y-%m}",
                "model_version": model.version,
                "dagster/row_count": stored,
                "mean_probability": float(scores[PROBABILITY].mean()) if stored else float("nan"),
                "table": f"predictions in {db.describe()}",
            }
        ),
    )


class DriftReportConfig(dg.Config):
    prediction_drift_method: str = Field(
        default=drift.PREDICTION_DRIFT_METHOD,
        description="Evidently drift method for the predicted probability ('wasserstein': "
        "normed Wasserstein distance; also 'psi', 'jensenshannon', 'ks', ...).",
    )


@dg.asset(
    group_name=GROUP,
    partitions_def=monthly_partitions,
    automation_condition=NEVER_SCORED,
    required_resource_keys={"mlflow", "monitoring_db"},
    kinds={"evidently", "mlflow"},
    check_specs=[
        dg.AssetCheckSpec(
            DRIFT_CHECK,
            asset="drift_report",
            blocking=True,
            description="The drift numbers, realized quality and retraining signals are sound: "
            "shares and ROC AUCs in [0, 1], counts within the columns checked, the partition's "
            "month; checked before the drift_reports, monthly_quality and retrain_signals "
            "tables are written.",
        )
    ],
)
def drift_report(
    context: dg.AssetExecutionContext,
    config: DriftReportConfig,
    contacts: pd.DataFrame,
    predictions: pd.DataFrame,
) -> Iterator[dg.Output | dg.AssetCheckResult]:
    """An Evidently report of the month against the scoring model's reference data: drift per
    input, drifted share, prediction drift, missing values, and realized quality; HTML kept.
    With it, the month's retraining signals (``monitoring.measure``): the prediction drift
    against its sampling noise, the realized and the estimated (CBPE) ROC AUC against the
    expected level; the retraining sensor judges them with the policy."""
    db: MonitoringDatabase = context.resources.monitoring_db
    month = pd.Timestamp(context.partition_key)
    label = f"{month:%Y-%m}"
    if not predictions.index.sort_values().equals(contacts.index.sort_values()):
        raise dg.Failure(
            description=f"drift_report {label}: the stored predictions do not match the month's "
            f"contacts ({len(predictions)} vs {len(contacts)} rows); materialize predictions "
            f"{label} again first",
            allow_retries=False,
        )
    client = MlflowClient()
    version = _scored_by(predictions) or _champion_version(client)
    model = checks.load_registered(client, version)
    try:
        reference = load_reference(client, model.run_id, model.inputs)
    except ReferenceDataMissing as error:
        raise dg.Failure(
            description=f"drift_report {label}: {MODEL_NAME} v{version}: {error}",
            metadata={"model_version": version, "mlflow_run_id": model.run_id},
            allow_retries=False,
        ) from error
    reference = reference.assign(**{drift.PREDICTION: probabilities(model, reference)})
    current = contacts.assign(**{drift.PREDICTION: predictions[PROBABILITY]})
    result = drift.compare(
        current,
        reference,
        model.inputs,
        config.prediction_drift_method,
        metadata={"month": label, "model_version": version, "reference_run_id": model.run_id},
    )
    labelled = quality.has_labels(contacts)
    signals = _signals(reference, contacts, current[drift.PREDICTION].to_numpy(), labelled)
    computed_at = pd.Timestamp.now(tz="UTC")
    path = _reports_folder(db) / f"drift_{label}.html"
    row = result.as_row(month, version, path, computed_at)
    signals_row = signals.as_row(month, version, computed_at)
    realized = None
    if labelled:
        measured = quality.realized_quality(contacts, current[drift.PREDICTION].to_numpy())
        realized = quality.quality_row(month, version, measured, computed_at)
    failures = checks.schema_failures(schemas.for_month(schemas.DriftMetrics, month), row)
    if realized is not None and failures is None:
        failures = checks.schema_failures(
            schemas.for_month(schemas.MonthlyQuality, month), realized
        )
    if failures is None:
        failures = checks.schema_failures(
            schemas.for_month(schemas.RetrainSignals, month), signals_row
        )
    yield checks.check_result(
        DRIFT_CHECK, failures, {"model_version": version, "rows": result.rows}
    )
    if failures is not None:
        raise dg.Failure(
            description=f"drift_report {label}: the report's numbers fail their schema; nothing "
            f"was written. {checks.failure_summary(failures)}",
            allow_retries=False,
        )

    run = _keep(context, db, result, row, realized, signals_row, path, model)
    ui_url = context.resources.mlflow.ui_url
    metadata: dict[str, Any] = {
        "month": label,
        "model_version": version,
        "rows": result.rows,
        "drifted_columns": result.drifted_columns,
        "drifted_share": result.drifted_share,
        "prediction_drift": result.prediction_drift,
        "prediction_drift_method": result.prediction_drift_method,
        "missing_share": result.missing_share,
        "report_path": dg.MetadataValue.path(str(path)),
        "report_in_mlflow": dg.MetadataValue.url(
            mlflow_run_url(ui_url, run.experiment_id, run.run_id, _report_artifact(path))
        ),
        "reference_rows": result.reference_rows,
        "input_columns": result.input_columns,
        "prediction_drifted": result.prediction_drifted,
        "evidently_tests_failed": f"{result.tests_failed} of {result.tests_total}",
        **{name: float(value) for name, value in asdict(signals).items() if name in SIGNALS},
        **mlflow_run_links(ui_url, run.experiment_id, run.run_id),
        "tables": f"drift_reports, monthly_quality in {db.describe()}",
    }
    if result.note:
        metadata["note"] = result.note
    if signals.note:
        metadata["signals_note"] = signals.note
    if result.columns:
        metadata["column_drift"] = dg.MetadataValue.md(
            result.column_table().to_markdown(index=False, floatfmt=".4f")
        )
    if realized is not None:
        metadata.update({name: float(realized[name].iloc[0]) for name in quality.QUALITY_METRICS})
    context.log.info(
        "drift %s v%s: %d rows, %d of %d inputs drifted, prediction drift %.4f (%s)",
        label,
        version,
        result.rows,
        result.drifted_columns,
        result.input_columns,
        result.prediction_drift,
        result.prediction_drift_method,
    )
    yield dg.Output(
        {
            "drift": row.iloc[0].to_dict(),
            "quality": None if realized is None else realized.iloc[0].to_dict(),
        },
        # The retraining sensor compares these with its thresholds.
        metadata=rounded(metadata, exact=("prediction_drift", "drifted_share", *EXACT_SIGNALS)),
    )


def _keep(
    context: dg.AssetExecutionContext,
    db: MonitoringDatabase,
    result: drift.DriftResult,
    row: pd.DataFrame,
    realized: pd.DataFrame | None,
    signals_row: pd.DataFrame,
    path: Path,
    model: LoadedModel,
) -> RunInfo:
    """Log the HTML to a monitoring run in MLflow, write the tables, then put the HTML in place.

    The HTML goes to a temporary file beside its final path first and replaces it only after the
    database committed, so a failed write leaves the previous report, its row and its file as
    they were; the MLflow run of a failed write ends FAILED.
    """
    month = row["month"].iloc[0]
    label = f"{month:%Y-%m}"
    title = f"Drift of {label} against {MODEL_NAME} v{model.version}'s reference data"
    partial = path.with_name(f".{path.name}.partial")
    mlflow = context.resources.mlflow
    try:
        result.save_html(partial, title)
        with mlflow.start_run(
            run_name=f"drift {label} v{model.version}",
            nested=True,
            tags={
                "kind": "drift_report",
                "month": label,
                "model_version": model.version,
                "model_run_id": model.run_id,
                "dagster.run_id": context.run.run_id,
            },
        ) as run:
            mlflow.log_text(partial.read_text(encoding="utf-8"), _report_artifact(path))
            mlflow.log_params(
                {
                    "prediction_drift_method": result.prediction_drift_method,
                    "rows": result.rows,
                    "reference_rows": result.reference_rows,
                }
            )
            numbers = {**signals_row.iloc[0].to_dict(), **row.iloc[0].to_dict()}
            if realized is not None:
                numbers.update(realized.iloc[0].to_dict())
            mlflow.log_metrics(
                {
                    name: float(numbers[name])
                    for name in (
                        "drifted_columns",
                        "drifted_share",
                        "prediction_drift",
                        "missing_share",
                        *quality.QUALITY_METRICS,
                        *SIGNALS,
                    )
                    if name in numbers and pd.notna(numbers[name])
                }
            )
            checks.database_write(
                db,
                f"drift_report {label}",
                lambda: db.replace_drift_report(month.date(), row, realized, signals_row),
            )
        os.replace(partial, path)
    except MlflowException as error:
        raise dg.Failure(
            description=f"drift_report {label}: MLflow refused the monitoring run or its report "
            f"({error.message}); nothing was written to the monitoring database"
        ) from error
    finally:
        partial.unlink(missing_ok=True)
    return run.info


def _signals(
    reference: pd.DataFrame, contacts: pd.DataFrame, probability: np.ndarray, labelled: bool
) -> Measurement:
    """The month's retraining signals against the model's reference data (its validation rows,
    with their outcomes), as the policy backtest measures them."""
    return measure(
        Reference.build(
            reference[drift.PREDICTION].to_numpy(),
            labels(reference),
            call_days(reference).to_numpy(),
        ),
        probability,
        labels(contacts) if labelled else None,
        call_days(contacts).to_numpy() if len(contacts) else np.empty(0, dtype=object),
    )


def _report_artifact(path: Path) -> str:
    """Where the monitoring run keeps the HTML report among its artifacts."""
    return f"drift/{path.name}"


def _champion_version(client: MlflowClient) -> str:
    """The version the champion alias points at now."""
    try:
        return registry.require_champion(client)
    except registry.NoChampion as error:
        raise dg.Failure(
            description=f"no champion to monitor: {error}", allow_retries=False
        ) from error


def _scored_by(scores: pd.DataFrame) -> str | None:
    """The version that scored the month (None for a month without contacts)."""
    versions = scores["model_version"].unique()
    return str(versions[0]) if len(versions) else None


def _reports_folder(db: MonitoringDatabase) -> Path:
    try:
        return db.reports_folder()
    except (ValueError, OSError) as error:
        raise dg.Failure(description=str(error), allow_retries=False) from error
