"""The loop under the real Dagster daemon: monthly files land, and everything follows by itself.

The instance is first filled as ``make run`` fills it: a replay (in this process) of a first
champion as of 2008-12 and the month 2009-01, landed, scored and rolled out. Then
``dagster-daemon run`` starts on it and, with no launch by the test, asks for nothing the replay
did, and turns two more landed months into contacts, predictions and drift_report runs, a retrain
as the policy decides and a rollover of the service on the test session's Ray. Then: a restart
requests nothing new, the same file again requests nothing, a broken file makes one failed run and
leaves the month's data, and a file outside the partitions is skipped with its reason.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import httpx
import pytest
from dagster._core.definitions.selector import InstigatorSelector
from dagster._core.scheduler.instigation import TickStatus
from mlflow import MlflowClient

from bank_marketing.data.landing import cut_months
from bank_marketing.orchestration.definitions import build_definitions
from bank_marketing.orchestration.replay import replay
from bank_marketing.settings import Settings
from bank_marketing.training.registry import CHAMPION_ALIAS
from bank_marketing.training.tracking import MODEL_NAME
from bank_marketing_tests.conftest import REPO, RayCluster, stack_dagster_home

pytestmark = pytest.mark.integration

FIRST_AS_OF = "2008-12-01"
REPLAYED = "2009-01-01"
LANDED = ["2009-02", "2009-03"]
INTERVAL_S = 2
ACTIVE = (
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
)
TRIGGER = "bank_marketing/trigger"


@dataclass
class Loop:
    storage: str  # "sqlite" or "postgresql": where the Dagster instance keeps its state
    settings: Settings
    environment: dict[str, str]
    instance: dg.DagsterInstance
    log: Path

    def runs(self, job: str | None = None) -> list[dg.DagsterRun]:
        """The instance's runs, oldest first."""
        runs = self.instance.get_runs(dg.RunsFilter(job_name=job) if job else None)
        return list(reversed(runs))

    def idle(self) -> bool:
        return not self.instance.get_runs(dg.RunsFilter(statuses=list(ACTIVE)))


