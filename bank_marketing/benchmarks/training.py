"""Training benchmark: each family's fit time and validation ROC AUC, and a whole round's wall time.

Side by side in one run, with the defaults of the training assets:
- as of 2009-06 (the 12-month window 2008-07..2009-06, split as a training round splits it);
- on a random stratified 80/20 split of all 45,211 contacts (seed 42), with the default inputs,
  and with every input known before the call plus the days of the year of the call and of the
  previous contact (``model_inputs``: ``columns`` all fifteen, ``day_of_year`` on); the best of
  each also by 5-fold cross-validation over all contacts, which says how much of its score the
  one split's luck is;
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
from sklearn.model_selection import StratifiedKFold, train_test_split

from bank_marketing.benchmarks.report import memory_gib, replace_section
from bank_marketing.data.months import recover_months
from bank_marketing.data.source import load_contacts
from bank_marketing.training.config import FAMILY_PARAMS, Inputs, WindowSplit
from bank_marketing.training.features import PRE_CALL_INPUTS
from bank_marketing.training.windows import (
    TRAIN,
    assemble_window,
    describe,
    split_window,
    window_months,
)

SECTION = "## Training: five families"
AS_OF = "2009-06-01"
GOAL = 0.81
FOLDS = 5
DEFAULTS = Inputs()
EVERYTHING = Inputs(columns=list(PRE_CALL_INPUTS), day_of_year=True)


def _fit(
    family: str, inputs: Inputs, train: pd.DataFrame, validation: pd.DataFrame
) -> tuple[float, float]:
    """Fit seconds and validation ROC AUC of ``family``'s defaults on ``inputs``."""
    fitted = FAMILY_PARAMS[family]().fit(family, inputs, train, validation)
    return fitted.fit_seconds, fitted.validation_metrics["roc_auc"]


def _families(
    train: pd.DataFrame, validation: pd.DataFrame, inputs: Inputs = DEFAULTS
) -> dict[str, tuple[float, float]]:
    results = {}
    for family in FAMILY_PARAMS:
        results[family] = _fit(family, inputs, train, validation)
        print(f"  {family}: {results[family][0]:.1f} s, ROC AUC {results[family][1]:.4f}")
    return results


def _cross_validated(frame: pd.DataFrame, family: str, inputs: Inputs, seed: int) -> float:
    """Mean validation ROC AUC of ``family`` over stratified folds of all contacts."""
    folds = StratifiedKFold(n_splits=FOLDS, shuffle=True, random_state=seed)
    scores = [
        _fit(family, inputs, frame.iloc[train], frame.iloc[validation])[1]
        for train, validation in folds.split(frame, frame["y"])
    ]
    return sum(scores) / len(scores)


def _round() -> int:
    """In a fresh home (the caller's environment): ingest, then time one training round."""
    import dagster as dg

    from bank_marketing.cli import main as command
    from bank_marketing.orchestration.runner import run_training

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
    defaults = WindowSplit()
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
    print(f"random 80/20 split of all {len(frame)} contacts, the default inputs:")
    random = _families(train, validation)
    print("the same split, every input known before the call and the derived days of the year:")
    everything = _families(train, validation, EVERYTHING)
    bests = []  # (what, family, its score on the split, its cross-validated score)
    for what, inputs, results in (
        ("the default inputs", DEFAULTS, random),
        (f"all {len(PRE_CALL_INPUTS)} inputs and the days of the year", EVERYTHING, everything),
    ):
        family = max(results, key=lambda name: results[name][1])
        cross_validated = _cross_validated(frame, family, inputs, defaults.seed)
        bests.append((what, family, results[family][1], cross_validated))
    round_ = None if args.skip_round else _round_seconds()

    lines = [
        SECTION,
        "",
        f"Measured {datetime.now(UTC):%Y-%m-%d} with `python -m bank_marketing.benchmarks.training`"
        f" on {os.cpu_count()} cores, {memory_gib():.0f} GiB, Python {platform.python_version()};"
        " default hyperparameters of the training assets, the default inputs (but in the last two "
        "columns), one process, one thread per model. SVC fits a stratified sample of at most "
        "`max_train_rows` rows. The "
        f"window as of 2009-06 is split as a training round splits it (by {defaults.split_by}).",
        "",
        f"| family | as of 2009-06 ({where}, {len(split)} contacts): fit s | validation ROC AUC "
        "| random 80/20 split of all data: fit s | validation ROC AUC "
        f"| the same split, all {len(PRE_CALL_INPUTS)} inputs known before the call and the days "
        "of the year of the call and of the previous contact (`day_of_year`): fit s "
        "| validation ROC AUC |",
        "|---|---|---|---|---|---|---|",
    ]
    for family in FAMILY_PARAMS:
        lines.append(
            f"| {family} | {windowed[family][0]:.1f} | {windowed[family][1]:.4f} "
            f"| {random[family][0]:.1f} | {random[family][1]:.4f} "
            f"| {everything[family][0]:.1f} | {everything[family][1]:.4f} |"
        )
    lines.append("")
    for what, family, score, cross_validated in bests:
        lines.append(
            f"- Best on the random split, {what}: {family} {score:.4f} (goal: at least {GOAL}: "
            f"{'met' if score >= GOAL else 'not met'}); {family} by {FOLDS}-fold "
            f"cross-validation over all contacts: {cross_validated:.4f}."
        )
    if round_ is not None:
        lines.append(
            f"- A whole round, `training_job` as of 2009-06 on a fresh home: {round_:.0f} s wall "
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
