"""Daily monitoring of live traffic: ``served_traffic``, each UTC day's answered records against
the reference data of the versions that scored them, the retention of those answers, and the
schedule that keeps the last days current as outcomes are reported late.

Built from the settings (``Settings.traffic``): the daily partitions start on its ``first_day``,
and each materialization deletes the answers past ``retention_days``.
"""

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import dagster as dg
import pandas as pd
from mlflow import MlflowClient

from bank_marketing.monitoring import schemas, traffic
from bank_marketing.monitoring.reference import ReferenceDataMissing, load_reference
from bank_marketing.monitoring.served import day_bounds, purge_served, read_served
from bank_marketing.orchestration.assets import checks
from bank_marketing.orchestration.assets.metadata import rounded
from bank_marketing.orchestration.assets.monitoring import GROUP, DriftReportConfig
from bank_marketing.orchestration.resources import MonitoringDatabase
from bank_marketing.orchestration.sensors import TRIGGER_TAG
from bank_marketing.settings import Traffic
from bank_marketing.training.tracking import MODEL_NAME

ASSET = "served_traffic"
TRAFFIC_CHECK = "valid_served_traffic"
JOB = "served_traffic_job"
SCHEDULE = "served_traffic_daily"
# Shortly after midnight UTC, when yesterday's answers are all in.
CRON = "15 0 * * *"
# Days each tick materializes, yesterday included: outcomes reported within a week of the answer
# reach the day's quality numbers.
RERUN_DAYS = 7
# The numbers of each version's row that the metadata repeats, as '<role>_v<version>_<name>'.
ROW_METADATA = (
    "rows",
    "requests",
    "labelled_rows",
    "drifted_columns",
    "drifted_share",
    "prediction_drift",
    "missing_share",
    "mean_probability",
    "roc_auc",
    "accuracy",
    "subscription_rate",
)


@dataclass(frozen=True)
class TrafficDefinitions:
    """The asset and its schedule, for one configuration."""

    asset: dg.AssetsDefinition
    schedule: dg.ScheduleDefinition


def daily_partitions(first_day: str) -> dg.DailyPartitionsDefinition:
    """UTC days from ``first_day`` (YYYY-MM-DD) through yesterday."""
    return dg.DailyPartitionsDefinition(start_date=first_day, timezone="UTC")


def build_traffic(settings: Traffic) -> TrafficDefinitions:
    """``served_traffic`` on daily partitions from ``settings.first_day``, and its schedule."""

    @dg.asset(
        name=ASSET,
        group_name=GROUP,
        partitions_def=daily_partitions(settings.first_day),
        required_resource_keys={"monitoring_db", "serving"},
        kinds={"evidently", "sql"},
        check_specs=[
            dg.AssetCheckSpec(
                TRAFFIC_CHECK,
                asset=ASSET,
                blocking=True,
                description="One row per version and role, counts within the records, shares and "
                "ROC AUC in [0, 1], quality present exactly when outcomes are, the partition's "
                "day; checked before the served_traffic table is written.",
            )
        ],
    )
    def served_traffic(
        context: dg.AssetExecutionContext, config: DriftReportConfig
    ) -> Iterator[dg.AssetCheckResult | dg.MaterializeResult]:
        """The day's answered records against the reference data of each version that scored
        them, one row per version and role (live, shadow): drifted inputs, prediction drift,
        missing values, and realized quality on the records whose outcome came back. Deletes
        the answers past retention."""
        db: MonitoringDatabase = context.resources.monitoring_db
        day = date.fromisoformat(context.partition_key)
        start, end = day_bounds(day)
        # The registry the service loads its versions from: the one that holds the versions
        # that scored these records.
        client = MlflowClient(context.resources.serving.tracking_uri)
        with db.engine() as engine:
            served = read_served(engine, start, end)
            try:
                rows = traffic.measure_day(
                    day,
                    served,
                    lambda version: _reference(client, version, day),
                    config.prediction_drift_method,
                )
            except ValueError as error:
                raise dg.Failure(
                    description=f"served_traffic {day}: {error}", allow_retries=False
                ) from error
            failures = checks.schema_failures(
                schemas.for_day(schemas.ServedTraffic, pd.Timestamp(day)), rows
            )
            yield checks.check_result(TRAFFIC_CHECK, failures, {"day": str(day), "rows": len(rows)})
            if failures is not None:
                raise dg.Failure(
                    description=f"served_traffic {day}: the rows fail their schema; nothing was "
                    f"written. {checks.failure_summary(failures)}",
                    allow_retries=False,
                )
            written = 0
            if not rows.empty:
                written = checks.database_write(
                    db, f"served_traffic {day}", lambda: traffic.replace_traffic(engine, day, rows)
                )
            cutoff = traffic.retention_cutoff(datetime.now(UTC), settings.retention_days)
            purged, purged_outcomes = checks.database_write(
                db, f"served_traffic {day}: the purge", lambda: purge_served(engine, cutoff)
            )
        metadata: dict[str, Any] = {
            "day": str(day),
            "dagster/row_count": written,
            "records": len(served),
            "requests": int(served["request_id"].nunique()),
            "retention_days": settings.retention_days,
            "purged_before": cutoff.isoformat(),
            "purged_answers": purged,
            "purged_outcomes": purged_outcomes,
            "table": f"served_traffic in {db.describe()}",
        }
        if rows.empty:
            metadata["note"] = _empty_note(day, start, cutoff)
        else:
            metadata["traffic"] = dg.MetadataValue.md(_table(rows))
            for row in rows.itertuples(index=False):
                prefix = f"{row.role}_v{row.model_version}"
                metadata.update(
                    {f"{prefix}_{name}": _number(getattr(row, name)) for name in ROW_METADATA}
                )
        context.log.info(
            "served_traffic %s: %d records in %d row(s); purged %d answers and %d outcomes "
            "received before %s",
            day,
            len(served),
            written,
            purged,
            purged_outcomes,
            cutoff.isoformat(),
        )
        yield dg.MaterializeResult(metadata=rounded(metadata))

    return TrafficDefinitions(served_traffic, _schedule(settings))


