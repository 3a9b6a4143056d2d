"""The monitoring database's schema migrations (bank_marketing/monitoring/migrations/), on SQLite
and on the machine's PostgreSQL (a throwaway database, tables in schema ``monitoring``).

The newest revision makes exactly the tables ``store.metadata`` declares; a database at the
previous revision, or made by the ``create_all`` code before migrations, holding rows in every
table, is upgraded without losing one; two processes upgrading at once both succeed; the live
traffic revision goes back down; and what cannot be upgraded is refused with a reason.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from bank_marketing.cli import main
from bank_marketing.monitoring import migrations, store
from bank_marketing.monitoring.served import insert_served
from bank_marketing_tests.conftest import REPO

HEAD = migrations.head()
PREVIOUS = "0001"
LIVE_TRAFFIC = ("served_predictions", "served_outcomes", "served_traffic")

# -- a few realistic rows in every table ----------------------------------------------------------

T0 = datetime(2026, 12, 6, 9, 15, 2, 125000, tzinfo=UTC)
REJECTED = {
    "age": 212, "job": "management", "marital": "married", "education": "tertiary",
    "default": "no", "balance": "n/a", "housing": "yes", "loan": "no", "contact": "cellular",
    "day": 14, "month": "jul", "duration": 151, "campaign": 2, "pdays": -1, "previous": 0,
    "poutcome": "unknown", "y": "no",
}  # fmt: skip
SOURCE_SHA256 = "e003ab9ba07160dd9e7dc257e924f4961a6dfaed4a3c2c157c38621995b68c08"
ROWS: dict[str, list[dict[str, Any]]] = {
    "contact_rejects": [
        {
            "month": date(2009, 7, 1), "line": 27301,
            "reasons": "age: 212 is above 95; balance: 'n/a' is not an integer",
            "record": json.dumps(REJECTED), "source_sha256": SOURCE_SHA256, "rejected_at": T0,
        },
        {
            "month": date(2009, 7, 1), "line": 27388,
            "reasons": "job: 'astronaut' is not one of admin., blue-collar, ...",
            "record": json.dumps({**REJECTED, "age": 41, "balance": 1270, "job": "astronaut"}),
            "source_sha256": SOURCE_SHA256, "rejected_at": T0,
        },
    ],
    "predictions": [
        {
            "month": date(2009, 7, 1), "line": line, "probability": probability,
            "model_version": "7", "scored_at": T0,
        }
        for line, probability in ((27300, 0.04127731), (27302, 0.51730012), (27303, 0.19283377))
    ],
    "drift_reports": [
        {
            "month": date(2009, 7, 1), "model_version": "7", "rows": 1130,
            "reference_rows": 9412, "input_columns": 11, "drifted_columns": 3,
            "drifted_share": 3 / 11, "prediction_drift": 0.1342,
            "prediction_drift_method": "Wasserstein distance (normed)", "missing_share": 0.0,
            "note": None, "report_path": "/var/lib/bank-marketing/reports/drift-2009-07.html",
            "computed_at": T0,
        },
        {
            "month": date(2009, 8, 1), "model_version": "7", "rows": 1, "reference_rows": 9412,
            "input_columns": 11, "drifted_columns": 0, "drifted_share": None,
            "prediction_drift": None, "prediction_drift_method": "Wasserstein distance (normed)",
            "missing_share": None, "note": "one contact: too few rows for drift tests",
            "report_path": "/var/lib/bank-marketing/reports/drift-2009-08.html",
            "computed_at": T0,
        },
    ],
    "monthly_quality": [
        {
            "month": date(2009, 7, 1), "model_version": "7", "rows": 1130, "roc_auc": 0.6871,
            "pr_auc": 0.2213, "accuracy": 0.8912, "subscription_rate": 0.1088,
            "mean_probability": 0.0975, "computed_at": T0,
        },
        {
            "month": date(2009, 8, 1), "model_version": "7", "rows": 1, "roc_auc": None,
            "pr_auc": None, "accuracy": 1.0, "subscription_rate": 0.0,
            "mean_probability": 0.0412, "computed_at": T0,
        },
    ],
    "retrain_signals": [
        {
            "month": date(2009, 7, 1), "model_version": "7", "rows": 1130,
            "prediction_drift": 0.1342, "drift_null_mean": 0.0381, "drift_null_sd": 0.0113,
            "drift_z": 8.5, "drift_p_value": 0.0, "expected_roc_auc": 0.7412,
            "expected_roc_auc_se": 0.0121, "realized_roc_auc": 0.6871,
            "realized_roc_auc_se": 0.0198, "realized_z": -2.33, "estimated_roc_auc": 0.7055,
            "estimated_roc_auc_error": 0.014, "estimated_drop": 0.0357, "note": None,
            "computed_at": T0,
        },
        {
            "month": date(2009, 8, 1), "model_version": "7", "rows": 1, **dict.fromkeys(
                ("prediction_drift", "drift_null_mean", "drift_null_sd", "drift_z",
                 "drift_p_value", "realized_roc_auc", "realized_roc_auc_se", "realized_z",
                 "estimated_roc_auc", "estimated_roc_auc_error", "estimated_drop")),
            "expected_roc_auc": 0.7412, "expected_roc_auc_se": 0.0121,
            "note": "one contact: no signal", "computed_at": T0,
        },
    ],
    "grafana_alerts": [
        {
            "fingerprint": "5eed0f5eed0f5eed", "starts_at": T0, "status": "firing",
            "alertname": "Prediction drift", "month": "2009-07", "ends_at": None,
            "resolved_at": None,
            "labels": {"alertname": "Prediction drift", "month": "2009-07"},
            "annotations": {"summary": "prediction drift 0.134 > 0.1"},
            "trigger_values": {"A": 0.1342}, "generator_url": "http://grafana:3000/alerting/1",
            "receiver": "bank-marketing", "group_key": '{}:{alertname="Prediction drift"}',
            "received_at": T0,
        },
        {
            "fingerprint": "c0ffee00c0ffee00", "starts_at": T0, "status": "resolved",
            "alertname": None, "month": None, "ends_at": T0, "resolved_at": T0, "labels": {},
            "annotations": {}, "trigger_values": None, "generator_url": None, "receiver": None,
            "group_key": None, "received_at": T0,
        },
    ],
    "served_predictions": [
        {
            "request_id": "8d4fb2a4-6a55-4be1-9f3e-2f4c1d0e7a11", "record": record, "role": role,
            "received_at": T0, "model_version": version,
            "inputs": {"age": 41, "job": "technician", "balance": 1270, "housing": "yes",
                       "contact": "cellular", "day": 5, "month": "dec", "campaign": 1,
                       "pdays": -1, "previous": 0, "poutcome": "unknown"},
            "probability": probability, "latency_ms": latency,
        }
        for record, role, version, probability, latency in (
            (0, "live", "7", 0.0843, 3.72), (0, "shadow", "8", 0.1207, None),
            (1, "live", "7", 0.4411, 3.72),
        )
    ],
    "served_outcomes": [
        {
            "request_id": "8d4fb2a4-6a55-4be1-9f3e-2f4c1d0e7a11", "record": record,
            "subscribed": subscribed, "reported_at": T0,
        }
        for record, subscribed in ((0, False), (1, True))
    ],
    "served_traffic": [
        {
            "day": date(2026, 12, 5), "model_version": "7", "role": "live", "requests": 1200,
            "rows": 1450, "reference_rows": 9412, "input_columns": 11, "drifted_columns": 2,
            "drifted_share": 2 / 11, "prediction_drift": 0.0711,
            "prediction_drift_method": "Wasserstein distance (normed)", "missing_share": 0.0,
            "mean_probability": 0.1204, "labelled_rows": 310, "roc_auc": 0.7391,
            "accuracy": 0.8903, "subscription_rate": 0.1129, "note": None, "computed_at": T0,
        },
    ],
}  # fmt: skip


# -- databases ------------------------------------------------------------------------------------


@pytest.fixture(
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)],
)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A new, empty monitoring database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'monitoring.db'}"
    database = request.getfixturevalue("postgres_database")
    return f"postgresql://postgres@127.0.0.1:5432/{database}"


@pytest.fixture
def engine(url: str) -> Iterator[sa.Engine]:
    """An engine on it, tables in schema ``monitoring`` on PostgreSQL, not upgraded."""
    engine = store.engine_for(url)
    yield engine
    engine.dispose()


def made_before_migrations(engine: sa.Engine, revision: str) -> None:
    """The tables of ``revision`` as the code before migrations made them: ``create_all``."""
    schema = migrations.schema_of(engine)
    with engine.begin() as connection:
        if schema:
            connection.execute(sa.schema.CreateSchema(schema, if_not_exists=True))
        migrations.tables_at(revision).create_all(connection)


def fill(engine: sa.Engine, revision: str) -> None:
    """Insert the rows of every table of ``revision`` (as that revision declared them)."""
    tables = migrations.tables_at(revision).tables
    with engine.begin() as connection:
        for name, table in tables.items():
            connection.execute(sa.insert(table), ROWS[name])


def stored(engine: sa.Engine) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table in the database, as reflected from it, in key order."""
    schema = migrations.schema_of(engine)
    with engine.connect() as connection:
        names = sa.inspect(connection).get_table_names(schema=schema)
        rows = {}
        for name in sorted(set(names) - {"alembic_version"}):
            table = sa.Table(name, sa.MetaData(), autoload_with=connection, schema=schema)
            order = list(table.primary_key.columns) or list(table.columns)
            rows[name] = [
                tuple(row) for row in connection.execute(sa.select(table).order_by(*order))
            ]
    return rows


