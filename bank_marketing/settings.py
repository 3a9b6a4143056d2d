"""Where the system keeps its state and finds its data: read from the environment in one place.

Every name is part of the configuration contract (see README): ``BANK_MARKETING_HOME`` holds all
embedded state, so deleting it resets the system.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from bank_marketing.data.source import UCI_ARCHIVE_URL
from bank_marketing.monitoring.policy import ENV_ALERT_NAMES, ENV_FIELDS, ENV_SIGNALS, RetrainRule
from bank_marketing.training.config import ENV_DAY_OF_YEAR, ENV_MODEL_INPUTS, Inputs

DEFAULT_HOME = ".bank-marketing"
ENV_SENSOR_INTERVAL = "BANK_MARKETING_SENSOR_INTERVAL_SECONDS"
ENV_TRAINING_CONFIG = "BANK_MARKETING_TRAINING_CONFIG"
ENV_SERVED_SAMPLE_RATE = "BANK_MARKETING_SERVED_SAMPLE_RATE"
ENV_SERVED_RETENTION_DAYS = "BANK_MARKETING_SERVED_RETENTION_DAYS"
ENV_SERVED_QUEUE = "BANK_MARKETING_SERVED_QUEUE"
ENV_TRAFFIC_START = "BANK_MARKETING_TRAFFIC_START"
ENV_WEBHOOK_TOKEN = "BANK_MARKETING_WEBHOOK_TOKEN"
ENV_DB_URL = "BANK_MARKETING_DB_URL"
ENV_TRACKING_URI = "MLFLOW_TRACKING_URI"
# The Docker-secrets convention: NAME_FILE names a file that holds NAME's value. These are the
# settings that may carry a secret (a token, or a URL with a password in it).
FILE_SUFFIX = "_FILE"
SECRET_FILE_VARIABLES = (ENV_WEBHOOK_TOKEN, ENV_DB_URL, ENV_TRACKING_URI)
EMBEDDED_INSTANCE_HEADER = "# Embedded Dagster instance of bank-marketing"
EMBEDDED_INSTANCE_YAML = f"""\
{EMBEDDED_INSTANCE_HEADER}: SQLite storage in this folder.
# Written by `bank-marketing init` (make dev, make live, the replay); rewritten while this first
# line stays, so delete it to keep your own edits.
telemetry:
  enabled: false

# The daemon launches the loop's runs from a queue, and looks at it every second (Dagster's
# default is 5 s): each landed month waits on the queue twice before its drift report (its
# contacts run, then its scoring run).
run_coordinator:
  module: dagster.core.run_coordinator
  class: QueuedRunCoordinator
  config:
    dequeue_interval_seconds: 1

# The same limits as the stack's dagster.yaml.
concurrency:
  runs:
    max_concurrent_runs: 2
    tag_concurrency_limits:
      - key: dagster/partition
        value:
          applyLimitPerUniqueValue: true
        limit: 1
      - key: bank_marketing/job
        value: training
        limit: 1
      - key: bank_marketing/job
        value: deployment
        limit: 1

# The stack's run monitoring and retries. Without them a run whose process died (killed with the
# daemon's process group, or by the machine) stays STARTED for ever and keeps its month's slot in
# the queue. The default run launcher cannot tell that a run's process died, so such a run is
# ended once it exceeds max_runtime_seconds (two hours: a full training round takes minutes) and
# then started again.
run_retries:
  enabled: true
  max_retries: 2
  retry_on_asset_or_op_failure: false
run_monitoring:
  enabled: true
  start_timeout_seconds: 180
  cancel_timeout_seconds: 180
  max_runtime_seconds: 7200
  poll_interval_seconds: 60
