"""The Dagster code location: every asset, check, job and resource, assembled in one place."""

import warnings

import dagster as dg

# dagster-mlflow and dagster-pandera are marked beta; this code location uses them on purpose.
warnings.filterwarnings("ignore", category=dg.BetaWarning)

from dagster_mlflow import end_mlflow_on_run_finished

from bank_marketing.assets.contacts import contacts, raw_contacts
from bank_marketing.assets.deployment import production_deployment
from bank_marketing.assets.monitoring import drift_report, predictions
from bank_marketing.assets.training import (
    candidates,
    champion_evaluation,
    champion_model,
    training_set,
)
from bank_marketing.resources import (
    DataSource,
    ModelInputs,
    MonitoringDatabase,
    ServingCluster,
    mlflow_tracking_in_home,
)
from bank_marketing.sensors import RetrainPolicy, sensors
from bank_marketing.settings import Settings
from bank_marketing.training.tracking import EXPERIMENT_NAME

# Candidates are CPU-bound: two processes at a time fill this project's 2-core machines; raise
# max_concurrent (run config) on a bigger Dagster deployment.
TRAINING_CONCURRENCY = 2

ingest_job = dg.define_asset_job(
    "ingest_job",
    selection=dg.AssetSelection.assets(raw_contacts),
    description="Read the source file into raw_contacts.",
)
contacts_job = dg.define_asset_job(
    "contacts_job",
    selection=dg.AssetSelection.assets(contacts),
    description="Validate one month of contacts from raw_contacts.",
)
JOB_TAG = "bank_marketing/job"
training_selection = dg.AssetSelection.assets(training_set, *candidates, champion_model)
with warnings.catch_warnings():
    warnings.simplefilter("ignore", dg.BetaWarning)
    training_job = dg.define_asset_job(
        "training_job",
        selection=training_selection,
        description="Train the five candidates as of a month, in parallel, and promote a champion.",
        executor_def=dg.multiprocess_executor.configured({"max_concurrent": TRAINING_CONCURRENCY}),
        # The stack's run queue (dagster.yaml) runs one training round at a time by this tag:
        # two rounds promoting at once would each compare with the same champion.
        tags={JOB_TAG: "training"},
        hooks={end_mlflow_on_run_finished},
    )
    evaluation_job = dg.define_asset_job(
        "evaluation_job",
        selection=dg.AssetSelection.assets(champion_evaluation),
        description="Score the as-of month's champion on the month after its window.",
        hooks={end_mlflow_on_run_finished},
    )
    monitoring_job = dg.define_asset_job(
        "monitoring_job",
        selection=dg.AssetSelection.assets(predictions, drift_report),
        description="Score one month with the champion and report its drift and realized quality.",
        hooks={end_mlflow_on_run_finished},
    )
deployment_job = dg.define_asset_job(
    "deployment_job",
    selection=dg.AssetSelection.assets(production_deployment),
    description="Roll the prediction service over to the champion (or a pinned version).",
)


def build_definitions(settings: Settings) -> dg.Definitions:
    """The definitions for one configuration; tests build them on a temporary home."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)
        mlflow = mlflow_tracking_in_home.configured(
            {
                "experiment_name": EXPERIMENT_NAME,
                "mlflow_tracking_uri": settings.mlflow_tracking_uri,
                "artifact_location": settings.mlflow_artifact_location,
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
        ],
        jobs=[
            ingest_job,
            contacts_job,
            training_job,
            evaluation_job,
            deployment_job,
            monitoring_job,
        ],
        sensors=sensors,
        resources={
            "io_manager": dg.FilesystemIOManager(base_dir=str(settings.storage_dir)),
            "data_source": DataSource(source=settings.source, cache_dir=str(settings.cache_dir)),
            "monitoring_db": MonitoringDatabase(
                url=settings.db_url,
                db_schema="monitoring" if settings.db_url.startswith("postgresql") else None,
                reports_dir=str(settings.reports_dir),
            ),
            "mlflow": mlflow,
            "model_inputs": ModelInputs.from_env(),
            "retrain_policy": RetrainPolicy.from_env(),
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
