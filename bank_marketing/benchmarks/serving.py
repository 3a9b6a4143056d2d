"""Serving benchmark: one champion scored in-process, by Flask + gunicorn and by the Ray Serve app.

Side by side in one run on this machine, with the same registered model version: an XGBoost
pipeline with the training assets' default configuration and inputs, trained as of 2009-06 and
registered in a temporary SQLite MLflow store.

- (a) in-process, no HTTP, the limit: one record built into a DataFrame and scored by the
  pipeline's ``predict_proba``; and the compiled featurizer the service uses, feeding the estimator.
- (b) Flask under ``gunicorn -w 2``, the original deployment (``flask_baseline``).
- (c) the Ray Serve app as ``serve_config.yaml`` deploys it, on a local Ray with 2 CPUs: behind
  Serve's default HTTP proxy, and in Ray's throughput mode (HAProxy in front of the replicas'
  own HTTP servers), each on a fresh cluster in a child process, keeping nothing.
- (d) keeping the traffic: the app in throughput mode as three applications side by side on one
  fresh cluster, keeping off (``sample_rate`` 0), keeping on (written to ``served_predictions``
  in a throwaway PostgreSQL database) and keeping on with a challenger of another family in
  shadow; the variants take turns at each connection count, over several rounds. After the load,
  the rows in the table are checked against the requests answered. With ``--diagnose``, three
  more applications each change one thing by a benchmark-only patch (no Prometheus metrics; no
  insert into PostgreSQL; the heap frozen for the garbage collector), to show what it costs.

HTTP load comes from wrk, one real contact per request (cycling through 200 of them): latency
p50/p99 at 1 and 8 connections and the maximum throughput over a sweep of connection counts.
The 1,000-record latency is the median of repeated single requests, one at a time.

    python -m bank_marketing.benchmarks.serving [--write BENCHMARKS.md] [--seconds 8]
    python -m bank_marketing.benchmarks.serving --only keeping [--diagnose] [--rounds 3]

Needs ``BANK_MARKETING_SOURCE`` pointing at a local copy of the data, wrk on PATH, and for (d) a
PostgreSQL server on which it may create and drop databases (``--postgres``, by default the
local one as user postgres).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import multiprocessing
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

import httpx
import mlflow
import numpy as np
import pandas as pd
import sqlalchemy as sa
import yaml
from mlflow import MlflowClient

from bank_marketing.benchmarks.report import memory_gib, replace_section
from bank_marketing.data.months import recover_months
from bank_marketing.data.source import load_contacts
from bank_marketing.serving.model import LoadedModel, ModelState
from bank_marketing.training.config import FAMILY_PARAMS, Inputs, WindowSplit
from bank_marketing.training.features import DEFAULT_INPUTS
from bank_marketing.training.registry import CHAMPION_ALIAS
from bank_marketing.training.tracking import MODEL_NAME, ensure_experiment, log_candidate
from bank_marketing.training.windows import (
    TRAIN,
    assemble_window,
    describe,
    split_window,
    window_months,
)

SECTION = "## Serving: in-process, Flask + gunicorn, Ray Serve"
# This module's name, also when it runs as __main__ (its child processes and Ray's replicas
# import it by this name).
MODULE = "bank_marketing.benchmarks.serving"
AS_OF = "2009-06-01"
SERVE_CONFIG = Path(__file__).parents[1] / "serving" / "serve_config.yaml"
CONNECTIONS = (1, 2, 4, 8, 16, 32, 64)
LATENCY_AT = (1, 8)
BATCH_RECORDS = 1000
BATCH_REPEATS = 20
SINGLE_BODIES = 200
GUNICORN_WORKERS = 2
RAY_CPUS = 2
GOAL_P50_MS = 15.0
GOAL_BATCH_MS = 100.0
KEEPING_SECTION = "## Serving: keeping the traffic"
# The shadow challenger: another family than the champion's, cheap to score.
CHALLENGER_FAMILY = "logistic_regression"
ROUNDS = 3
GOAL_KEEPING_THROUGHPUT = 0.90
GOAL_KEEPING_P50_MS = 1.0
# CPU per request is compared at the highest connection count, where every variant is saturated.
FULL = CONNECTIONS[-1]

# wrk posts the JSON bodies of a file, one per line, in turn.
WRK_SCRIPT = """\
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local bodies = {}
for line in io.lines(os.getenv("BENCH_BODIES")) do bodies[#bodies + 1] = line end
local next_body = 0
request = function()
  next_body = next_body % #bodies + 1
  return wrk.format(nil, nil, nil, bodies[next_body])
end
"""


@dataclass(frozen=True)
class Load:
    """One wrk run: requests per second and latency percentiles, in ms; the requests answered."""

    connections: int
    rps: float
    p50: float
    p99: float
    requests: int = 0


@dataclass
class Variant:
    name: str
    setup: str
    loads: dict[int, Load]
    batch_ms: float
    throughput_note: str = ""

    @property
    def best(self) -> Load:
        return max(self.loads.values(), key=lambda load: load.rps)


# --- the champion -------------------------------------------------------------------------------


def _register(folder: Path, frame: pd.DataFrame, family: str) -> tuple[str, str, str]:
    """Train ``family`` with its default configuration as of 2009-06 and register it in the
    temporary SQLite registry; (uri, version, window)."""
    defaults = WindowSplit()
    as_of = pd.Timestamp(AS_OF)
    by_month = {f"{m:%Y-%m-%d}": g for m, g in frame.groupby("contact_month")}
    window = assemble_window(by_month, as_of, defaults.window_months)
    where = describe(window_months(as_of, defaults.window_months))
    split = split_window(window, defaults.validation_share, defaults.seed, where)
    train = split[split["split"] == TRAIN].drop(columns="split")
    validation = split[split["split"] != TRAIN].drop(columns="split")
    config = FAMILY_PARAMS[family]()
    fitted = config.fit(family, Inputs(), train, validation)
    params = config.fit_arguments()[0]
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(
        experiment_id=ensure_experiment("serving-benchmark", (folder / "artifacts").as_uri())
    )
    with mlflow.start_run(run_name=f"serving benchmark, {family}"):
        record = log_candidate(
            fitted,
            params=params,
            inputs=list(DEFAULT_INPUTS),
            train=train,
            validation=validation,
            tags={"as_of": AS_OF[:7], "window": where},
            data_source=os.environ["BANK_MARKETING_SOURCE"],
        )
    return uri, record.model_version, where


def register_champion(folder: Path, frame: pd.DataFrame) -> tuple[str, str, str]:
    """Train the default XGBoost as of 2009-06, register it as champion; (uri, version, window)."""
    uri, version, where = _register(folder, frame, "xgboost")
    MlflowClient(uri).set_registered_model_alias(MODEL_NAME, CHAMPION_ALIAS, version)
    return uri, version, where


def register_challenger(folder: Path, frame: pd.DataFrame) -> str:
    """A second version, of another family, for the shadow to score with; its version."""
    return _register(folder, frame, CHALLENGER_FAMILY)[1]


# --- (a) in-process ----------------------------------------------------------------------------


def _percentiles(seconds: list[float]) -> tuple[float, float]:
    values = np.asarray(seconds) * 1e3
    return float(np.percentile(values, 50)), float(np.percentile(values, 99))


def _time_calls(call: Callable[[int], Any], count: int) -> list[float]:
    took = []
    for index in range(count):
        started = time.perf_counter()
        call(index)
        took.append(time.perf_counter() - started)
    return took


def _plain(model: LoadedModel, records: list[dict[str, Any]]) -> Any:
    return model.predict_proba(pd.DataFrame.from_records(records, columns=model.inputs))


def _calls_in(
    scorer: Callable[[list[dict[str, Any]]], Any], records: list[dict[str, Any]], seconds: float
) -> int:
    """Single-record calls done one after another in ``seconds``."""
    done, deadline = 0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        scorer([records[done % len(records)]])
        done += 1
    return done


_FORKED: dict[str, Any] = {}


def _forked_calls(name: str) -> int:
    return _calls_in(_FORKED[name], _FORKED["records"], _FORKED["seconds"])


def in_process(
    model: LoadedModel, singles: list[dict[str, Any]], batch: list[dict[str, Any]], seconds: float
) -> list[Variant]:
    """Both in-process paths: latency of sequential calls, calls per second in 1 and in 2 (forked)
    processes, and the median time of a 1,000-record call."""
    scorers = {
        "plain": lambda records: _plain(model, records),
        "fast": model.predict_records,
    }
    _FORKED.update(scorers, records=singles, seconds=seconds)
    variants = []
    for name, scorer in scorers.items():
        _time_calls(lambda i, s=scorer: s([singles[i % len(singles)]]), 50)
        p50, p99 = _percentiles(
            _time_calls(lambda i, s=scorer: s([singles[i % len(singles)]]), 1000)
        )
        alone = _calls_in(scorer, singles, seconds) / seconds
        with multiprocessing.get_context("fork").Pool(RAY_CPUS) as pool:
            both = sum(pool.map(_forked_calls, [name] * RAY_CPUS)) / seconds
        batch_ms = 1e3 * statistics.median(_time_calls(lambda _, s=scorer: s(batch), BATCH_REPEATS))
        if name == "plain":
            label = "(a) in-process, plain pipeline"
            setup = "DataFrame of the records, then the pipeline's `predict_proba`"
        else:
            label = "(a) in-process, compiled featurizer"
            setup = "the service's featurizer (numpy lookups), then the estimator's `predict_proba`"
        variants.append(
            Variant(
                label,
                setup,
                {1: Load(1, 1e3 / p50, p50, p99)},
                batch_ms,
                f"{alone:.0f} calls/s in 1 process, {both:.0f} in {RAY_CPUS}",
            )
        )
        print(f"  {label}: p50 {p50:.2f} ms, p99 {p99:.2f} ms, {alone:.0f}/s, {both:.0f}/s")
    return variants


# --- HTTP load ----------------------------------------------------------------------------------


def _free_port(first: int = 8100, last: int = 8159) -> int:
    """A free port from ``first`` to ``last`` (8100-8199 are the benchmarks' ports)."""
    for port in range(first, last + 1):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise SystemExit(f"no free port in {first}-{last}")


def _milliseconds(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()
    return float(number) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[unit]


def wrk(url: str, connections: int, seconds: float, files: Path) -> Load:
    """One wrk run against ``url``; refuses runs that saw errors or non-2xx answers."""
    done = subprocess.run(
        [
            "wrk",
            f"-t{min(connections, 2)}",
            f"-c{connections}",
            f"-d{seconds:g}s",
            "--timeout",
            "10s",
            "--latency",
            "-s",
            str(files / "post.lua"),
            url,
        ],
        env={**os.environ, "BENCH_BODIES": str(files / "bodies.txt")},
        capture_output=True,
        text=True,
        check=True,
    )
    out = done.stdout
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    if bad or (errors and any(int(n) for n in re.findall(r"\d+", errors.group(1)))):
        raise SystemExit(f"wrk saw failed requests at {connections} connection(s):\n{out}")
    percentiles = dict(re.findall(r"^\s*(50|99)(?:\.0+)?%\s+(\S+)\s*$", out, re.MULTILINE))
    if set(percentiles) != {"50", "99"}:
        raise SystemExit(f"no latency percentiles in wrk's output:\n{out}\n{done.stderr}")
    return Load(
        connections,
        float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        _milliseconds(percentiles["50"]),
        _milliseconds(percentiles["99"]),
        int(re.search(r"(\d+) requests in", out).group(1)),
    )


def sweep(base: str, seconds: float, files: Path) -> dict[int, Load]:
    """Warm up, then wrk at each connection count."""
    wrk(f"{base}/predict", 4, 3, files)
    loads = {}
    for connections in CONNECTIONS:
        loads[connections] = wrk(f"{base}/predict", connections, seconds, files)
        load = loads[connections]
        print(
            f"    {connections:>3} conn: {load.rps:6.0f}/s, p50 {load.p50:.1f}, p99 {load.p99:.1f}"
        )
    return loads


def batch_latency(base: str, body: bytes) -> float:
    """Median ms of one 1,000-record request, sent one at a time."""
    headers = {"content-type": "application/json"}
    took = []
    with httpx.Client(timeout=30) as client:
        for attempt in range(3 + BATCH_REPEATS):
            started = time.perf_counter()
            response = client.post(f"{base}/predict", content=body, headers=headers)
            if response.status_code != 200:
                raise SystemExit(f"the batch request failed: {response.text[:500]}")
            if attempt >= 3:
                took.append(time.perf_counter() - started)
    return 1e3 * statistics.median(took)


def wait_healthy(base: str, what: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"{what} did not become healthy within {timeout_s:.0f} s")


# --- (b) Flask + gunicorn -----------------------------------------------------------------------


@contextmanager
def gunicorn(version: str) -> Iterator[str]:
    port = _free_port(8100, 8159)
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "-w",
            str(GUNICORN_WORKERS),
            "-b",
            f"127.0.0.1:{port}",
            "--log-level",
            "warning",
            f'bank_marketing.benchmarks.flask_baseline:create_app(version="{version}")',
        ],
        start_new_session=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_healthy(base, "gunicorn")
        yield base
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


# --- (c) Ray Serve ------------------------------------------------------------------------------


def serve_settings() -> tuple[dict[str, Any], dict[str, Any], dict[str, str]]:
    """The deployment options, app args and env vars that serve_config.yaml deploys with."""
    config = yaml.safe_load(SERVE_CONFIG.read_text())
    [application] = config["applications"]
    [deployment] = application["deployments"]
    options = {key: value for key, value in deployment.items() if key != "name"}
    env = application.get("runtime_env", {}).get("env_vars", {})
    return options, dict(application.get("args", {})), env


# Ray's throughput mode: HAProxy in front of the replicas' own HTTP servers. Every port it opens
# stays in 8160-8195 (an HTTP and a gRPC port for each replica, with room to spare for the
# keeping benchmark's six applications of two) and its files in the run's temporary folder.
THROUGHPUT_MODE = {
    "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
    "RAY_SERVE_ENABLE_HA_PROXY": "1",
    "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": "8160",
    "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": "8176",
    "RAY_SERVE_DIRECT_INGRESS_MIN_GRPC_PORT": "8177",
    "RAY_SERVE_DIRECT_INGRESS_MAX_GRPC_PORT": "8193",
    "RAY_SERVE_HAPROXY_STATS_PORT": "8194",
    "RAY_SERVE_HAPROXY_METRICS_PORT": "8195",
}
HAPROXY_FILES = {
    "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": "haproxy.cfg",
    "RAY_SERVE_HAPROXY_SOCKET_PATH": "admin.sock",
    "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": "",
    "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": "server-state",
    "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH": "metrics.sock",
}
RAY_MODES = {
    "proxy": "Serve's default HTTP proxy",
    "throughput": "Ray's throughput mode: `RAY_SERVE_THROUGHPUT_OPTIMIZED=1 "
    "RAY_SERVE_ENABLE_HA_PROXY=1` (HAProxy to the replicas' own HTTP servers)",
}


def throughput_env(files: Path) -> dict[str, str]:
    """The variables that put a fresh local cluster in throughput mode, its files in ``files``."""
    haproxy = files / "haproxy"
    haproxy.mkdir(exist_ok=True)
    return THROUGHPUT_MODE | {name: str(haproxy / leaf) for name, leaf in HAPROXY_FILES.items()}


@contextmanager
def local_serve(num_cpus: int = RAY_CPUS) -> Iterator[str]:
    """Serve started on a fresh local Ray cluster (the caller's env decides the mode); its URL."""
    import ray
    from ray import serve

    _, _, env = serve_settings()
    os.environ.update(env)
    port = _free_port(8100, 8159)
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
        ray.shutdown()


@contextmanager
def ray_serve(uri: str, files: Path) -> Iterator[str]:
    """The app on a fresh local Ray cluster, keeping nothing (sample_rate 0)."""
    from ray import serve

    from bank_marketing.serving.deployment import PredictionService, service_args

    options, args, _ = serve_settings()
    # Nothing kept: these variants measure serving alone (the keeping benchmark measures the
    # difference), and nothing is written to the monitoring database of the caller's home.
    args |= {"tracking_uri": uri, "sample_rate": "0", "db_url": f"sqlite:///{files / 'off.db'}"}
    with local_serve() as base:
        serve.run(
            PredictionService.options(**options).bind(**service_args(args)),
            name="bank-marketing",
            route_prefix="/",
        )
        wait_healthy(base, "the Ray Serve app")
        yield base


def ray_child(uri: str, files: Path, seconds: float) -> int:
    """In a child process: serve, load, and print the results as one JSON line."""
    with ray_serve(uri, files) as base:
        loads = sweep(base, seconds, files)
        batch_ms = batch_latency(base, (files / "batch.json").read_bytes())
    result = {"loads": [vars(load) for load in loads.values()], "batch_ms": batch_ms}
    print("RESULT=" + json.dumps(result), flush=True)
    return 0


def run_child(flag: str, what: str, env: dict[str, str], arguments: list[str]) -> dict[str, Any]:
    """Run this module with ``flag`` in a child process; the JSON it printed after ``RESULT=``."""
    command = [sys.executable, "-m", MODULE, flag, *arguments]
    done = subprocess.run(command, env=env, stdout=subprocess.PIPE, text=True, check=False)
    marker = [line for line in done.stdout.splitlines() if line.startswith("RESULT=")]
    print("\n".join(line for line in done.stdout.splitlines() if not line.startswith("RESULT=")))
    if done.returncode != 0 or not marker:
        raise SystemExit(f"the Ray Serve run ({what}) failed with exit code {done.returncode}")
    return json.loads(marker[0].removeprefix("RESULT="))


def ray_variant(mode: str, uri: str, files: Path, seconds: float) -> Variant:
    env = dict(os.environ)
    if mode == "throughput":
        env.update(throughput_env(files))
    arguments = ["--uri", uri, "--files", str(files), "--seconds", str(seconds)]
    result = run_child("--ray-child", mode, env, arguments)
    loads = {load["connections"]: Load(**load) for load in result["loads"]}
    return Variant(
        f"(c) Ray Serve app, {'default proxy' if mode == 'proxy' else 'throughput mode'}",
        f"{RAY_MODES[mode]}; local Ray, num_cpus={RAY_CPUS}; {ray_setup()}; keeping nothing "
        "(`sample_rate` 0)",
        loads,
        result["batch_ms"],
    )


def ray_setup() -> str:
    options, args, env = serve_settings()
    scaling = options.get("autoscaling_config")
    replicas = (
        f"{scaling['min_replicas']}-{scaling['max_replicas']} replicas (autoscaling)"
        if scaling
        else f"{options.get('num_replicas', 1)} replica(s)"
    )
    flags = ", ".join(f"{k}={v}" for k, v in env.items() if k.startswith("RAY_SERVE_"))
    return (
        f"as `serve_config.yaml` deploys it: {replicas} of "
        f"{options['ray_actor_options']['num_cpus']} CPU, max_ongoing_requests "
        f"{options.get('max_ongoing_requests')}, @serve.batch of up to "
        f"{args.get('max_batch_size')} requests waiting {args.get('batch_wait_s')} s; validation "
        "and the compiled featurizer" + (f"; {flags}" if flags else "")
    )


# --- (d) keeping the traffic -------------------------------------------------------------------


@dataclass(frozen=True)
class Keeping:
    """One variant of the app in the keeping benchmark: an application of its own.

    ``patch`` names a function of this module that its replica processes run when they start
    (Ray's ``worker_process_setup_hook``): a benchmark-only change, to name the writer thread
    and, in the diagnostic variants, to see what a part costs by leaving it out.
    """

    name: str
    label: str
    sample_rate: float
    shadow: bool
    patch: str = "named_writer"

    @property
    def app(self) -> str:
        return f"bank-marketing-{self.name}"

    @property
    def keeps(self) -> bool:
        return self.sample_rate > 0

    @property
    def writes(self) -> bool:
        """Whether its rows reach PostgreSQL (and are counted there)."""
        return self.keeps and self.patch != "without_inserts"


WRITER_THREAD = "served-log"


def named_writer() -> None:
    """Benchmark only, in every variant: the served-records writer thread gives the kernel its
    name, so that its CPU time can be read from /proc apart from the rest of the replica."""
    import ctypes

    from bank_marketing.serving import capture

    run = capture.ServedLog._run
    set_name = ctypes.CDLL(None).prctl

    def named(self: capture.ServedLog) -> None:
        set_name(15, WRITER_THREAD.encode(), 0, 0, 0)  # PR_SET_NAME
        run(self)

    capture.ServedLog._run = named


def without_metrics() -> None:
    """Benchmark only: the replica records no Prometheus metrics (RayTelemetry counts nothing).

    Patched where it is defined: the replica gets the deployment's class by value, and its
    globals look RayTelemetry up in bank_marketing.serving.metrics when the class arrives.
    """
    from bank_marketing.serving import capture, metrics

    named_writer()
    metrics.RayTelemetry = capture.NoTelemetry


def frozen_heap() -> None:
    """Benchmark only: once the app is built, every object alive is moved out of the cyclic
    garbage collector's sight (``gc.freeze``) once more. The service freezes its heap after each
    model load; what this still changes is what the garbage collector costs it."""
    import gc
    import logging

    from bank_marketing.serving import app

    named_writer()
    create_app = app.create_app

    def create_then_freeze(*args: Any, **kwargs: Any) -> Any:
        built = create_app(*args, **kwargs)
        gc.freeze()
        logging.getLogger("ray.serve").warning(
            "benchmark: %d objects frozen", gc.get_freeze_count()
        )
        return built

    app.create_app = create_then_freeze


def without_inserts() -> None:
    """Benchmark only: the writer thread builds every row as usual but inserts none."""
    from bank_marketing.monitoring import served

    named_writer()
    served.insert_served = lambda engine, rows: len(rows)


KEEPING = (
    Keeping("off", "keeping off", 0.0, False),
    Keeping("on", "keeping on", 1.0, False),
    Keeping("shadow", "keeping on, shadow challenger", 1.0, True),
)
# With --diagnose: what the parts cost, each measured by leaving it out; and the garbage
# collector's share.
DIAGNOSTICS = (
    Keeping(
        "off-nometrics", "keeping off, no Prometheus metrics (patched)", 0.0, False,
        "without_metrics",
    ),
    Keeping(
        "on-noinsert", "keeping on, rows built but not inserted (patched)", 1.0, False,
        "without_inserts",
    ),
    Keeping(
        "on-frozen", "keeping on, heap frozen again once the app is built (patched)", 1.0,
        False, "frozen_heap",
    ),
)  # fmt: skip
BY_NAME = {variant.name: variant for variant in KEEPING + DIAGNOSTICS}
# Rows written by a keeping variant's replicas have settled once none arrived for this long
# (the writers write at least every flush_seconds, 1 s).
SETTLED_S = 1.5
SETTLE_TIMEOUT_S = 60.0
# Ray exports the replicas' metrics every few seconds.
METRICS_TIMEOUT_S = 90.0
POSTGRES_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
POSTGRES_BACKGROUND = (
    "checkpointer",
    "background writer",
    "walwriter",
    "autovacuum",
    "logical replication",
    "stats collector",
)


@contextmanager
def throwaway_databases(admin_url: str, names: list[str]) -> Iterator[dict[str, str]]:
    """Fresh databases on the PostgreSQL server of ``admin_url``, dropped afterwards; their URLs."""
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    created: list[str] = []
    try:
        with admin.connect() as connection:
            for name in names:
                connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
                created.append(name)
        yield {name: admin.url.set(database=name).render_as_string(False) for name in names}
    finally:
        with admin.connect() as connection:
            for name in created:
                connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _command_lines() -> dict[int, str]:
    """Every process's command line (Ray's and PostgreSQL's processes retitle themselves)."""
    lines = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                raw = Path(entry.path, "cmdline").read_bytes()
            except OSError:
                continue
            lines[int(entry.name)] = raw.replace(b"\0", b" ").decode(errors="replace").strip()
    return lines


def _cpu_seconds(pid: int | str) -> float | None:
    """User and system CPU seconds of a process (or of a thread: ``"<pid>/task/<tid>"``)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def _machine_busy_seconds() -> float:
    # user nice system idle iowait irq softirq steal: busy is all but idle and iowait.
    ticks = [int(field) for field in Path("/proc/stat").read_text().split()[1:9]]
    return (sum(ticks) - ticks[3] - ticks[4]) / CLOCK_TICKS


class CpuMeter:
    """CPU seconds of the processes serving one variant, by part, between two samples.

    The parts: the variant's replicas, its PostgreSQL connections with the server's background
    processes, HAProxy, and the whole machine (busy time, everyone's). ``skip`` holds processes
    of the benchmark's own (its counting connections).
    """

    def __init__(self, variant: Keeping, database: str | None, skip: set[int]) -> None:
        replica = f"ServeReplica:{variant.app}:"
        self.parts: dict[str, Callable[[str], bool]] = {
            "replicas": lambda line: replica in line,
            "postgres": lambda line: (
                "/bin/postgres " in line
                or (
                    line.startswith("postgres: ")
                    and (
                        (database is not None and f" {database} " in line)
                        or any(name in line for name in POSTGRES_BACKGROUND)
                    )
                )
            ),
            "haproxy": lambda line: line.split(" ", 1)[0].endswith("haproxy"),
        }
        self.skip = skip

    def sample(self) -> dict[str, dict[int, float]]:
        taken: dict[str, dict[int, float]] = {part: {} for part in self.parts}
        taken["writer"] = {}
        for pid, line in _command_lines().items():
            if pid in self.skip:
                continue
            for part, matches in self.parts.items():
                if matches(line) and (seconds := _cpu_seconds(pid)) is not None:
                    taken[part][pid] = seconds
            if pid in taken["replicas"]:
                for task in Path(f"/proc/{pid}/task").glob("*"):
                    try:
                        named = (task / "comm").read_text().strip() == WRITER_THREAD
                    except OSError:
                        continue
                    if named and (seconds := _cpu_seconds(f"{pid}/task/{task.name}")) is not None:
                        taken["writer"][int(task.name)] = seconds
        taken["machine"] = {0: _machine_busy_seconds()}
        return taken

    @staticmethod
    def spent(before: dict[str, dict[int, float]], after: dict[str, dict[int, float]]) -> dict:
        """CPU seconds by part between the samples (a process new since ``before`` counts
        whole)."""
        return {
            part: sum(seconds - before[part].get(pid, 0.0) for pid, seconds in pids.items())
            for part, pids in after.items()
        }


class KeptRows:
    """Counts of the rows a keeping variant's replicas wrote, read from its database."""

    def __init__(self, url: str) -> None:
        from bank_marketing.monitoring import store

        self.engine = store.connect(url)
        self.table = store.served_predictions
        self.connection = self.engine.connect()
        self.pid = int(self.connection.execute(sa.text("SELECT pg_backend_pid()")).scalar_one())

    def count(self, since: datetime | None = None) -> dict[str, int]:
        """Rows by role, received since ``since`` (all when None)."""
        query = sa.select(self.table.c.role, sa.func.count()).group_by(self.table.c.role)
        if since is not None:
            query = query.where(self.table.c.received_at >= since)
        counts = dict(self.connection.execute(query).all())
        self.connection.commit()
        return {role: int(counts.get(role, 0)) for role in ("live", "shadow")}

    def settle(self, since: datetime, answered: int) -> dict[str, int]:
        """The counts once at least ``answered`` live rows are in and none came for SETTLED_S
        (or SETTLE_TIMEOUT_S passed: rows are missing, and the report says so)."""
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        last, still_since = self.count(since), time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.25)
            now = self.count(since)
            if now != last:
                last, still_since = now, time.monotonic()
            elif last["live"] >= answered and time.monotonic() - still_since >= SETTLED_S:
                break
        return last

    def close(self) -> None:
        self.connection.close()
        self.engine.dispose()


def deploy_keeping(variant: Keeping, base: str, plan: dict[str, Any]) -> None:
    """The variant as its own application at /<name>, built the way rollouts build the app
    (``ServeCluster.app_config``): serve_config.yaml's options, the pinned version in
    user_config, and the shadow's beside it."""
    from ray import serve

    from bank_marketing.serving.deployment import PredictionService, service_args
    from bank_marketing.serving.rollout import ServeCluster

    cluster = ServeCluster(
        "http://127.0.0.1:8265", f"{base}/{variant.name}", plan["uri"], app_name=variant.app,
        headers={},
    )  # fmt: skip
    app = cluster.app_config(plan["version"], plan["shadow_version"] if variant.shadow else None)
    [deployment] = app["deployments"]
    options = {key: value for key, value in deployment.items() if key != "name"}
    from ray._private.runtime_env.setup_hook import export_setup_func_module

    # Serve's controller hands a replica's runtime_env on as it is, without turning a
    # worker_process_setup_hook into the variable the workers read: set that variable here, as
    # Ray's own .options() would.
    runtime_env = export_setup_func_module(
        copy.deepcopy(app["runtime_env"]), f"{MODULE}.{variant.patch}"
    )
    options["ray_actor_options"] = {
        **options.get("ray_actor_options", {}),
        "runtime_env": runtime_env,
    }
    args = app["args"] | {
        "sample_rate": str(variant.sample_rate),
        "db_url": plan["databases"].get(
            variant.name, f"sqlite:///{plan['files']}/{variant.name}.db"
        ),
    }
    serve.run(
        PredictionService.options(**options).bind(**service_args(args)),
        name=app["name"],
        route_prefix=app["route_prefix"],
    )
    wait_healthy(f"{base}/{variant.name}", f"the Ray Serve app {variant.app}")


def served_metrics(variant: Keeping) -> dict[str, int]:
    """What the variant's replicas counted, as Ray exports it: records answered (scored by the
    served model; with single-record requests, the requests), and records kept, dropped and
    duplicate.

    Answered comes from the live probabilities' histogram: one live score per answered record.
    """
    from bank_marketing.serving.metrics import exported_sum, exported_text

    text = exported_text()
    counts = {
        "answered": exported_sum(
            text, "ray_bank_marketing_probability_count", application=variant.app, role="live"
        )
    }
    for outcome in ("kept", "dropped", "duplicate"):
        counts[outcome] = exported_sum(
            text,
            "ray_bank_marketing_served_records_total",
            application=variant.app,
            outcome=outcome,
        )
    return {key: round(value) for key, value in counts.items()}


def keeping_cpus(applications: int) -> int:
    """Ray's CPUs for ``applications`` side by side: RAY_CPUS, or what their replicas' shares
    add up to when that is more. A scheduling figure: the replicas use the cores there are."""
    options, _, _ = serve_settings()
    scaling = options.get("autoscaling_config")
    replicas = scaling["max_replicas"] if scaling else options.get("num_replicas", 1)
    share = options["ray_actor_options"]["num_cpus"]
    return max(RAY_CPUS, math.ceil(applications * replicas * share))


def keeping_child(files: Path, seconds: float, rounds: int) -> int:
    """In a child process: the variants side by side on one cluster, taking turns."""
    plan = json.loads((files / "keeping.json").read_text())
    plan["files"] = str(files)
    variants = [BY_NAME[name] for name in plan["variants"]]
    runs: list[dict[str, Any]] = []
    with local_serve(keeping_cpus(len(variants))) as base:
        for variant in variants:
            deploy_keeping(variant, base, plan)
        counters = {v.name: KeptRows(plan["databases"][v.name]) for v in variants if v.writes}
        skip = {counter.pid for counter in counters.values()}
        meters = {v.name: CpuMeter(v, plan["names"].get(v.name), skip) for v in variants}
        for name, meter in meters.items():
            found = {part: len(pids) for part, pids in meter.sample().items()}
            print(f"    processes measured for {name}: {found}", flush=True)

        def settle(variant: Keeping, since: datetime, answered: int) -> dict[str, int] | None:
            """Wait until what the variant answered is written (or, unwritten, is off the queue)."""
            if variant.name in counters:
                return counters[variant.name].settle(since, answered)
            if variant.keeps:
                time.sleep(SETTLED_S)
            return None

        warmup = {}
        for variant in variants:
            started = datetime.now(UTC)
            warmup[variant.name] = wrk(f"{base}/{variant.name}/predict", 4, 3, files).requests
            settle(variant, started, warmup[variant.name])
        for round_index in range(rounds):
            for step, connections in enumerate(CONNECTIONS):
                # Each variant in turn at the same connection count, starting with another one
                # at each step, so a slow spell of the shared machine falls on all of them.
                shift = (round_index + step) % len(variants)
                for variant in variants[shift:] + variants[:shift]:
                    meter = meters[variant.name]
                    started, before = datetime.now(UTC), meter.sample()
                    load = wrk(f"{base}/{variant.name}/predict", connections, seconds, files)
                    # The machine over the run alone (everyone's work goes on while the rows
                    # settle); the processes over the run and the writing that follows it.
                    machine = _machine_busy_seconds()
                    rows = settle(variant, started, load.requests)
                    cpu = CpuMeter.spent(before, meter.sample())
                    cpu["machine"] = machine - before["machine"][0]
                    runs.append(
                        {
                            "variant": variant.name,
                            "round": round_index,
                            "load": vars(load),
                            "rows": rows,
                            "cpu": cpu,
                        }
                    )
                    kept = f", rows {rows['live']} live {rows['shadow']} shadow" if rows else ""
                    print(
                        f"    round {round_index + 1} {variant.name:>13} {connections:>3} conn: "
                        f"{load.rps:6.0f}/s, p50 {load.p50:.1f}, p99 {load.p99:.1f}{kept}, "
                        f"replicas {1e3 * cpu['replicas'] / max(load.requests, 1):.2f} ms CPU/req",
                        flush=True,
                    )
        totals = {name: counter.count() for name, counter in counters.items()}
        for counter in counters.values():
            counter.close()
        # Ray exports the replicas' counters every few seconds: wait until what they counted as
        # kept has reached the table (or the wait ends, and the report shows the figures).
        deadline = time.monotonic() + METRICS_TIMEOUT_S
        while True:
            metrics = {v.name: served_metrics(v) for v in variants}
            caught_up = all(metrics[name]["kept"] == sum(totals[name].values()) for name in totals)
            if caught_up or time.monotonic() > deadline:
                break
            time.sleep(2)
    result = {
        "variants": plan["variants"],
        "num_cpus": keeping_cpus(len(variants)),
        "runs": runs,
        "warmup": warmup,
        "totals": totals,
        "metrics": metrics,
        "metrics_caught_up": caught_up,
    }
    print("RESULT=" + json.dumps(result), flush=True)
    return 0


@dataclass
class KeepingVariant:
    """A keeping variant's results: medians over rounds by connection count, and its counts."""

    variant: Keeping
    loads: dict[int, Load]
    ratios: dict[int, list[float]]
    cpu_ms: dict[int, dict[str, float]]
    wrk_requests: int
    rows: dict[str, int] | None
    metrics: dict[str, int]

    @property
    def best(self) -> Load:
        return max(self.loads.values(), key=lambda load: load.rps)


def keeping_variants(result: dict[str, Any]) -> dict[str, KeepingVariant]:
    """Medians over rounds of each variant's wrk runs, CPU per request at each connection count."""
    out = {}
    for variant in (BY_NAME[name] for name in result["variants"]):
        mine = [run for run in result["runs"] if run["variant"] == variant.name]
        loads, cpu_ms, rps = {}, {}, {}
        for connections in CONNECTIONS:
            at = [run for run in mine if run["load"]["connections"] == connections]
            loads[connections] = Load(
                connections,
                statistics.median(run["load"]["rps"] for run in at),
                statistics.median(run["load"]["p50"] for run in at),
                statistics.median(run["load"]["p99"] for run in at),
                sum(run["load"]["requests"] for run in at),
            )
            rps[connections] = [run["load"]["rps"] for run in sorted(at, key=lambda r: r["round"])]
            cpu_ms[connections] = {
                part: statistics.median(
                    1e3 * run["cpu"][part] / max(run["load"]["requests"], 1) for run in at
                )
                for part in at[0]["cpu"]
            }
        out[variant.name] = KeepingVariant(
            variant,
            loads,
            rps,
            cpu_ms,
            result["warmup"][variant.name] + sum(run["load"]["requests"] for run in mine),
            result["totals"].get(variant.name),
            result["metrics"][variant.name],
        )
    return out


def keeping_run(
    uri: str, version: str, shadow_version: str, files: Path, seconds: float, rounds: int,
    admin_url: str, diagnose: bool,
) -> dict[str, Any]:  # fmt: skip
    """The keeping variants (and with ``diagnose`` the patched ones) in a child process on a
    fresh cluster in throughput mode, with a fresh database per writing variant on
    ``admin_url``'s server."""
    variants = KEEPING + (DIAGNOSTICS if diagnose else ())
    names = {
        v.name: f"bench_served_{os.getpid()}_{v.name.replace('-', '_')}"
        for v in variants
        if v.writes
    }
    with throwaway_databases(admin_url, list(names.values())) as urls:
        plan = {
            "variants": [v.name for v in variants],
            "uri": uri,
            "version": version,
            "shadow_version": shadow_version,
            "names": names,
            "databases": {name: urls[database] for name, database in names.items()},
        }
        (files / "keeping.json").write_text(json.dumps(plan))
        env = dict(os.environ) | throughput_env(files)
        arguments = ["--files", str(files), "--seconds", str(seconds), "--rounds", str(rounds)]
        return run_child("--keeping-child", "keeping", env, arguments)


# --- the report ---------------------------------------------------------------------------------


def _cell(load: Load | None) -> str:
    return "—" if load is None else f"{load.p50:.1f} / {load.p99:.1f}"


def report(
    variants: list[Variant], version: str, where: str, seconds: float, load_before: float
) -> str:
    gunicorn_v = next(v for v in variants if v.name.startswith("(b)"))
    versions = ", ".join(
        f"{name} {package_version(name)}"
        for name in ("ray", "fastapi", "uvicorn", "flask", "gunicorn", "scikit-learn", "xgboost")
    )
    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split()[1]
    lines = [
        SECTION,
        "",
        f"Measured {datetime.now(UTC):%Y-%m-%d} with `python -m bank_marketing.benchmarks.serving`"
        f" on {os.cpu_count()} cores, {memory_gib():.0f} GiB, Python {platform.python_version()}"
        f" (load average {load_before:.1f} at the start: the machine is shared); {versions}, wrk "
        f"{wrk_version}. One champion for all: XGBoost, default configuration and inputs, trained "
        f"on {where}, version {version} of a temporary SQLite registry. wrk sends one real "
        f"contact per request, {seconds:g} s per connection count "
        f"({', '.join(map(str, CONNECTIONS))}); latency in ms; the 1,000-record figure is the "
        f"median of {BATCH_REPEATS} requests sent one at a time.",
        "",
        "| variant | setup | p50 / p99 at 1 connection | p50 / p99 at 8 connections "
        "| max throughput | 1,000-record request |",
        "|---|---|---|---|---|---|",
    ]
    for v in variants:
        if v.throughput_note:
            throughput = v.throughput_note
        else:
            throughput = f"{v.best.rps:.0f} req/s ({v.best.connections} connections)"
        lines.append(
            f"| {v.name} | {v.setup} | {_cell(v.loads.get(1))} | {_cell(v.loads.get(8))} "
            f"| {throughput} | {v.batch_ms:.1f} ms |"
        )
    gunicorn_best = gunicorn_v.best

    def verdict(met: bool) -> str:
        return "met" if met else "not met"

    lines += ["", "Goals for the Ray Serve app, against gunicorn's throughput in the same run:"]
    for ray_v in (v for v in variants if v.name.startswith("(c)")):
        best, single = ray_v.best, ray_v.loads[1]
        lines.append(
            f"- {ray_v.name.removeprefix('(c) Ray Serve app, ')}: throughput at least gunicorn's "
            f"{verdict(best.rps >= gunicorn_best.rps)} ({best.rps:.0f} req/s at "
            f"{best.connections} connections against {gunicorn_best.rps:.0f} at "
            f"{gunicorn_best.connections}); single-record p50 under {GOAL_P50_MS:.0f} ms "
            f"{verdict(single.p50 < GOAL_P50_MS)} ({single.p50:.1f} ms at 1 connection, "
            f"{ray_v.loads[8].p50:.1f} ms at 8); 1,000-record request under "
            f"{GOAL_BATCH_MS:.0f} ms {verdict(ray_v.batch_ms < GOAL_BATCH_MS)} "
            f"({ray_v.batch_ms:.1f} ms)."
        )
    return "\n".join(lines) + "\n"


def _verdict(met: bool) -> str:
    return "met" if met else "not met"


def _best_by_round(variant: KeepingVariant) -> list[float]:
    """The variant's max throughput in each round (over the connection counts)."""
    return [max(by_round) for by_round in zip(*variant.ratios.values(), strict=True)]


def _throughput_ratio(one: KeepingVariant, other: KeepingVariant) -> tuple[float, str]:
    """``one``'s max throughput over ``other``'s: the median of the rounds' ratios (each round's
    runs are minutes apart, the rounds further), and the words saying so."""
    by_round = [a / b for a, b in zip(_best_by_round(one), _best_by_round(other), strict=True)]
    ratio = statistics.median(by_round)
    return ratio, (
        f"{ratio:.3f}, the median of the rounds' ratios of max throughput "
        f"({', '.join(f'{r:.2f}' for r in by_round)}; the medians over the rounds: "
        f"{one.best.rps:.0f} against {other.best.rps:.0f} req/s)"
    )


def _compared(one: KeepingVariant, other: KeepingVariant) -> str:
    """``one`` against ``other``: max throughput, p50 at 1 and 8 connections, CPU per request."""
    return (
        f"throughput {_throughput_ratio(one, other)[1]}, p50 "
        f"{one.loads[1].p50 - other.loads[1].p50:+.2f} ms at 1 "
        f"connection and {one.loads[8].p50 - other.loads[8].p50:+.2f} ms at 8; CPU per request at "
        f"{FULL} connections: {_cpu_difference(one, other)}"
    )


def _cpu_difference(one: KeepingVariant, other: KeepingVariant) -> str:
    cpu, other_cpu = one.cpu_ms[FULL], other.cpu_ms[FULL]
    return (
        f"replicas {cpu['replicas'] - other_cpu['replicas']:+.3f} ms (writer threads "
        f"{cpu['writer'] - other_cpu['writer']:+.3f}), PostgreSQL "
        f"{cpu['postgres'] - other_cpu['postgres']:+.3f} ms, the whole machine "
        f"{cpu['machine'] - other_cpu['machine']:+.3f} ms"
    )


def _cpu_cell(cpu: dict[str, float]) -> str:
    parts = ("replicas", "writer", "postgres", "haproxy", "machine")
    return " / ".join(f"{cpu[part]:.2f}" for part in parts)


def keeping_report(
    variants: dict[str, KeepingVariant], context: dict[str, Any], result: dict[str, Any]
) -> str:
    """The section of the keeping benchmark: the table, the goals, the rows kept."""
    off, on, shadow = variants["off"], variants["on"], variants["shadow"]
    versions = ", ".join(
        f"{name} {package_version(name)}"
        for name in ("ray", "fastapi", "uvicorn", "sqlalchemy", "psycopg2-binary", "xgboost")
        if _installed(name)
    )
    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split()[1]
    _, args, _ = serve_settings()
    cluster = f"num_cpus={result['num_cpus']}"
    if result["num_cpus"] > RAY_CPUS:
        cluster += f", a scheduling figure: the replicas' shares add up to more than {RAY_CPUS}"
    lines = [
        KEEPING_SECTION,
        "",
        f"Measured {datetime.now(UTC):%Y-%m-%d} with `{context['command']}` on {os.cpu_count()} "
        f"cores, {memory_gib():.0f} GiB, Python {platform.python_version()}, PostgreSQL "
        f"{context['postgres']} on the same machine (load average {context['load_before']:.1f} "
        f"at the start and {context['load_after']:.1f} at the end: the machine is shared); "
        f"{versions}, wrk {wrk_version}; the service's code at "
        f"{context.get('revision', 'an unrecorded commit')}; the run took "
        f"{context['took_s'] / 60:.1f} min, training included. The champion is the one above "
        f"(XGBoost, version "
        f"{context['version']}, trained on {context['where']}); the challenger in shadow is "
        f"version {context['shadow_version']}, {CHALLENGER_FAMILY.replace('_', ' ')} with its "
        f"default configuration trained on the same window, scored "
        + (
            "with its compiled featurizer."
            if context["shadow_featurizer"]
            else "through its pipeline (the compiled featurizer does not recognise it)."
        ),
        "",
        f"The applications side by side on one local Ray ({cluster}) in throughput "
        f"mode (HAProxy to the replicas' own HTTP servers, as recommended above), each built as "
        f"rollouts build it (`ServeCluster.app_config`: {ray_setup()}; the champion pinned in "
        f"`user_config`): keeping off (`sample_rate` 0: no writer thread); keeping on (every "
        f"answered record written to `served_predictions` in a fresh PostgreSQL database, at "
        f"least every {args.get('flush_seconds', 1.0)} s); keeping on with the challenger in "
        f"`shadow_version` (every answered record scored again by the writer thread and kept "
        f"with role `shadow`; a database of its own). wrk sends one real contact per request, "
        f"{context['seconds']:g} s per run. The variants take turns at each connection count "
        f"({', '.join(map(str, CONNECTIONS))}), the first of them rotating from one step "
        f"to the next, in {context['rounds']} rounds; each figure is the median over the rounds. "
        f"After each run of a keeping variant the benchmark waits until its rows are in the "
        f"table and none came for {SETTLED_S:g} s, so that one variant's writing does not fall "
        f"on the next one's load. CPU per request (ms) is read from /proc, divided by the "
        f"requests answered: over the run and that wait, the variant's replica processes and, "
        f"among their threads, the writer (named for the kernel by a benchmark-only patch that "
        f"each replica runs when it starts, Ray's `worker_process_setup_hook`), PostgreSQL "
        f"(the variant's connections and the server's background processes), HAProxy, and the "
        f"whole machine's busy time over the run alone (everyone's, wrk's included).",
        "",
        "| variant | p50 / p99 at 1 connection | p50 / p99 at 8 connections | max throughput "
        f"| CPU per request at {FULL} connections: replicas (all) / their writer threads / "
        "PostgreSQL / HAProxy / machine |",
        "|---|---|---|---|---|",
    ]
    for v in variants.values():
        best = v.best
        lines.append(
            f"| {v.variant.label} | {_cell(v.loads[1])} | {_cell(v.loads[8])} "
            f"| {best.rps:.0f} req/s ({best.connections} connections) "
            f"| {_cpu_cell(v.cpu_ms[FULL])} |"
        )
    lines += [
        "",
        "Throughput by connection count (req/s, median over the rounds):",
        "",
        "| variant | " + " | ".join(map(str, CONNECTIONS)) + " |",
        "|---|" + "---|" * len(CONNECTIONS),
    ]
    for v in variants.values():
        cells = " | ".join(f"{v.loads[c].rps:.0f}" for c in CONNECTIONS)
        lines.append(f"| {v.variant.label} | {cells} |")

    ratio, ratio_words = _throughput_ratio(on, off)
    p50_1, p50_8 = on.loads[1].p50 - off.loads[1].p50, on.loads[8].p50 - off.loads[8].p50
    lines += [
        "",
        "Goals, keeping on against keeping off in the same run:",
        f"- throughput at least {GOAL_KEEPING_THROUGHPUT:.0%} of off "
        f"{_verdict(ratio >= GOAL_KEEPING_THROUGHPUT)}: {ratio_words}.",
        f"- single-record p50 at most {GOAL_KEEPING_P50_MS:g} ms more than off "
        f"{_verdict(p50_1 <= GOAL_KEEPING_P50_MS)}: {p50_1:+.2f} ms at 1 connection "
        f"({on.loads[1].p50:.2f} against {off.loads[1].p50:.2f} ms); {p50_8:+.2f} ms at 8 "
        f"connections ({on.loads[8].p50:.2f} against {off.loads[8].p50:.2f}).",
        f"- where the difference goes, CPU per request at {FULL} connections (on against off): "
        f"{_cpu_difference(on, off)}.",
        f"- the shadow's cost, against keeping on without it: {_compared(shadow, on)}.",
    ]
    if all(name in variants for name in ("off-nometrics", "on-noinsert", "on-frozen")):
        bare, unwritten = variants["off-nometrics"], variants["on-noinsert"]
        frozen = variants["on-frozen"]
        if bare.metrics["answered"]:
            raise SystemExit("the replicas without metrics still exported their scores")
        lines += [
            "",
            "What the parts cost, each left out by a benchmark-only patch in the replicas of "
            "one more application (by the same hook; the service's code is unchanged):",
            f"- the Prometheus metrics of every request (keeping off against keeping off with "
            f"`RayTelemetry` replaced by `NoTelemetry`, whose replicas exported no series): "
            f"{_compared(off, bare)}.",
            f"- the queue and the writer thread building the rows (`insert_served` replaced by a "
            f"function that inserts nothing, against keeping off): {_compared(unwritten, off)}.",
            f"- inserting the rows into PostgreSQL (keeping on against the same without "
            f"inserts): {_compared(on, unwritten)}.",
            f"- what the garbage collector still costs, the service freezing its heap after each "
            f"model load (keeping on against the same with one more `gc.freeze()` once the app "
            f"is built): {_compared(on, frozen)}.",
        ]
    lines += [
        "",
        "Every answered record kept? Requests answered as wrk counted them (warm-up included; a "
        "request still in flight when a run ends is answered and kept but not counted by wrk) "
        "and as the replicas counted them (the live scores of `ray_bank_marketing_probability`), "
        "against the rows in `served_predictions` after the load and the replicas' own counts "
        "(`ray_bank_marketing_served_records_total`):",
        "",
        "| variant | answered: wrk / replicas | rows: live / shadow | counted kept / dropped "
        "/ duplicate | verdict |",
        "|---|---|---|---|---|",
    ]
    for v in (on, shadow):
        rows, metrics = v.rows or {"live": 0, "shadow": 0}, v.metrics
        expected_shadow = rows["live"] if v.variant.shadow else 0
        lost = metrics["answered"] - rows["live"] + (expected_shadow - rows["shadow"])
        whole = (
            lost == 0
            and metrics["dropped"] == 0
            and metrics["kept"] == rows["live"] + rows["shadow"]
            and rows["live"] >= v.wrk_requests
        )
        verdict = (
            "every one kept"
            if whole
            else f"{lost} row(s) missing, {metrics['dropped']} counted as dropped"
        )
        if not result["metrics_caught_up"]:
            verdict += f" (Ray's counters had not caught up after {METRICS_TIMEOUT_S:.0f} s)"
        lines.append(
            f"| {v.variant.label} | {v.wrk_requests} / {metrics['answered']} "
            f"| {rows['live']} / {rows['shadow']} | {metrics['kept']} / {metrics['dropped']} / "
            f"{metrics['duplicate']} | {verdict} |"
        )
    return "\n".join(lines) + "\n"


def service_revision() -> str:
    """The commit the service's code is at, and whether the work tree changes it."""
    root = Path(__file__).parents[2]

    def git(*arguments: str) -> str:
        done = subprocess.run(["git", *arguments], cwd=root, capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else ""

    revision = git("rev-parse", "--short", "HEAD") or "an unknown commit"
    changed = git(
        "status", "--porcelain", "--", "bank_marketing/serving", "bank_marketing/monitoring"
    )
    return revision + (" with uncommitted changes" if changed else "")


def _installed(name: str) -> bool:
    try:
        package_version(name)
    except Exception:
        return False
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", type=Path, help="Replace this file's serving section(s).")
    parser.add_argument("--seconds", type=float, default=8, help="wrk duration per run.")
    parser.add_argument(
        "--only",
        choices=["keeping"],
        help="Run only these variants: 'keeping', the app with keeping off, on, and on with a "
        "shadow challenger (and write only their section).",
    )
    parser.add_argument(
        "--rounds", type=int, default=ROUNDS, help="Rounds of the keeping variants' sweeps."
    )
    parser.add_argument(
        "--diagnose",
        action="store_true",
        help="Add three benchmark-only patched variants to the keeping ones: keeping off "
        "without Prometheus metrics, keeping on with rows built but not inserted, and keeping on "
        "with the heap frozen (gc.freeze) once the app is built.",
    )
    parser.add_argument(
        "--postgres",
        default=POSTGRES_ADMIN,
        help="PostgreSQL server (SQLAlchemy URL of a database to connect to) on which the "
        "keeping variants' throwaway databases are created and dropped.",
    )
    parser.add_argument(
        "--save-results",
        type=Path,
        help="Also write the keeping variants' raw results and the run's context here (JSON).",
    )
    parser.add_argument("--ray-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--keeping-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--uri", help=argparse.SUPPRESS)
    parser.add_argument("--files", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.ray_child:
        return ray_child(args.uri, args.files, args.seconds)
    if args.keeping_child:
        return keeping_child(args.files, args.seconds, args.rounds)
    source = os.environ.get("BANK_MARKETING_SOURCE", "")
    if not Path(source).is_file():
        raise SystemExit("set BANK_MARKETING_SOURCE to a local bank-full.csv")
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not on PATH (Debian: apt-get install wrk)")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    load_before = os.getloadavg()[0]
    began = time.monotonic()
    revision = service_revision()
    with sa.create_engine(args.postgres).connect() as connection:
        postgres_version = connection.execute(sa.text("SHOW server_version")).scalar_one()

    with tempfile.TemporaryDirectory() as folder:
        files = Path(folder)
        frame = load_contacts(source, files).frame
        frame = frame.assign(contact_month=recover_months(frame["month"]))
        print("training and registering the champion and the challenger")
        uri, version, where = register_champion(files, frame)
        shadow_version = register_challenger(files, frame)
        # The servers (gunicorn's workers, Ray's replicas) read the registry from the env.
        os.environ["MLFLOW_TRACKING_URI"] = uri
        later = frame[frame["contact_month"] > pd.Timestamp(AS_OF)][list(DEFAULT_INPUTS)]
        singles = json.loads(later.head(SINGLE_BODIES).to_json(orient="records"))
        batch = json.loads(later.tail(BATCH_RECORDS).to_json(orient="records"))
        (files / "bodies.txt").write_text("".join(json.dumps(r) + "\n" for r in singles))
        (files / "post.lua").write_text(WRK_SCRIPT)
        batch_body = json.dumps({"records": batch}).encode()
        (files / "batch.json").write_bytes(batch_body)

        state = ModelState(uri)
        model = state.load(version=version)
        if model is None:
            raise SystemExit(state.last_error)
        if model.featurizer is None:
            raise SystemExit("the compiled featurizer does not recognise the champion's pipeline")
        challenger = ModelState(uri).load(version=shadow_version)
        if challenger is None:
            raise SystemExit(f"the challenger, version {shadow_version}, does not load")
        texts = []
        if args.only is None:
            print("(a) in-process")
            variants = in_process(model, singles, batch, args.seconds)

            print(f"(b) Flask + gunicorn -w {GUNICORN_WORKERS}")
            with gunicorn(version) as base:
                loads = sweep(base, args.seconds, files)
                variants.append(
                    Variant(
                        f"(b) Flask + gunicorn, {GUNICORN_WORKERS} workers",
                        f"the original deployment: `gunicorn -w {GUNICORN_WORKERS}` (sync "
                        "workers), JSON to a DataFrame to `predict_proba`, no validation",
                        loads,
                        batch_latency(base, batch_body),
                    )
                )
            for mode in RAY_MODES:
                print(f"(c) Ray Serve, {RAY_MODES[mode]}")
                variants.append(ray_variant(mode, uri, files, args.seconds))
            texts.append(report(variants, version, where, args.seconds, load_before))

        print("(d) Ray Serve in throughput mode: keeping off, on, and on with a shadow challenger")
        result = keeping_run(
            uri, version, shadow_version, files, args.seconds, args.rounds, args.postgres,
            args.diagnose,
        )  # fmt: skip
    context = {
        "command": shlex.join(["python", "-m", MODULE, *sys.argv[1:]]),
        "revision": revision,
        "postgres": postgres_version,
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
        "took_s": time.monotonic() - began,
        "version": version,
        "where": where,
        "shadow_version": shadow_version,
        "shadow_featurizer": challenger.featurizer is not None,
        "seconds": args.seconds,
        "rounds": args.rounds,
    }
    if args.save_results:
        args.save_results.write_text(json.dumps({"context": context, "result": result}))
    texts.append(keeping_report(keeping_variants(result), context, result))
    for text in texts:
        print(text)
    if args.write:
        for text in texts:
            replace_section(args.write, text, after=SECTION)
    return 0


if __name__ == "__main__":
    sys.exit(main())
