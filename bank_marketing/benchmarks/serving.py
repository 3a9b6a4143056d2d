"""Serving benchmark: one champion scored in-process, by Flask + gunicorn and by the Ray Serve app.

Side by side in one run on this machine, with the same registered model version: an XGBoost
pipeline with the training assets' default configuration and inputs, trained as of 2009-06 and
registered in a temporary SQLite MLflow store.

- (a) in-process, no HTTP, the limit: one record built into a DataFrame and scored by the
  pipeline's ``predict_proba``; and the compiled featurizer the service uses, feeding the estimator.
- (b) Flask under ``gunicorn -w 2``, the original deployment (``flask_baseline``).
- (c) the Ray Serve app as ``serve_config.yaml`` deploys it, on a local Ray with 2 CPUs: behind
  Serve's default HTTP proxy, and in Ray's throughput mode (HAProxy in front of the replicas'
  own HTTP servers), each on a fresh cluster in a child process.

HTTP load comes from wrk, one real contact per request (cycling through 200 of them): latency
p50/p99 at 1 and 8 connections and the maximum throughput over a sweep of connection counts.
The 1,000-record latency is the median of repeated single requests, one at a time.

    python -m bank_marketing.benchmarks.serving [--write BENCHMARKS.md] [--seconds 8]

Needs ``BANK_MARKETING_SOURCE`` pointing at a local copy of the data, and wrk on PATH.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import re
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
    """One wrk run: requests per second and latency percentiles, in ms."""

    connections: int
    rps: float
    p50: float
    p99: float


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


def register_champion(folder: Path, frame: pd.DataFrame) -> tuple[str, str, str]:
    """Train the default XGBoost as of 2009-06, register it as champion; (uri, version, window)."""
    defaults = WindowSplit()
    as_of = pd.Timestamp(AS_OF)
    by_month = {f"{m:%Y-%m-%d}": g for m, g in frame.groupby("contact_month")}
    window = assemble_window(by_month, as_of, defaults.window_months)
    where = describe(window_months(as_of, defaults.window_months))
    split = split_window(window, defaults.validation_share, defaults.seed, where)
    train = split[split["split"] == TRAIN].drop(columns="split")
    validation = split[split["split"] != TRAIN].drop(columns="split")
    config = FAMILY_PARAMS["xgboost"]()
    fitted = config.fit("xgboost", Inputs(), train, validation)
    params = config.fit_arguments()[0]
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(
        experiment_id=ensure_experiment("serving-benchmark", (folder / "artifacts").as_uri())
    )
    with mlflow.start_run(run_name="serving benchmark"):
        record = log_candidate(
            fitted,
            params=params,
            inputs=list(DEFAULT_INPUTS),
            train=train,
            validation=validation,
            tags={"as_of": AS_OF[:7], "window": where},
            data_source=os.environ["BANK_MARKETING_SOURCE"],
        )
    MlflowClient(uri).set_registered_model_alias(MODEL_NAME, CHAMPION_ALIAS, record.model_version)
    return uri, record.model_version, where


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
# stays in 8160-8189 and its files in the run's temporary folder.
THROUGHPUT_MODE = {
    "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
    "RAY_SERVE_ENABLE_HA_PROXY": "1",
    "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": "8160",
    "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": "8169",
    "RAY_SERVE_DIRECT_INGRESS_MIN_GRPC_PORT": "8170",
    "RAY_SERVE_DIRECT_INGRESS_MAX_GRPC_PORT": "8179",
    "RAY_SERVE_HAPROXY_STATS_PORT": "8180",
    "RAY_SERVE_HAPROXY_METRICS_PORT": "8181",
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


@contextmanager
def ray_serve(uri: str) -> Iterator[str]:
    """The app on a fresh local Ray cluster (the caller's env decides the mode)."""
    import ray
    from ray import serve

    from bank_marketing.serving.deployment import PredictionService, service_args

    options, args, env = serve_settings()
    os.environ.update(env)
    port = _free_port(8100, 8159)
    ray.init(address="local", num_cpus=RAY_CPUS, include_dashboard=False, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(
            PredictionService.options(**options).bind(**service_args(args | {"tracking_uri": uri})),
            name="bank-marketing",
            route_prefix="/",
        )
        base = f"http://127.0.0.1:{port}"
        wait_healthy(base, "the Ray Serve app")
        yield base
    finally:
        serve.shutdown()
        ray.shutdown()


def ray_child(uri: str, files: Path, seconds: float) -> int:
    """In a child process: serve, load, and print the results as one JSON line."""
    with ray_serve(uri) as base:
        loads = sweep(base, seconds, files)
        batch_ms = batch_latency(base, (files / "batch.json").read_bytes())
    result = {"loads": [vars(load) for load in loads.values()], "batch_ms": batch_ms}
    print("RESULT=" + json.dumps(result), flush=True)
    return 0


def ray_variant(mode: str, uri: str, files: Path, seconds: float) -> Variant:
    env = dict(os.environ)
    if mode == "throughput":
        haproxy = files / "haproxy"
        haproxy.mkdir(exist_ok=True)
        env.update(THROUGHPUT_MODE)
        env.update({name: str(haproxy / leaf) for name, leaf in HAPROXY_FILES.items()})
    command = [sys.executable, "-m", "bank_marketing.benchmarks.serving", "--ray-child"]
    command += ["--uri", uri, "--files", str(files), "--seconds", str(seconds)]
    done = subprocess.run(command, env=env, stdout=subprocess.PIPE, text=True, check=False)
    marker = [line for line in done.stdout.splitlines() if line.startswith("RESULT=")]
    print("\n".join(line for line in done.stdout.splitlines() if not line.startswith("RESULT=")))
    if done.returncode != 0 or not marker:
        raise SystemExit(f"the Ray Serve run ({mode}) failed with exit code {done.returncode}")
    result = json.loads(marker[0].removeprefix("RESULT="))
    loads = {load["connections"]: Load(**load) for load in result["loads"]}
    return Variant(
        f"(c) Ray Serve app, {'default proxy' if mode == 'proxy' else 'throughput mode'}",
        f"{RAY_MODES[mode]}; local Ray, num_cpus={RAY_CPUS}; {ray_setup()}",
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", type=Path, help="Replace this file's serving section.")
    parser.add_argument("--seconds", type=float, default=8, help="wrk duration per run.")
    parser.add_argument("--ray-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--uri", help=argparse.SUPPRESS)
    parser.add_argument("--files", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.ray_child:
        return ray_child(args.uri, args.files, args.seconds)
    source = os.environ.get("BANK_MARKETING_SOURCE", "")
    if not Path(source).is_file():
        raise SystemExit("set BANK_MARKETING_SOURCE to a local bank-full.csv")
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not on PATH (Debian: apt-get install wrk)")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    load_before = os.getloadavg()[0]

    with tempfile.TemporaryDirectory() as folder:
        files = Path(folder)
        frame = load_contacts(source, files).frame
        frame = frame.assign(contact_month=recover_months(frame["month"]))
        print("training and registering the champion")
        uri, version, where = register_champion(files, frame)
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
        print("(a) in-process")
        variants = in_process(model, singles, batch, args.seconds)

        print(f"(b) Flask + gunicorn -w {GUNICORN_WORKERS}")
        with gunicorn(version) as base:
            loads = sweep(base, args.seconds, files)
            variants.append(
                Variant(
                    f"(b) Flask + gunicorn, {GUNICORN_WORKERS} workers",
                    f"the original deployment: `gunicorn -w {GUNICORN_WORKERS}` (sync workers), "
                    "JSON to a DataFrame to `predict_proba`, no validation",
                    loads,
                    batch_latency(base, batch_body),
                )
            )
        for mode in RAY_MODES:
            print(f"(c) Ray Serve, {RAY_MODES[mode]}")
            variants.append(ray_variant(mode, uri, files, args.seconds))

    text = report(variants, version, where, args.seconds, load_before)
    print(text)
    if args.write:
        replace_section(args.write, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
