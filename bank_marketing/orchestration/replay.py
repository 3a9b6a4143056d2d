"""The replay: history month by month through the real Dagster instance, as the daemon runs it.

A first champion is trained as of ``first_as_of`` from the whole file; then each later month is
landed as a monthly file in the landing location, and the code location's own sensors and
automation conditions decide what runs, evaluated against the instance exactly as the daemon
evaluates them: ``validate_landed_files`` asks for the month's ``contacts``, ``score_new_months``
for its ``predictions`` and ``drift_report``, ``retrain_on_drift`` for a ``training_job``, and
``deploy_new_champion`` rolls the service over. The runs execute in this process and carry the tags
the daemon gives them (sensor name, run key), so a daemon started later on the same instance finds
them and asks for nothing again. Each month's ROC AUC is the one scored by the champion that was
live before the month, so the loop is judged month-ahead, as in production.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg

from bank_marketing.data.landing import cut_months
from bank_marketing.orchestration.partitions import monthly_partitions
from bank_marketing.orchestration.runner import (
    QUIET,
    backfill_contacts,
    failure_message,
    run_deployment,
    run_ingest,
    run_training,
)
from bank_marketing.orchestration.sensors import TRIGGER_TAG

FIRST_AS_OF = "2008-12-01"
LANDING_SENSOR = "validate_landed_files"
AUTOMATION_SENSOR = "score_new_months"
RETRAIN_SENSORS = ("retrain_on_drift", "retrain_on_grafana_alert")
DEPLOY_SENSOR = "deploy_new_champion"
# The tags the daemon gives a sensor's run; it finds earlier runs of a run key by them.
SENSOR_NAME_TAG = "dagster/sensor_name"
RUN_KEY_TAG = "dagster/run_key"
REPLAY = {TRIGGER_TAG: "replay"}


class ReplayError(RuntimeError):
    """A step of the replay failed; the message names the month and the run."""


@dataclass
class ReplayMonth:
    """One month of the replay, as the table prints it."""

    month: str
    rows: int
    subscription_rate: float
    prediction_drift: float
    drifted_columns: int
    scored_by: str
    roc_auc: float
    retrained: bool = False
    champion_after: str = ""
    retrain_reason: str = ""
    champion_family: str = ""


@dataclass
class Replay:
    """What the replay did: the months, the training rounds it ran, the champion's versions."""

    first_as_of: str
    first_champion: str = ""
    first_champion_family: str = ""
    months: list[ReplayMonth] = field(default_factory=list)
    rounds: list[str] = field(default_factory=list)
    deployments: list[str] = field(default_factory=list)

    @property
    def retrains(self) -> int:
        return sum(1 for month in self.months if month.retrained)


class SensorLoop:
    """Ticks the code location's sensors and automation on the instance, as the daemon does."""

    def __init__(self, defs: dg.Definitions, instance: dg.DagsterInstance) -> None:
        self.defs = defs
        self.repository = defs.get_repository_def()
        self.instance = instance
        self.cursors: dict[str, str | None] = {}
        self.automation_cursor: Any = None

    def tick(self, name: str) -> list[dg.RunRequest]:
        """The sensor's run requests, with the tags the daemon would add to their runs."""
        sensor = self.repository.get_sensor_def(name)
        context = dg.build_sensor_context(
            instance=self.instance,
            cursor=self.cursors.get(name),
            repository_def=self.repository,
            sensor_name=name,
            resources={key: self.defs.resources[key] for key in sensor.required_resource_keys},
        )
        data = sensor.evaluate_tick(context)
        if data.cursor is not None:
            self.cursors[name] = data.cursor
        return [
            request.with_replaced_attrs(
                tags={
                    **request.tags,
                    SENSOR_NAME_TAG: name,
                    **({RUN_KEY_TAG: request.run_key} if request.run_key else {}),
                }
            )
            for request in data.run_requests or []
        ]

    def automation(self) -> list[dg.RunRequest]:
        """What the automation sensor would request now, with its run tags."""
        sensor = self.repository.get_sensor_def(AUTOMATION_SENSOR)
        assert isinstance(sensor, dg.AutomationConditionSensorDefinition)
        result = dg.evaluate_automation_conditions(
            defs=self.defs,
            instance=self.instance,
            asset_selection=sensor.asset_selection,
            cursor=self.automation_cursor,
        )
        self.automation_cursor = result.cursor
        # One run per month with the month's requested assets, as the sensor launches them.
        by_month: dict[str | None, list[dg.AssetKey]] = {}
        for key in sorted(self.defs.resolve_all_asset_keys()):
            for partition in sorted(result.get_requested_partitions(key), key=str):
                by_month.setdefault(partition, []).append(key)
        return [
            dg.RunRequest(
                partition_key=partition,
                asset_selection=keys,
                tags={**sensor.run_tags, SENSOR_NAME_TAG: AUTOMATION_SENSOR},
            )
            for partition, keys in sorted(by_month.items(), key=lambda item: str(item[0]))
        ]