def differences_from(engine: sa.Engine, metadata: sa.MetaData) -> list[str]:
    with engine.connect() as connection:
        return migrations.differences(connection, metadata, migrations.schema_of(engine))


# -- the newest revision is the code's schema -----------------------------------------------------


def test_the_newest_revision_makes_exactly_the_tables_the_code_declares(
    engine: sa.Engine,
) -> None:
    done = migrations.upgrade(engine)
    assert done == migrations.Migration(before=None, adopted=None, after=HEAD)
    assert migrations.current(engine) == HEAD
    assert differences_from(engine, store.metadata) == []
    # A declaration changed without a revision is caught, and named.
    changed = sa.MetaData()
    for table in store.metadata.tables.values():
        table.to_metadata(changed)
    changed.tables["served_traffic"].append_column(sa.Column("region", sa.String(16)))
    changed.tables["predictions"].c.model_version.type = sa.String(64)
    found = differences_from(engine, changed)
    assert "column served_traffic.region is missing" in found
    assert any(line.startswith("column predictions.model_version: type is") for line in found)
    assert len(found) == 2, found


def test_the_revisions_before_migrations_are_what_create_all_made() -> None:
    """tables_at's revisions hold the tables the code declared, the newest all of them."""
    assert tuple(migrations.revisions()[:2]) == migrations.BEFORE_MIGRATIONS
    assert set(migrations.tables_at(PREVIOUS).tables) == set(store.metadata.tables) - set(
        LIVE_TRAFFIC
    )
    assert set(migrations.tables_at("0002").tables) == set(store.metadata.tables)
    assert set(ROWS) == set(store.metadata.tables)


