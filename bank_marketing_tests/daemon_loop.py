"""The loop of ``test_daemon``, shared with the daemon's fault tests: a home the replay filled,
and ``dagster-daemon run`` started on it, stopped by process group.

Import the fixtures ``loop`` and ``daemon`` into a test module to use them. The replay on the
embedded instance (SQLite storage) runs once a session: each test's loop starts from a copy of
what it left.
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.definitions.selector import InstigatorSelector
from dagster._core.scheduler.instigation import TickStatus

from bank_marketing.data.landing import cut_months
from bank_marketing.orchestration.definitions import build_definitions
from bank_marketing.orchestration.replay import replay
from bank_marketing.orchestration.sensors import live_version
from bank_marketing.settings import Settings
from bank_marketing_tests.conftest import REPO, RayCluster, stack_dagster_home

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


def loop_environment(
    home: Path, dagster_home: Path, bank_full_path: Path, ray_cluster: RayCluster
) -> dict[str, str]:
    """What the loop's processes (this one, the daemon, its runs) run with."""
    return {
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


def replay_loop(settings: Settings, instance: dg.DagsterInstance) -> None:
    """The replay up to 2009-01, serving its first champion on the session's Ray."""
    replayed = replay(
        build_definitions(settings),
        instance,
        first_as_of=FIRST_AS_OF,
        last_month=REPLAYED,
        serve=True,
    )
    assert replayed.deployments == [replayed.first_champion]


@dataclass(frozen=True)
class ReplayedHome:
    """The embedded home the session's replay filled (the loop's home, for every SQLite loop),
    and a copy of it as the replay left it."""

    home: Path
    snapshot: Path


@pytest.fixture(scope="session")
def replayed_home(
    tmp_path_factory: pytest.TempPathFactory, bank_full_path: Path, ray_cluster: RayCluster
) -> ReplayedHome:
    """The replay on the embedded instance, once a session (it takes minutes); each SQLite loop
    puts the home back as it left it (:func:`mirror`)."""
    folder = tmp_path_factory.mktemp("daemon-loop")
    home = folder / "home"
    environment = loop_environment(home, home / "dagster", bank_full_path, ray_cluster)
    with pytest.MonkeyPatch.context() as patch:
        for name, value in environment.items():
            patch.setenv(name, value)
        settings = Settings.from_env()
        settings.prepare()
        with dg.DagsterInstance.from_config(str(settings.dagster_home)) as instance:
            replay_loop(settings, instance)
    mirror(home, folder / "snapshot")
    return ReplayedHome(home, folder / "snapshot")


def mirror(source: Path, target: Path) -> None:
    """Make ``target`` a copy of ``source``: what ``source`` lacks is removed, the rest copied.

    SQLite files are copied through SQLite's backup API, into the file already there: a
    connection still open on it (this process's MLflow client, a Serve replica's) then reads
    the copied content, where a new file in its place would leave it reading the old one.
    """
    wanted = {path.relative_to(source) for path in source.rglob("*")}
    databases = {path for path in wanted if path.suffix == ".db"}
    if target.exists():
        # Deepest first, so a folder is empty when its turn comes.
        for path in sorted(target.rglob("*"), reverse=True):
            relative = path.relative_to(target)
            journal = relative.with_name(relative.name.rsplit("-", 1)[0])
            if relative in wanted or ("-" in relative.name and journal in databases):
                continue
            if path.is_dir() and not path.is_symlink():
                path.rmdir()
            else:
                path.unlink()
    target.mkdir(parents=True, exist_ok=True)
    for relative in sorted(wanted):
        origin, copy = source / relative, target / relative
        if origin.is_dir():
            copy.mkdir(exist_ok=True)
        elif relative in databases:
            with closing(sqlite3.connect(origin)) as read, closing(sqlite3.connect(copy)) as write:
                read.backup(write)
        else:
            shutil.copy2(origin, copy)


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
    machine's PostgreSQL.

    On SQLite, the session's replay (``replayed_home``) as it left it: its home put back, and
    the service rolled over to the version the replay put live, in case an earlier test's loop
    moved it. On PostgreSQL, a replay of its own.
    """
    storage = getattr(request, "param", "sqlite")
    if storage == "postgresql":
        home = tmp_path / "home"
        database = request.getfixturevalue("postgres_database")
        dagster_home, postgres = stack_dagster_home(tmp_path, database)
    else:
        replayed: ReplayedHome = request.getfixturevalue("replayed_home")
        home = replayed.home
        mirror(replayed.snapshot, home)
        dagster_home, postgres = home / "dagster", {}
    environment = {
        **postgres,
        **loop_environment(home, dagster_home, bank_full_path, ray_cluster),
    }
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    settings = Settings.from_env()
    settings.prepare()
    with dg.DagsterInstance.from_config(str(settings.dagster_home)) as instance:
        if storage == "postgresql":
            replay_loop(settings, instance)
        else:
            live = live_version(instance)
            assert live is not None, "the replay recorded no live version"
            serving = build_definitions(settings).resources["serving"]
            assert serving.roll_over(live).version == live
        yield Loop(storage, settings, environment, instance, tmp_path / "daemon.log")


class Daemon:
    """``dagster-daemon run`` on the loop's instance: each call (re)starts it, in a process group
    of its own (with the code server it starts, and the runs that server launches)."""

    def __init__(self, loop: Loop) -> None:
        self.loop = loop
        self.processes: list[subprocess.Popen] = []  # every daemon started, oldest first

    @property
    def process(self) -> subprocess.Popen:
        """The daemon started last."""
        return self.processes[-1]

    def __call__(self) -> None:
        # A daemon that died (killed by a test) is restarted as a supervisor would: without
        # touching what outlived it in its group (its code server, the runs that server started).
        self.stop(alive_only=True)
        with self.loop.log.open("a") as log:
            self.processes.append(
                subprocess.Popen(
                    [
                        str(Path(sys.executable).with_name("dagster-daemon")),
                        "run",
                        "-w",
                        str(REPO / "workspace.yaml"),
                    ],
                    cwd=self.loop.settings.dagster_home,
                    env={**os.environ, **self.loop.environment},
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )

    def stop(self, alive_only: bool = False) -> None:
        """End every group started (or only those whose daemon still runs), even one whose daemon
        died on its own or was killed: its code server and runs may outlive it."""
        for process in self.processes:
            if alive_only and process.poll() is not None:
                continue
            for sent in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(process.pid, sent)
                except ProcessLookupError:
                    break
                if sent == signal.SIGTERM:
                    try:
                        process.wait(timeout=60)
                    except subprocess.TimeoutExpired:
                        continue
                    # The leader is gone; wait for the rest of its group to follow it.
                    if _group_ended(process.pid, timeout_s=60):
                        break
            process.wait()


def _group_ended(group: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.5)
    return False


@pytest.fixture
def daemon(loop: Loop) -> Iterator[Daemon]:
    """Starts ``dagster-daemon run`` on the loop's instance when called; each call restarts it.
    Every group it started is ended at the end of the test."""
    started = Daemon(loop)
    yield started
    started.stop()


def wait_for(
    what: str, done: Callable[[], bool], loop: Loop, timeout_s: float, poll_s: float = 2
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if done():
            return
        time.sleep(poll_s)
    tail = loop.log.read_text()[-4000:] if loop.log.exists() else ""
    states = [(r.job_name, r.tags.get("dagster/partition"), r.status.value) for r in loop.runs()]
    raise AssertionError(f"{what} not within {timeout_s} s; runs {states}; daemon log:\n{tail}")


# Three sensor intervals: the proof that nothing more follows is every sensor's two ticks after
# the quiet began (``settled``), which a busy machine can delay well beyond this.
QUIET_S = 6


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
    "restore_live_version",
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
