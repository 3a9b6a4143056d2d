"""The `bank-marketing` command: `run`, `land`, and the quiet console the commands that drive
the libraries share (results and errors on the terminal, the libraries' output in a log file)."""

from __future__ import annotations

import errno
import io
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from bank_marketing.cli import HomeConsole, disk_full_error, main

# Each channel a library talks on, inside quiet_console: a print, MLflow's eprint, a sensor's
# context logger (its own handler on stderr), a library logger, a warning, a write to file
# descriptor 2, and a child process, as Dagster's step workers are.
CHATTY = """
import logging, os, subprocess, sys, warnings
from pathlib import Path

import dagster as dg
from mlflow.utils.logging_utils import eprint

from bank_marketing.orchestration.console import quiet_console

with quiet_console(Path(sys.argv[1]), "chatty") as console:
    console.say("month table")
    print("library print")
    eprint("Created version '1' of model 'bank-marketing'.")
    dg.build_sensor_context().log.info("sensor chatter")
    logging.getLogger("evidently").info("library logger")
    warnings.warn("library warning")
    os.write(2, b"descriptor chatter\\n")
    subprocess.run([sys.executable, "-c", "import sys; print('child chatter', file=sys.stderr)"])
    console.error("a run failed")
    raise SystemExit(1 if sys.argv[2:] == ["exit"] else int("not a number"))
"""