# -- upgrades keep every row ----------------------------------------------------------------------


def test_upgrading_from_the_previous_revision_keeps_every_row(engine: sa.Engine, url: str) -> None:
    migrations.upgrade(engine, PREVIOUS)
    assert migrations.current(engine) == PREVIOUS
    fill(engine, PREVIOUS)
    before = stored(engine)
    assert {name: len(rows) for name, rows in before.items()} == {
        name: len(ROWS[name]) for name in migrations.tables_at(PREVIOUS).tables
    }

    started = time.perf_counter()
    done = migrations.upgrade(engine)
    elapsed_s = time.perf_counter() - started

    assert done == migrations.Migration(before=PREVIOUS, adopted=None, after=HEAD)
    after = stored(engine)
    for name, rows in before.items():
        assert after[name] == rows, name
    assert all(after[name] == [] for name in LIVE_TRAFFIC)
    assert differences_from(engine, store.metadata) == []
    # The code reads the rows written before, and writes the new tables.
    assert store.read_predictions(engine)["probability"].tolist() == [
        row["probability"] for row in ROWS["predictions"]
    ]
    assert store.read_drift_reports(engine)["note"].tolist() == [
        row["note"] for row in ROWS["drift_reports"]
    ]
    assert insert_served(engine, ROWS["served_predictions"]) == 3
    print(
        f"\n{engine.dialect.name}: {PREVIOUS} -> {HEAD} in {elapsed_s * 1000:.0f} ms; rows "
        f"before/after: "
        + ", ".join(f"{name} {len(rows)}/{len(after[name])}" for name, rows in before.items())
    )


