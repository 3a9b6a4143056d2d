"""Dagster resources: the external systems the assets talk to, each with typed configuration."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path

import dagster as dg
import pandas as pd
import sqlalchemy as sa
from pydantic import Field

from bank_marketing import store
from bank_marketing.data.source import LoadedContacts, load_contacts


class DataSource(dg.ConfigurableResource):
    """Where the UCI contacts come from (``BANK_MARKETING_SOURCE``) and where downloads go."""

    source: str = Field(description="Path or URL of bank+marketing.zip, bank-full.csv or data.csv.")
    cache_dir: str = Field(
        description="Folder that keeps downloaded files, so each downloads once."
    )

    def load(self) -> LoadedContacts:
        return load_contacts(self.source, Path(self.cache_dir))


class MonitoringDatabase(dg.ConfigurableResource):
    """The monitoring database (``BANK_MARKETING_DB_URL``): rejected rows, predictions, drift."""

    url: str = Field(description="SQLAlchemy URL, e.g. sqlite:///monitoring.db or postgresql://...")
    db_schema: str | None = Field(
        default=None,
        description="Database schema for the tables (Postgres: 'monitoring'); None for SQLite.",
    )

    @contextmanager
    def engine(self) -> Iterator[sa.Engine]:
        """An engine whose tables exist, disposed of on exit."""
        engine = sa.create_engine(self.url)
        try:
            if self.db_schema:
                with engine.begin() as connection:
                    connection.execute(sa.schema.CreateSchema(self.db_schema, if_not_exists=True))
                engine = engine.execution_options(schema_translate_map={None: self.db_schema})
            store.create_tables(engine)
            yield engine
        finally:
            engine.dispose()

    def replace_rejects(self, month: date, rejected: pd.DataFrame, source_sha256: str) -> int:
        with self.engine() as engine:
            return store.replace_rejects(engine, month, rejected, source_sha256)

    def read_rejects(self, month: date | None = None) -> pd.DataFrame:
        with self.engine() as engine:
            return store.read_rejects(engine, month)

    def describe(self) -> str:
        """The URL without its password, for metadata and messages."""
        return sa.make_url(self.url).render_as_string(hide_password=True)