@pytest.fixture
def loop(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    bank_full_path: Path,
    ray_cluster: RayCluster,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Loop]:
    """A home the replay filled up to 2009-01, its daemon not yet started; the Dagster instance
    on SQLite (the embedded default) or, with the stack's dagster.yaml, on a fresh database of the
    machine's PostgreSQL."""
    home = tmp_path / "home"
    storage = getattr(request, "param", "sqlite")
    if storage == "postgresql":
        database = request.getfixturevalue("postgres_database")
        dagster_home, postgres = stack_dagster_home(tmp_path, database)
    else:
        dagster_home, postgres = home / "dagster", {}
    environment = {
        **postgres,
        "BANK_MARKETING_HOME": str(home),
        "BANK_MARKETING_SOURCE": str(bank_full_path),
        "DAGSTER_HOME": str(dagster_home),
        "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}",
        "RAY_DASHBOARD_ADDRESS": ray_cluster.dashboard_url,
        "BANK_MARKETING_SERVE_URL": f"{ray_cluster.http_url}/daemon-test",
        "BANK_MARKETING_SENSOR_INTERVAL_SECONDS": str(INTERVAL_S),
        "RAY_USAGE_STATS_ENABLED": "0",
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    settings = Settings.from_env()
    settings.prepare()
    defs = build_definitions(settings)
    with dg.DagsterInstance.from_config(str(settings.dagster_home)) as instance:
        replayed = replay(
            defs,
            instance,
            first_as_of=FIRST_AS_OF,
            last_month=REPLAYED,
            serve=True,
        )
        assert replayed.deployments == [replayed.first_champion]
        yield Loop(storage, settings, environment, instance, tmp_path / "daemon.log")


@pytest.fixture
def daemon(loop: Loop) -> Iterator[Callable[[], None]]:
    """Starts ``dagster-daemon run`` on the loop's instance; each call restarts it. Ended by its
    process group at the end of the test."""
    processes: list[subprocess.Popen] = []

    def stop() -> None:
        while processes:
            process = processes.pop()
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()

    def start() -> None:
        stop()
        with loop.log.open("a") as log:
            processes.append(
                subprocess.Popen(
                    [
                        str(Path(sys.executable).with_name("dagster-daemon")),
                        "run",
                        "-w",
                        str(REPO / "workspace.yaml"),
                    ],
                    cwd=loop.settings.dagster_home,
                    env={**os.environ, **loop.environment},
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )

    yield start
    stop()


def wait_for(what: str, done: Callable[[], bool], loop: Loop, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if done():
            return
        time.sleep(2)
    tail = loop.log.read_text()[-4000:] if loop.log.exists() else ""
    states = [(r.job_name, r.tags.get("dagster/partition"), r.status.value) for r in loop.runs()]
    raise AssertionError(f"{what} not within {timeout_s} s; runs {states}; daemon log:\n{tail}")


# Long enough for every sensor and the automation to have ticked a few times on a busy machine.
QUIET_S = 12


def settled(loop: Loop, quiet_s: float = QUIET_S) -> Callable[[], bool]:
    """True once no run has been active or created for ``quiet_s`` and every sensor has ticked
    twice since then: under load a sensor's tick can come later than ``quiet_s`` after the run
    it would react to (deploy_new_champion after a training round), so time alone is no proof."""
    last = {"count": -1, "since": time.monotonic(), "wall": time.time()}

    def check() -> bool:
        count = len(loop.runs())
        if count != last["count"] or not loop.idle():
            last.update(count=count, since=time.monotonic(), wall=time.time())
            return False
        if time.monotonic() - last["since"] < quiet_s:
            return False
        return every_sensor_ticked(loop, last["wall"])()

    return check


SENSORS = [
    "validate_landed_files",
    "score_new_months",
    "retrain_on_drift",
    "retrain_on_grafana_alert",
    "deploy_new_champion",
]


def ticks(loop: Loop, sensor: str) -> list:
    """The sensor's newest ticks on the loop's instance, newest first."""
    selector = InstigatorSelector(
        location_name="bank_marketing", repository_name="__repository__", name=sensor
    ).get_id()
    return list(loop.instance.schedule_storage.get_ticks("", selector, limit=50))


def skip_reasons(loop: Loop, sensor: str) -> list[str]:
    """Why the sensor's finished ticks that requested nothing did so, newest first (a tick still
    under way, which the 2 s interval makes likely, has no reason yet)."""
    return [
        tick.skip_reason or "" for tick in ticks(loop, sensor) if tick.status == TickStatus.SKIPPED
    ]


def every_sensor_ticked(loop: Loop, since: float, times: int = 2) -> Callable[[], bool]:
    """True once every sensor and the automation have ticked ``times`` times since ``since``."""
    return lambda: all(
        sum(tick.timestamp > since for tick in ticks(loop, sensor)) >= times for sensor in SENSORS
    )


def land(loop: Loop, first: str, through: str | None = None) -> list[Path]:
    source = loop.settings.source
    return cut_months(source, loop.settings.cache_dir, loop.settings.landing_dir, first, through)


@pytest.mark.parametrize("loop", ["sqlite", "postgresql"], indirect=True)
def test_landed_months_run_the_whole_loop_under_the_daemon(
    loop: Loop, daemon: Callable[[], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    # On PostgreSQL storage the same loop without the retraining round and the bad files (which
    # SQLite storage shows): the policy's threshold is out of reach there.
    retrains = loop.storage == "sqlite"
    if not retrains:
        loop.environment["BANK_MARKETING_RETRAIN_PREDICTION_DRIFT"] = "1000"
    replayed = {run.run_id for run in loop.runs()}
    land(loop, LANDED[0], LANDED[-1])
    daemon()

    drift = dg.AssetKey("drift_report")
    keys = {f"{month}-01" for month in LANDED}
    wait_for(
        "drift reports of the landed months",
        lambda: keys <= loop.instance.get_materialized_partitions(drift),
        loop,
        timeout_s=300,
    )
    wait_for("the loop to settle", settled(loop), loop, timeout_s=600)

    # Every month went through contacts, then predictions and drift_report, each started by the
    # sensor or the automation, and every run succeeded.
    runs = loop.runs()
    assert [r for r in runs if r.status != dg.DagsterRunStatus.SUCCESS] == []
    # Nothing the replay did was asked for again: every run the daemon made is for a new month.
    daemon_runs = [r for r in runs if r.run_id not in replayed]
    assert all(r.tags.get("dagster/partition") != REPLAYED for r in daemon_runs)
    contacts = [r for r in daemon_runs if r.job_name == "contacts_job"]
    assert sorted(r.tags["dagster/partition"] for r in contacts) == sorted(keys)
    assert {r.tags[TRIGGER] for r in contacts} == {"validate_landed_files"}
    scoring = [r for r in daemon_runs if r.tags.get(TRIGGER) == "score_new_months"]
    assert sorted(r.tags["dagster/partition"] for r in scoring) == sorted(keys)
    for run in scoring:
        assert run.asset_selection == {dg.AssetKey("predictions"), drift}

    # Retraining as the policy decides: the default cooldown of two months after the first round
    # as of 2008-12 allows one round, as of 2009-02 or 2009-03 (whichever report came first).
    trainings = [r for r in daemon_runs if r.job_name == "training_job"]
    assert len(trainings) == int(retrains), [r.tags for r in trainings]
    for training in trainings:
        assert training.tags[TRIGGER] == "retrain_on_drift"
        assert training.tags["dagster/partition"] in {"2009-02-01", "2009-03-01"}
        # A round the daemon launches starts from the file of training defaults (the session's
        # quick one), as any round without run config of its own does.
        ops = training.run_config["ops"]
        assert ops["xgboost_candidate"]["config"] == {"n_estimators": 100, "learning_rate": 0.1}

    # The service serves the champion; every champion the loop saw was rolled out once.
    champion = MlflowClient(loop.settings.mlflow_tracking_uri).get_model_version_by_alias(
        MODEL_NAME, CHAMPION_ALIAS
    )
    # The replay's rollover of the first champion counts: the daemon did not repeat it.
    deployments = [r for r in runs if r.job_name == "deployment_job"]
    assert {r.tags[TRIGGER] for r in deployments} == {"deploy_new_champion"}
    deployed = [r.tags["bank_marketing/champion_version"] for r in deployments]
    assert len(deployed) == len(set(deployed)) and deployed[-1] == str(champion.version)
    model = httpx.get(f"{loop.settings.serve_url}/model", timeout=10).json()
    assert str(model["version"]) == str(champion.version)

    # A restart asks for nothing already done, and the same file landed again asks for nothing.
    before = len(loop.runs())
    land(loop, "2009-02")
    restarted = time.time()
    daemon()
    wait_for(
        "every sensor to tick twice after the restart",
        every_sensor_ticked(loop, restarted),
        loop,
        timeout_s=120,
    )
    assert len(loop.runs()) == before

    if loop.storage == "postgresql":
        # What follows is how the arrival sensor handles bad files, the same on either storage:
        # the SQLite instance shows it.
        return

    # A broken file: one failed run with the loader's message; the month keeps its data.
    contacts_key = dg.AssetKey("contacts")
    stored = loop.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=contacts_key, asset_partitions=["2009-02-01"]), limit=1
    ).records[0]
    february = loop.settings.landing_dir / "contacts-2009-02.csv"
    text = february.read_text()
    february.write_text(text[: len(text) // 2].rsplit(";", 1)[0])  # cut inside a record
    # A file outside the partitions: skipped with its reason, no run.
    (loop.settings.landing_dir / "contacts-2011-01.csv").write_text(text.replace('"feb"', '"jan"'))
    wait_for(
        "the broken file's run",
        lambda: any(
            r.tags.get("bank_marketing/landed_file") == "contacts-2009-02.csv"
            and r.status == dg.DagsterRunStatus.FAILURE
            for r in loop.runs("contacts_job")
        ),
        loop,
        timeout_s=180,
    )
    wait_for("the loop to settle after the broken file", settled(loop), loop, timeout_s=120)
    new = loop.runs()[before:]
    assert [(r.job_name, r.status) for r in new] == [("contacts_job", dg.DagsterRunStatus.FAILURE)]
    failure = loop.instance.all_logs(new[0].run_id, of_type=dg.DagsterEventType.STEP_FAILURE)
    message = failure[0].dagster_event.step_failure_data.user_failure_data.description
    assert "contacts-2009-02.csv" in message and "truncated" in message
    latest = loop.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=contacts_key, asset_partitions=["2009-02-01"]), limit=1
    ).records[0]
    assert latest.storage_id == stored.storage_id
    # The sensor's latest skipped tick says why the file outside the partitions starts nothing.
    reason = skip_reasons(loop, "validate_landed_files")[0]
    assert "contacts-2011-01.csv names 2011-01, outside the data's months 2008-05..2010-11" in (
        reason
    )
