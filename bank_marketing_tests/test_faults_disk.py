"""Fault matrix row of the disk (RELIABILITY.md): the filesystem under ``BANK_MARKETING_HOME``
full while a month is monitored and while a training round logs its candidates, and what
``bank-marketing run`` then tells the user (the home, its free space, the storage's error).

The home sits on a small tmpfs mounted for the test (so it needs root, as CI has here); a filler
file takes every free byte, then goes away.
"""

from __future__ import annotations

import contextlib
import errno
import multiprocessing
import multiprocessing.queues
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from mlflow import MlflowClient

from bank_marketing.orchestration.assets.contacts import contacts, raw_contacts
from bank_marketing.orchestration.assets.monitoring import drift_report, predictions
from bank_marketing.orchestration.definitions import build_definitions
from bank_marketing.orchestration.runner import backfill_contacts, failure_message
from bank_marketing.serving.model import load_version
from bank_marketing.training.candidates import fit_candidate
from bank_marketing.training.features import DEFAULT_INPUTS
from bank_marketing.training.registry import CHAMPION_ALIAS
from bank_marketing.training.tracking import MODEL_NAME
from bank_marketing_tests.conftest import ingested_copy, make_settings, skip_or_fail
from bank_marketing_tests.faults import FaultRow, record, stored_predictions
from bank_marketing_tests.registries import first_contacts, log_round

pytestmark = [pytest.mark.integration, pytest.mark.faults]

DISK_MB = 256
MONTH, MONTH_CONTACTS = "2008-10-01", 80
DISK_FULL = ("No space left on device", "database or disk is full", "disk I/O error")
PARAMS = {"C": 1.0, "max_iter": 2000, "class_weight": "none"}


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK_MB}m", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        skip_or_fail(f"cannot mount a {DISK_MB} MB tmpfs (needs root): {done.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "--lazy", str(mount_point)], check=False)


def fill(disk: Path) -> Path:
    """A file taking every free byte of ``disk``: written until the filesystem refuses."""
    filler = disk / "filler"
    with filler.open("wb", buffering=0) as out:
        for chunk in (1 << 20, 1 << 12, 1):
            block = bytes(chunk)
            with contextlib.suppress(OSError):
                while True:
                    out.write(block)
    with pytest.raises(OSError) as refused:
        (disk / "probe").write_bytes(bytes(4096))
    assert refused.value.errno == errno.ENOSPC
    return filler


FORK = multiprocessing.get_context("fork")


def log_in_child(results: Any, registry: Path, *candidate: Any) -> None:
    fitted, train, validation = candidate
    try:
        log_round(registry, [(fitted, {"C": 1.0})], train, validation, champion=None)
    except Exception as error:
        results.put((False, f"{type(error).__name__}: {error}"))
    else:
        results.put((True, ""))


