"""Training benchmark: each family's fit time and validation ROC AUC, and a whole round's wall time.

Side by side in one run, with the defaults of the training assets:
- as of 2009-06 (the 12-month window 2008-07..2009-06, split 80/20 stratified, seed 42);
- on a random stratified 80/20 split of all 45,211 contacts (seed 42);
- a whole round as `make run` runs it: `training_job` as of 2009-06 with the five candidates in
  parallel processes, MLflow logging and registration included (wall time of the run).

    python -m bank_marketing.benchmarks.training [--write BENCHMARKS.md] [--skip-round]

Needs ``BANK_MARKETING_SOURCE`` pointing at a local copy of the data.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
from sklearn.model_selection import train_test_split

from bank_marketing.assets.training import CANDIDATE_CONFIGS, TrainingSetConfig
from bank_marketing.benchmarks.report import memory_gib, replace_section
from bank_marketing.data.months import recover_months
from bank_marketing.data.source import load_contacts
from bank_marketing.training.candidates import fit_candidate
from bank_marketing.training.features import DEFAULT_INPUTS
from bank_marketing.training.windows import (
    TRAIN,
    assemble_window,
    describe,
    split_window,
    window_months,
)

SECTION = "## Training: five families"
AS_OF = "2009-06-01"


def _families(train: pd.DataFrame, validation: pd.DataFrame) -> dict[str, tuple[float, float]]:
    results = {}
    for family, config_class in CANDIDATE_CONFIGS.items():
        params, seed, cap = config_class().fit_arguments()
        fitted = fit_candidate(
            family, params, DEFAULT_INPUTS, train, validation, max_train_rows=cap, seed=seed
        )
        results[family] = (fitted.fit_seconds, fitted.validation_metrics["roc_auc"])
        print(f"  {family}: {fitted.fit_seconds:.1f} s, ROC AUC {results[family][1]:.4f}")
    return results


def _round() -> int:
    """In a fresh home (the caller's environment): ingest, then time one training round."""
    import dagster as dg

    from bank_marketing.cli import main as command
    from bank_marketing.runner import run_training

    if command(["run", "--no-train"]) != 0:
        return 1
    with dg.DagsterInstance.get() as instance:
        started = time.perf_counter()
        result = run_training(instance, AS_OF)
        print(f"ROUND_SECONDS={time.perf_counter() - started:.1f}")
    return 0 if result.success else 1


def _round_seconds() -> float:
    """Wall time of ``training_job`` as of 2009-06, measured in a fresh process and home."""
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "BANK_MARKETING_HOME": home}
        for name in ("DAGSTER_HOME", "BANK_MARKETING_DB_URL", "MLFLOW_TRACKING_URI"):
            env.pop(name, None)
        done = subprocess.run(
            [sys.executable, "-m", "bank_marketing.benchmarks.training", "--round"],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
    if done.returncode != 0:
        raise SystemExit(f"the training round failed:\n{done.stderr[-3000:]}")
    marker = [line for line in done.stdout.splitlines() if line.startswith("ROUND_SECONDS=")]
    return float(marker[0].split("=")[1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", type=Path, help="Replace this file's training section.")
    parser.add_argument("--skip-round", action="store_true", help="Only the per-family fits.")
    parser.add_argument("--round", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.round:
        return _round()
    source = os.environ.get("BANK_MARKETING_SOURCE", "")
    if not Path(source).is_file():
        raise SystemExit("set BANK_MARKETING_SOURCE to a local bank-full.csv")

    with tempfile.TemporaryDirectory() as cache:
        frame = load_contacts(source, Path(cache)).frame
    frame = frame.assign(contact_month=recover_months(frame["month"]))
    defaults = TrainingSetConfig()
    as_of = pd.Timestamp(AS_OF)
    by_month = {f"{m:%Y-%m-%d}": g for m, g in frame.groupby("contact_month")}
    window = assemble_window(by_month, as_of, defaults.window_months)
    where = describe(window_months(as_of, defaults.window_months))
    split = split_window(
        window,
        defaults.validation_share,
        defaults.seed,
        where,
        by=defaults.split_by,
    )
    print(f"as of 2009-06 ({len(window)} contacts):")
    windowed = _families(
        split[split["split"] == TRAIN].drop(columns="split"),
        split[split["split"] != TRAIN].drop(columns="split"),
    )
    train, validation = train_test_split(
        frame, test_size=0.2, stratify=frame["y"], random_state=defaults.seed
    )
    print(f"random 80/20 split of all {len(frame)} contacts:")
    random = _families(train, validation)
    round_ = None if args.skip_round else _round_seconds()

    lines = [
        SECTION,
        "",
        f"Measured {datetime.now(UTC):%Y-%m-%d} with `python -m bank_marketing.benchmarks.training`"
        f" on {os.cpu_count()} cores, {memory_gib():.0f} GiB, Python {platform.python_version()};"
        " default hyperparameters of the training assets, the default inputs, one process, one "
        "thread per model. SVC fits a stratified sample of at most `max_train_rows` rows. The "
        f"window as of 2009-06 is split as a training round splits it (by {defaults.split_by}).",
        "",
        f"| family | as of 2009-06 ({where}, {len(split)} contacts): fit s | validation ROC AUC "
        "| random 80/20 split of all data: fit s | validation ROC AUC |",
        "|---|---|---|---|---|",
    ]
    for family in CANDIDATE_CONFIGS:
        lines.append(
            f"| {family} | {windowed[family][0]:.1f} | {windowed[family][1]:.4f} "
            f"| {random[family][0]:.1f} | {random[family][1]:.4f} |"
        )
    best = max(random.values(), key=lambda r: r[1])[1]
    lines += ["", f"Best on the random split: {best:.4f} (goal: at least 0.81)."]
    if round_ is not None:
        lines.append(
            f"A whole round, `training_job` as of 2009-06 on a fresh home: {round_:.0f} s wall "
            "(training set, five candidates in parallel processes two at a time, each logged to "
            "MLflow on SQLite and registered, then the promotion); goal: under 3 minutes."
        )
    report = "\n".join(lines) + "\n"
    print(report)
    if args.write:
        replace_section(args.write, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