def test_run_materializes_the_chosen_months_on_the_home_instance(
    bank_full_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("BANK_MARKETING_HOME", str(home))
    monkeypatch.setenv("BANK_MARKETING_SOURCE", str(bank_full_path))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.delenv("BANK_MARKETING_DB_URL", raising=False)

    assert main(["run", "--months", "2008-09", "2010-11", "--no-train"]) == 0

    out = capsys.readouterr().out
    assert "raw_contacts: 45211 rows" in out
    assert "2 of 2 months stored, 75 contacts." in out
    with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
        assert instance.get_materialized_partitions(dg.AssetKey("contacts")) == {
            "2008-09-01",
            "2010-11-01",
        }
    assert (home / "monitoring.db").is_file()


def test_run_reports_a_bad_source_and_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.setenv("BANK_MARKETING_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("BANK_MARKETING_SOURCE", str(tmp_path / "absent.csv"))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    assert main(["run"]) == 1
    err = capsys.readouterr().err
    assert f"error: {tmp_path / 'absent.csv'}: does not exist" in err
    assert "Traceback" not in err


def test_run_refuses_months_outside_the_data(monkeypatch: pytest.MonkeyPatch, tmp_path, capsys):
    monkeypatch.setenv("BANK_MARKETING_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    assert main(["run", "--months", "2011-01"]) == 2
    assert "no such month(s): 2011-01" in capsys.readouterr().err


def test_land_cuts_months_into_the_landing_location(
    tmp_path, bank_full_path, monkeypatch, capsys
) -> None:
    landing = tmp_path / "landing"
    monkeypatch.setenv("BANK_MARKETING_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("BANK_MARKETING_SOURCE", str(bank_full_path))
    monkeypatch.setenv("BANK_MARKETING_LANDING", str(landing))
    assert main(["land", "2008-08", "--through", "2008-10"]) == 0
    out = capsys.readouterr().out
    # 2008-09 has no calls: no file.
    assert sorted(p.name for p in landing.iterdir()) == [
        "contacts-2008-08.csv",
        "contacts-2008-10.csv",
    ]
    assert f"2 file(s) in {landing}" in out
    assert main(["land", "2011-01"]) == 2
    assert "outside the data's months 2008-05..2010-11" in capsys.readouterr().err


def _environ(home: Path, source: Path) -> dict[str, str]:
    env = {**os.environ, "BANK_MARKETING_HOME": str(home), "BANK_MARKETING_SOURCE": str(source)}
    env.pop("DAGSTER_HOME", None)
    env.pop("BANK_MARKETING_DB_URL", None)
    return env


@pytest.mark.parametrize("ending", ["exit", "exception"])
def test_the_console_shows_the_command_and_the_log_gets_the_libraries(
    tmp_path: Path, ending: str
) -> None:
    logs = tmp_path / "logs"
    done = subprocess.run(
        [sys.executable, "-c", CHATTY, str(logs), ending],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    (log,) = logs.glob("chatty-*.log")
    assert done.stdout == "month table\n", done.stdout
    assert done.stderr.startswith(f"error: a run failed\nlibrary output: {log}\n"), done.stderr
    if ending == "exception":
        # An unexpected error's traceback reaches the terminal, not the log.
        assert "ValueError: invalid literal for int()" in done.stderr
    else:
        assert done.stderr == f"error: a run failed\nlibrary output: {log}\n"
    text = log.read_text()
    for chatter in (
        "library print",
        "Created version '1' of model 'bank-marketing'.",
        "sensor chatter",
        "INFO evidently: library logger",
        "UserWarning: library warning",
        "descriptor chatter",
        "child chatter",
    ):
        assert chatter in text
    assert "month table" not in text and "a run failed" not in text


def test_a_failed_run_says_why_on_the_terminal_and_names_its_log(tmp_path: Path) -> None:
    home = tmp_path / "home"
    done = subprocess.run(
        [sys.executable, "-m", "bank_marketing.cli", "run", "--no-train"],
        env=_environ(home, tmp_path / "absent.csv"),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.startswith(f"error: {tmp_path / 'absent.csv'}: does not exist"), done.stderr
    (log,) = (home / "logs").glob("run-*.log")
    assert done.stderr.endswith(f"\nlibrary output: {log}\n"), done.stderr
    assert done.stdout.startswith("Reading "), done.stdout
    assert "does not exist" not in log.read_text()


def _sqlite_full() -> sqlite3.OperationalError:
    """SQLite's own error for a full database: one capped at two pages, then written to."""
    connection = sqlite3.connect(":memory:")
    connection.execute("PRAGMA max_page_count = 2")
    try:
        connection.execute("CREATE TABLE t (x)")
        for _ in range(100):
            connection.execute("INSERT INTO t VALUES (?)", ("x" * 1000,))
    except sqlite3.OperationalError as error:
        return error
    finally:
        connection.close()
    raise AssertionError("SQLite wrote past its page cap")


def _wrapped(error: Exception) -> Exception:
    """``error`` under a library's own exception, as MLflow and SQLAlchemy raise it."""
    try:
        try:
            raise error
        except Exception as cause:
            raise RuntimeError("API request to log_batch failed") from cause
    except RuntimeError as wrapper:
        return wrapper


def test_an_error_telling_of_a_full_disk_is_found_in_its_chain() -> None:
    full = _sqlite_full()
    assert disk_full_error(full) == "OperationalError: database or disk is full"
    assert disk_full_error(_wrapped(full)) == "OperationalError: database or disk is full"
    with Path("/dev/full").open("wb", buffering=0) as device, pytest.raises(OSError) as written:
        device.write(b"x")
    assert disk_full_error(written.value) == "OSError: [Errno 28] No space left on device"
    bare = OSError(errno.ENOSPC, "")
    assert disk_full_error(bare) == "OSError: [Errno 28] (No space left on device)"
    assert disk_full_error(_wrapped(ValueError("not a number"))) is None


def test_a_run_failure_telling_of_a_full_disk_names_the_home_and_its_free_space(
    tmp_path: Path,
) -> None:
    home = tmp_path / "not-yet" / "home"  # the free space of where it will be
    err = io.StringIO()
    console = HomeConsole(io.StringIO(), err, home)
    console.error("sqlite3.OperationalError: database or disk is full")
    console.error("sqlalchemy.exc.OperationalError: (sqlite3.OperationalError) disk I/O error")
    console.error("no such month(s): 2011-01")
    free = re.findall(r"\(([\d,]+) MB free\)", err.getvalue())
    assert len(free) == 2, err.getvalue()
    assert err.getvalue().splitlines() == [
        f"error: no space left under BANK_MARKETING_HOME={home} ({free[0]} MB free): "
        "sqlite3.OperationalError: database or disk is full",
        "error: a disk I/O error (a full disk is the usual cause) under "
        f"BANK_MARKETING_HOME={home} ({free[1]} MB free): "
        "sqlalchemy.exc.OperationalError: (sqlite3.OperationalError) disk I/O error",
        "error: no such month(s): 2011-01",
    ]
    expected = shutil.disk_usage(tmp_path).free // 2**20
    assert abs(int(free[0].replace(",", "")) - expected) < 64


def test_a_command_struck_by_a_full_disk_names_the_home_and_exits_1(
    tmp_path: Path, bank_full_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """``land`` writing a month where the device is full (/dev/full, in place of the file)."""
    home = tmp_path / "home"
    landing = home / "landing"
    landing.mkdir(parents=True)
    (landing / ".contacts-2008-08.csv.partial").symlink_to("/dev/full")
    monkeypatch.setenv("BANK_MARKETING_HOME", str(home))
    monkeypatch.setenv("BANK_MARKETING_SOURCE", str(bank_full_path))
    monkeypatch.delenv("BANK_MARKETING_LANDING", raising=False)

    assert main(["land", "2008-08"]) == 1
    err = capsys.readouterr().err
    assert re.fullmatch(
        rf"error: no space left under BANK_MARKETING_HOME={re.escape(str(home))} "
        r"\([\d,]+ MB free\): OSError: \[Errno 28\] No space left on device\n",
        err,
    ), err
    assert list(landing.iterdir()) == []  # no month, and no partial file left


def test_stop_touches_nothing_when_no_head_of_this_machine_has_that_dashboard(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from bank_marketing_tests.conftest import free_port

    monkeypatch.setenv("BANK_MARKETING_HOME", str(tmp_path))
    address = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("RAY_DASHBOARD_ADDRESS", address)
    assert main(["stop"]) == 0
    assert f"no Ray head of this machine has its dashboard at {address}" in capsys.readouterr().out

    monkeypatch.setenv("RAY_DASHBOARD_ADDRESS", "http://ray-head.example:8265")
    assert main(["stop"]) == 1
    assert "is not on this machine; nothing is stopped" in capsys.readouterr().err