def days_to_run(scheduled: datetime, first_day: date, days: int = RERUN_DAYS) -> list[date]:
    """The days a tick at ``scheduled`` materializes: yesterday (UTC) and the ``days - 1``
    before it, newest first, none before ``first_day``."""
    yesterday = scheduled.astimezone(UTC).date() - timedelta(days=1)
    return [
        day
        for day in (yesterday - timedelta(days=back) for back in range(days))
        if day >= first_day
    ]


def _schedule(settings: Traffic) -> dg.ScheduleDefinition:
    first_day = date.fromisoformat(settings.first_day)

    @dg.schedule(
        name=SCHEDULE,
        cron_schedule=CRON,
        execution_timezone="UTC",
        job_name=JOB,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=f"Each day at 00:15 UTC, served_traffic for yesterday and the "
        f"{RERUN_DAYS - 1} days before, so outcomes reported late reach the day's quality.",
    )
    def served_traffic_daily(
        context: dg.ScheduleEvaluationContext,
    ) -> dg.SkipReason | list[dg.RunRequest]:
        scheduled = context.scheduled_execution_time or datetime.now(UTC)
        days = days_to_run(scheduled, first_day)
        if not days:
            return dg.SkipReason(f"no day of served traffic before {first_day} to measure")
        tick = scheduled.astimezone(UTC).date()
        return [
            dg.RunRequest(
                run_key=f"{day}@{tick}",
                partition_key=day.isoformat(),
                tags={TRIGGER_TAG: SCHEDULE},
            )
            for day in days
        ]

    return served_traffic_daily


def _reference(client: MlflowClient, version: str, day: date) -> traffic.VersionReference:
    """``version``'s reference data scored by it, as drift_report compares a month with it."""
    model = checks.load_registered(client, version)
    try:
        reference = load_reference(client, model.run_id, model.inputs)
    except ReferenceDataMissing as error:
        raise dg.Failure(
            description=f"served_traffic {day}: {MODEL_NAME} v{version}: {error}",
            metadata={"model_version": version, "mlflow_run_id": model.run_id},
            allow_retries=False,
        ) from error
    return traffic.scored_reference(model, reference)


def _empty_note(day: date, start: datetime, cutoff: datetime) -> str:
    note = f"no answers stored for {day}: nothing to measure, nothing written"
    if start < cutoff:
        note += (
            f"; the day is past retention (answers before {cutoff:%Y-%m-%d} are deleted), so "
            f"its stored rows, if any, are left as they were"
        )
    return note


def _number(value: Any) -> int | float:
    """A numpy number as the plain one Dagster's metadata takes."""
    return value.item() if hasattr(value, "item") else value


def _table(rows: pd.DataFrame) -> str:
    shown = rows[["model_version", "role", *ROW_METADATA]]
    return shown.to_markdown(index=False, floatfmt=".4f")
