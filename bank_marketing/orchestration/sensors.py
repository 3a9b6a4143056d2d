"""Sensors that close the loop under the Dagster daemon.

A monthly file lands: ``validate_landed_files`` asks for that month's ``contacts``; the automation
sensor ``score_new_months`` carries a newly validated month through ``predictions`` and
``drift_report``; ``retrain_on_drift`` (or ``retrain_on_grafana_alert``) asks for a training round;
``deploy_new_champion`` rolls the service over when the round changes the champion;
``restore_live_version`` rolls it back to what ``production_deployment`` recorded when the service
stops answering with that (a Ray head or a serving container restarted).

Each sensor reads every new event since its cursor (a storage id, a row id, the digests of the
files it has seen), oldest first, so months that land between two ticks are all evaluated;
``asset_sensor`` would see only the newest. Run keys come from the event, so one event makes at
most one run however often a tick repeats, and a restarted daemon whose cursor is gone finds the
runs it asked for before by their keys. Thresholds and the cooldown are the ``retrain_policy``
resource, read from the environment.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
from mlflow import MlflowClient

from bank_marketing.data.landing import (
    LandingError,
    landed_files,
    month_in_name,
    read_landed,
    sha256,
)
from bank_marketing.data.source import SourceError
from bank_marketing.monitoring import alerts
from bank_marketing.monitoring.policy import (
    MonthSignals,
    RetrainRule,
    Verdict,
    cooldown_blocks,
    decide,
)
from bank_marketing.orchestration.partitions import monthly_partitions
from bank_marketing.orchestration.resources import DataSource, MonitoringDatabase, ServingCluster
from bank_marketing.training import registry

DRIFT_REPORT = dg.AssetKey("drift_report")
CHAMPION_MODEL = dg.AssetKey("champion_model")
PRODUCTION_DEPLOYMENT = dg.AssetKey("production_deployment")
CONTACTS_JOB = "contacts_job"
TRAINING_JOB = "training_job"
DEPLOYMENT_JOB = "deployment_job"
# Dagster's default; tests and the replay shorten it (BANK_MARKETING_SENSOR_INTERVAL_SECONDS).
DEFAULT_INTERVAL_SECONDS = 30
# Events read per tick; the rest wait for the next tick, in order.
BATCH = 100
# Training runs looked at for the cooldown, newest first.
RECENT_TRAINING_RUNS = 200
PARTITION_TAG = "dagster/partition"
TRIGGER_TAG = "bank_marketing/trigger"
# Run monitoring fails a run past this many seconds (the instance's default is for training).
MAX_RUNTIME_TAG = "dagster/max_runtime"
SHORT_RUN_MAX_SECONDS = 1800
NOT_RETRAINING = (
    dg.DagsterRunStatus.FAILURE,
    dg.DagsterRunStatus.CANCELED,
    dg.DagsterRunStatus.CANCELING,
)
REQUIRED_DRIFT_METADATA = ("rows", "drifted_share", "prediction_drift")
IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]
RESTORE_TRIGGER = "restore_live_version"
# After a restore run fails, the next waits this long (a cluster that is down stays down a while).
RESTORE_BACKOFF_SECONDS = 300.0


class RetrainPolicy(dg.ConfigurableResource, RetrainRule):
    """The retraining rule as a resource (fields in ``bank_marketing.monitoring.policy``)."""


class DriftReportContractError(ValueError):
    """A drift_report materialization lacks the metadata the sensor reads."""


def judge_drift(
    month: str,
    metadata: Mapping[str, Any],
    policy: RetrainRule,
    last_trained: str | None = None,
) -> Verdict:
    """What the policy says of a drift report (:func:`bank_marketing.monitoring.policy.decide`,
    cooldown included), from the numbers its materialization recorded."""
    missing = [key for key in REQUIRED_DRIFT_METADATA if key not in metadata]
    if missing:
        raise DriftReportContractError(
            f"drift_report metadata lacks {missing}; it has {sorted(metadata)}"
        )
    return decide(policy, MonthSignals.from_metadata(month, metadata), last_trained)


class _Retrains:
    """Retrains requested in one tick, checked against the cooldown and earlier training runs."""

    def __init__(self, instance: dg.DagsterInstance, policy: RetrainPolicy, trigger: str) -> None:
        self.policy = policy
        self.trigger = trigger
        self.last_trained = _last_training_month(instance)
        self.requests: list[dg.RunRequest] = []
        self.skipped: list[str] = []

    def request(self, month: str, run_key: str, reason: str, tags: Mapping[str, str]) -> None:
        """A retrain as of ``month`` unless the cooldown forbids it."""
        blocked = cooldown_blocks(self.last_trained, month, self.policy.cooldown_months)
        if blocked is not None:
            self.skipped.append(f"{month[:7]}: {reason}, but {blocked}")
            return
        self.add(month, run_key, tags)

    def add(self, month: str, run_key: str, tags: Mapping[str, str]) -> None:
        """A retrain the policy already decided on (cooldown included); a run key already
        requested in this tick is not requested again."""
        if any(request.run_key == run_key for request in self.requests):
            return
        self.requests.append(
            dg.RunRequest(
                run_key=run_key,
                partition_key=month,
                tags={TRIGGER_TAG: self.trigger, **tags},
            )
        )
        self.last_trained = month if self.last_trained is None else max(self.last_trained, month)

    def skip(self, what: str) -> None:
        self.skipped.append(what)

    def result(
        self, context: dg.SensorEvaluationContext, cursor: str, seen: int
    ) -> dg.SensorResult:
        for line in self.skipped:
            context.log.info("no retrain for %s", line)
        for request in self.requests:
            context.log.info(
                "retrain as of %s requested (run key %s)",
                request.partition_key[:7],
                request.run_key,
            )
        if self.requests:
            return dg.SensorResult(run_requests=self.requests, cursor=cursor)
        return _skip(f"{seen} new event(s), no retrain: " + "; ".join(self.skipped), cursor)


def _last_training_month(instance: dg.DagsterInstance) -> str | None:
    """The latest as-of month of a training run that is queued, running or succeeded."""
    runs = instance.get_runs(
        filters=dg.RunsFilter(job_name=TRAINING_JOB), limit=RECENT_TRAINING_RUNS
    )
    months = [
        run.tags[PARTITION_TAG]
        for run in runs
        if PARTITION_TAG in run.tags and run.status not in NOT_RETRAINING
    ]
    return max(months, default=None)


def live_version(instance: dg.DagsterInstance) -> str | None:
    """The version the latest production_deployment put live, if any."""
    recorded = LiveRecord.latest(instance)
    return None if recorded is None else recorded.version


def _skip(reason: str, cursor: str | None) -> dg.SensorResult:
    """A tick that requests nothing, says why, and moves the cursor to ``cursor``."""
    return dg.SensorResult(skip_reason=dg.SkipReason(reason), cursor=cursor)


def _after(cursor: str | None) -> int:
    return int(cursor) if cursor else 0


def _metadata_values(record: dg.EventLogRecord) -> dict[str, Any]:
    materialization = record.asset_materialization
    assert materialization is not None
    return {key: value.value for key, value in materialization.metadata.items()}


def _new_materializations(
    context: dg.SensorEvaluationContext, asset_key: dg.AssetKey
) -> Sequence[dg.EventLogRecord]:
    after = _after(context.cursor)
    return context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=asset_key, after_storage_id=after or None),
        limit=BATCH,
        ascending=True,
    ).records


def _retrain_on_drift(
    context: dg.SensorEvaluationContext, retrain_policy: RetrainPolicy
) -> dg.SensorResult:
    records = _new_materializations(context, DRIFT_REPORT)
    if not records:
        return _skip(
            f"no drift_report materialized after storage id {_after(context.cursor)}",
            context.cursor,
        )
    retrains = _Retrains(context.instance, retrain_policy, trigger="retrain_on_drift")
    for record in records:
        month = record.partition_key
        if month is None:
            raise ValueError(f"drift_report event {record.storage_id} has no partition")
        metadata = _metadata_values(record)
        try:
            verdict = judge_drift(month, metadata, retrain_policy, retrains.last_trained)
        except DriftReportContractError as error:
            raise DriftReportContractError(
                f"drift_report {month[:7]} (storage id {record.storage_id}): {error}"
            ) from error
        if not verdict.retrain:
            retrains.skip(f"{month[:7]}: {verdict.reason}")
            continue
        retrains.add(
            month,
            run_key=f"retrain-{month[:7]}-drift-{record.storage_id}",
            tags={
                "bank_marketing/drift_month": month[:7],
                "bank_marketing/drift_reason": verdict.reason,
                "bank_marketing/drift_model_version": str(metadata.get("model_version", "")),
            },
        )
    return retrains.result(context, cursor=str(records[-1].storage_id), seen=len(records))


def _retrain_on_grafana_alert(
    context: dg.SensorEvaluationContext,
    retrain_policy: RetrainPolicy,
    monitoring_db: MonitoringDatabase,
) -> dg.SensorResult:
    after = _after(context.cursor)
    with monitoring_db.engine() as engine:
        stored = alerts.alerts_after(engine, after, limit=BATCH)
    if not stored:
        return _skip(f"no Grafana alert stored after id {after}", context.cursor)
    partitions = set(monthly_partitions.get_partition_keys())
    latest = max(context.instance.get_materialized_partitions(DRIFT_REPORT), default=None)
    retrains = _Retrains(context.instance, retrain_policy, trigger="retrain_on_grafana_alert")
    for alert in stored:
        name = alert.alertname or "unnamed alert"
        what = f"alert {name!r} ({alert.fingerprint}, {alert.starts_at:%Y-%m-%dT%H:%M:%SZ})"
        if alert.status != alerts.FIRING:
            retrains.skip(f"{what}: {alert.status}")
            continue
        if retrain_policy.alert_names and alert.alertname not in retrain_policy.alert_names:
            retrains.skip(f"{what}: not one of {retrain_policy.alert_names}")
            continue
        month = f"{alert.month}-01" if alert.month else latest
        if month is None:
            retrains.skip(f"{what}: names no month and no drift_report exists yet")
            continue
        if month not in partitions:
            retrains.skip(f"{what}: month {month[:7]} is not a partition")
            continue
        # One retrain per rule and month, however many of its series fire and however often:
        # a burst of alerts about one month asks for one run (the daemon launches a run key
        # once), even without a cooldown.
        retrains.request(
            month,
            run_key=f"retrain-alert-{name}-{month[:7]}",
            reason=f"{what} firing",
            tags={
                "bank_marketing/alert_name": name,
                "bank_marketing/alert_fingerprint": alert.fingerprint,
                "bank_marketing/alert_month": month[:7],
            },
        )
    return retrains.result(context, cursor=str(stored[-1].id), seen=len(stored))


def _deploy_new_champion(context: dg.SensorEvaluationContext) -> dg.SensorResult:
    records = _new_materializations(context, CHAMPION_MODEL)
    if not records:
        return _skip(
            f"no champion_model materialized after storage id {_after(context.cursor)}",
            context.cursor,
        )
    cursor = str(records[-1].storage_id)
    changes = []
    for record in records:
        metadata = _metadata_values(record)
        version = str(metadata.get("champion_version", "none"))
        previous = str(metadata.get("previous_champion_version", "none"))
        if metadata.get("promoted") is True and version not in ("none", previous):
            changes.append((record, version, previous))
    if not changes:
        return _skip(
            f"{len(records)} new champion_model materialization(s), none changed the champion",
            cursor,
        )
    # Only the newest champion is worth rolling out; the job serves the alias anyway.
    record, version, previous = changes[-1]
    live = live_version(context.instance)
    if live == version:
        return _skip(f"v{version}, the newest champion, is already live", cursor)
    if len(changes) > 1:
        context.log.info(
            "champions %s were replaced before deployment; deploying v%s",
            ", ".join(f"v{v}" for _, v, _ in changes[:-1]),
            version,
        )
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                run_key=f"deploy-v{version}",
                tags={
                    TRIGGER_TAG: "deploy_new_champion",
                    "bank_marketing/champion_version": version,
                    "bank_marketing/previous_champion_version": previous,
                    "bank_marketing/champion_as_of": (record.partition_key or "")[:7],
                },
            )
        ],
        cursor=cursor,
    )


@dataclass(frozen=True)
class LiveRecord:
    """What the latest production_deployment recorded as live."""

    version: str
    shadow_version: str | None
    pinned: bool
    # Whether a champion_model materialization came after the record (a new champion that
    # deploy_new_champion is about to deploy, or has not yet).
    champion_since: bool = False

    @classmethod
    def latest(cls, instance: dg.DagsterInstance) -> LiveRecord | None:
        records = instance.fetch_materializations(PRODUCTION_DEPLOYMENT, limit=1).records
        if not records or records[0].asset_materialization is None:
            return None
        metadata = {k: v.value for k, v in records[0].asset_materialization.metadata.items()}
        if metadata.get("live_version") is None:
            return None
        shadow = str(metadata.get("shadow_version", "none"))
        champions = instance.fetch_materializations(CHAMPION_MODEL, limit=1).records
        return cls(
            version=str(metadata["live_version"]),
            shadow_version=None if shadow == "none" else shadow,
            pinned=metadata.get("pinned") is True,
            champion_since=bool(champions) and champions[0].storage_id > records[0].storage_id,
        )

    def describe(self) -> str:
        beside = f" with v{self.shadow_version} in shadow" if self.shadow_version else ""
        how = "pinned" if self.pinned else "the champion when deployed"
        return f"v{self.version}{beside} ({how})"


def judge_service(
    recorded: LiveRecord, answer: Mapping[str, Any] | None, champion: Callable[[], str]
) -> str | None:
    """How the service's ``GET /model`` ``answer`` departs from the ``recorded`` deployment, or
    None when it is in line.

    A deployment that followed the champion may also answer with the champion's current version:
    the replicas follow the alias by themselves, and ``deploy_new_champion`` records the move. So
    may a pinned one once a new champion came after it (the replicas follow the alias's move, as
    ``deploy_new_champion`` is about to). ``champion`` is read only then; it raises
    :class:`registry.NoChampion` when it cannot tell.
    """
    if answer is None:
        return "the service does not answer GET /model with a model"
    version = str(answer.get("version"))
    shadow = answer.get("shadow_version")
    shadow = None if shadow is None else str(shadow)
    if shadow != recorded.shadow_version:
        return f"the service scores {f'v{shadow}' if shadow else 'no version'} in shadow"
    if version == recorded.version:
        return None
    if (not recorded.pinned or recorded.champion_since) and version == champion():
        return None
    return f"the service answers with v{version}"


def _restore_live_version(
    context: dg.SensorEvaluationContext, serving: ServingCluster
) -> dg.SensorResult:
    recorded = LiveRecord.latest(context.instance)
    if recorded is None:
        return _skip("production_deployment has recorded no live version yet", None)
    deploying = context.instance.get_runs(
        filters=dg.RunsFilter(job_name=DEPLOYMENT_JOB, statuses=IN_FLIGHT), limit=1
    )
    if deploying:
        return _skip(f"deployment run {deploying[0].run_id} is under way", None)

    def champion() -> str:
        return registry.require_champion(MlflowClient(serving.tracking_uri))

    cluster = serving.cluster()
    try:
        departure = judge_service(recorded, cluster.served_model(), champion)
    except registry.NoChampion as error:
        return _skip(f"cannot tell whether the service is in line: {error}", None)
    if departure is None:
        return _skip(f"{serving.serve_url} serves {recorded.describe()}, as recorded", None)
    # Seen once: a replica restarting or a blip. Twice in a row: restore.
    if context.cursor != departure:
        return _skip(
            f"{departure}; restoring {recorded.describe()} if so at the next tick", departure
        )
    if not (serving.start_local and cluster.is_local()) and not cluster.reachable():
        # A run could not roll over anything: wait for the cluster (its restart policy).
        return _skip(
            f"{departure}, and no Ray dashboard answers at {serving.dashboard_url}: waiting for "
            f"the cluster to come back before restoring {recorded.describe()}",
            departure,
        )
    failed = _recent_failed_restore(context.instance)
    if failed is not None:
        return _skip(
            f"{departure}; restore run {failed} failed less than "
            f"{RESTORE_BACKOFF_SECONDS:.0f} s ago (its log says why), so none is tried yet",
            departure,
        )
    config: dict[str, str] = {}
    if recorded.pinned:
        config["model_version"] = recorded.version
    if recorded.shadow_version:
        config["shadow_version"] = recorded.shadow_version
    context.log.info(f"{departure}: restoring {recorded.describe()}")
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                run_config={"ops": {"production_deployment": {"config": config}}},
                tags={
                    TRIGGER_TAG: RESTORE_TRIGGER,
                    "bank_marketing/restore_reason": departure,
                    "bank_marketing/recorded_version": recorded.version,
                },
            )
        ],
        cursor=None,
    )


def _recent_failed_restore(instance: dg.DagsterInstance) -> str | None:
    """The latest restore run, if it failed within the backoff."""
    records = instance.get_run_records(
        filters=dg.RunsFilter(job_name=DEPLOYMENT_JOB, tags={TRIGGER_TAG: RESTORE_TRIGGER}),
        limit=1,
    )
    if not records or records[0].dagster_run.status != dg.DagsterRunStatus.FAILURE:
        return None
    ended = records[0].end_time or records[0].update_timestamp.timestamp()
    if time.time() - ended >= RESTORE_BACKOFF_SECONDS:
        return None
    return records[0].dagster_run.run_id


RETRAIN_ON_DRIFT_DESCRIPTION = (
    "Retrain as of a month when the retrain_policy says so of its drift_report's signals "
    "(prediction drift, its p-value against sampling noise, realized and estimated ROC AUC "
    "against the expected level, or a schedule), cooldown included; every new report is "
    "evaluated, empty months never trigger, and one report makes at most one run."
)

RETRAIN_ON_GRAFANA_ALERT_DESCRIPTION = (
    "Retrain when Grafana posts a firing alert to POST /webhooks/grafana: as of "
    "the month the alert names (label 'month'), else the latest month with a drift_report. "
    "Repeated notifications and resolved alerts trigger nothing."
)

DEPLOY_NEW_CHAMPION_DESCRIPTION = (
    "Roll serving over (deployment_job) when a champion_model materialization "
    "records a new champion; one run per champion version."
)
RESTORE_LIVE_VERSION_DESCRIPTION = (
    "Keep the service on what production_deployment recorded: when GET /model does not answer, "
    "or answers with another version (a Ray head or the serving container restarted and served "
    "the alias's version, or nothing), on two ticks in a row, roll it back to the recorded "
    "version (deployment_job; on the embedded defaults that starts a new local Ray head). None "
    "while a deployment runs, nor within 5 min of a failed restore."
)
VALIDATE_LANDED_FILES_DESCRIPTION = (
    "Validate a month (contacts) when its file lands in the landing location "
    "(BANK_MARKETING_LANDING) or changes there: one run per file content (run key from its "
    "sha256). A file whose name holds no month of the data, or whose rows are of another month, "
    "is skipped with the reason; a file the loader cannot read makes one failed run with the "
    "loader's message."
)
SCORE_NEW_MONTHS_DESCRIPTION = (
    "Declarative automation: once a month's contacts materialize (their blocking check "
    "passed), predictions and drift_report of that month run, but only for months never scored: "
    "a later champion never rescores an old month by itself."
)
LANDED_TAG = "bank_marketing/landed_file"


def _validate_landed_files(
    context: dg.SensorEvaluationContext, data_source: DataSource
) -> dg.SensorResult:
    # The cursor: each file's digest as last seen, and why each skipped file starts no run (so
    # every later tick still says it, without reading the file again).
    state = json.loads(context.cursor) if context.cursor else {}
    seen: dict[str, str] = state.get("files", {})
    was_skipped: dict[str, str] = state.get("skipped", {})
    folder = data_source.landing()
    files: dict[str, str] = {}
    skipped: dict[str, str] = {}
    requests: list[dg.RunRequest] = []
    for path in landed_files(folder):
        digest = sha256(path)
        files[path.name] = digest
        if seen.get(path.name) == digest:
            if path.name in was_skipped:
                skipped[path.name] = was_skipped[path.name]
            continue
        arrival = judge_arrival(path, digest, data_source)
        if isinstance(arrival, str):
            skipped[path.name] = arrival
            context.log.warning("skipped %s", arrival)
        else:
            requests.append(arrival)
    cursor = json.dumps({"files": files, "skipped": skipped}, sort_keys=True)
    for request in requests:
        context.log.info(
            "contacts %s requested for %s (run key %s)",
            (request.partition_key or "")[:7],
            request.tags[LANDED_TAG],
            request.run_key,
        )
    if requests:
        return dg.SensorResult(run_requests=requests, cursor=cursor)
    reason = f"no new or changed file in {folder} ({len(files)} file(s) seen)"
    if skipped:
        reason += "; skipped: " + "; ".join(skipped.values())
    return _skip(reason, cursor)


def judge_arrival(path: Path, digest: str, data_source: DataSource) -> dg.RunRequest | str:
    """The contacts run for a landed file, or why the file starts none.

    A file the loader cannot read still gets its run: the run fails once, with the loader's
    message, where the UI shows it. A file that names no month of the data, or whose rows are of
    another month, would only ever fail, so it is skipped with the reason.
    """
    try:
        landed = read_landed(path, Path(data_source.cache_dir))
    except LandingError as error:
        return f"{path.name}: {error}"
    except SourceError:
        month = month_in_name(path)
        assert month is not None  # read_landed checks the name before the content
    else:
        month = landed.month
    key = f"{month:%Y-%m-%d}"
    return dg.RunRequest(
        run_key=f"landed-{month:%Y-%m}-{digest[:16]}",
        partition_key=key,
        run_config={"ops": {"contacts": {"config": {"landed_file": str(path)}}}},
        tags={
            TRIGGER_TAG: "validate_landed_files",
            LANDED_TAG: path.name,
            "bank_marketing/landed_sha256": digest,
        },
    )


def build_sensors(
    interval_seconds: int = DEFAULT_INTERVAL_SECONDS,
) -> list[dg.SensorDefinition]:
    """Every sensor of the loop, running by default, evaluated every ``interval_seconds``."""

    def sensor(function: Any, name: str, job_name: str, description: str) -> dg.SensorDefinition:
        return dg.sensor(
            name=name,
            job_name=job_name,
            default_status=dg.DefaultSensorStatus.RUNNING,
            minimum_interval_seconds=interval_seconds,
            description=description,
        )(function)

    return [
        sensor(
            _validate_landed_files,
            "validate_landed_files",
            CONTACTS_JOB,
            VALIDATE_LANDED_FILES_DESCRIPTION,
        ),
        dg.AutomationConditionSensorDefinition(
            "score_new_months",
            target=dg.AssetSelection.assets("predictions", "drift_report"),
            default_status=dg.DefaultSensorStatus.RUNNING,
            minimum_interval_seconds=interval_seconds,
            run_tags={
                TRIGGER_TAG: "score_new_months",
                MAX_RUNTIME_TAG: str(SHORT_RUN_MAX_SECONDS),
            },
            # One run per month, so each run's tags and partition say what it scored.
            emit_backfills=False,
            description=SCORE_NEW_MONTHS_DESCRIPTION,
        ),
        sensor(_retrain_on_drift, "retrain_on_drift", TRAINING_JOB, RETRAIN_ON_DRIFT_DESCRIPTION),
        sensor(
            _retrain_on_grafana_alert,
            "retrain_on_grafana_alert",
            TRAINING_JOB,
            RETRAIN_ON_GRAFANA_ALERT_DESCRIPTION,
        ),
        sensor(
            _deploy_new_champion,
            "deploy_new_champion",
            DEPLOYMENT_JOB,
            DEPLOY_NEW_CHAMPION_DESCRIPTION,
        ),
        sensor(
            _restore_live_version,
            "restore_live_version",
            DEPLOYMENT_JOB,
            RESTORE_LIVE_VERSION_DESCRIPTION,
        ),
    ]


sensors = build_sensors()
(
    validate_landed_files,
    score_new_months,
    retrain_on_drift,
    retrain_on_grafana_alert,
    deploy_new_champion,
    restore_live_version,
) = sensors
