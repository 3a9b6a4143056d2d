"""Shared fixtures: the real UCI file (never downloaded), temporary homes, instances, Postgres."""

from __future__ import annotations

import os
import random
import shutil
import socket
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import httpx
import mlflow
import psycopg2
import pytest
from mlflow.exceptions import MlflowException

from bank_marketing.orchestration.definitions import build_definitions
from bank_marketing.orchestration.replay import Replay, replay
from bank_marketing.orchestration.runner import run_ingest
from bank_marketing.serving import proxy
from bank_marketing.serving.model import ModelState
from bank_marketing.settings import Settings
from bank_marketing.training.candidates import fit_candidate
from bank_marketing.training.features import DEFAULT_INPUTS
from bank_marketing_tests.registries import first_contacts, log_round

# The fixtures loop and daemon: a home the replay filled, and dagster-daemon run on it.
pytest_plugins = ["bank_marketing_tests.daemon_loop"]

REPO = Path(__file__).resolve().parents[1]
POSTGRES = {"host": "127.0.0.1", "port": 5432, "user": "postgres", "dbname": "postgres"}


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def skip_or_fail(reason: str) -> None:
    """Skip locally; under CI=true a missing prerequisite is a failure, never a silent skip."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true: required)")
    pytest.skip(reason)


# Small candidates for every training round of the session (the daemon's and the replay's
# included): the plumbing is what those tests check. test_training's quality round unsets it.
QUICK_TRAINING = REPO / "bank_marketing_tests" / "quick_training.yaml"


@pytest.fixture(scope="session", autouse=True)
def _session_environment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """MLflow falls back to ./mlflow.db when no URI is set: keep any such use in a temp folder.
    Training rounds start from the quick training defaults. The loop's tests retrain on
    prediction drift, which fires in nearly every month, so a short replay or a few landed
    months exercise the retraining path; the default policy (a schedule) has its own tests."""
    default = tmp_path_factory.mktemp("mlflow-default") / "mlflow.db"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{default}")
        patch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        patch.setenv("BANK_MARKETING_TRAINING_CONFIG", str(QUICK_TRAINING))
        patch.setenv("BANK_MARKETING_RETRAIN_SIGNALS", "prediction_drift")
        yield


@pytest.fixture(autouse=True)
def _mlflow_state_per_test() -> Iterator[None]:
    """Each test starts from the same MLflow process state: no active run, the same URIs.

    MLflow keeps the active run and the tracking URI in process globals (and mirrors the URI in
    MLFLOW_TRACKING_URI for child processes), so one test's leftovers would steer the next.
    """
    saved = {name: os.environ.get(name) for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    tracking = mlflow.get_tracking_uri()
    yield
    while mlflow.active_run() is not None:
        try:
            mlflow.end_run()
        except MlflowException:
            # end_run has taken the run off the stack; its store may be gone with the test.
            continue
    mlflow.set_tracking_uri(tracking)
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="session")
def bank_full_path() -> Path:
    source = os.environ.get("BANK_MARKETING_SOURCE", "")
    if not source or not Path(source).is_file():
        skip_or_fail(
            "BANK_MARKETING_SOURCE must name a local bank-full.csv (tests never download): "
            f"got {source!r}"
        )
    return Path(source)


@pytest.fixture(scope="session")
def bank_full_bytes(bank_full_path: Path) -> bytes:
    return bank_full_path.read_bytes()


def make_settings(home: Path, source: Path | str, **extra: str) -> Settings:
    env = {"BANK_MARKETING_HOME": str(home), "BANK_MARKETING_SOURCE": str(source), **extra}
    # The session's training defaults, as the environment has them for this test.
    if training := os.environ.get("BANK_MARKETING_TRAINING_CONFIG"):
        env.setdefault("BANK_MARKETING_TRAINING_CONFIG", training)
    settings = Settings.from_env(env)
    settings.prepare()
    return settings


@pytest.fixture(scope="session")
def ingested_home(tmp_path_factory: pytest.TempPathFactory, bank_full_path: Path) -> Path:
    """A home whose raw_contacts is ingested from the real file, once a session: tests that start
    from an ingested home copy it (:func:`ingested_copy`) instead of ingesting again."""
    home = tmp_path_factory.mktemp("ingested") / "home"
    settings = make_settings(home, bank_full_path)
    with dg.instance_for_test(temp_dir=str(settings.dagster_home)) as instance:
        assert run_ingest(build_definitions(settings), instance).success
    return home


def ingested_copy(ingested_home: Path, home: Path) -> Path:
    """``home``, a copy of the session's ingested home: raw_contacts stored, its run recorded."""
    shutil.copytree(ingested_home, home)
    return home


