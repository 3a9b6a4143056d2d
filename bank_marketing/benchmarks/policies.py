"""Policy backtest benchmark: ``bank-marketing policies`` on the whole history, from a cold cache.

On a fresh home it runs the command (every family fitted as of every month 2008-12..2010-10,
then every policy replayed over 2009-01..2010-11), measures its wall time and peak memory, and
writes its section of BENCHMARKS.md: every policy's retrains and mean monthly ROC AUC for 2009
(where the default is chosen), 2010 (held out) and both, the choice and its check, and how CBPE's
estimate tracked the realized ROC AUC.

    python -m bank_marketing.benchmarks.policies [--write BENCHMARKS.md] [--plot docs/policies.png]

Needs ``BANK_MARKETING_SOURCE`` pointing at a local copy of the data (it is not downloaded).
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
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from bank_marketing.benchmarks.report import memory_gib, replace_section

SECTION = "## Policies: retraining policies backtested on the history"
GOAL_SECONDS = 10 * 60
KEPT_LINES = ("chosen on 2009:", "held out, 2010:", "default:", "CBPE against")


def run(home: Path) -> tuple[float, float, list[str]]:
    """Seconds, peak MiB and the lines the command reported."""
    env = {**os.environ, "BANK_MARKETING_HOME": str(home)}
    env.pop("BANK_MARKETING_TRAINING_CONFIG", None)
    command = [str(Path(sys.executable).parent / "bank-marketing"), "policies"]
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    kept = []
    for line in process.stdout:
        print(line, end="", flush=True)
        if line.startswith(KEPT_LINES):
            kept.append(line.strip())
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit("bank-marketing policies failed")
    # The largest of the command and the fitting processes it waited for (Linux's wait4).
    return seconds, usage.ru_maxrss / 1024, kept


def report(
    seconds: float, peak_mib: float, kept: list[str], summaries: pd.DataFrame, plot: Path | None
) -> str:
    lines = [
        SECTION,
        "",
        f"Measured {datetime.now(UTC):%Y-%m-%d} with `python -m bank_marketing.benchmarks.policies`"
        f" on {os.cpu_count()} cores, {memory_gib():.0f} GiB, Python {platform.python_version()}: "
        "`bank-marketing policies` on a fresh home (no cached rounds), the default training "
        "configuration; 23 rounds of five families (as of 2008-12..2010-10) fitted in 2 "
        "processes, then every policy replayed on 2009-01..2010-11.",
        "",
        f"- wall time {seconds:.0f} s (goal under {GOAL_SECONDS} s: "
        f"{'met' if seconds < GOAL_SECONDS else 'not met'}); peak memory {peak_mib:.0f} MiB",
        *(f"- {line}" for line in kept),
        "",
    ]
    if plot is not None:
        lines += [f"![retraining policies]({plot.as_posix()})", ""]
    columns = [
        "policy",
        "retrains",
        "retrains_2009",
        "retrains_2010",
        "mean_roc_auc_2009",
        "mean_roc_auc_2010",
        "mean_roc_auc",
        "auc_gain_per_retrain",
    ]
    shown = summaries.sort_values(["mean_roc_auc", "retrains"], ascending=[False, True])
    lines += ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in shown[columns].to_dict("records"):
        cells = [_cell(value) for value in row.values()]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _cell(value: object) -> str:
    if isinstance(value, float):
        return "-" if value != value else f"{value:.4f}"
    return str(value)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", type=Path, help="Replace this file's policies section.")
    parser.add_argument("--plot", type=Path, help="Copy the plot here (e.g. docs/).")
    args = parser.parse_args()
    if not Path(os.environ.get("BANK_MARKETING_SOURCE", "")).is_file():
        raise SystemExit("set BANK_MARKETING_SOURCE to a local bank-full.csv")
    with tempfile.TemporaryDirectory() as folder:
        home = Path(folder) / "home"
        seconds, peak, kept = run(home)
        reports = home / "reports"
        summaries = pd.read_csv(reports / "policies.csv")
        plot = None
        if args.plot:
            args.plot.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(reports / "policies.png", args.plot)
            plot = args.plot
        section = report(seconds, peak, kept, summaries, plot)
    print(section)
    if args.write:
        replace_section(args.write, section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
