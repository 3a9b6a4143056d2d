"""Replay benchmark: `make run` (``bank-marketing replay``) end to end on a fresh home.

Runs the replay in its own process on a new ``BANK_MARKETING_HOME``, times it and reads its peak
resident memory (``ru_maxrss`` from ``wait4``: the largest process of the replay's own tree; a
Ray head it starts is not part of that tree). Then it reads the replay's ``replay.csv`` and its
summary line, and writes the section below, with the month table and the plot.

    python -m bank_marketing.benchmarks.replay [--no-serve] [--write BENCHMARKS.md]
        [--plot docs/replay_roc_auc.png]

Needs ``BANK_MARKETING_SOURCE`` pointing at a local copy of the data (it is not downloaded). With
serving on (the default, as `make run`), the Ray head the replay starts is stopped afterwards
unless one was already answering on the dashboard address when the benchmark began.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pandas as pd

from bank_marketing.benchmarks.report import memory_gib, replace_section
from bank_marketing.orchestration import replay_report

SECTION = "## Replay: the closed loop, 2009-01..2010-11"
SUMMARY_PREFIX = "mean monthly ROC AUC"
# Goals of the closed loop (issue: monitoring and the closed loop).
GOAL_ROC_AUC, GOAL_RETRAINS, GOAL_SECONDS = 0.66, 12, 15 * 60


@dataclass(frozen=True)
class Run:
    seconds: float
    peak_mib: float
    summary: str
    months: pd.DataFrame
    plot: Path | None


def replay(serve: bool, home: Path) -> Run:
    """``bank-marketing replay`` on ``home``; its output is echoed as it comes."""
    env = {**os.environ, "BANK_MARKETING_HOME": str(home)}
    for name in ("DAGSTER_HOME", "BANK_MARKETING_DB_URL", "MLFLOW_TRACKING_URI"):
        env.pop(name, None)
    command = [sys.executable, "-m", "bank_marketing.cli", "replay"]
    if not serve:
        command.append("--no-serve")
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    summary = ""
    for line in process.stdout:
        print(line, end="", flush=True)
        if line.startswith(SUMMARY_PREFIX):
            summary = line.strip()
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"bank-marketing replay failed with exit code {code}")
    if not summary:
        raise SystemExit("bank-marketing replay printed no summary line")
    reports = home / "reports"
    plot = reports / "replay_roc_auc.png"
    return Run(
        seconds=seconds,
        peak_mib=usage.ru_maxrss / 1024,
        summary=summary,
        months=read_months(reports / "replay.csv"),
        plot=plot if plot.exists() else None,
    )


def read_months(path: Path) -> pd.DataFrame:
    """The replay's ``replay.csv``; versions stay text (a column with gaps would read as floats)."""
    return pd.read_csv(
        path,
        dtype={"month": str, "scored_by": str, "champion_after": str, "champion_family": str},
    )


def _dashboard_answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/api/version", timeout=3).status_code < 500
    except httpx.HTTPError:
        return False


def report(run: Run, serve: bool, plot: Path | None) -> str:
    months = run.months
    loop = months["roc_auc"].mean(skipna=True)
    retrains = int(months["retrained"].sum())
    command = "`make run`" if serve else "`bank-marketing replay --no-serve`"
    lines = [
        SECTION,
        "",
        f"Measured {datetime.now(UTC):%Y-%m-%d} with `python -m bank_marketing.benchmarks.replay"
        f"{'' if serve else ' --no-serve'}` on {os.cpu_count()} cores, {memory_gib():.0f} GiB, "
        f"Python {platform.python_version()}: {command} on a fresh home (SQLite Dagster instance, "
        "MLflow on SQLite, monitoring on SQLite"
        f"{', local Ray Serve' if serve else ''}), the default configuration and policy.",
        "",
        f"- {run.summary}",
        f"- wall time {run.seconds:.0f} s (goal under {GOAL_SECONDS} s: "
        f"{_met(run.seconds < GOAL_SECONDS)}); peak memory {run.peak_mib:.0f} MiB",
        f"- closed loop {loop:.3f} with {retrains} retrains (goal at least {GOAL_ROC_AUC} with at "
        f"most {GOAL_RETRAINS}: {_met(loop >= GOAL_ROC_AUC and retrains <= GOAL_RETRAINS)})",
        "",
    ]
    years = replay_report.by_year(months)
    lines += [
        "| series | "
        + " | ".join(c.removeprefix("mean_roc_auc_") for c in years.columns[1:-1])
        + " | all months |",
        "|" + "---|" * len(years.columns),
    ]
    for row in years.to_dict("records"):
        cells = [row["series"], *(replay_report.number(row[c]) for c in years.columns[1:])]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    if plot is not None:
        lines += [f"![monthly ROC AUC]({plot.as_posix()})", ""]
    baseline_columns = [c for c in months.columns if c.startswith("roc_auc_")]
    header = [*replay_report.HEADERS, "ROC AUC, loop"]
    header += [c.removeprefix("roc_auc_") for c in baseline_columns]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in months.to_dict("records"):
        shown = replay_report.cells(row) + [replay_report.number(row[c]) for c in baseline_columns]
        lines.append("| " + " | ".join(shown) + " |")
    return "\n".join(lines) + "\n"


def _met(met: bool) -> str:
    return "met" if met else "not met"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-serve", action="store_true", help="Replay without Ray Serve.")
    parser.add_argument("--write", type=Path, help="Replace this file's replay section.")
    parser.add_argument("--plot", type=Path, help="Copy the replay's plot here (e.g. docs/).")
    args = parser.parse_args()
    source = os.environ.get("BANK_MARKETING_SOURCE", "")
    if not Path(source).is_file():
        raise SystemExit("set BANK_MARKETING_SOURCE to a local bank-full.csv")

    serve = not args.no_serve
    dashboard = os.environ.get("RAY_DASHBOARD_ADDRESS", "http://127.0.0.1:8265")
    ray_was_up = serve and _dashboard_answers(dashboard)
    with tempfile.TemporaryDirectory() as folder:
        try:
            run = replay(serve, Path(folder) / "home")
        finally:
            if serve and not ray_was_up:
                subprocess.run([str(Path(sys.executable).parent / "ray"), "stop"], check=False)
        plot = None
        if args.plot and run.plot is not None:
            args.plot.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(run.plot, args.plot)
            plot = args.plot
        section = report(run, serve, plot)
    print(section)
    if args.write:
        replace_section(args.write, section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
