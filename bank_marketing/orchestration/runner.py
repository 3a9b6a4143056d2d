"""Running the asset jobs in this process on a Dagster instance, as ``bank-marketing`` does.

Runs go through the instance like any other, so the Dagster UI on the same ``DAGSTER_HOME`` shows
them, their partitions and their checks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import dagster as dg

# The command prints each failure's message itself; the run's own log keeps the stack trace.
QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}


@dataclass(frozen=True)
class MonthOutcome:
    """What one ``contacts`` partition run did."""

    partition_key: str
    success: bool
    check_passed: bool | None
    rows: int | None
    rejected: int | None
    subscription_rate: float | None
    error: str | None


def run_ingest(
    defs: dg.Definitions, instance: dg.DagsterInstance, tags: dict[str, str] | None = None
) -> dg.ExecuteInProcessResult:
    """Materialize ``raw_contacts``; a bad source fails the run (see :func:`failure_message`)."""
    return defs.resolve_job_def("ingest_job").execute_in_process(
        instance=instance, run_config=QUIET, raise_on_error=False, tags=tags
    )


def backfill_contacts(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    partition_keys: Iterable[str],
    on_month: Callable[[MonthOutcome], None] | None = None,
    tags: dict[str, str] | None = None,
) -> list[MonthOutcome]:
    """Materialize ``contacts`` for each partition key, one run per month, and report each."""
    job = defs.resolve_job_def("contacts_job")
    outcomes = []
    for key in partition_keys:
        result = job.execute_in_process(
            instance=instance, partition_key=key, run_config=QUIET, raise_on_error=False, tags=tags
        )
        outcome = _outcome(key, result)
        outcomes.append(outcome)
        if on_month is not None:
            on_month(outcome)
    return outcomes


def run_training(
    instance: dg.DagsterInstance,
    as_of: str,
    run_config: dict | None = None,
    tags: dict[str, str] | None = None,
    *,
    in_process: bool = False,
) -> dg.JobExecutionResult | dg.ExecuteInProcessResult:
    """Run ``training_job`` as of a partition key, its candidates in parallel processes.

    Each process rebuilds the definitions from the environment, so the settings must be in
    ``os.environ`` (the command and the tests set them there). ``run_config`` changes the file of
    training defaults' parameters one by one, as a run launched from the UI would. ``in_process``
    runs the steps one after another in this process instead: faster for small windows, where
    starting a process per step costs more than the parallel fits save.
    """
    from bank_marketing.orchestration.definitions import training_defaults, training_job_from_env
    from bank_marketing.settings import Settings

    config = merged(QUIET, training_defaults(Settings.from_env()), run_config or {})
    if in_process:
        return training_job_from_env().execute_in_process(
            instance=instance,
            partition_key=as_of,
            run_config=config,
            tags=tags,
            raise_on_error=False,
        )
    with dg.execute_job(
        dg.reconstructable(training_job_from_env),
        instance=instance,
        run_config=config,
        tags={**(tags or {}), "dagster/partition": as_of},
    ) as result:
        return result


def merged(*configs: Mapping[str, Any]) -> dict[str, Any]:
    """Run configurations merged key by key, nested ones too; a later one wins a value."""
    result: dict[str, Any] = {}
    for config in configs:
        for key, value in config.items():
            if isinstance(value, Mapping) and isinstance(result.get(key), Mapping):
                result[key] = merged(result[key], value)
            else:
                result[key] = value
    return result


def run_evaluation(
    defs: dg.Definitions, instance: dg.DagsterInstance, as_of: str
) -> dg.ExecuteInProcessResult:
    """Score the as-of month's champion on the following month (champion_evaluation)."""
    return defs.resolve_job_def("evaluation_job").execute_in_process(
        instance=instance, partition_key=as_of, run_config=QUIET, raise_on_error=False
    )


def run_deployment(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    model_version: str | None = None,
    tags: dict[str, str] | None = None,
    shadow_version: str | None = None,
) -> dg.ExecuteInProcessResult:
    """Roll the prediction service over to the champion, or to ``model_version``, with
    ``shadow_version`` scored beside it in shadow."""
    config: dict[str, Any] = dict(QUIET)
    chosen = {"model_version": model_version, "shadow_version": shadow_version}
    if any(chosen.values()):
        asset_config = {key: value for key, value in chosen.items() if value is not None}
        config["ops"] = {"production_deployment": {"config": asset_config}}
    return defs.resolve_job_def("deployment_job").execute_in_process(
        instance=instance, run_config=config, raise_on_error=False, tags=tags
    )


def failure_message(result: dg.ExecuteInProcessResult | dg.JobExecutionResult) -> str | None:
    """Why a run failed, as the user should read it: a step's failure, else a resource's error."""
    for event in result.all_events:
        if not event.is_step_failure:
            continue
        data = event.step_failure_data
        if data.user_failure_data is not None and data.user_failure_data.description:
            return data.user_failure_data.description
        if data.error is not None:
            return _innermost(data.error)
    for event in result.all_events:
        error = getattr(event.event_specific_data, "error", None)
        if error is not None:
            return _innermost(error)
    return None


def _innermost(error: Any) -> str:
    """The message of the error at the bottom of a chain of Dagster wrappers."""
    while error.cause is not None and error.message.startswith("dagster._core.errors."):
        error = error.cause
    return error.message.strip()


def _outcome(key: str, result: dg.ExecuteInProcessResult) -> MonthOutcome:
    checks = result.get_asset_check_evaluations()
    check_passed = all(c.passed for c in checks) if checks else None
    if not result.success:
        return MonthOutcome(key, False, check_passed, None, None, None, failure_message(result))
    materialization = result.asset_materializations_for_node("contacts")[0]
    meta = {name: value.value for name, value in materialization.metadata.items()}
    return MonthOutcome(
        partition_key=key,
        success=True,
        check_passed=check_passed,
        rows=int(meta["dagster/row_count"]),
        rejected=int(meta["rejected_rows"]),
        subscription_rate=float(meta["subscription_rate"]),
        error=None,
    )
