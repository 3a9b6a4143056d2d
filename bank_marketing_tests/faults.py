"""The fault matrix: each fault test measures what its fault did and records one row.

A row says which part was struck, by what, when, what the system did, how many requests failed,
how many rows were lost and how long it took to recover. The tests assert the figures a user
relies on (no lost rows, no 5xx, recovery within a bound); they also record them, so that
``RELIABILITY.md`` can hold the figures of one run. ``python -m
bank_marketing_tests.faults RELIABILITY.md`` runs the fault tests and rewrites its table.

Recording is off unless ``BANK_MARKETING_FAULT_REPORT`` names a file: a test appends its row
there as one JSON line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from bank_marketing.monitoring import store

REPORT_VARIABLE = "BANK_MARKETING_FAULT_REPORT"
TABLE_START = "<!-- fault matrix: written by python -m bank_marketing_tests.faults -->"
TABLE_END = "<!-- end of the fault matrix -->"
COLUMNS = (
    ("part", "Part"),
    ("fault", "Fault"),
    ("strikes", "When it strikes"),
    ("outcome", "What the system did"),
    ("requests_failed", "Requests failed"),
    ("rows_lost", "Rows lost"),
    ("recovery_s", "Time to recover (s)"),
    ("test", "Test"),
)


@dataclass(frozen=True)
class FaultRow:
    """One fault and its measured answer. ``None`` where a figure does not apply (no requests
    were in flight, or nothing needs recovering)."""

    part: str
    fault: str
    strikes: str
    outcome: str
    requests_failed: int | None
    rows_lost: int | None
    recovery_s: float | None
    test: str = ""


@dataclass
class Probe:
    """A client that keeps asking for a prediction (every 50 ms) while a fault strikes: what
    it saw is what a user of the service saw."""

    url: str
    record: dict[str, Any]
    latencies_ms: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    versions: list[str] = field(default_factory=list)  # the model version of each answer
    failed_at: list[float] = field(default_factory=list)  # time.monotonic() of each failure
    stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, daemon=True)
        self._thread.start()

    def finish(self) -> None:
        self.stop.set()
        self._thread.join()

    def answered(self) -> int:
        return len(self.latencies_ms) - len(self.failures)

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as client:
            while not self.stop.is_set():
                started = time.perf_counter()
                try:
                    response = client.post("/predict", json=self.record)
                    if response.status_code == 200:
                        self.versions.append(response.json()["model_version"])
                    else:
                        self.failures.append(f"{response.status_code}: {response.text[:200]}")
                        self.failed_at.append(time.monotonic())
                except httpx.HTTPError as error:
                    self.failures.append(repr(error))
                    self.failed_at.append(time.monotonic())
                self.latencies_ms.append(1000 * (time.perf_counter() - started))
                self.stop.wait(0.05)


def answering_again(
    probes: list[Probe], since: float, timeout_s: float, steady_s: float = 5
) -> float:
    """Wait until every probe has answered for ``steady_s`` since its last failure after
    ``since`` (a ``time.monotonic()``); return the seconds from ``since`` to that last failure
    (0 when nothing failed). Raises AssertionError after ``timeout_s``."""
    deadline = since + timeout_s
    while True:
        last_failure = max((t for p in probes for t in p.failed_at if t >= since), default=since)
        if time.monotonic() - last_failure >= steady_s and all(p.answered() for p in probes):
            return last_failure - since
        if time.monotonic() > deadline:
            raise AssertionError(f"the service did not answer steadily within {timeout_s:.0f} s")
        time.sleep(0.5)


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def stored_predictions(db_url: str) -> int:
    """Rows in the monitoring database's predictions table."""
    engine = store.connect(db_url)
    try:
        with engine.connect() as connection:
            return connection.execute(
                sa.select(sa.func.count()).select_from(store.predictions)
            ).scalar_one()
    finally:
        engine.dispose()


def record(row: FaultRow, test: str | None = None) -> None:
    """Append ``row`` to the report file, when one is set; ``test`` is the pytest node id."""
    target = os.environ.get(REPORT_VARIABLE)
    if not target:
        return
    if test is None:
        test = os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" ", 1)[0]
    with open(target, "a", encoding="utf-8") as out:
        out.write(json.dumps({**asdict(row), "test": test}) + "\n")


def read_rows(path: Path) -> list[FaultRow]:
    if not path.exists():
        return []
    return [FaultRow(**json.loads(line)) for line in path.read_text().splitlines() if line]


def table(rows: list[FaultRow]) -> str:
    """The rows as a Markdown table, in the order of the parts and faults."""
    lines = [
        "| " + " | ".join(title for _, title in COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    for row in sorted(rows, key=lambda found: (found.part, found.test)):
        values = asdict(row)
        cells = []
        for name, _ in COLUMNS:
            value = values[name]
            if value is None:
                cells.append("n/a")
            elif name == "recovery_s":
                cells.append(f"{value:.1f}")
            elif name == "test":
                cells.append(f"`{value.split('::', 1)[-1]}`" if value else "")
            else:
                cells.append(str(value).replace("|", "\\|"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def replace_table(document: Path, rows: list[FaultRow], context: str) -> None:
    """Put the table (and ``context``: when and how it was measured) between the markers."""
    text = document.read_text()
    if TABLE_START not in text or TABLE_END not in text:
        raise SystemExit(f"{document} has no fault matrix markers ({TABLE_START} ... {TABLE_END})")
    before, rest = text.split(TABLE_START, 1)
    _, after = rest.split(TABLE_END, 1)
    body = f"{TABLE_START}\n{context}\n\n{table(rows)}\n{TABLE_END}"
    document.write_text(before + body + after)


def main(argv: list[str] | None = None) -> int:
    """Run the fault tests once (``-m faults``) and write their rows into the document."""
    args = argv if argv is not None else sys.argv[1:]
    if not args:
        print("usage: python -m bank_marketing_tests.faults RELIABILITY.md [pytest options]")
        return 2
    document, pytest_args = Path(args[0]), args[1:]
    with tempfile.TemporaryDirectory() as folder:
        report = Path(folder) / "faults.jsonl"
        started = datetime.now(UTC)
        command = [sys.executable, "-m", "pytest", "-m", "faults", "-n", "0", *pytest_args]
        done = subprocess.run(
            command,
            env={**os.environ, REPORT_VARIABLE: str(report)},
            check=False,
        )
        rows = read_rows(report)
    minutes = (datetime.now(UTC) - started).total_seconds() / 60
    context = (
        f"Measured {started:%Y-%m-%d} in one run of the fault tests ({len(rows)} rows, "
        f"{minutes:.1f} min, pytest exit {done.returncode}) on {os.cpu_count()} cores."
    )
    replace_table(document, rows, context)
    print(f"{document}: {len(rows)} fault row(s) written")
    return done.returncode


if __name__ == "__main__":
    raise SystemExit(main())
