"""The Dagster code location: every asset, check, job, sensor, schedule and resource, assembled in
one place."""

import warnings

import dagster as dg

# dagster-mlflow and dagster-pandera are marked beta; this code location uses them on purpose.
warnings.filterwarnings("ignore", category=dg.BetaWarning)

from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition
from dagster_mlflow import end_mlflow_on_run_finished

from bank_marketing.orchestration.assets.contacts import RAW_IF_STORED, contacts, raw_contacts
from bank_marketing.orchestration.assets.deployment import production_deployment
from bank_marketing.orchestration.assets.monitoring import drift_report, predictions
from bank_marketing.orchestration.assets.traffic import JOB as TRAFFIC_JOB
from bank_marketing.orchestration.assets.traffic import build_traffic
from bank_marketing.orchestration.assets.training import (
    candidates,
    champion_evaluation,
    champion_model,
    training_set,
)
from bank_marketing.orchestration.resources import (
    DataSource,
    ModelInputs,
    MonitoringDatabase,
    ServingCluster,
    StoredOrNone,
    mlflow_tracking_in_home,
)
from bank_marketing.orchestration.sensors import (
    MAX_RUNTIME_TAG,
    SHORT_RUN_MAX_SECONDS,
    TRIGGER_TAG,
    RetrainPolicy,
    build_sensors,
)
from bank_marketing.settings import Settings
from bank_marketing.training.config import read_training_config
from bank_marketing.training.tracking import EXPERIMENT_NAME

# Candidates are CPU-bound: two processes at a time fill this project's 2-core machines; raise
# max_concurrent (run config) on a bigger Dagster deployment.
TRAINING_CONCURRENCY = 2

JOB_TAG = "bank_marketing/job"
# What started a run: the sensors and the automation set their own name; a run launched from the
# UI or by a command keeps this.
BY_HAND = {TRIGGER_TAG: "by hand"}
# A run whose process died is failed by run monitoring once it passes its maximum runtime, then
# retried (dagster.yaml). The instance's 2 hours suit a training round; the monthly and serving
# runs take minutes, so theirs end after 30 min, and a dead one frees its slot sooner.
SHORT_RUN = {**BY_HAND, MAX_RUNTIME_TAG: str(SHORT_RUN_MAX_SECONDS)}

ingest_job = dg.define_asset_job(
    "ingest_job",
    selection=dg.AssetSelection.assets(raw_contacts),
    description="Read the source file into raw_contacts.",
    tags=SHORT_RUN,
)
contacts_job = dg.define_asset_job(
    "contacts_job",
    selection=dg.AssetSelection.assets(contacts),
    description="Validate one month of contacts: from a landed file (validate_landed_files sets "
    "it) or from raw_contacts.",
    tags=SHORT_RUN,
)
training_selection = dg.AssetSelection.assets(training_set, *candidates, champion_model)


def training_defaults(settings: Settings) -> dict:
    """The run configuration every training round starts from: the file of training defaults
    (``BANK_MARKETING_TRAINING_CONFIG``), checked, or nothing."""
    if settings.training_config is None:
        return {}
    overrides = read_training_config(settings.training_config)
    return {"ops": {asset: {"config": values} for asset, values in overrides.items()}}


def _training_job(defaults: dict) -> UnresolvedAssetJobDefinition:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)
        return dg.define_asset_job(
            "training_job",
            selection=training_selection,
            description="Train the five candidates as of a month, in parallel, and promote a "
            "champion.",
            # The file of training defaults, for runs launched without run config of their own
            # (the sensors', the UI's launchpad starts from it too).
            config=defaults or None,
            executor_def=dg.multiprocess_executor.configured(
                {"max_concurrent": TRAINING_CONCURRENCY}
            ),
            # The stack's run queue (dagster.yaml) runs one training round at a time by this
            # tag: two rounds promoting at once would each compare with the same champion.
            tags={**BY_HAND, JOB_TAG: "training"},
            hooks={end_mlflow_on_run_finished},
        )


