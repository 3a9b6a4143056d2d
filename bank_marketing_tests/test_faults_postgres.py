"""The fault matrix's PostgreSQL rows: the server restarted in the middle of a monitoring write,
of a training round's MLflow registration and promotion, and of the daemon's sensor ticks.

Each test runs on a PostgreSQL server of its own (``private_postgres``), never the machine's.
The restart is made to land inside the write: another connection holds a lock the write needs,
and the server is restarted once PostgreSQL shows the write waiting on it (``pg_stat_activity``).
A fast shutdown ends every connection, the waiting one included, as a crash or an operator's
restart would.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import dagster as dg
import pandas as pd
import psycopg2
import pytest
from dagster._core.scheduler.instigation import TickStatus
from dagster._core.storage.tags import RUN_KEY_TAG
from mlflow import MlflowClient

from bank_marketing.data.landing import cut_months, read_landed
from bank_marketing.orchestration.assets.contacts import contacts, raw_contacts
from bank_marketing.orchestration.assets.monitoring import drift_report, predictions
from bank_marketing.orchestration.definitions import build_definitions, training_defaults
from bank_marketing.orchestration.resources import MonitoringDatabase
from bank_marketing.orchestration.runner import QUIET, backfill_contacts, failure_message, merged
from bank_marketing.settings import Settings
from bank_marketing.training.candidates import fit_candidate
from bank_marketing.training.features import DEFAULT_INPUTS
from bank_marketing.training.registry import champion_version, load_registered
from bank_marketing.training.tracking import EXPERIMENT_NAME, MODEL_NAME
from bank_marketing_tests import faults
from bank_marketing_tests.conftest import REPO, ingested_copy, make_settings
from bank_marketing_tests.daemon_loop import INTERVAL_S, SENSORS, Daemon, Loop, ticks, wait_for
from bank_marketing_tests.private_postgres import PrivatePostgres, private_postgres
from bank_marketing_tests.registries import first_contacts, log_round

pytestmark = [pytest.mark.integration, pytest.mark.faults]

PART_MONITORING = "PostgreSQL (monitoring database)"
PART_MLFLOW = "PostgreSQL (MLflow backend store)"
PART_DAGSTER = "PostgreSQL (Dagster storage)"
# How long a write may take to reach the lock before the test gives up on making the fault land.
REACH_TIMEOUT_S = 120.0


# The restart ------------------------------------------------------------------------------------


@dataclass
class Restart:
    """A restart of ``server`` once a statement like ``waiting`` waits for a lock, in a thread.

    ``statement`` is the blocked statement PostgreSQL showed; ``returned_at`` (``time.monotonic``)
    when the server answered again.
    """

    server: PrivatePostgres
    waiting: str
    holder: psycopg2.extensions.connection
    down_s: float = 0.0
    statement: str | None = None
    returned_at: float | None = None
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        try:
            self.statement = blocked_statement(self.server, self.waiting, REACH_TIMEOUT_S)
            if self.statement is None:
                # Let the write go on, so the test ends and says the fault never landed.
                self.holder.rollback()
                return
            self.server.stop()
            time.sleep(self.down_s)
            self.server.start()
            self.returned_at = time.monotonic()
        except BaseException as error:
            self.error = error
        finally:
            self.done.set()

    def wait(self, timeout_s: float = REACH_TIMEOUT_S + 60) -> None:
        assert self.done.wait(timeout_s), f"no restart within {timeout_s} s"
        if self.error is not None:
            raise self.error

    def landed(self) -> float:
        """When the server was back; fails the test if the fault never struck the write."""
        assert self.statement is not None, (
            f"nothing waited for the lock within {REACH_TIMEOUT_S} s (a statement like "
            f"{self.waiting!r}): the fault did not land inside the write"
        )
        assert self.returned_at is not None
        return self.returned_at


def connect(server: PrivatePostgres, database: str = "postgres") -> psycopg2.extensions.connection:
    return psycopg2.connect(
        host="127.0.0.1", port=server.port, user="postgres", dbname=database, connect_timeout=5
    )


def blocked_statement(server: PrivatePostgres, waiting: str, timeout_s: float) -> str | None:
    """The first statement like ``waiting`` (SQL ``ILIKE``) seen waiting for a lock."""
    deadline = time.monotonic() + timeout_s
    watcher = connect(server)
    watcher.autocommit = True
    try:
        with watcher.cursor() as cursor:
            while time.monotonic() < deadline:
                cursor.execute(
                    "SELECT query FROM pg_stat_activity "
                    "WHERE wait_event_type = 'Lock' AND query ILIKE %s LIMIT 1",
                    (waiting,),
                )
                found = cursor.fetchone()
                if found:
                    return found[0]
                time.sleep(0.05)
    finally:
        watcher.close()
    return None


@contextmanager
def restart_while_blocked(
    server: PrivatePostgres, database: str, lock: str, waiting: str, down_s: float = 0.0
) -> Iterator[Restart]:
    """Hold ``lock`` (SQL run in an open transaction on ``database``) and restart the server
    once a statement like ``waiting`` waits for it; the restart runs beside the block's code."""
    holder = connect(server, database)
    with holder.cursor() as cursor:
        cursor.execute(lock)
    restart = Restart(server, waiting, holder, down_s)
    thread = threading.Thread(target=restart.run, name="postgres-restart", daemon=True)
    thread.start()
    try:
        yield restart
        restart.wait()
    finally:
        restart.done.wait(REACH_TIMEOUT_S + 60)
        holder.close()
        if not server.running():
            server.start()


