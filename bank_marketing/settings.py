"""Where the system keeps its state and finds its data: read from the environment in one place.

Every name is part of the configuration contract (see README): ``BANK_MARKETING_HOME`` holds all
embedded state, so deleting it resets the system.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from bank_marketing.data.source import UCI_ARCHIVE_URL

DEFAULT_HOME = ".bank-marketing"
EMBEDDED_INSTANCE_YAML = """\
# Embedded Dagster instance of bank-marketing: SQLite storage in this folder.
telemetry:
  enabled: false
"""


@dataclass(frozen=True)
class Settings:
    """Resolved configuration. Reading it creates nothing; :meth:`prepare` creates the folders."""

    home: Path
    source: str
    db_url: str
    mlflow_tracking_uri: str
    dagster_home: Path
    serve_url: str
    ray_dashboard_url: str
    ray_auth_token: str | None = None
    webhook_token: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        home = Path(env.get("BANK_MARKETING_HOME") or DEFAULT_HOME).expanduser().absolute()
        return cls(
            home=home,
            source=env.get("BANK_MARKETING_SOURCE") or UCI_ARCHIVE_URL,
            db_url=env.get("BANK_MARKETING_DB_URL") or f"sqlite:///{home / 'monitoring.db'}",
            mlflow_tracking_uri=env.get("MLFLOW_TRACKING_URI") or f"sqlite:///{home / 'mlflow.db'}",
            dagster_home=Path(env.get("DAGSTER_HOME") or home / "dagster").expanduser().absolute(),
            serve_url=env.get("BANK_MARKETING_SERVE_URL") or "http://127.0.0.1:8000",
            # The names Ray's own `serve deploy` reads.
            ray_dashboard_url=env.get("RAY_DASHBOARD_ADDRESS") or "http://127.0.0.1:8265",
            ray_auth_token=env.get("RAY_AUTH_TOKEN") or None,
            webhook_token=env.get("BANK_MARKETING_WEBHOOK_TOKEN") or None,
        )

    @property
    def mlflow_artifact_location(self) -> str | None:
        """Where a new experiment keeps artifacts: in the home, unless a tracking server decides."""
        if self.mlflow_tracking_uri.startswith(("http://", "https://", "databricks")):
            return None
        return (self.home / "mlartifacts").as_uri()

    @property
    def cache_dir(self) -> Path:
        return self.home / "downloads"

    @property
    def storage_dir(self) -> Path:
        return self.home / "storage"

    @property
    def reports_dir(self) -> Path:
        """Drift reports (HTML) and the replay's plot."""
        return self.home / "reports"

    def prepare(self) -> None:
        """Create the embedded-state folders."""
        for folder in (
            self.home,
            self.cache_dir,
            self.storage_dir,
            self.reports_dir,
            self.dagster_home,
        ):
            folder.mkdir(parents=True, exist_ok=True)
        instance_config = self.dagster_home / "dagster.yaml"
        if not instance_config.exists():
            # An embedded instance: SQLite storage in DAGSTER_HOME (Dagster's default).
            instance_config.write_text(EMBEDDED_INSTANCE_YAML)
