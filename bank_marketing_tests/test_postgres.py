"""The stack's instance configuration on the machine's PostgreSQL: a backfill of months, the empty
2008-09 among them (every month's counts are test_assets' check, on SQLite)."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from bank_marketing.orchestration.definitions import build_definitions
from bank_marketing.orchestration.partitions import monthly_partitions
from bank_marketing.orchestration.runner import backfill_contacts, run_ingest
from bank_marketing_tests.conftest import make_settings

pytestmark = pytest.mark.integration


def test_a_backfill_of_months_on_a_postgres_instance(
    postgres_database: str, postgres_dagster_home: Path, bank_full_path: Path, tmp_path: Path
) -> None:
    dagster_home = postgres_dagster_home
    db_url = f"postgresql://postgres@127.0.0.1:5432/{postgres_database}"
    settings = make_settings(
        tmp_path / "home",
        bank_full_path,
        DAGSTER_HOME=str(dagster_home),
        BANK_MARKETING_DB_URL=db_url,
    )
    defs = build_definitions(settings)
    keys = monthly_partitions.get_partition_keys()[:6]  # 2008-05..2008-10

    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        assert run_ingest(defs, instance).success
        outcomes = backfill_contacts(defs, instance, keys)
        assert all(o.success and o.check_passed for o in outcomes)
        assert {o.partition_key: o.rows for o in outcomes}["2008-09-01"] == 0
        assert instance.get_materialized_partitions(dg.AssetKey("contacts")) == set(keys)
        assert len(instance.get_runs()) == 1 + len(keys)

    engine = sa.create_engine(db_url)
    try:
        with engine.connect() as connection:
            schemas = sa.inspect(connection).get_schema_names()
            tables = sa.inspect(connection).get_table_names(schema="monitoring")
            runs = connection.execute(sa.text("SELECT count(*) FROM runs")).scalar_one()
    finally:
        engine.dispose()
    assert "monitoring" in schemas and "contact_rejects" in tables
    assert runs == 1 + len(keys)
