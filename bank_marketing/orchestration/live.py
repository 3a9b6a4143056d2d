"""``make live``: the loop under the real Dagster daemon, fed one month at a time.

It loads the history up to a first champion (the whole-file path, in this process), starts the
Dagster webserver and daemon on the embedded instance and a Ray head for the prediction service,
then lands one month of the UCI history every few seconds in the landing location. From there the
daemon does everything: ``validate_landed_files``, ``score_new_months``, ``retrain_on_drift``,
``deploy_new_champion``. What it does is printed as it happens and shown in the Dagster UI.
Ctrl-C stops the processes it started.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import dagster as dg
import pandas as pd

from bank_marketing.data.landing import cut_months
from bank_marketing.orchestration.partitions import monthly_partitions
from bank_marketing.orchestration.runner import (
    backfill_contacts,
    failure_message,
    run_ingest,
    run_training,
)
from bank_marketing.orchestration.sensors import TRIGGER_TAG
from bank_marketing.serving.rollout import ServeCluster
from bank_marketing.settings import Settings

WORKSPACE = Path(__file__).resolve().parents[2] / "workspace.yaml"
LIVE = {TRIGGER_TAG: "live (history)"}
STOP_TIMEOUT_S = 30
ENDED = [dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED]


class LiveError(RuntimeError):
    """A step before the daemon took over failed; the message says which and why."""


def live(
    settings: Settings,
    *,
    first_as_of: str,
    every_seconds: float,
    webserver_port: int = 3000,
    say: Callable[[str], None] = print,
) -> None:
    """Run the loop live until interrupted (KeyboardInterrupt ends it cleanly)."""
    if not WORKSPACE.is_file():
        raise LiveError(f"{WORKSPACE} is missing: make live runs from a checkout of the project")
    from bank_marketing.orchestration.definitions import build_definitions

    defs = build_definitions(settings)
    with dg.DagsterInstance.get() as instance:
        load_history(defs, instance, first_as_of, say)
    months = [key[:7] for key in monthly_partitions.get_partition_keys() if key > first_as_of]
    landed = {path.name for path in settings.landing_dir.glob("contacts-*.csv")}
    months = [month for month in months if f"contacts-{month}.csv" not in landed]
    logs = settings.logs_dir
    logs.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        stack.enter_context(ray_head(settings, say))
        for name, command in (
            (
                "dagster-webserver",
                ["-h", "127.0.0.1", "-p", str(webserver_port), "-w", str(WORKSPACE)],
            ),
            ("dagster-daemon", ["run", "-w", str(WORKSPACE)]),
        ):
            stack.enter_context(
                background_process(name, command, settings, logs / f"{name}.log", say)
            )
        say(
            f"Dagster UI: http://127.0.0.1:{webserver_port} (runs, sensors, automation); "
            f"the service: {settings.serve_url}/docs; logs in {logs}"
        )
        watch = RunWatch(stack.enter_context(dg.DagsterInstance.get()), say)
        for month in months:
            (path,) = cut_months(
                settings.source, settings.cache_dir, settings.landing_dir, month
            ) or (None,)
            say(f"{month}: landed {path}" if path else f"{month}: no calls, nothing to land")
            watch.follow(every_seconds)
        say("every month has landed; the daemon keeps running until Ctrl-C")
        while True:
            watch.follow(3600)


class RunWatch:
    """Says what the daemon's runs did, once each ends: the console's view of the Dagster UI."""

    def __init__(self, instance: dg.DagsterInstance, say: Callable[[str], None]) -> None:
        self.instance = instance
        self.say = say
        # Runs still going when it starts are told when they end.
        self.told = {run.run_id for run in instance.get_runs(dg.RunsFilter(statuses=ENDED))}

    def follow(self, seconds: float) -> None:
        """Report runs as they end, for ``seconds``."""
        deadline = time.monotonic() + seconds
        while True:
            for run in reversed(self.instance.get_runs(dg.RunsFilter(statuses=ENDED))):
                if run.run_id not in self.told:
                    self.told.add(run.run_id)
                    self.say(self.describe(run))
            if time.monotonic() >= deadline:
                return
            time.sleep(min(2.0, max(0.0, deadline - time.monotonic())))

    def describe(self, run: dg.DagsterRun) -> str:
        month = run.tags.get("dagster/partition", "")[:7]
        started_by = run.tags.get(TRIGGER_TAG, "?")
        what = {
            "contacts_job": f"{month}: contacts validated",
            "training_job": f"training round as of {month}",
            "deployment_job": "rollover of the service",
        }.get(run.job_name, f"{month}: predictions and drift report")
        line = f"  {what} ({started_by}): {run.status.value.lower()}"
        if run.status != dg.DagsterRunStatus.SUCCESS:
            return f"{line}; see run {run.run_id} in the Dagster UI"
        facts = self._facts(run)
        return f"{line}{'; ' + facts if facts else ''}"

    def _facts(self, run: dg.DagsterRun) -> str:
        for key, fact in FACTS.items():
            records = self.instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=dg.AssetKey(key)), limit=5
            ).records
            for record in records:
                if record.run_id == run.run_id and record.asset_materialization is not None:
                    meta = {k: v.value for k, v in record.asset_materialization.metadata.items()}
                    return fact(meta)
        return ""


def _drift(meta: dict) -> str:
    return (
        f"prediction drift {float(meta.get('prediction_drift', 'nan')):.3f}, "
        f"ROC AUC {float(meta.get('roc_auc', 'nan')):.3f} by v{meta.get('model_version')}"
    )


def _champion(meta: dict) -> str:
    version = meta.get("champion_version")
    return f"new champion v{version}" if meta.get("promoted") else f"champion stays v{version}"


FACTS: dict[str, Callable[[dict], str]] = {
    "drift_report": _drift,
    "champion_model": _champion,
    "production_deployment": lambda meta: f"serving v{meta.get('live_version')}",
}


def bootstrap(
    settings: Settings,
    *,
    first_as_of: str,
    through: str | None,
    say: Callable[[str], None] = print,
) -> list[Path]:
    """What the compose stack does on its first start: the history up to a first champion, then
    the months after it through ``through`` landed for the daemon, so Grafana and the service
    are never empty. Safe to repeat: a champion already there is kept, and a month landed again
    writes the same bytes, which the arrival sensor ignores."""
    from bank_marketing.orchestration.definitions import build_definitions

    defs = build_definitions(settings)
    with dg.DagsterInstance.get() as instance:
        load_history(defs, instance, first_as_of, say)
    if through is None or f"{through}-01" <= first_as_of:
        return []
    first_landed = (pd.Timestamp(first_as_of) + pd.offsets.MonthBegin(1)).strftime("%Y-%m")
    written = cut_months(
        settings.source, settings.cache_dir, settings.landing_dir, first_landed, through
    )
    say(f"landed {len(written)} month(s), {first_landed}..{through}, in {settings.landing_dir}")
    return written


def load_history(
    defs: dg.Definitions, instance: dg.DagsterInstance, first_as_of: str, say: Callable[[str], None]
) -> None:
    """The whole-file history up to ``first_as_of`` and a first champion, unless already there."""
    if instance.fetch_materializations(dg.AssetKey("champion_model"), limit=1).records:
        say("a champion exists on this instance: the history is not loaded again")
        return
    say(f"loading the history up to {first_as_of[:7]} and training a first champion...")
    ingest = run_ingest(defs, instance, tags=LIVE)
    if not ingest.success:
        raise LiveError(f"raw_contacts: {failure_message(ingest)}")
    history = [key for key in monthly_partitions.get_partition_keys() if key <= first_as_of]
    for outcome in backfill_contacts(defs, instance, history, tags=LIVE):
        if not outcome.success:
            raise LiveError(f"contacts {outcome.partition_key[:7]}: {outcome.error}")
    trained = run_training(instance, first_as_of, tags=LIVE, in_process=True)
    if not trained.success:
        raise LiveError(f"training as of {first_as_of[:7]}: {failure_message(trained)}")


@contextmanager
def ray_head(settings: Settings, say: Callable[[str], None]) -> Iterator[None]:
    """A Ray head for the service, started here when none answers; stopped on exit if so."""
    cluster = ServeCluster(settings.ray_dashboard_url, settings.serve_url, "")
    if cluster.reachable() or not cluster.is_local():
        yield
        return
    say(f"starting a Ray head (dashboard {settings.ray_dashboard_url})...")
    cluster.start_local()
    try:
        yield
    finally:
        stopped = cluster.stop_local()
        say(f"stopped the Ray head it started ({stopped} processes)")


@contextmanager
def background_process(
    name: str, arguments: list[str], settings: Settings, log: Path, say: Callable[[str], None]
) -> Iterator[subprocess.Popen]:
    """One of this environment's commands in its own process group, ended with its group."""
    executable = Path(sys.executable).with_name(name)
    with log.open("a") as output:
        process = subprocess.Popen(
            [str(executable), *arguments],
            cwd=settings.dagster_home,
            env={**os.environ, "DAGSTER_HOME": str(settings.dagster_home)},
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    say(f"started {name} (pid {process.pid})")
    try:
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        say(f"stopped {name}")
