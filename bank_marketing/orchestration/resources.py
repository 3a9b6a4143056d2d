"""Dagster resources: the external systems the assets talk to, each with typed configuration."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Any

import dagster as dg
import mlflow
import pandas as pd
import sqlalchemy as sa
from dagster_mlflow import mlflow_tracking
from dagster_mlflow.resources import CONFIG_SCHEMA as dagster_mlflow_config_schema
from mlflow.exceptions import MlflowException
from pydantic import Field

from bank_marketing.data.source import LoadedContacts, load_contacts
from bank_marketing.monitoring import store
from bank_marketing.serving.rollout import APP_NAME, Rollout, RolloutError, ServeCluster
from bank_marketing.settings import (
    ENV_SERVED_QUEUE,
    ENV_SERVED_SAMPLE_RATE,
)
from bank_marketing.training.config import Inputs
from bank_marketing.training.tracking import ensure_experiment


class DataSource(dg.ConfigurableResource):
    """Where the UCI contacts come from (``BANK_MARKETING_SOURCE``) and where downloads go."""

    source: str = Field(description="Path or URL of bank+marketing.zip, bank-full.csv or data.csv.")
    cache_dir: str = Field(
        description="Folder that keeps downloaded files, so each downloads once."
    )

    landing_dir: str | None = Field(
        default=None,
        description="The landing location (BANK_MARKETING_LANDING): monthly extracts, one month "
        "per file, that validate_landed_files turns into contacts runs.",
    )

    def load(self) -> LoadedContacts:
        return load_contacts(self.source, Path(self.cache_dir))

    def landing(self) -> Path:
        """The landing location; a code location without one cannot take monthly files."""
        if not self.landing_dir:
            raise ValueError("data_source.landing_dir is not set: no landing location to read")
        return Path(self.landing_dir)


class StoredOrNone(dg.ConfigurableIOManager):
    """Loads an input as the filesystem IO manager stored it, or None if it was never stored.

    ``contacts`` reads ``raw_contacts`` through it: a month that arrives as a landed file needs
    no whole-file source, so the stack can start from monthly files alone.
    """

    base_dir: str = Field(description="The filesystem IO manager's folder (the home's storage/).")

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        raise NotImplementedError("StoredOrNone only loads inputs")

    def load_input(self, context: dg.InputContext) -> Any:
        stored = dg.FilesystemIOManager(base_dir=self.base_dir).create_io_manager(None)  # type: ignore[arg-type]
        try:
            return stored.load_input(context)
        except FileNotFoundError:
            return None


class MonitoringDatabase(dg.ConfigurableResource):
    """The monitoring database (``BANK_MARKETING_DB_URL``): rejected rows, predictions, drift."""

    url: str = Field(description="SQLAlchemy URL, e.g. sqlite:///monitoring.db or postgresql://...")
    db_schema: str | None = Field(
        default=None,
        description="Database schema for the tables; None: 'monitoring' on PostgreSQL, none on "
        "SQLite.",
    )
    reports_dir: str | None = Field(
        default=None,
        description="Folder that keeps the monthly HTML drift reports (the home's reports/); "
        "drift_report fails without it.",
    )

    @contextmanager
    def engine(self) -> Iterator[sa.Engine]:
        """An engine whose tables exist, disposed of on exit."""
        engine = store.connect(self.url, self.db_schema)
        try:
            yield engine
        finally:
            engine.dispose()

    def replace_rejects(self, month: date, rejected: pd.DataFrame, source_sha256: str) -> int:
        with self.engine() as engine:
            return store.replace_rejects(engine, month, rejected, source_sha256)

    def read_rejects(self, month: date | None = None) -> pd.DataFrame:
        with self.engine() as engine:
            return store.read_rejects(engine, month)

    def replace_predictions(self, month: date, scores: pd.DataFrame) -> int:
        with self.engine() as engine:
            return store.replace_predictions(engine, month, scores)

    def read_predictions(self, month: date | None = None) -> pd.DataFrame:
        with self.engine() as engine:
            return store.read_predictions(engine, month)

    def replace_drift_report(
        self,
        month: date,
        report: pd.DataFrame,
        quality: pd.DataFrame | None,
        signals: pd.DataFrame | None = None,
    ) -> None:
        with self.engine() as engine:
            store.replace_drift_report(engine, month, report, quality, signals)

    def read_drift_reports(self, month: date | None = None) -> pd.DataFrame:
        with self.engine() as engine:
            return store.read_drift_reports(engine, month)

    def read_monthly_quality(self, month: date | None = None) -> pd.DataFrame:
        with self.engine() as engine:
            return store.read_monthly_quality(engine, month)

    def read_retrain_signals(self, month: date | None = None) -> pd.DataFrame:
        with self.engine() as engine:
            return store.read_retrain_signals(engine, month)

    def reports_folder(self) -> Path:
        """Where HTML drift reports go, created on first use."""
        if not self.reports_dir:
            raise ValueError(
                "monitoring_db.reports_dir is not set: drift reports need a folder to be kept in"
            )
        folder = Path(self.reports_dir)
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def describe(self) -> str:
        """The URL without its password, for metadata and messages."""
        return sa.make_url(self.url).render_as_string(hide_password=True)


class ModelInputs(dg.ConfigurableResource, Inputs):
    """The model inputs as a resource (fields and checks in ``bank_marketing.training.config``)."""


# Where `mlflow ui` serves by default.
DEFAULT_MLFLOW_UI_URL = "http://127.0.0.1:5000"


@dg.resource(
    config_schema={
        **dagster_mlflow_config_schema,
        "artifact_location": dg.Field(
            dg.Noneable(str),
            default_value=None,
            description="Artifact folder of a new experiment (None: the tracking server decides).",
        ),
        "ui_url": dg.Field(
            str,
            default_value=DEFAULT_MLFLOW_UI_URL,
            description="Where a browser opens the MLflow UI (BANK_MARKETING_MLFLOW_UI_URL; a "
            "tracking server's own address): asset metadata links runs and reports there.",
        ),
    },
    description="dagster-mlflow's mlflow_tracking, after creating the experiment where the "
    "embedded defaults keep artifacts (BANK_MARKETING_HOME), not in the working directory; "
    "its ui_url says where the MLflow UI shows a run.",
)
def mlflow_tracking_in_home(init_context: dg.InitResourceContext) -> Iterator[Any]:
    config = init_context.resource_config
    _end_leftover_runs(init_context.instance)
    if config.get("mlflow_tracking_uri"):
        mlflow.set_tracking_uri(config["mlflow_tracking_uri"])
    try:
        ensure_experiment(config["experiment_name"], config.get("artifact_location"))
    except MlflowException as error:
        raise TrackingUnavailable(
            f"MLflow tracking at {mlflow.get_tracking_uri()} did not answer or refused the "
            f"request ({error.message}); check MLFLOW_TRACKING_URI and that the server is up. "
            f"Nothing was trained or promoted."
        ) from error
    # dagster-mlflow's generator: it yields the tracking object and ends a failed run after.
    for tracking in mlflow_tracking.resource_fn(init_context):
        tracking.ui_url = config["ui_url"].rstrip("/")
        yield tracking


# How an MLflow run left open ends, by the status of the Dagster run that opened it.
LEFTOVER_STATUS = {
    dg.DagsterRunStatus.FAILURE: "FAILED",
    dg.DagsterRunStatus.CANCELED: "KILLED",
    dg.DagsterRunStatus.CANCELING: "KILLED",
}


def _end_leftover_runs(instance: dg.DagsterInstance | None) -> None:
    """End MLflow runs still active in this process from an earlier step or Dagster run.

    Runs executed in one process (in-process jobs, the replay, tests) share MLflow's active-run
    stack, and dagster-mlflow logs into whatever run is active, so a run left open would collect
    the next run's logs. Each ends as its Dagster run did (its ``dagster_run_id`` tag): FAILED
    for a failed one, KILLED for a canceled one, else FINISHED. dagster-mlflow finds and resumes
    the current Dagster run's own run by its tag right after this.
    """
    while (active := mlflow.active_run()) is not None:
        status = "FINISHED"
        with contextlib.suppress(MlflowException):
            # The tags as stored: dagster-mlflow sets them after the run started.
            tags = mlflow.get_run(active.info.run_id).data.tags
            dagster_run_id = tags.get("dagster_run_id")
            run = instance.get_run_by_id(dagster_run_id) if instance and dagster_run_id else None
            status = LEFTOVER_STATUS.get(run.status, status) if run else status
        try:
            mlflow.end_run(status)
        except MlflowException:
            # end_run has already taken the run off the stack; its store may be another one.
            continue


class TrackingUnavailable(RuntimeError):
    """The MLflow tracking server or store cannot be used."""


SERVED_TRAFFIC_VARIABLES = (ENV_SERVED_SAMPLE_RATE, ENV_SERVED_QUEUE)


class ServingCluster(dg.ConfigurableResource):
    """The Ray cluster that serves predictions, reached through its dashboard (``serve deploy``).

    On the embedded defaults the cluster is a Ray head on this machine, started on first use and
    left running for ``make serve``-style use (stop it with ``ray stop``); in the stack and on a
    real cluster ``dashboard_url`` points at its head node and nothing is started.
    """

    dashboard_url: str = Field(
        default="http://127.0.0.1:8265",
        description="Ray dashboard of the cluster (RAY_DASHBOARD_ADDRESS, as for `serve deploy`).",
    )
    serve_url: str = Field(
        default="http://127.0.0.1:8000",
        description="Where the prediction service answers (BANK_MARKETING_SERVE_URL); its path, "
        "if any, is the application's route prefix.",
    )
    tracking_uri: str = Field(
        description="MLflow registry the replicas load versions from; every Ray node must reach it."
    )
    app_name: str = Field(default=APP_NAME, description="Name of the Serve application.")
    start_local: bool = Field(
        default=True,
        description="Start a Ray head on this machine when none answers at a local dashboard_url.",
    )
    local_num_cpus: int | None = Field(
        default=None, description="CPUs of a Ray head started here (None: all of them)."
    )
    auth_token: str | None = Field(
        default=None,
        description="Ray token for a cluster with token authentication (RAY_AUTH_TOKEN).",
    )
    monitoring_db_url: str | None = Field(
        default=None,
        description="Monitoring database the service's Grafana webhook stores alerts in "
        "(BANK_MARKETING_DB_URL); passed to the replicas (as a file when it holds a password).",
    )
    webhook_token: str | None = Field(
        default=None,
        description="Bearer token Grafana must send to the webhook "
        "(BANK_MARKETING_WEBHOOK_TOKEN); passed to the replicas as a file, never in the Serve "
        "config; unset: the webhook refuses all.",
    )
    rollout_timeout_seconds: float = Field(
        default=240.0, gt=0, description="How long a switch may take before it counts as failed."
    )

    def cluster(self) -> ServeCluster:
        headers = {"Authorization": f"Bearer {self.auth_token}"} if self.auth_token else None
        environment = {
            name: value
            for name, value in (
                ("BANK_MARKETING_DB_URL", self.monitoring_db_url),
                ("BANK_MARKETING_WEBHOOK_TOKEN", self.webhook_token),
                # What the replicas keep of their traffic, as this process was told.
                *((name, os.environ.get(name)) for name in SERVED_TRAFFIC_VARIABLES),
            )
            if value
        }
        return ServeCluster(
            self.dashboard_url,
            self.serve_url,
            self.tracking_uri,
            app_name=self.app_name,
            headers=headers,
            environment=environment,
        )

    def roll_over(self, version: str, shadow_version: str | None = None) -> Rollout:
        """Serve ``version`` (and ``shadow_version`` in shadow); start a local Ray head first if
        allowed and none answers."""
        cluster = self.cluster()
        if not cluster.reachable():
            if not (self.start_local and cluster.is_local()):
                raise RolloutError(
                    f"no Ray dashboard answers at {self.dashboard_url}; start the cluster (or "
                    f"allow start_local on this machine) and check RAY_DASHBOARD_ADDRESS"
                )
            cluster.start_local(num_cpus=self.local_num_cpus)
        return cluster.roll_over(
            version, timeout_s=self.rollout_timeout_seconds, shadow_version=shadow_version
        )