with warnings.catch_warnings():
    warnings.simplefilter("ignore", dg.BetaWarning)
    evaluation_job = dg.define_asset_job(
        "evaluation_job",
        selection=dg.AssetSelection.assets(champion_evaluation),
        description="Score the as-of month's champion on the month after its window.",
        hooks={end_mlflow_on_run_finished},
        tags=SHORT_RUN,
    )
    monitoring_job = dg.define_asset_job(
        "monitoring_job",
        selection=dg.AssetSelection.assets(predictions, drift_report),
        description="Score months with the current champion and report their drift and realized "
        "quality. Months never scored are scored by score_new_months; a run of this job for a "
        "month already scored rescores it and replaces its month-ahead record.",
        hooks={end_mlflow_on_run_finished},
        tags=SHORT_RUN,
    )
deployment_job = dg.define_asset_job(
    "deployment_job",
    selection=dg.AssetSelection.assets(production_deployment),
    description="Roll the prediction service over to the champion (or a pinned version).",
    # One rollover at a time (dagster.yaml, the embedded instance): two would overwrite each other.
    tags={**SHORT_RUN, JOB_TAG: "deployment"},
)


def _traffic_job(served_traffic: dg.AssetsDefinition) -> UnresolvedAssetJobDefinition:
    return dg.define_asset_job(
        TRAFFIC_JOB,
        selection=dg.AssetSelection.assets(served_traffic),
        description="Compare a day of served traffic with the reference data of the versions "
        "that scored it, and delete the answers past retention; served_traffic_daily runs the "
        "last days every night.",
        tags=SHORT_RUN,
    )


def build_definitions(settings: Settings) -> dg.Definitions:
    """The definitions for one configuration; tests build them on a temporary home."""
    traffic = build_traffic(settings.traffic)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)
        mlflow = mlflow_tracking_in_home.configured(
            {
                "experiment_name": EXPERIMENT_NAME,
                "mlflow_tracking_uri": settings.mlflow_tracking_uri,
                "artifact_location": settings.mlflow_artifact_location,
                "ui_url": settings.mlflow_ui_url,
            }
        )
    return dg.Definitions(
        assets=[
            raw_contacts,
            contacts,
            training_set,
            *candidates,
            champion_model,
            champion_evaluation,
            production_deployment,
            predictions,
            drift_report,
            traffic.asset,
        ],
        jobs=[
            ingest_job,
            contacts_job,
            _training_job(training_defaults(settings)),
            evaluation_job,
            deployment_job,
            monitoring_job,
            _traffic_job(traffic.asset),
        ],
        sensors=build_sensors(settings.sensor_interval_seconds),
        schedules=[traffic.schedule],
        # A run the automation or a sensor launches runs its steps in its own process: the monthly
        # steps are small, and a process per step would cost more than it runs. training_job
        # keeps its parallel processes.
        executor=dg.in_process_executor,
        resources={
            "io_manager": dg.FilesystemIOManager(base_dir=str(settings.storage_dir)),
            RAW_IF_STORED: StoredOrNone(base_dir=str(settings.storage_dir)),
            "data_source": DataSource(
                source=settings.source,
                cache_dir=str(settings.cache_dir),
                landing_dir=str(settings.landing_dir),
            ),
            "monitoring_db": MonitoringDatabase(
                url=settings.db_url,
                db_schema="monitoring" if settings.db_url.startswith("postgresql") else None,
                reports_dir=str(settings.reports_dir),
            ),
            "mlflow": mlflow,
            "model_inputs": ModelInputs(**settings.model_inputs.model_dump()),
            "retrain_policy": RetrainPolicy(**settings.retrain_rule.model_dump()),
            "serving": ServingCluster(
                dashboard_url=settings.ray_dashboard_url,
                serve_url=settings.serve_url,
                tracking_uri=settings.mlflow_tracking_uri,
                auth_token=settings.ray_auth_token,
                monitoring_db_url=settings.db_url,
                webhook_token=settings.webhook_token,
            ),
        },
    )


defs = build_definitions(Settings.from_env())


def training_job_from_env() -> dg.JobDefinition:
    """The training job, rebuilt from the environment in each process of a multiprocess run."""
    return build_definitions(Settings.from_env()).resolve_job_def("training_job")
