"""Loop benchmark: from a monthly file landing to its ``drift_report``, under the Dagster daemon.

On a fresh home (SQLite instance, MLflow and monitoring on SQLite) it loads the history up to
2008-12 and trains a first champion, as ``make live`` does, then starts ``dagster-daemon run`` with
the default sensor intervals (30 s) and a Ray head for the service, and lands the months
2009-01..2009-06 one at a time. For each it measures the seconds from the file's rename into the
landing location to the month's ``drift_report`` materialization, then waits until the daemon has
no run left (a retrain and a rollover may follow) before landing the next, so each month is
measured on an idle daemon.

    python -m bank_marketing.benchmarks.loop [--months 6] [--write BENCHMARKS.md]

Needs ``BANK_MARKETING_SOURCE`` pointing at a local copy of the data (it is not downloaded).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg

from bank_marketing.benchmarks.report import memory_gib, replace_section
from bank_marketing.data.landing import cut_months
from bank_marketing.orchestration.live import WORKSPACE, background_process, load_history, ray_head
from bank_marketing.settings import Settings

SECTION = "## Loop: a landed month to its drift report, under the daemon"
GOAL_SECONDS = 120
FIRST_AS_OF = "2008-12-01"
ACTIVE = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


def measure(settings: Settings, months: list[str]) -> dict[str, float]:
    """Seconds from landing to drift_report, per month."""
    from bank_marketing.orchestration.definitions import build_definitions

    defs = build_definitions(settings)
    latencies: dict[str, float] = {}
    with dg.DagsterInstance.get() as instance:
        load_history(defs, instance, FIRST_AS_OF, print)
        with ExitStack() as stack:
            stack.enter_context(ray_head(settings, print))
            log = settings.home / "logs" / "dagster-daemon.log"
            log.parent.mkdir(parents=True, exist_ok=True)
            stack.enter_context(
                background_process(
                    "dagster-daemon", ["run", "-w", str(WORKSPACE)], settings, log, print
                )
            )
            drift = dg.AssetKey("drift_report")
            for month in months:
                started = time.monotonic()
                cut_months(settings.source, settings.cache_dir, settings.landing_dir, month)
                key = f"{month}-01"
                while key not in instance.get_materialized_partitions(drift):
                    if time.monotonic() - started > 1800:
                        raise SystemExit(f"{month}: no drift_report within 30 minutes; see {log}")
                    time.sleep(0.5)
                latencies[month] = time.monotonic() - started
                print(f"{month}: drift_report {latencies[month]:.0f} s after landing", flush=True)
                while instance.get_runs(dg.RunsFilter(statuses=ACTIVE)):
                    time.sleep(2)
    return latencies


def report(latencies: dict[str, float]) -> str:
    median = statistics.median(latencies.values())
    met = "met" if median < GOAL_SECONDS else "not met"
    lines = [
        SECTION,
        "",
        f"Measured {datetime.now(UTC):%Y-%m-%d} with `python -m bank_marketing.benchmarks.loop` on "
        f"{os.cpu_count()} cores, {memory_gib():.0f} GiB, Python {platform.python_version()}: a "
        "fresh home (SQLite instance), history to 2008-12 and a first champion, then "
        "`dagster-daemon run` with the default intervals (sensors and automation every 30 s) "
        "and each month landed once the daemon was idle.",
        "",
        f"- median {median:.0f} s from a file landing to its drift_report (goal under "
        f"{GOAL_SECONDS} s: {met}); fastest {min(latencies.values()):.0f} s, slowest "
        f"{max(latencies.values()):.0f} s",
        "",
        "| month | seconds |",
        "|---|---|",
        *(f"| {month} | {seconds:.0f} |" for month, seconds in latencies.items()),
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--months", type=int, default=6, help="Months to land from 2009-01.")
    parser.add_argument("--write", type=Path, help="Replace this file's loop section.")
    args = parser.parse_args()
    source = os.environ.get("BANK_MARKETING_SOURCE", "")
    if not Path(source).is_file():
        raise SystemExit("set BANK_MARKETING_SOURCE to a local bank-full.csv")
    months = [f"2009-{month:02d}" for month in range(1, args.months + 1)]
    with tempfile.TemporaryDirectory() as folder:
        home = Path(folder) / "home"
        os.environ["BANK_MARKETING_HOME"] = str(home)
        os.environ["DAGSTER_HOME"] = str(home / "dagster")
        for name in ("BANK_MARKETING_DB_URL", "MLFLOW_TRACKING_URI", "BANK_MARKETING_LANDING"):
            os.environ.pop(name, None)
        os.environ.pop("BANK_MARKETING_SENSOR_INTERVAL_SECONDS", None)
        settings = Settings.from_env()
        settings.prepare()
        section = report(measure(settings, months))
    print(section)
    if args.write:
        replace_section(args.write, section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
