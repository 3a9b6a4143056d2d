"""The code location loads, with the assets, checks and jobs the design names."""

from __future__ import annotations

import dagster as dg

from bank_marketing.definitions import defs
from bank_marketing.partitions import monthly_partitions


def test_definitions_load() -> None:
    repository = defs.get_repository_def()
    graph = repository.asset_graph
    assert {key.to_user_string() for key in graph.get_all_asset_keys()} == {
        "raw_contacts",
        "contacts",
    }
    assert graph.get(dg.AssetKey("contacts")).partitions_def == monthly_partitions
    assert graph.get(dg.AssetKey("raw_contacts")).partitions_def is None
    [check] = graph.asset_check_keys
    assert check.name == "valid_rows" and check.asset_key == dg.AssetKey("contacts")
    assert graph.get(check).blocking
    assert {job.name for job in repository.get_all_jobs()} >= {"ingest_job", "contacts_job"}


def test_thirty_one_monthly_partitions() -> None:
    keys = monthly_partitions.get_partition_keys()
    assert len(keys) == 31
    assert keys[0] == "2008-05-01" and keys[-1] == "2010-11-01"
    assert "2008-09-01" in keys