def command(home: Path, source: Path, tracking_uri: str, *args: str) -> tuple[int, str]:
    """``bank-marketing *args`` on ``home``, as a user runs it: its exit code and its stderr."""
    env = {
        **os.environ,
        "BANK_MARKETING_HOME": str(home),
        "BANK_MARKETING_SOURCE": str(source),
        "MLFLOW_TRACKING_URI": tracking_uri,
    }
    env.pop("DAGSTER_HOME", None)
    env.pop("BANK_MARKETING_DB_URL", None)
    done = subprocess.run(
        [sys.executable, "-m", "bank_marketing.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    return done.returncode, done.stderr


def cause(error: str) -> str:
    """The error's type and the words that say the disk is full."""
    said = next((words for words in DISK_FULL if words in error), "?")
    return f"{error.split(':', 1)[0]} ... {said!r}"


def test_a_full_disk_fails_monitoring_and_training_clearly_and_both_work_once_space_is_back(
    small_disk: Path, bank_full_path: Path, ingested_home: Path
) -> None:
    home = ingested_copy(ingested_home, small_disk / "home")
    frame = first_contacts(bank_full_path, small_disk, 6000)
    train, validation = frame.iloc[:4500], frame.iloc[4500:]
    fitted = fit_candidate("logistic_regression", PARAMS, DEFAULT_INPUTS, train, validation)
    registry = home / "registry"
    registry.mkdir()
    uri, _ = log_round(registry, [(fitted, {"C": 1.0})], train, validation)
    client = MlflowClient(uri)
    champion = str(client.get_model_version_by_alias(MODEL_NAME, CHAMPION_ALIAS).version)

    settings = make_settings(home, bank_full_path, MLFLOW_TRACKING_URI=uri)
    defs = build_definitions(settings)
    with dg.instance_for_test(temp_dir=str(settings.dagster_home)) as instance:
        assert all(o.success for o in backfill_contacts(defs, instance, [MONTH]))

        def monitor() -> tuple[bool, str]:
            try:
                result = dg.materialize(
                    [raw_contacts, contacts, predictions, drift_report],
                    selection=[predictions, drift_report],
                    partition_key=MONTH,
                    instance=instance,
                    resources=defs.resources,
                    raise_on_error=False,
                )
            except Exception as error:  # the instance's own storage may be what fails
                return False, f"{type(error).__name__}: {error}"
            return result.success, failure_message(result) or ""

        def train_round() -> tuple[bool, str]:
            """A training round's logging in a process of its own, as the daemon runs each run."""
            results: multiprocessing.queues.Queue = FORK.Queue()
            child = FORK.Process(
                target=log_in_child, args=(results, registry, fitted, train, validation)
            )
            child.start()
            child.join(timeout=300)
            return results.get(timeout=10)

        filler = fill(small_disk)
        monitored, monitor_error = monitor()
        trained, train_error = train_round()
        struck_versions = {v.version for v in client.search_model_versions(f"name='{MODEL_NAME}'")}
        # The command a user runs: its error names the home and how much space is left there.
        exit_code, said = command(
            home, bank_full_path, uri, "run", "--months", MONTH[:7], "--no-train"
        )

        assert not monitored and not trained
        # SQLite says "database or disk is full", or "disk I/O error" when it cannot grow its
        # journal; files say ENOSPC.
        for error in (monitor_error, train_error):
            assert any(cause in error for cause in DISK_FULL), error
        assert exit_code == 1, said
        told = re.search(
            rf"^error: (no space left|a disk I/O error \(a full disk is the usual cause\)) "
            rf"under BANK_MARKETING_HOME={re.escape(str(home))} \(([\d,]+) MB free\): (.+)$",
            said,
            re.MULTILINE,
        )
        assert told is not None, said
        assert any(cause in told.group(0) for cause in DISK_FULL), said
        assert int(told.group(2).replace(",", "")) == 0, said
        # Nothing half-written: no month of predictions, the champion as it was and loadable.
        assert stored_predictions(settings.db_url) == 0
        assert (
            str(client.get_model_version_by_alias(MODEL_NAME, CHAMPION_ALIAS).version) == champion
        )
        assert load_version(client, champion).version == champion

        filler.unlink()
        back = time.monotonic()
        monitored, rerun_error = monitor()
        recovered_s = time.monotonic() - back
        trained, retrain_error = train_round()
        assert monitored, rerun_error
        assert trained, retrain_error
        assert stored_predictions(settings.db_url) == MONTH_CONTACTS
        after_versions = {v.version for v in client.search_model_versions(f"name='{MODEL_NAME}'")}

    assert len(after_versions - struck_versions) == 1
    record(
        FaultRow(
            part="embedded home (SQLite, MLflow files)",
            fault=f"the filesystem under BANK_MARKETING_HOME full (a {DISK_MB} MB tmpfs)",
            strikes="when a month is monitored and when a training round logs its candidate",
            outcome=f"both failed with the storage's error (monitoring: "
            f"{cause(monitor_error)}; training: {cause(train_error)}); `bank-marketing run` "
            f'exits 1 with "error: {told.group(1)} under BANK_MARKETING_HOME=<home> (0 MB '
            f'free): {cause(told.group(3))}"; no predictions stored, the champion '
            f"v{champion} unchanged and loadable; with space back both reran, "
            f"{MONTH_CONTACTS} predictions stored once",
            requests_failed=None,
            rows_lost=0,
            recovery_s=recovered_s,
        )
    )