def create_database(server: PrivatePostgres, name: str) -> str:
    admin = connect(server)
    admin.autocommit = True
    try:
        with admin.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{name}"')
    finally:
        admin.close()
    return f"postgresql://postgres@127.0.0.1:{server.port}/{name}"


def one_champion(folder: Path, bank_full_path: Path) -> str:
    """A SQLite registry in ``folder`` whose champion is a logistic regression on the first
    6,000 contacts (May 2008), reference data included; its tracking URI."""
    frame = first_contacts(bank_full_path, folder, 6000)
    train, validation = frame.iloc[:4500], frame.iloc[4500:]
    params = {"C": 1.0, "max_iter": 2000, "class_weight": "none"}
    fitted = fit_candidate("logistic_regression", params, DEFAULT_INPUTS, train, validation)
    uri, _ = log_round(folder, [(fitted, {"C": 1.0})], train, validation)
    return uri


# 1. A monitoring write ---------------------------------------------------------------------------

MONITORING_TABLES = ("predictions", "drift_reports", "monthly_quality", "retrain_signals")


@dataclass
class Monitoring:
    server: PrivatePostgres
    settings: Settings
    instance: dg.DagsterInstance
    resources: dict

    @property
    def db(self) -> MonitoringDatabase:
        return self.resources["monitoring_db"]

    def monitor(self, month: str) -> dg.ExecuteInProcessResult:
        """predictions and drift_report of ``month`` in one run, as monitoring_job runs them."""
        return dg.materialize(
            [raw_contacts, contacts, predictions, drift_report],
            selection=[predictions, drift_report],
            partition_key=month,
            instance=self.instance,
            resources=self.resources,
            raise_on_error=False,
        )

    def stored(self, month: date) -> dict[str, pd.DataFrame]:
        return {table: getattr(self.db, f"read_{table}")(month) for table in MONITORING_TABLES}


@dataclass(frozen=True)
class WriteFault:
    month: str
    lock: str  # SQL holding what the write needs; {month} and {line} filled in
    waiting: str  # the write's statement, as pg_stat_activity shows it
    where: str


WRITE_FAULTS = {
    # A row of the month locked: predictions' DELETE has removed the rows before it, in its
    # transaction, when it waits.
    "predictions": WriteFault(
        month="2008-10-01",
        lock="SELECT 1 FROM monitoring.predictions WHERE month = '{month}' AND line = {line} "
        "FOR UPDATE",
        waiting="DELETE FROM monitoring.predictions%",
        where="inside predictions' transaction, its DELETE of the month half done",
    ),
    # drift_report replaces three tables in one transaction: it has deleted the month's
    # drift_reports row when it waits for monthly_quality.
    "drift_report": WriteFault(
        month="2009-03-01",
        lock="LOCK TABLE monitoring.monthly_quality IN EXCLUSIVE MODE",
        waiting="DELETE FROM monitoring.monthly_quality%",
        where="inside drift_report's transaction, after its DELETE from drift_reports",
    ),
}


