"""Fault matrix rows of the MLflow tracking server (RELIABILITY.md): unreachable while a month is
scored, and during a rollover of the service.

The registry sits behind a real ``mlflow server`` (its backend store a SQLite file, the model
files on this machine's disk), which the tests stop and start again by its process group.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import httpx
import mlflow
import pytest
from mlflow.exceptions import MlflowException

from bank_marketing.orchestration.assets.contacts import contacts, raw_contacts
from bank_marketing.orchestration.assets.deployment import production_deployment
from bank_marketing.orchestration.assets.monitoring import predictions
from bank_marketing.orchestration.definitions import build_definitions, deployment_job
from bank_marketing.orchestration.resources import ServingCluster
from bank_marketing.orchestration.runner import backfill_contacts, failure_message, run_deployment
from bank_marketing.serving.contract import EXAMPLE_RECORD
from bank_marketing_tests.conftest import RayCluster, free_port, ingested_copy, make_settings
from bank_marketing_tests.faults import FaultRow, Probe, record, stored_predictions
from bank_marketing_tests.registries import register_two_versions

pytestmark = [pytest.mark.integration, pytest.mark.faults]

MONTH, MONTH_CONTACTS = "2008-10-01", 80
APP, ROUTE = "faults-mlflow", "/faults-mlflow"
# MLflow's client retries an unreachable server 7 times with a growing backoff by default
# (minutes); these make the failure come within seconds, as an operator would configure it.
FAST_FAILURE = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}


class MlflowServer:
    """``mlflow server`` on a registry's backend store, stopped and started by process group."""

    def __init__(self, backend_uri: str, folder: Path) -> None:
        self.backend_uri = backend_uri
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = folder / "mlflow-server.log"
        self.process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        return [
            *(sys.executable, "-m", "mlflow", "server"),
            *("--backend-store-uri", self.backend_uri),
            *("--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"),
        ]

    def start(self, timeout_s: float = 90) -> float:
        """Start it and wait until it answers; returns the seconds that took."""
        started = time.monotonic()
        with self.log.open("ab") as output:
            self.process = subprocess.Popen(
                self.command(),
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"},
            )
        while time.monotonic() - started < timeout_s:
            if self.process.poll() is not None:
                raise AssertionError(f"mlflow server exited: {self.log.read_text()[-2000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return time.monotonic() - started
            time.sleep(0.5)
        raise AssertionError(f"mlflow server did not answer within {timeout_s} s")

    def stop(self) -> None:
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        self.process = None


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory, bank_full_path: Path) -> dict[str, Any]:
    return register_two_versions(tmp_path_factory.mktemp("faults-mlflow"), bank_full_path)


@pytest.fixture
def server(registry: dict[str, Any], tmp_path: Path) -> Iterator[MlflowServer]:
    server = MlflowServer(registry["uri"], tmp_path)
    server.start()
    try:
        yield server
    finally:
        # A run the test's Dagster runs left active is ended while its server still answers:
        # later, ending it would wait out MLflow's default retries against a stopped server.
        while mlflow.active_run() is not None:
            with contextlib.suppress(MlflowException):
                mlflow.end_run()
        server.stop()


@pytest.fixture
def fast_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in FAST_FAILURE.items():
        monkeypatch.setenv(name, value)


def test_mlflow_down_while_a_month_is_scored_fails_clearly_and_writes_nothing(
    server: MlflowServer,
    fast_failure: None,
    tmp_path: Path,
    bank_full_path: Path,
    ingested_home: Path,
) -> None:
    home = ingested_copy(ingested_home, tmp_path / "home")
    settings = make_settings(home, bank_full_path, MLFLOW_TRACKING_URI=server.url)
    defs = build_definitions(settings)
    with dg.instance_for_test(temp_dir=str(settings.dagster_home)) as instance:
        assert all(o.success for o in backfill_contacts(defs, instance, [MONTH]))

        def score() -> dg.ExecuteInProcessResult:
            return dg.materialize(
                [raw_contacts, contacts, predictions],
                selection=[predictions],
                partition_key=MONTH,
                instance=instance,
                resources=defs.resources,
                raise_on_error=False,
            )

        server.stop()
        struck = time.monotonic()
        failed = score()
        failed_after_s = time.monotonic() - struck
        message = failure_message(failed) or ""
        assert not failed.success
        assert server.url in message, message
        assert stored_predictions(settings.db_url) == 0

        back = time.monotonic()
        server.start()
        rerun = score()
        recovered_s = time.monotonic() - back
        assert rerun.success, failure_message(rerun)
        rows = stored_predictions(settings.db_url)

    assert rows == MONTH_CONTACTS
    record(
        FaultRow(
            part="monitoring: predictions",
            fault="the MLflow tracking server stopped",
            strikes="when a month is scored (the champion is looked up and loaded)",
            outcome=f"the run failed after {failed_after_s:.1f} s naming the tracking server "
            f"({message.split(':')[0]}: ...); nothing written; the rerun after the server's "
            f"return stored the month's {rows} predictions",
            requests_failed=None,
            rows_lost=0,
            recovery_s=recovered_s,
        )
    )


def test_mlflow_down_during_a_rollover_fails_it_clearly_and_the_service_keeps_answering(
    server: MlflowServer,
    fast_failure: None,
    registry: dict[str, Any],
    ray_cluster: RayCluster,
) -> None:
    from ray import serve

    first, second = registry["versions"]
    serve_url = f"{ray_cluster.http_url}{ROUTE}"
    serving = ServingCluster(
        dashboard_url=ray_cluster.dashboard_url,
        serve_url=serve_url,
        tracking_uri=server.url,
        start_local=False,
        app_name=APP,
    )
    defs = dg.Definitions(
        assets=[production_deployment], jobs=[deployment_job], resources={"serving": serving}
    )
    probe = Probe(serve_url, EXAMPLE_RECORD)
    try:
        with dg.instance_for_test() as instance:
            result = run_deployment(defs, instance, first)
            assert result.success, failure_message(result)
            probe.start()
            time.sleep(2)

            server.stop()
            struck = time.monotonic()
            failed = run_deployment(defs, instance, second)
            failed_after_s = time.monotonic() - struck
            message = failure_message(failed) or ""
            assert not failed.success
            assert server.url in message, message
            time.sleep(2)
            model = httpx.get(f"{serve_url}/model", timeout=10).json()
            assert model["version"] == first

            back = time.monotonic()
            server.start()
            result = run_deployment(defs, instance, second)
            recovered_s = time.monotonic() - back
            assert result.success, failure_message(result)
            time.sleep(1)
            probe.finish()
    finally:
        probe.stop.set()
        serve.delete(APP)

    assert not probe.failures, probe.failures[:5]
    assert probe.versions[0] == first and probe.versions[-1] == second
    record(
        FaultRow(
            part="serving: rollover",
            fault="the MLflow tracking server stopped",
            strikes="when production_deployment rolls the service over to another version",
            outcome=f"the rollover failed after {failed_after_s:.1f} s naming the tracking "
            f"server, before touching the service; v{first} kept answering all "
            f"{probe.answered()} requests; the rollover after the server's return served "
            f"v{second}",
            requests_failed=len(probe.failures),
            rows_lost=None,
            recovery_s=recovered_s,
        )
    )
