"""Ingest benchmark: load, validate and materialize all 31 monthly partitions.

Each variant runs in its own process, one after the other in the same invocation, so the numbers
are comparable: wall time and the process's peak resident memory (``ru_maxrss`` from ``wait4``).

    python -m bank_marketing.benchmarks.ingest [--repeat 3] [--write BENCHMARKS.md]

Needs ``BANK_MARKETING_SOURCE`` pointing at a local copy of the data (it is not downloaded).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from bank_marketing.benchmarks.report import memory_gib, replace_section

SECTION = "## Ingest: all 31 monthly partitions"

PLAIN = """
import os, pandas as pd
from pathlib import Path
from bank_marketing.data.source import load_contacts
from bank_marketing.data.months import recover_months
from bank_marketing.data.quality import validate_month
loaded = load_contacts(os.environ["BANK_MARKETING_SOURCE"], Path(os.environ["BENCH_CACHE"]))
frame = loaded.frame.assign(contact_month=recover_months(loaded.frame["month"]))
rows = 0
for month in pd.date_range("2008-05-01", "2010-11-01", freq="MS"):
    rows += validate_month(frame[frame["contact_month"] == month], month).rows
assert rows == len(frame), rows
"""


@dataclass(frozen=True)
class Variant:
    name: str
    what: str
    command: list[str]


VARIANTS = [
    Variant(
        "plain Python",
        "load the file, recover months, validate each month (no Dagster, nothing stored)",
        [sys.executable, "-c", PLAIN],
    ),
    Variant(
        "bank-marketing run",
        "the same plus Dagster: raw_contacts and 31 contacts runs on a fresh SQLite instance, "
        "stored with the filesystem IO manager, rejects table written (what `make run` does)",
        [sys.executable, "-m", "bank_marketing.cli", "run"],
    ),
]


@dataclass(frozen=True)
class Measurement:
    seconds: float
    peak_mib: float


def measure(variant: Variant) -> Measurement:
    with tempfile.TemporaryDirectory() as home:
        env = {
            **os.environ,
            "BANK_MARKETING_HOME": home,
            "BENCH_CACHE": str(Path(home) / "cache"),
        }
        for name in ("DAGSTER_HOME", "BANK_MARKETING_DB_URL"):
            env.pop(name, None)
        start = time.perf_counter()
        process = subprocess.Popen(variant.command, env=env, stdout=subprocess.DEVNULL)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode != 0:
            raise SystemExit(f"{variant.name} failed with exit code {process.returncode}")
        return Measurement(seconds, usage.ru_maxrss / 1024)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--write", type=Path, help="Replace this file's ingest section.")
    args = parser.parse_args()
    source = os.environ.get("BANK_MARKETING_SOURCE", "")
    if not Path(source).is_file():
        raise SystemExit("set BANK_MARKETING_SOURCE to a local bank-full.csv")

    results: dict[str, list[Measurement]] = {v.name: [] for v in VARIANTS}
    for round_ in range(args.repeat):
        for variant in VARIANTS:  # interleaved, so load on the machine hits both alike
            results[variant.name].append(measure(variant))
            last = results[variant.name][-1]
            print(
                f"round {round_ + 1}: {variant.name}: {last.seconds:.1f} s, {last.peak_mib:.0f} MiB"
            )

    report = _report(results, args.repeat, Path(source).name)
    print(report)
    if args.write:
        replace_section(args.write, report)
    return 0


def _report(results: dict[str, list[Measurement]], repeat: int, source: str) -> str:
    lines = [
        SECTION,
        "",
        f"Measured {datetime.now(UTC):%Y-%m-%d} with `make bench` "
        f"(`python -m bank_marketing.benchmarks.ingest --repeat {repeat}`) on "
        f"{os.cpu_count()} cores, {memory_gib():.0f} GiB, Python {platform.python_version()}, "
        f"source `{source}`. Each variant runs in its own process, interleaved, {repeat} rounds; "
        "wall time includes interpreter start and imports. Goal: under 60 s and under 1 GiB.",
        "",
        "| variant | what it does | wall time, median (min-max) | peak memory, max |",
        "|---|---|---|---|",
    ]
    for variant in VARIANTS:
        runs = results[variant.name]
        seconds = [m.seconds for m in runs]
        lines.append(
            f"| {variant.name} | {variant.what} | {statistics.median(seconds):.1f} s "
            f"({min(seconds):.1f}-{max(seconds):.1f}) | {max(m.peak_mib for m in runs):.0f} MiB |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