@pytest.fixture(scope="module")
def monitoring(
    tmp_path_factory: pytest.TempPathFactory, bank_full_path: Path, ingested_home: Path
) -> Iterator[Monitoring]:
    """A champion in a SQLite registry, the faulted months' contacts, and the monitoring tables
    on a private PostgreSQL."""
    folder = tmp_path_factory.mktemp("faults-monitoring")
    uri = one_champion(folder / "registry", bank_full_path)
    home = ingested_copy(ingested_home, folder / "home")
    settings = make_settings(home, bank_full_path, MLFLOW_TRACKING_URI=uri)
    defs = build_definitions(settings)
    months = [fault.month for fault in WRITE_FAULTS.values()]
    with (
        private_postgres() as server,
        dg.instance_for_test(temp_dir=str(settings.dagster_home)) as instance,
    ):
        resources = {
            **defs.resources,
            "monitoring_db": MonitoringDatabase(
                url=server.url, reports_dir=str(settings.reports_dir)
            ),
        }
        assert all(outcome.success for outcome in backfill_contacts(defs, instance, months))
        yield Monitoring(server, settings, instance, resources)


@pytest.mark.parametrize("asset", list(WRITE_FAULTS))
def test_a_restart_inside_a_monitoring_write_leaves_no_partial_month(
    monitoring: Monitoring, asset: str
) -> None:
    fault = WRITE_FAULTS[asset]
    month = date.fromisoformat(fault.month)
    label = f"{month:%Y-%m}"
    first = monitoring.monitor(fault.month)
    assert first.success, failure_message(first)
    before = monitoring.stored(month)
    rows = len(before["predictions"])
    assert rows > 0 and all(len(before[t]) == 1 for t in MONITORING_TABLES[1:])
    report = monitoring.settings.reports_dir / f"drift_{label}.html"
    report_before = report.read_bytes()

    lock = fault.lock.format(month=month, line=int(before["predictions"]["line"].iloc[rows // 2]))
    with restart_while_blocked(monitoring.server, "postgres", lock, fault.waiting) as restart:
        faulted = monitoring.monitor(fault.month)
    returned = restart.landed()

    # The run fails (no retry) and says which database and that nothing changed.
    assert not faulted.success
    message = failure_message(faulted) or ""
    assert f"{asset} {label}: the monitoring database {monitoring.db.describe()} failed" in (
        message
    ), message
    assert "rolled back: the stored rows are as they were" in message
    assert not faulted.asset_materializations_for_node(asset)
    after = monitoring.stored(month)
    # Every table holds the month's complete rows: the earlier run's, or (predictions, which
    # committed before drift_report's fault) this run's.
    rewritten = ("predictions",) if asset == "drift_report" else ()
    for table in MONITORING_TABLES:
        if table in rewritten:
            assert sorted(after[table]["line"]) == sorted(before[table]["line"])
            assert (after[table]["scored_at"] > before[table]["scored_at"].max()).all()
        else:
            pd.testing.assert_frame_equal(after[table], before[table], obj=table)
    lost = len(set(before["predictions"]["line"]) - set(after["predictions"]["line"])) + sum(
        max(0, len(before[t]) - len(after[t])) for t in MONITORING_TABLES[1:]
    )
    assert lost == 0
    assert report.read_bytes() == report_before
    assert not list(report.parent.glob(".*partial"))

    # The month run again, once the server is back: stored once, complete.
    rerun = monitoring.monitor(fault.month)
    recovered = time.monotonic() - returned
    assert rerun.success, failure_message(rerun)
    final = monitoring.stored(month)
    assert len(final["predictions"]) == rows and final["predictions"]["line"].is_unique
    assert (final["predictions"]["scored_at"] > after["predictions"]["scored_at"].max()).all()
    for table in MONITORING_TABLES[1:]:
        assert len(final[table]) == 1, table
        assert final[table]["computed_at"].iloc[0] > before[table]["computed_at"].iloc[0], table

    faults.record(
        faults.FaultRow(
            part=PART_MONITORING,
            fault="server restarted (fast shutdown)",
            strikes=f"{fault.where} ({asset} {label}, {rows} rows)",
            outcome="the run failed, no retry, naming the database; the transaction rolled "
            "back: each table kept the month's complete rows; the rerun stored the month once",
            requests_failed=None,
            rows_lost=lost,
            recovery_s=recovered,
        )
    )


# 2. A training round's MLflow logging, registration and promotion --------------------------------

ROUND_AS_OF = "2008-06-01"
ROUND_MONTHS = ["2008-05-01", "2008-06-01"]


@dataclass
class Training:
    server: PrivatePostgres
    home: Path
    source: Path
    instance: dg.DagsterInstance


@pytest.fixture(scope="module")
def training(
    tmp_path_factory: pytest.TempPathFactory, bank_full_path: Path, ingested_home: Path
) -> Iterator[Training]:
    """May and June 2008 validated in a home of its own, and a private PostgreSQL for MLflow's
    backend stores (one database a test)."""
    home = ingested_copy(ingested_home, tmp_path_factory.mktemp("faults-training") / "home")
    settings = make_settings(home, bank_full_path)
    defs = build_definitions(settings)
    with (
        private_postgres() as server,
        dg.instance_for_test(temp_dir=str(settings.dagster_home)) as instance,
    ):
        assert all(outcome.success for outcome in backfill_contacts(defs, instance, ROUND_MONTHS))
        yield Training(server, home, bank_full_path, instance)


@dataclass
class Registry:
    """MLflow on a database of the training server, and the definitions that track into it."""

    database: str
    uri: str
    settings: Settings
    defs: dg.Definitions
    client: MlflowClient

    def round(self, instance: dg.DagsterInstance, window_months: int) -> dg.ExecuteInProcessResult:
        """A training round as of June 2008 in this process, from the training defaults."""
        run_config = merged(
            QUIET,
            training_defaults(self.settings),
            {"ops": {"training_set": {"config": {"window_months": window_months}}}},
        )
        return self.defs.resolve_job_def("training_job").execute_in_process(
            instance=instance,
            partition_key=ROUND_AS_OF,
            run_config=run_config,
            raise_on_error=False,
        )

    def champion(self) -> str | None:
        current = champion_version(self.client)
        return None if current is None else str(current.version)

    def versions(self) -> dict[str, object]:
        found = self.client.search_model_versions(f"name = '{MODEL_NAME}'")
        return {str(v.version): v for v in found}


@pytest.fixture
def registry_on_postgres(training: Training, monkeypatch: pytest.MonkeyPatch) -> Registry:
    database = f"mlflow_{os.urandom(4).hex()}"
    url = create_database(training.server, database)
    uri = url.replace("postgresql://", "postgresql+psycopg2://")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    settings = make_settings(training.home, training.source, MLFLOW_TRACKING_URI=uri)
    client = MlflowClient(uri)
    client.search_experiments()  # creates MLflow's tables, so the test can lock one
    return Registry(database, uri, settings, build_definitions(settings), client)


def assert_loadable(registry: Registry, versions: list[str]) -> None:
    for version in versions:
        pipeline = load_registered(registry.client, version).pipeline
        assert hasattr(pipeline, "predict_proba"), version


def test_a_restart_while_the_champion_alias_moves_retries_and_promotes(
    training: Training, registry_on_postgres: Registry
) -> None:
    registry = registry_on_postgres
    assert registry.champion() is None
    with restart_while_blocked(
        training.server,
        registry.database,
        "LOCK TABLE registered_model_aliases IN EXCLUSIVE MODE",
        "%INSERT INTO registered_model_aliases%",
    ) as restart:
        result = registry.round(training.instance, window_months=1)
    returned = restart.landed()
    finished = time.monotonic()

    # The alias write is tried again once the server is back, and the round completes.
    assert result.success, failure_message(result)
    [event] = result.asset_materializations_for_node("champion_model")
    promoted = str(event.metadata["champion_version"].value)
    assert event.metadata["promoted"].value is True
    assert registry.champion() == promoted
    tags = registry.client.get_model_version(MODEL_NAME, promoted).tags
    assert tags["promotion_promoted"] == "True"
    assert tags["promotion_reason"].startswith("no champion yet")
    versions = registry.versions()
    assert len(versions) == 5
    assert [v for v, record in versions.items() if record.status != "READY"] == []
    assert_loadable(registry, [promoted])

    faults.record(
        faults.FaultRow(
            part=PART_MLFLOW,
            fault="server restarted (fast shutdown)",
            strikes="while champion_model moves the champion alias (first champion of a round "
            "of 5 candidates)",
            outcome="the alias write was tried again once the server answered; the round "
            "succeeded, the alias on a loadable version, its tags recording the promotion",
            requests_failed=None,
            rows_lost=5 - len(versions),
            recovery_s=finished - returned,
        )
    )


def test_a_restart_while_a_candidate_registers_fails_the_round_and_keeps_the_champion(
    training: Training, registry_on_postgres: Registry
) -> None:
    registry = registry_on_postgres
    first = registry.round(training.instance, window_months=1)
    assert first.success, failure_message(first)
    champion = registry.champion()
    assert champion is not None
    before = set(registry.versions())

    with restart_while_blocked(
        training.server,
        registry.database,
        "LOCK TABLE model_versions IN EXCLUSIVE MODE",
        "INSERT INTO model_versions%",
    ) as restart:
        faulted = registry.round(training.instance, window_months=2)
    returned = restart.landed()
    # The round fails, naming MLflow's store; nothing was promoted and the champion still loads.
    assert not faulted.success
    message = failure_message(faulted) or ""
    assert f"MLflow at {registry.uri} failed while the candidate was logged or registered" in (
        message
    ), message
    assert "the champion is unchanged" in message
    assert not faulted.asset_materializations_for_node("champion_model")
    assert registry.champion() == champion
    # Every version the faulted round registered is whole: READY, its model loads.
    added = sorted(set(registry.versions()) - before, key=int)
    assert len(added) < 5
    assert_loadable(registry, [champion, *added])
    statuses = {registry.versions()[v].status for v in added}
    assert statuses <= {"READY"}
    # The candidate's MLflow run that the restart cut short is ended FAILED, not left RUNNING.
    experiment = registry.client.get_experiment_by_name(EXPERIMENT_NAME).experiment_id
    candidates = registry.client.search_runs(
        [experiment], filter_string=f"tags.`dagster.run_id` = '{faulted.run_id}'"
    )
    ended = {run.data.tags["family"]: run.info.status for run in candidates}
    assert "FAILED" in ended.values() and "RUNNING" not in ended.values(), ended

    # A round after the restart trains, registers and decides as usual.
    again = registry.round(training.instance, window_months=2)
    recovered = time.monotonic() - returned
    assert again.success, failure_message(again)
    [event] = again.asset_materializations_for_node("champion_model")
    decided = registry.client.get_model_version(
        MODEL_NAME, str(event.metadata["challenger_version"].value)
    )
    now = registry.champion()
    assert now == str(event.metadata["champion_version"].value)
    promoted = event.metadata["promoted"].value is True
    if promoted:
        assert now == str(decided.version) and decided.tags["promotion_promoted"] == "True"
    else:
        assert now == champion and decided.tags["promotion_promoted"] == "False"
    assert_loadable(registry, [now])

    faults.record(
        faults.FaultRow(
            part=PART_MLFLOW,
            fault="server restarted (fast shutdown)",
            strikes="while a candidate registers its model version (round of 5 candidates, "
            "a champion in place)",
            outcome=f"the round failed, naming MLflow's store; the cut candidate's run ended "
            f"FAILED, no version half-registered ({len(added)} registered, each whole); the "
            f"champion kept and loadable; the next round ran its promotion rule as usual "
            f"({'promoted its challenger' if promoted else 'kept the champion'})",
            requests_failed=None,
            rows_lost=len(before - set(registry.versions())),
            recovery_s=recovered,
        )
    )


# 3. The daemon's sensors -------------------------------------------------------------------------

DOWN_S = 4.0
LANDED = "2009-02"
# Finer than the loop's default: the recovery time is read from the wait.
POLL_S = 0.5


def ticked_since(loop: Loop, since: float) -> bool:
    """Every sensor has finished a tick (requested runs or skipped) after ``since``."""
    finished = (TickStatus.SUCCESS, TickStatus.SKIPPED)
    return all(
        any(t.timestamp > since and t.status in finished for t in ticks(loop, sensor))
        for sensor in SENSORS
    )


@pytest.fixture
def daemon_on_postgres(
    tmp_path: Path, bank_full_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Loop, Daemon, PrivatePostgres]]:
    """``dagster-daemon run`` (``daemon_loop.Daemon``) on an instance whose storage, like the
    monitoring tables, is on a private PostgreSQL; a champion in a SQLite registry; retraining
    out of reach, so the loop stops at drift_report. The daemon's group is ended at the end."""
    registry = one_champion(tmp_path / "registry", bank_full_path)
    with private_postgres() as server:
        create_database(server, "dagster")
        dagster_home = tmp_path / "dagster_home"
        dagster_home.mkdir()
        (dagster_home / "dagster.yaml").write_bytes((REPO / "dagster.yaml").read_bytes())
        environment = {
            "DAGSTER_HOME": str(dagster_home),
            "DAGSTER_PG_HOST": "127.0.0.1",
            "DAGSTER_PG_PORT": str(server.port),
            "DAGSTER_PG_USER": "postgres",
            "DAGSTER_PG_PASSWORD": "",
            "DAGSTER_PG_DB": "dagster",
            "BANK_MARKETING_HOME": str(tmp_path / "home"),
            "BANK_MARKETING_SOURCE": str(bank_full_path),
            "BANK_MARKETING_DB_URL": create_database(server, "monitoring"),
            "MLFLOW_TRACKING_URI": registry,
            "BANK_MARKETING_SENSOR_INTERVAL_SECONDS": str(INTERVAL_S),
            "BANK_MARKETING_RETRAIN_PREDICTION_DRIFT": "1000",
            "RAY_USAGE_STATS_ENABLED": "0",
            "MLFLOW_DISABLE_TELEMETRY": "true",
        }
        for name, value in environment.items():
            monkeypatch.setenv(name, value)
        settings = Settings.from_env()
        settings.prepare()
        with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
            loop = Loop("postgresql", settings, environment, instance, tmp_path / "daemon.log")
            daemon = Daemon(loop)
            try:
                daemon()
                yield loop, daemon, server
            finally:
                daemon.stop()


def test_a_restart_while_the_sensors_tick_loses_and_repeats_no_run(
    daemon_on_postgres: tuple[Loop, Daemon, PrivatePostgres],
) -> None:
    loop, daemon, server = daemon_on_postgres
    settings = loop.settings
    wait_for("every sensor's first tick", lambda: ticked_since(loop, 0), loop, 180, POLL_S)

    # A month lands while no run can be written: the arrival sensor's tick waits inside its
    # INSERT of the contacts run when the server goes down, for two sensor intervals.
    month_key = f"{LANDED}-01"
    with restart_while_blocked(
        server, "dagster", "LOCK TABLE runs IN EXCLUSIVE MODE", "INSERT INTO runs%", DOWN_S
    ) as restart:
        [landed] = cut_months(settings.source, settings.cache_dir, settings.landing_dir, LANDED)
    returned = restart.landed()
    back = time.time()

    def requested() -> bool:
        return any(
            r.tags.get("dagster/partition") == month_key for r in loop.runs("contacts_job")
        ) and ticked_since(loop, back)

    wait_for("the month's contacts run and every sensor ticking", requested, loop, 120, POLL_S)
    recovered = time.monotonic() - returned
    assert daemon.process.poll() is None, "the daemon exited"

    drift = dg.AssetKey("drift_report")
    wait_for(
        "the landed month's drift report",
        lambda: month_key in loop.instance.get_materialized_partitions(drift),
        loop,
        timeout_s=300,
        poll_s=POLL_S,
    )
    quiet_since = time.time()
    wait_for(
        "two more ticks of every sensor with nothing running",
        lambda: ticked_since(loop, quiet_since + INTERVAL_S) and loop.idle(),
        loop,
        timeout_s=120,
        poll_s=POLL_S,
    )

    runs = loop.runs()
    assert [(r.job_name, r.status) for r in runs if r.status != dg.DagsterRunStatus.SUCCESS] == []
    keys = [r.tags[RUN_KEY_TAG] for r in runs if RUN_KEY_TAG in r.tags]
    assert len(keys) == len(set(keys)), keys
    monthly = [r for r in runs if r.tags.get("dagster/partition") == month_key]
    assert sorted(r.job_name for r in monthly if r.job_name == "contacts_job") == ["contacts_job"]
    scoring = [r for r in monthly if r.tags.get("bank_marketing/trigger") == "score_new_months"]
    assert len(scoring) == 1, [(r.job_name, r.tags) for r in monthly]
    landed_rows = len(read_landed(landed, settings.cache_dir).frame)
    db = MonitoringDatabase(url=settings.db_url)
    month = date.fromisoformat(month_key)
    stored = db.read_predictions(month)
    assert len(stored) == landed_rows and stored["line"].is_unique
    assert len(db.read_drift_reports(month)) == 1
    assert daemon.process.poll() is None, "the daemon exited"

    faults.record(
        faults.FaultRow(
            part=PART_DAGSTER,
            fault=f"server restarted, down {DOWN_S:.0f} s (fast shutdown)",
            strikes="while validate_landed_files' tick inserts the contacts run of a landed "
            f"month, the daemon's sensors ticking every {INTERVAL_S} s",
            outcome="the daemon kept running; its sensors ticked again and asked for the month "
            "once (run key); contacts, predictions and drift_report ran once each",
            requests_failed=sum(r.status != dg.DagsterRunStatus.SUCCESS for r in runs),
            rows_lost=landed_rows - len(stored),
            recovery_s=recovered,
        )
    )