@pytest.fixture
def settings(tmp_path: Path, bank_full_path: Path) -> Settings:
    return make_settings(tmp_path / "home", bank_full_path)


@pytest.fixture
def defs(settings: Settings) -> dg.Definitions:
    return build_definitions(settings)


@pytest.fixture
def instance(settings: Settings) -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test(temp_dir=str(settings.dagster_home)) as instance:
        yield instance


@pytest.fixture(scope="session")
def postgres_available() -> None:
    try:
        psycopg2.connect(connect_timeout=3, **POSTGRES).close()
    except psycopg2.OperationalError as error:
        skip_or_fail(f"PostgreSQL does not answer at 127.0.0.1:5432 ({error})".strip())


@pytest.fixture
def postgres_database(postgres_available: None) -> Iterator[str]:
    """A fresh, empty database on the machine's PostgreSQL, dropped afterwards; yields its name."""
    with throwaway_database() as name:
        yield name


@contextmanager
def throwaway_database(prefix: str = "bank_marketing_test") -> Iterator[str]:
    """A fresh, empty database on the machine's PostgreSQL (use after ``postgres_available``),
    dropped afterwards, however its users left it; yields its name."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(**POSTGRES)
    admin.autocommit = True
    try:
        with admin.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{name}"')
        try:
            yield name
        finally:
            with admin.cursor() as cursor:
                cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.close()


# A short replay on PostgreSQL: a first champion as of 2010-06, then three months monitored.
REPLAY_FIRST_AS_OF, REPLAY_LAST_MONTH = "2010-06-01", "2010-09-01"
REPLAYED_MONTHS = ["2010-07", "2010-08", "2010-09"]


@dataclass(frozen=True)
class ReplayedStack:
    """The system after a short replay, laid out as the docker compose stack lays it out."""

    databases: dict[str, str]  # "monitoring", "mlflow", "dagster" -> database name
    environment: dict[str, str]  # what the replay ran with (training runs rebuild from it)
    defs: dg.Definitions
    instance: dg.DagsterInstance
    result: Replay
    trainings: list[dg.RunRecord]  # the replay's own training runs, before any test adds one

    def url(self, role: str) -> str:
        """The SQLAlchemy URL of the ``role`` database."""
        return f"postgresql://postgres@127.0.0.1:5432/{self.databases[role]}"


@pytest.fixture(scope="session")
def replayed_stack(
    postgres_available: None, bank_full_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ReplayedStack]:
    """A short replay (no serving) into three fresh databases on the machine's PostgreSQL: the
    monitoring tables, MLflow's backend store and Dagster's storage (the stack's dagster.yaml).

    One replay for the session: the replay's own tests and Grafana's queries read the same one.
    The databases are dropped at the end.
    """
    prefix = f"bank_marketing_replay_{uuid.uuid4().hex[:8]}"
    databases = {role: f"{prefix}_{role}" for role in ("monitoring", "mlflow", "dagster")}
    folder = tmp_path_factory.mktemp("replayed-stack")
    dagster_home, dagster_pg = stack_dagster_home(folder, databases["dagster"])
    environment = {
        **dagster_pg,
        "DAGSTER_HOME": str(dagster_home),
        "BANK_MARKETING_HOME": str(folder / "home"),
        "BANK_MARKETING_SOURCE": str(bank_full_path),
        "BANK_MARKETING_DB_URL": f"postgresql://postgres@127.0.0.1:5432/{databases['monitoring']}",
        "MLFLOW_TRACKING_URI": (
            f"postgresql+psycopg2://postgres@127.0.0.1:5432/{databases['mlflow']}"
        ),
    }
    admin = psycopg2.connect(**POSTGRES)
    admin.autocommit = True
    tracking_uri = mlflow.get_tracking_uri()
    try:
        with admin.cursor() as cursor:
            for name in databases.values():
                cursor.execute(f'CREATE DATABASE "{name}"')
        with pytest.MonkeyPatch.context() as patch:
            # The replay's training rounds rebuild the definitions from the environment.
            for variable, value in environment.items():
                patch.setenv(variable, value)
            settings = Settings.from_env()
            settings.prepare()
            defs = build_definitions(settings)
            instance = dg.DagsterInstance.from_config(str(dagster_home))
            try:
                result = replay(
                    defs,
                    instance,
                    first_as_of=REPLAY_FIRST_AS_OF,
                    last_month=REPLAY_LAST_MONTH,
                    serve=False,
                )
                trainings = instance.get_run_records(dg.RunsFilter(job_name="training_job"))
            except BaseException:
                instance.dispose()
                raise
        with instance:
            yield ReplayedStack(databases, environment, defs, instance, result, trainings)
    finally:
        mlflow.set_tracking_uri(tracking_uri)
        with admin.cursor() as cursor:
            for name in databases.values():
                cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture
def postgres_dagster_home(
    postgres_database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """A DAGSTER_HOME with the stack's dagster.yaml, its DAGSTER_PG_* set to the fresh database."""
    dagster_home, environment = stack_dagster_home(tmp_path, postgres_database)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    return dagster_home


def stack_dagster_home(folder: Path, database: str) -> tuple[Path, dict[str, str]]:
    """``folder/dagster_home`` with the stack's dagster.yaml, and the DAGSTER_PG_* variables that
    point it at ``database`` on the machine's PostgreSQL."""
    dagster_home = folder / "dagster_home"
    dagster_home.mkdir()
    shutil.copy(REPO / "dagster.yaml", dagster_home / "dagster.yaml")
    return dagster_home, {
        "DAGSTER_PG_HOST": "127.0.0.1",
        "DAGSTER_PG_PORT": "5432",
        "DAGSTER_PG_USER": "postgres",
        "DAGSTER_PG_PASSWORD": "",
        "DAGSTER_PG_DB": database,
    }


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory, bank_full_path: Path) -> str:
    """A registry holding one champion: a logistic regression on the first 6,000 contacts."""
    folder = tmp_path_factory.mktemp("registry")
    frame = first_contacts(bank_full_path, folder, 6000)
    train, validation = frame.iloc[:4500], frame.iloc[4500:]
    params = {"C": 1.0, "max_iter": 2000, "class_weight": "none"}
    fitted = fit_candidate("logistic_regression", params, DEFAULT_INPUTS, train, validation)
    uri, _ = log_round(folder, [(fitted, {"C": 1.0})], train, validation)
    return uri


