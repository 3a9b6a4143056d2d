"""Fault matrix rows of the Ray head (RELIABILITY.md): killed under steady load, in the stack and
on the embedded defaults, while ``production_deployment`` has a version pinned.

The test runs a Ray head of its own, on free ports, never the session's: first as the stack's
``serving`` container runs it (its command from ``docker/compose.yaml``, run natively), then as
the embedded defaults do (``ServingCluster`` starts a local head). The head is killed by the PIDs
of its processes (``ServeCluster.local_head``: found by its session folder, and their children),
as an out-of-memory kill or a crash of the node would. ``restore_live_version`` is evaluated
every 2 s, as the daemon does with a 2 s interval, and the runs it requests are executed in this
process.
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
import psutil
import pytest
import yaml

from bank_marketing.orchestration.assets.deployment import production_deployment
from bank_marketing.orchestration.definitions import deployment_job
from bank_marketing.orchestration.resources import ServingCluster
from bank_marketing.orchestration.runner import failure_message, run_deployment
from bank_marketing.orchestration.sensors import LiveRecord, restore_live_version
from bank_marketing.serving.contract import EXAMPLE_RECORD
from bank_marketing.serving.rollout import SERVE_CONFIG, ServeCluster
from bank_marketing_tests.conftest import REPO, free_port
from bank_marketing_tests.faults import FaultRow, Probe, answering_again, record
from bank_marketing_tests.registries import register_two_versions

pytestmark = [pytest.mark.integration, pytest.mark.faults]

TICK_S = 2.0
# The stack's head takes a token (RAY_AUTH_MODE=token), as docker/.env sets it.
RAY_TOKEN = "faults-ray-head-0123456789abcdef0123456789abcdef"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory, bank_full_path: Path) -> dict[str, Any]:
    """Two registered versions; the champion alias on the first."""
    return register_two_versions(tmp_path_factory.mktemp("faults-ray-head"), bank_full_path)


class Ports:
    def __init__(self) -> None:
        self.gcs, self.dashboard, self.serve, self.metrics = (free_port() for _ in range(4))
        self.dashboard_url = f"http://127.0.0.1:{self.dashboard}"
        self.serve_url = f"http://127.0.0.1:{self.serve}"


def kill_head(dashboard_url: str) -> int:
    """SIGKILL every process of the head (``ServeCluster.local_head``); how many there were."""
    processes = ServeCluster(dashboard_url, "", "").local_head()
    for process in processes:
        with contextlib.suppress(psutil.Error):
            process.kill()
    psutil.wait_procs(processes, timeout=30)
    return len(processes)


def serving_container(ports: Ports, tracking_uri: str, folder: Path) -> subprocess.Popen:
    """The stack's ``serving`` command (docker/compose.yaml), run natively on ``ports``.

    Only addresses change: the ports, the Serve config's port, and ``RAY_ADDRESS`` so that
    ``ray status`` and ``serve start`` reach this head among the others on this machine. Its own
    process group, ended with SIGKILL: its trap on SIGTERM runs ``ray stop``, which would stop
    every Ray on the machine.
    """
    compose = yaml.safe_load((REPO / "docker" / "compose.yaml").read_text())
    script = compose["services"]["serving"]["command"][2].replace("$$", "$")
    config = yaml.safe_load(SERVE_CONFIG.read_text())
    config["http_options"]["port"] = ports.serve
    config_path = folder / "serve_config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    for old, new in (
        ("--port=6379", f"--port={ports.gcs}"),
        ("--dashboard-port=8265", f"--dashboard-port={ports.dashboard}"),
        ("--metrics-export-port=8080", f"--metrics-export-port={ports.metrics}"),
        ("--http-port=8000", f"--http-port={ports.serve}"),
        ("bank_marketing/serving/serve_config.yaml", str(config_path)),
    ):
        assert old in script, f"the serving command no longer has {old}"
        script = script.replace(old, new)
    env = {
        **os.environ,
        # The image's PATH: its environment's commands (ray, serve) first.
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "MLFLOW_TRACKING_URI": tracking_uri,
        "RAY_USAGE_STATS_ENABLED": "0",
        "SERVING_NUM_CPUS": "1",
        "RAY_ADDRESS": f"127.0.0.1:{ports.gcs}",
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": RAY_TOKEN,
        "RAY_DASHBOARD_ADDRESS": ports.dashboard_url,
    }
    log = (folder / "serving.log").open("a")
    return subprocess.Popen(
        ["sh", "-c", script],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def end_group(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def answers_with(url: str, version: str) -> bool:
    try:
        response = httpx.get(f"{url}/model", timeout=5)
    except httpx.HTTPError:
        return False
    return response.status_code == 200 and str(response.json().get("version")) == version


def wait_for(condition: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not within {timeout_s:.0f} s")
        time.sleep(1)


def restore(
    defs: dg.Definitions, instance: dg.DagsterInstance, serving: ServingCluster, timeout_s: float
) -> tuple[list[str], list[dg.ExecuteInProcessResult]]:
    """Tick ``restore_live_version`` every 2 s and execute what it requests, until a run
    succeeds; its skip reasons and the runs."""
    reasons: list[str] = []
    runs: list[dg.ExecuteInProcessResult] = []
    cursor: str | None = None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        context = dg.build_sensor_context(
            instance=instance, cursor=cursor, resources={"serving": serving}
        )
        result = restore_live_version(context)
        assert isinstance(result, dg.SensorResult)
        cursor = result.cursor
        if result.skip_reason is not None:
            reasons.append(result.skip_reason.skip_message or "")
        for request in result.run_requests or []:
            run = defs.resolve_job_def("deployment_job").execute_in_process(
                instance=instance,
                run_config=request.run_config,
                tags=request.tags,
                raise_on_error=False,
            )
            runs.append(run)
            if run.success:
                return reasons, runs
        time.sleep(TICK_S)
    raise AssertionError(
        f"no restore succeeded within {timeout_s:.0f} s; skips {reasons[-3:]}; failures "
        f"{[failure_message(run) for run in runs]}"
    )


@pytest.fixture
def ports() -> Iterator[Ports]:
    ports = Ports()
    try:
        yield ports
    finally:
        kill_head(ports.dashboard_url)


def test_the_ray_head_killed_under_load_comes_back_with_the_recorded_version(
    registry: dict[str, Any], ports: Ports, tmp_path: Path
) -> None:
    """The head dies under 2 clients' steady load while v2 is pinned (the alias on v1).

    In the stack, the container ends with its head, its restart policy starts it again, and it
    serves the alias's version; the sensor pins the recorded one again. On the embedded defaults
    nothing restarts the head but the sensor's run, which starts a new one.
    """
    champion, pinned = registry["versions"]
    uri = registry["uri"]
    stack = ServingCluster(
        dashboard_url=ports.dashboard_url,
        serve_url=ports.serve_url,
        tracking_uri=uri,
        start_local=False,
        auth_token=RAY_TOKEN,
    )
    embedded = ServingCluster(
        dashboard_url=ports.dashboard_url,
        serve_url=ports.serve_url,
        tracking_uri=uri,
        start_local=True,
        local_num_cpus=1,
    )
    containers: list[subprocess.Popen] = []
    probes = [Probe(ports.serve_url, EXAMPLE_RECORD) for _ in range(2)]
    try:
        with dg.instance_for_test() as instance:
            defs = dg.Definitions(
                assets=[production_deployment], jobs=[deployment_job], resources={"serving": stack}
            )
            containers.append(serving_container(ports, uri, tmp_path))
            wait_for(
                lambda: answers_with(ports.serve_url, champion), 240, "the container's service"
            )
            pinned_run = run_deployment(defs, instance, pinned)
            assert pinned_run.success, failure_message(pinned_run)
            for probe in probes:
                probe.start()
            time.sleep(3)

            # 1. The stack: the container's head is killed; the container ends with it.
            killed = time.monotonic()
            assert kill_head(ports.dashboard_url) >= 5
            assert containers[0].wait(timeout=60) != 0, "the container did not end with its head"
            # Its restart policy (restart: unless-stopped) starts it again.
            containers.append(serving_container(ports, uri, tmp_path))
            reasons, runs = restore(defs, instance, stack, timeout_s=300)
            stack_restored_s = time.monotonic() - killed
            stack_recovery_s = answering_again(probes, killed, timeout_s=120)
            assert answers_with(ports.serve_url, pinned)
            assert LiveRecord.latest(instance) == LiveRecord(pinned, None, pinned=True)
            stack_failed = sum(len(p.failures) for p in probes)
            alias_answers = sum(p.versions.count(champion) for p in probes)
            assert any("does not answer" in reason for reason in reasons), reasons
            assert [run.success for run in runs][-1]
            stack_runs = len(runs)

            # 2. The embedded defaults: the head is killed and nothing restarts it but the run.
            before_failed = stack_failed
            before_answers = [len(p.versions) for p in probes]
            defs = dg.Definitions(
                assets=[production_deployment],
                jobs=[deployment_job],
                resources={"serving": embedded},
            )
            killed = time.monotonic()
            assert kill_head(ports.dashboard_url) >= 5
            containers[-1].wait(timeout=60)
            reasons, runs = restore(defs, instance, embedded, timeout_s=300)
            assert any("does not answer" in reason for reason in reasons), reasons
            embedded_recovery_s = answering_again(probes, killed, timeout_s=120)
            for probe in probes:
                probe.finish()
            assert answers_with(ports.serve_url, pinned)
            assert LiveRecord.latest(instance) == LiveRecord(pinned, None, pinned=True)
            embedded_failed = sum(len(p.failures) for p in probes) - before_failed
            # What `bank-marketing live` does on exit: the head it started stops.
            head = ServeCluster(ports.dashboard_url, "", "")
            assert head.stop_local() >= 5 and not head.local_head()
    finally:
        for probe in probes:
            probe.stop.set()
        for container in containers:
            end_group(container)

    answered = sum(p.answered() for p in probes)
    # Once restored, the embedded head answered with the recorded version only.
    after = [v for p, start in zip(probes, before_answers, strict=True) for v in p.versions[start:]]
    assert after and set(after) == {pinned}, sorted(set(after))
    record(
        FaultRow(
            part="serving: Ray head, stack",
            fault="the Ray head's processes killed (SIGKILL), v2 pinned while the alias is on v1",
            strikes="under 2 clients streaming single-record requests",
            outcome=f"the serving container ended with its head; restarted (restart policy), it "
            f"deployed the alias's v{champion}, and restore_live_version's run put the recorded "
            f"v{pinned} back ({stack_runs} run, done {stack_restored_s:.0f} s after the kill; "
            f"{alias_answers} answers with v{champion} meanwhile)",
            requests_failed=stack_failed,
            rows_lost=None,
            recovery_s=stack_recovery_s,
        )
    )
    record(
        FaultRow(
            part="serving: Ray head, embedded",
            fault="the Ray head's processes killed (SIGKILL), v2 pinned",
            strikes="under 2 clients streaming single-record requests",
            outcome=f"restore_live_version saw no answer on two ticks and its run started a new "
            f"local head and served the recorded v{pinned} again ({len(runs)} run); "
            f"{len(after)} answers since the kill, all v{pinned}; {answered} in the whole test",
            requests_failed=embedded_failed,
            rows_lost=None,
            recovery_s=embedded_recovery_s,
        )
    )