def replay(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    *,
    first_as_of: str = FIRST_AS_OF,
    last_month: str | None = None,
    serve: bool = True,
    on_step: Callable[[str], None] | None = None,
    on_month: Callable[[ReplayMonth], None] | None = None,
    first_round_config: dict[str, Any] | None = None,
) -> Replay:
    """Replay the months after ``first_as_of`` up to ``last_month`` (default: the last one).

    ``first_round_config`` is run config for the first champion's round only (for instance
    smaller candidates, where only the loop's plumbing matters); later rounds run as configured.
    """
    step = on_step or (lambda _: None)
    history = [key for key in monthly_partitions.get_partition_keys() if key <= first_as_of]
    later = month_keys(first_as_of, last_month)
    result = Replay(first_as_of=first_as_of)
    sensors = SensorLoop(defs, instance)

    step("reading the source into raw_contacts")
    _succeeded(run_ingest(defs, instance, tags=REPLAY), "raw_contacts")
    step(f"validating {len(history)} months of contacts up to {first_as_of[:7]}")
    for outcome in backfill_contacts(defs, instance, history, tags=REPLAY):
        if not outcome.success:
            raise ReplayError(f"contacts {outcome.partition_key[:7]}: {outcome.error}")
    # The automation's first evaluation sees what is there; only what changes after it counts.
    sensors.automation()
    step(f"training the first champion as of {first_as_of[:7]}")
    _train(instance, first_as_of, REPLAY, result, first_round_config)
    first = _champion(instance)
    if first is None:
        raise ReplayError(f"the round as of {first_as_of[:7]} promoted no champion")
    result.first_champion, result.first_champion_family = first
    _deploy(defs, instance, sensors, serve, result, step)

    data_source = defs.resources["data_source"]
    for key in later:
        step(f"{key[:7]}: landing the month's file")
        cut_months(data_source.source, Path(data_source.cache_dir), data_source.landing(), key[:7])
        _land(defs, instance, sensors, key)
        step(f"{key[:7]}: predictions, drift report")
        report = _score(defs, instance, sensors, key)
        month = _month(key, report)
        requests = [request for name in RETRAIN_SENSORS for request in sensors.tick(name)]
        for request in requests:
            as_of = request.partition_key
            reason = str(
                request.tags.get("bank_marketing/drift_reason")
                or request.tags.get("bank_marketing/alert_name", "")
            )
            step(f"{key[:7]}: retraining as of {as_of[:7]} ({reason})")
            _train(instance, as_of, request.tags, result)
            month.retrained = True
            month.retrain_reason = reason
        _deploy(defs, instance, sensors, serve, result, step)
        month.champion_after, month.champion_family = _champion(instance) or (month.scored_by, "")
        result.months.append(month)
        if on_month is not None:
            on_month(month)
    return result


def _land(
    defs: dg.Definitions, instance: dg.DagsterInstance, sensors: SensorLoop, key: str
) -> None:
    """Run what validate_landed_files asks for once the month's file is in the landing location."""
    requests = sensors.tick(LANDING_SENSOR)
    if [request.partition_key for request in requests] != [key]:
        raise ReplayError(
            f"{key[:7]}: validate_landed_files asked for "
            f"{[request.partition_key for request in requests]}, not the landed month"
        )
    _execute(defs, instance, "contacts_job", requests[0], f"contacts {key[:7]}")