@pytest.mark.parametrize("revision", ["0001", "0002"])
def test_a_database_made_before_migrations_is_adopted(engine: sa.Engine, revision: str) -> None:
    made_before_migrations(engine, revision)
    fill(engine, revision)
    before = stored(engine)

    assert migrations.recognize(engine) == revision
    done = migrations.upgrade(engine)

    assert done == migrations.Migration(before=None, adopted=revision, after=HEAD)
    assert migrations.current(engine) == HEAD
    after = stored(engine)
    for name, rows in before.items():
        assert after[name] == rows, name
    assert set(after) == set(store.metadata.tables)
    assert differences_from(engine, store.metadata) == []


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ("without served_outcomes", "table served_outcomes is missing"),
        (
            "without contact_rejects.source_sha256",
            "column contact_rejects.source_sha256 is missing",
        ),
    ],
)
def test_tables_that_match_no_revision_are_refused_naming_the_difference(
    engine: sa.Engine, url: str, change: str, named: str
) -> None:
    metadata = sa.MetaData()
    for table in migrations.tables_at("0002").tables.values():
        if change == "without served_outcomes" and table.name == "served_outcomes":
            continue
        if change.startswith("without contact_rejects") and table.name == "contact_rejects":
            kept = [column for column in table.columns if column.name != "source_sha256"]
            sa.Table(
                table.name,
                metadata,
                *(
                    sa.Column(
                        column.name,
                        column.type,
                        nullable=column.nullable,
                        primary_key=column.primary_key,
                        comment=column.comment,
                    )
                    for column in kept
                ),
            )
            continue
        table.to_metadata(metadata)
    schema = migrations.schema_of(engine)
    with engine.begin() as connection:
        if schema:
            connection.execute(sa.schema.CreateSchema(schema))
        metadata.create_all(connection)
    before = stored(engine)

    with pytest.raises(migrations.MigrationError, match="no alembic_version table") as refused:
        store.connect(url)
    assert named in str(refused.value)
    with pytest.raises(migrations.MigrationError, match=named):
        migrations.recognize(engine)
    # Nothing was changed: no version table, the same tables.
    assert migrations.current(engine) is None
    assert stored(engine) == before


def test_a_revision_this_code_does_not_know_is_refused(engine: sa.Engine, url: str) -> None:
    migrations.upgrade(engine)
    schema = migrations.schema_of(engine)
    version = sa.table("alembic_version", sa.column("version_num"), schema=schema)
    with engine.begin() as connection:
        connection.execute(sa.update(version).values(version_num="0099"))
    with pytest.raises(migrations.MigrationError, match="revision 0099, which this version"):
        store.connect(url)


def test_the_live_traffic_revision_goes_down_and_up_again(engine: sa.Engine) -> None:
    migrations.upgrade(engine)
    fill(engine, "0002")
    before = stored(engine)

    done = migrations.downgrade(engine, PREVIOUS)

    assert done == migrations.Migration(before=HEAD, adopted=None, after=PREVIOUS)
    after = stored(engine)
    assert set(after) == set(before) - set(LIVE_TRAFFIC)
    for name, rows in after.items():
        assert rows == before[name], name
    assert differences_from(engine, migrations.tables_at(PREVIOUS)) == []
    assert migrations.upgrade(engine).after == HEAD
    assert differences_from(engine, store.metadata) == []


# -- several processes at once --------------------------------------------------------------------

UPGRADE_SCRIPT = """
import dataclasses, json, sys
from bank_marketing.monitoring import migrations, store

engine = store.engine_for(sys.argv[1])
print("ready", flush=True)
done = migrations.upgrade(engine)
print(json.dumps(dataclasses.asdict(done)), flush=True)
"""