@pytest.fixture(scope="session")
def state(registry: str) -> ModelState:
    state = ModelState(registry)
    assert state.load() is not None, state.problem
    return state


@dataclass(frozen=True)
class RayCluster:
    """The test session's Ray: its dashboard (Serve's REST API) and Serve's HTTP address."""

    dashboard_url: str
    http_url: str


def free_port(among: Sequence[int] | None = None) -> int:
    """A port free on 127.0.0.1 now: one the kernel picks (its ephemeral range), or one of
    ``among`` tried in a random order."""
    if among is None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            return probe.getsockname()[1]
    for port in random.sample(list(among), min(len(among), 50)):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port among {among}")


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[RayCluster]:
    """One local Ray for the whole session (it takes 20-40 s to start), with Serve on a free port.

    Sized like this project's machines: 2 CPUs; the serving apps ask for 0.25 CPU per replica.
    Serve's proxy refuses an invalid x-request-id as the service does: its callback is in the
    environment the local Ray starts with.
    """
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    os.environ.update(proxy.CALLBACK_ENVIRONMENT)
    import ray
    from ray import serve

    dashboard_port, http_port = free_port(), free_port()
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=True,
        dashboard_host="127.0.0.1",
        dashboard_port=dashboard_port,
        log_to_driver=False,
    )
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": http_port})
        dashboard = f"http://127.0.0.1:{dashboard_port}"
        _wait_for(f"{dashboard}/api/version", timeout_s=90, statuses=(200, 401))
        yield RayCluster(dashboard, f"http://127.0.0.1:{http_port}")
    finally:
        serve.shutdown()
        ray.shutdown()


def wait_until_healthy(url: str, timeout_s: float = 90) -> None:
    _wait_for(f"{url}/healthz", timeout_s)


def _wait_for(url: str, timeout_s: float, statuses: tuple[int, ...] = (200,)) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code in statuses:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"{url} did not answer 200 within {timeout_s} s")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Groups for ``pytest -n 2 --dist loadgroup`` (make test): a module's tests stay together, so
    its module fixtures are built once; every test on the session's Ray, and every test that
    reads the session's replayed stack, share one worker, so each is built once."""
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if "ray_cluster" in fixtures:
            group = "ray"
        elif "replayed_stack" in fixtures:
            group = "replayed_stack"
        else:
            group = item.module.__name__ if item.module else item.nodeid
        item.add_marker(pytest.mark.xdist_group(group))