"""


@dataclass(frozen=True)
class Traffic:
    """What the service keeps of its live traffic, and for how long (README, "Live traffic")."""

    # Share of requests whose records are kept in served_predictions: 1 keeps all, 0 none.
    sample_rate: float = 1.0
    # Answers (and their outcomes) older than this many days are deleted by served_traffic.
    retention_days: int = 90
    # Records a replica holds while the database is slow or down; beyond, they are dropped
    # and counted.
    queue_records: int = 20_000
    # The first daily partition of served_traffic (YYYY-MM-DD, UTC).
    first_day: str = "2026-01-01"

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Traffic:
        rate_text = env.get(ENV_SERVED_SAMPLE_RATE, "").strip()
        try:
            rate = float(rate_text) if rate_text else cls.sample_rate
        except ValueError:
            rate = -1.0
        if not 0.0 <= rate <= 1.0:
            raise ValueError(
                f"{ENV_SERVED_SAMPLE_RATE}={rate_text!r} is not a share between 0 and 1"
            )
        first_day = env.get(ENV_TRAFFIC_START, "").strip() or cls.first_day
        try:
            date.fromisoformat(first_day)
        except ValueError as error:
            raise ValueError(
                f"{ENV_TRAFFIC_START}={first_day!r} is not a YYYY-MM-DD date"
            ) from error
        return cls(
            sample_rate=rate,
            retention_days=_positive_int(
                env, ENV_SERVED_RETENTION_DAYS, cls.retention_days, unit="days"
            ),
            queue_records=_positive_int(env, ENV_SERVED_QUEUE, cls.queue_records, unit="records"),
            first_day=first_day,
        )


@dataclass(frozen=True)
class Settings:
    """Resolved configuration. Reading it creates nothing; :meth:`prepare` creates the folders."""

    home: Path
    source: str
    db_url: str
    mlflow_tracking_uri: str
    mlflow_ui_url: str
    dagster_home: Path
    landing_dir: Path
    serve_url: str
    ray_dashboard_url: str
    ray_auth_token: str | None = None
    webhook_token: str | None = None
    sensor_interval_seconds: int = 30
    # A YAML file of training defaults (training.config.read_training_config), if any.
    training_config: Path | None = None
    model_inputs: Inputs = field(default_factory=Inputs)
    retrain_rule: RetrainRule = field(default_factory=RetrainRule)
    traffic: Traffic = field(default_factory=Traffic)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        home = home_from_env(env)
        tracking_uri = secret_from_env(env, ENV_TRACKING_URI)
        return cls(
            home=home,
            source=env.get("BANK_MARKETING_SOURCE") or UCI_ARCHIVE_URL,
            db_url=secret_from_env(env, ENV_DB_URL) or f"sqlite:///{home / 'monitoring.db'}",
            mlflow_tracking_uri=tracking_uri or f"sqlite:///{home / 'mlflow.db'}",
            # Where a browser opens the MLflow UI, for links in the Dagster UI: a tracking server
            # serves it itself; for a store, `mlflow ui` serves it at its default address.
            mlflow_ui_url=(
                env.get("BANK_MARKETING_MLFLOW_UI_URL", "").strip()
                or (
                    tracking_uri
                    if (tracking_uri or "").startswith(("http://", "https://"))
                    else "http://127.0.0.1:5000"
                )
            ).rstrip("/"),
            dagster_home=Path(env.get("DAGSTER_HOME") or home / "dagster").expanduser().absolute(),
            landing_dir=Path(env.get("BANK_MARKETING_LANDING") or home / "landing")
            .expanduser()
            .absolute(),
            serve_url=env.get("BANK_MARKETING_SERVE_URL") or "http://127.0.0.1:8000",
            # The names Ray's own `serve deploy` reads.
            ray_dashboard_url=env.get("RAY_DASHBOARD_ADDRESS") or "http://127.0.0.1:8265",
            ray_auth_token=env.get("RAY_AUTH_TOKEN") or None,
            webhook_token=secret_from_env(env, ENV_WEBHOOK_TOKEN),
            sensor_interval_seconds=_positive_int(env, ENV_SENSOR_INTERVAL, 30),
            model_inputs=_model_inputs(env),
            retrain_rule=_retrain_rule(env),
            traffic=Traffic.from_env(env),
            training_config=(
                Path(env[ENV_TRAINING_CONFIG]).expanduser().absolute()
                if env.get(ENV_TRAINING_CONFIG, "").strip()
                else None
            ),
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
    def policy_cache_dir(self) -> Path:
        """Every family fitted as of every month, for the policy backtest and the replay's
        baselines (``bank_marketing.monitoring.backtest``)."""
        return self.home / "cache" / "policies"

    @property
    def storage_dir(self) -> Path:
        return self.home / "storage"

    @property
    def reports_dir(self) -> Path:
        """Drift reports (HTML) and the replay's plot."""
        return self.home / "reports"

    @property
    def logs_dir(self) -> Path:
        """The libraries' output of each command, and of the processes ``make live`` starts."""
        return self.home / "logs"

    def prepare(self) -> None:
        """Create the embedded-state folders."""
        for folder in (
            self.home,
            self.cache_dir,
            self.storage_dir,
            self.reports_dir,
            self.dagster_home,
            self.landing_dir,
        ):
            folder.mkdir(parents=True, exist_ok=True)
        instance_config = self.dagster_home / "dagster.yaml"
        current = instance_config.read_text() if instance_config.exists() else None
        if current is None or (
            current.startswith(EMBEDDED_INSTANCE_HEADER) and current != EMBEDDED_INSTANCE_YAML
        ):
            # An embedded instance: SQLite storage in DAGSTER_HOME (Dagster's default).
            instance_config.write_text(EMBEDDED_INSTANCE_YAML)