@pytest.mark.parametrize("start", ["empty", "made before migrations"])
def test_two_processes_upgrading_at_once_both_succeed(
    engine: sa.Engine, url: str, start: str
) -> None:
    """Both processes are held at the migration lock, then let go together: one upgrades,
    the other waits for it and finds the database at the newest revision."""
    if start != "empty":
        made_before_migrations(engine, PREVIOUS)
        fill(engine, PREVIOUS)
    before = stored(engine)
    processes = []
    try:
        with migrations.locked(engine) as held:
            for _ in range(2):
                processes.append(
                    subprocess.Popen(
                        [sys.executable, "-c", UPGRADE_SCRIPT, url],
                        cwd=REPO,
                        stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE,
                        text=True,
                    )
                )
            for process in processes:
                assert process.stdout is not None
                if process.stdout.readline().strip() != "ready":
                    pytest.fail(f"the upgrading process failed to start: {process.communicate()}")
            waiting = _wait_until_both_wait(held, engine)
        outcomes = []
        for process in processes:
            stdout, stderr = process.communicate(timeout=120)
            assert process.returncode == 0, stderr
            outcomes.append(migrations.Migration(**json.loads(stdout)))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()

    first = migrations.Migration(
        before=None, adopted=None if start == "empty" else PREVIOUS, after=HEAD
    )
    assert sorted(outcomes, key=lambda done: str(done.before)) == [
        migrations.Migration(before=HEAD, adopted=None, after=HEAD),
        first,
    ], [asdict(done) for done in outcomes]
    assert migrations.current(engine) == HEAD
    after = stored(engine)
    for name, rows in before.items():
        assert after[name] == rows, name
    assert differences_from(engine, store.metadata) == []
    if waiting is not None:
        assert waiting == 2


def _wait_until_both_wait(held: sa.Connection, engine: sa.Engine) -> int | None:
    """On PostgreSQL: wait until both processes wait for the advisory lock, and say how many
    do. On SQLite, whose waiters cannot be seen: give them a second to reach the lock."""
    if engine.dialect.name != "postgresql":
        time.sleep(1.0)
        return None
    query = sa.text(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
        "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    )
    deadline = time.monotonic() + 60
    with engine.connect() as watcher:
        while time.monotonic() < deadline:
            waiting = watcher.execute(query).scalar_one()
            if waiting == 2:
                return waiting
            watcher.rollback()
            time.sleep(0.05)
    return watcher.execute(query).scalar_one()


# -- the command ----------------------------------------------------------------------------------


def test_db_upgrade_and_db_current(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    database = tmp_path / "home" / "monitoring.db"
    monkeypatch.setenv("BANK_MARKETING_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("BANK_MARKETING_DB_URL", f"sqlite:///{database}")

    def run(*argv: str) -> tuple[int, str, str]:
        code = main(["db", *argv])
        out, err = capsys.readouterr()
        return code, out, err

    assert run("current") == (
        0,
        f"sqlite:///{database}: none, no monitoring tables yet; head is {HEAD}\n",
        "",
    )
    engine = store.engine_for(f"sqlite:///{database}")
    try:
        made_before_migrations(engine, PREVIOUS)
        fill(engine, PREVIOUS)
        code, out, _ = run("current")
        assert code == 0 and f"made before migrations, at {PREVIOUS}" in out
        assert run("upgrade") == (
            0,
            f"sqlite:///{database}: tables made before migrations, stamped at {PREVIOUS}; "
            f"upgraded {PREVIOUS} -> {HEAD} (head)\n",
            "",
        )
        assert run("current") == (0, f"sqlite:///{database}: {HEAD} (head)\n", "")
        assert run("upgrade") == (0, f"sqlite:///{database}: at {HEAD} (head), nothing to do\n", "")
        assert len(stored(engine)["predictions"]) == len(ROWS["predictions"])
    finally:
        engine.dispose()
    # A database that cannot be reached: the reason, no stack trace.
    monkeypatch.setenv("BANK_MARKETING_DB_URL", "postgresql://postgres:secret@127.0.0.1:1/none")
    code, out, err = run("upgrade")
    assert code == 1 and out == ""
    assert err.startswith(
        "error: cannot reach the monitoring database at "
        "postgresql://postgres:***@127.0.0.1:1/none (schema monitoring): "
    )
    assert "secret" not in err and "Traceback" not in err
