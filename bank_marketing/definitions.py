"""The Dagster code location: every asset, check, job and resource, assembled in one place."""

from __future__ import annotations

import dagster as dg

from bank_marketing.assets.contacts import contacts, raw_contacts
from bank_marketing.resources import DataSource, MonitoringDatabase
from bank_marketing.settings import Settings

ingest_job = dg.define_asset_job(
    "ingest_job",
    selection=dg.AssetSelection.assets(raw_contacts),
    description="Read the source file into raw_contacts.",
)
contacts_job = dg.define_asset_job(
    "contacts_job",
    selection=dg.AssetSelection.assets(contacts),
    description="Validate one month of contacts from raw_contacts.",
)


def build_definitions(settings: Settings) -> dg.Definitions:
    """The definitions for one configuration; tests build them on a temporary home."""
    return dg.Definitions(
        assets=[raw_contacts, contacts],
        jobs=[ingest_job, contacts_job],
        resources={
            "io_manager": dg.FilesystemIOManager(base_dir=str(settings.storage_dir)),
            "data_source": DataSource(source=settings.source, cache_dir=str(settings.cache_dir)),
            "monitoring_db": MonitoringDatabase(
                url=settings.db_url,
                db_schema="monitoring" if settings.db_url.startswith("postgresql") else None,
            ),
        },
    )


defs = build_definitions(Settings.from_env())