def home_from_env(env: Mapping[str, str]) -> Path:
    """``BANK_MARKETING_HOME``, absolute."""
    return Path(env.get("BANK_MARKETING_HOME") or DEFAULT_HOME).expanduser().absolute()


def secret_from_env(env: Mapping[str, str], variable: str) -> str | None:
    """``variable``'s value, or the content of the file ``variable_FILE`` names (Docker secrets).

    The file wins when both are set: a process handed a file (a Serve replica, whose rollout
    passes secrets as files) may have inherited an older value of the variable itself. Whitespace
    around the file's content (its final newline) is not part of the value. A file that cannot
    be read, or holds nothing, is an error naming the variable and the file, rather than a
    secret silently unset.
    """
    named = env.get(variable + FILE_SUFFIX, "").strip()
    if not named:
        return env.get(variable) or None
    path = Path(named).expanduser()
    try:
        value = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as error:
        reason = (error.strerror or str(error)) if isinstance(error, OSError) else "not UTF-8"
        raise ValueError(
            f"{variable}{FILE_SUFFIX}={named!r}: cannot read {path}: {reason}"
        ) from error
    if not value:
        raise ValueError(f"{variable}{FILE_SUFFIX}={named!r}: {path} is empty")
    return value


def _env_names(env: Mapping[str, str], variable: str) -> list[str]:
    """The comma-separated names in ``variable``, stripped; empty when it is unset or blank."""
    return [name.strip() for name in env.get(variable, "").split(",") if name.strip()]


_BOOLEANS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def _model_inputs(env: Mapping[str, str]) -> Inputs:
    """The inputs set in ``BANK_MARKETING_MODEL_INPUTS`` and ``_DAY_OF_YEAR``, checked."""
    values: dict[str, Any] = {}
    if columns := _env_names(env, ENV_MODEL_INPUTS):
        values["columns"] = columns
    flag = env.get(ENV_DAY_OF_YEAR, "").strip()
    if flag:
        if flag.lower() not in _BOOLEANS:
            raise ValueError(f"{ENV_DAY_OF_YEAR}={flag!r} is not one of {sorted(_BOOLEANS)}")
        values["day_of_year"] = _BOOLEANS[flag.lower()]
    inputs = Inputs(**values)
    try:
        inputs.checked()
    except ValueError as error:
        raise ValueError(f"{ENV_MODEL_INPUTS}/{ENV_DAY_OF_YEAR}: {error}") from error
    return inputs


def _retrain_rule(env: Mapping[str, str]) -> RetrainRule:
    """The rule with the values set in ``BANK_MARKETING_RETRAIN_*``, defaults elsewhere."""
    values: dict[str, Any] = {}
    for variable, name, kind in ENV_FIELDS:
        text = env.get(variable, "").strip()
        if text:
            try:
                values[name] = kind(text)
            except ValueError as error:
                raise ValueError(f"{variable}={text!r} is not a {kind.__name__}") from error
    if ENV_SIGNALS in env:
        values["signals"] = _env_names(env, ENV_SIGNALS)
    if names := _env_names(env, ENV_ALERT_NAMES):
        values["alert_names"] = names
    try:
        return RetrainRule(**values)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in e['loc'])}: {e['msg']}" for e in error.errors()
        )
        raise ValueError(f"BANK_MARKETING_RETRAIN_*: {problems}") from error


def _positive_int(
    env: Mapping[str, str], variable: str, default: int, unit: str = "seconds"
) -> int:
    text = env.get(variable, "").strip()
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"{variable}={text!r} is not a whole number of {unit} of at least 1")
    return value