def _score(
    defs: dg.Definitions, instance: dg.DagsterInstance, sensors: SensorLoop, key: str
) -> dg.ExecuteInProcessResult:
    """Run what score_new_months asks for once the month's contacts are validated."""
    requests = sensors.automation()
    wanted = {dg.AssetKey("predictions"), dg.AssetKey("drift_report")}
    if [(r.partition_key, set(r.asset_selection or ())) for r in requests] != [(key, wanted)]:
        raise ReplayError(
            f"{key[:7]}: score_new_months asked for "
            f"{[(r.partition_key, r.asset_selection) for r in requests]}, not the month's "
            f"predictions and drift_report"
        )
    return _execute(defs, instance, "monitoring_job", requests[0], f"monitoring {key[:7]}")


def _execute(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    job: str,
    request: dg.RunRequest,
    what: str,
) -> dg.ExecuteInProcessResult:
    """Run a sensor's request in this process, as the daemon would launch it."""
    result = defs.resolve_job_def(job).execute_in_process(
        instance=instance,
        partition_key=request.partition_key,
        run_config={**QUIET, **(request.run_config or {})},
        tags=request.tags,
        asset_selection=list(request.asset_selection) if request.asset_selection else None,
        raise_on_error=False,
    )
    return _succeeded(result, what)


def _train(
    instance: dg.DagsterInstance,
    as_of: str,
    tags: dict[str, Any],
    result: Replay,
    run_config: dict[str, Any] | None = None,
) -> None:
    # Replay windows are small: one process fits them faster than a process per candidate.
    outcome = run_training(
        instance,
        as_of,
        run_config,
        tags={key: str(value) for key, value in tags.items()},
        in_process=True,
    )
    if not outcome.success:
        raise ReplayError(
            f"training as of {as_of[:7]} failed (run {outcome.run_id}): {failure_message(outcome)}"
        )
    result.rounds.append(as_of)


def _deploy(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    sensors: SensorLoop,
    serve: bool,
    result: Replay,
    step: Callable[[str], None],
) -> None:
    """Tick deploy_new_champion; run what it requests when serving is part of the replay."""
    for request in sensors.tick(DEPLOY_SENSOR):
        version = request.tags.get("bank_marketing/champion_version", "")
        if not serve:
            continue
        step(f"rolling the service over to v{version}")
        _succeeded(run_deployment(defs, instance, tags=request.tags), "production_deployment")
        result.deployments.append(version)


def _month(key: str, report: dg.ExecuteInProcessResult) -> ReplayMonth:
    (event,) = report.asset_materializations_for_node("drift_report")
    meta = {name: value.value for name, value in event.metadata.items()}
    return ReplayMonth(
        month=key[:7],
        rows=int(meta["rows"]),
        subscription_rate=_number(meta.get("subscription_rate")),
        prediction_drift=_number(meta.get("prediction_drift")),
        drifted_columns=int(meta["drifted_columns"]),
        scored_by=str(meta["model_version"]),
        roc_auc=_number(meta.get("roc_auc")),
    )


def _champion(instance: dg.DagsterInstance) -> tuple[str, str] | None:
    """The champion's version and family after the latest ``champion_model`` materialization."""
    records = instance.fetch_materializations(dg.AssetKey("champion_model"), limit=1).records
    if not records:
        return None
    metadata = records[0].asset_materialization.metadata
    version = metadata.get("champion_version")
    if version is None or str(version.value) == "none":
        return None
    family = metadata.get("champion_family")
    return str(version.value), str(family.value) if family is not None else ""


def _number(value: Any) -> float:
    return math.nan if value is None else float(value)


def _succeeded(result: dg.ExecuteInProcessResult, what: str) -> dg.ExecuteInProcessResult:
    if not result.success:
        raise ReplayError(f"{what} failed (run {result.run_id}): {failure_message(result)}")
    return result


def month_keys(first_as_of: str = FIRST_AS_OF, last_month: str | None = None) -> Sequence[str]:
    """The partition keys a replay scores."""
    keys = monthly_partitions.get_partition_keys()
    last = last_month or keys[-1]
    return [key for key in keys if first_as_of < key <= last]
