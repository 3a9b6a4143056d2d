"""The data assets on a real (temporary, SQLite) Dagster instance, as `make run` drives them."""

from __future__ import annotations

import re
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from bank_marketing.orchestration.assets.contacts import contacts, raw_contacts
from bank_marketing.orchestration.definitions import build_definitions
from bank_marketing.orchestration.partitions import monthly_partitions
from bank_marketing.orchestration.runner import backfill_contacts, failure_message, run_ingest
from bank_marketing.settings import Settings
from bank_marketing_tests import variants
from bank_marketing_tests.conftest import ingested_copy, make_settings
from bank_marketing_tests.test_source import BAD_FILES

MAY = "2008-05-01"
CONTACTS = dg.AssetKey("contacts")
RAW = dg.AssetKey("raw_contacts")


@dg.asset(partitions_def=monthly_partitions)
def monthly_summary(contacts: pd.DataFrame) -> int:
    """A stand-in for what trains on contacts: it must not run on a month that failed its check."""
    return len(contacts)


def _load(defs: dg.Definitions, key: dg.AssetKey, partition: str | None = None) -> pd.DataFrame:
    return defs.load_asset_value(key, partition_key=partition)


def _latest(instance: dg.DagsterInstance, key: dg.AssetKey, partition: str | None = None) -> int:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition] if partition else None),
        limit=1,
    ).records
    return records[0].storage_id


# The whole history, one run per month: run with the integration tests, the slow ones.
@pytest.mark.integration
def test_every_month_materializes_with_the_counts_the_data_gives(
    defs: dg.Definitions, instance: dg.DagsterInstance
) -> None:
    ingest = run_ingest(defs, instance)
    assert ingest.success
    raw_meta = ingest.asset_materializations_for_node("raw_contacts")[0].metadata
    assert raw_meta["dagster/row_count"].value == 45_211
    assert raw_meta["sha256"].value == (
        "e003ab9ba07160dd9e7dc257e924f4961a6dfaed4a3c2c157c38621995b68c08"
    )

    keys = monthly_partitions.get_partition_keys()
    outcomes = backfill_contacts(defs, instance, keys)

    assert [o.success for o in outcomes] == [True] * 31
    rows = {o.partition_key: o.rows for o in outcomes}
    assert rows["2008-05-01"] == 7_957
    assert rows["2010-11-01"] == 75
    assert rows["2008-09-01"] == 0
    assert sum(rows.values()) == 45_211
    assert sum(1 for r in rows.values() if r) == 30
    assert instance.get_materialized_partitions(CONTACTS) == set(keys)
    may = _load(defs, CONTACTS, MAY)
    assert len(may) == 7_957 and set(may["month"]) == {"may"}
    assert _load(defs, CONTACTS, "2008-09-01").empty
    assert all(o.check_passed for o in outcomes)


def _run_month(defs: dg.Definitions, instance: dg.DagsterInstance, partition: str = MAY):
    """contacts and a downstream asset for one month, as a run that includes both."""
    return dg.materialize(
        [raw_contacts, contacts, monthly_summary],
        selection=[contacts, monthly_summary],
        partition_key=partition,
        instance=instance,
        resources=defs.resources,
        raise_on_error=False,
    )


def _with_bad_rows(
    tmp_path: Path, bank_full_bytes: bytes, column: str, value: str, lines: list[int]
) -> Settings:
    path = tmp_path / "bad" / "bank-full.csv"
    path.parent.mkdir(exist_ok=True)
    # May 2008 whole and the start of June: what these tests read, at a fifth of the file.
    head = variants.join(variants.lines_of(bank_full_bytes)[: 1 + 9_000])
    path.write_bytes(variants.set_field(head, column, value, lines))
    return make_settings(tmp_path / "home", path)


def test_a_few_bad_rows_are_kept_with_reasons_and_the_month_is_stored(
    settings: Settings, instance: dg.DagsterInstance, bank_full_bytes: bytes, tmp_path: Path
) -> None:
    bad = _with_bad_rows(tmp_path, bank_full_bytes, "campaign", "-1", [3, 5, 8])
    defs = build_definitions(bad)
    assert run_ingest(defs, instance).success
    for _ in range(2):  # materializing again replaces the month's rejects
        result = _run_month(defs, instance)
        assert result.success
    stored = _load(defs, CONTACTS, MAY)
    assert len(stored) == 7_957 - 3
    assert {3, 5, 8}.isdisjoint(stored.index)
    rejects = defs.resources["monitoring_db"].read_rejects()
    assert rejects["line"].tolist() == [3, 5, 8]
    assert set(rejects["reasons"]) == {"campaign=-1 fails greater_than_or_equal_to(1)"}
    assert '"campaign": -1' in rejects["record"][0]
    check = result.get_asset_check_evaluations()[0]
    assert check.passed
    assert check.metadata["rejected_rows"].value == 3
    sample = check.metadata["failing_rows_sample"].value
    assert re.search(r"\|\s+3 \| campaign=-1 fails", sample), sample
    assert result.asset_materializations_for_node("monthly_summary")


@pytest.mark.parametrize(
    ("column", "value", "pattern"),
    [
        ("job", "astronaut", r"column 'job' fails isin\("),
        ("campaign", "-2", r"column 'campaign' fails greater_than_or_equal_to\(1\)"),
    ],
)
def test_too_many_bad_rows_block_the_month_and_keep_its_earlier_data(
    column: str,
    value: str,
    pattern: str,
    instance: dg.DagsterInstance,
    bank_full_bytes: bytes,
    tmp_path: Path,
) -> None:
    good = build_definitions(_with_bad_rows(tmp_path, bank_full_bytes, column, value, []))
    assert run_ingest(good, instance).success
    assert _run_month(good, instance).success
    before = _latest(instance, CONTACTS, MAY)

    lines = list(range(2, 2 + 100))  # 100 of May's 7,957 rows: 1.3 %, above the 1 % default
    bad = build_definitions(_with_bad_rows(tmp_path, bank_full_bytes, column, value, lines))
    assert run_ingest(bad, instance).success
    result = _run_month(bad, instance)

    assert not result.success
    message = failure_message(result)
    assert "contacts 2008-05 from " in message and "bad/bank-full.csv" in message
    assert "100 of 7957 rows (1.3%)" in message
    assert pd.Series([message]).str.contains(pattern).all(), message
    assert "line 2: " in message and "line 3: " in message
    [check] = result.get_asset_check_evaluations()
    assert not check.passed and check.severity == dg.AssetCheckSeverity.ERROR
    assert check.metadata["rejected_rows"].value == 100
    assert not result.asset_materializations_for_node("monthly_summary")
    assert _latest(instance, CONTACTS, MAY) == before
    assert len(_load(bad, CONTACTS, MAY)) == 7_957
    assert len(bad.resources["monitoring_db"].read_rejects()) == 100


def test_threshold_is_configuration(
    instance: dg.DagsterInstance, bank_full_bytes: bytes, tmp_path: Path
) -> None:
    lines = list(range(2, 2 + 100))
    defs = build_definitions(_with_bad_rows(tmp_path, bank_full_bytes, "job", "x", lines))
    assert run_ingest(defs, instance).success
    result = dg.materialize(
        [raw_contacts, contacts],
        selection=[contacts],
        partition_key=MAY,
        instance=instance,
        resources=defs.resources,
        run_config=dg.RunConfig({"contacts": {"config": {"max_invalid_share": 0.02}}}),
    )
    assert result.success
    assert len(_load(defs, CONTACTS, MAY)) == 7_957 - 100


@pytest.fixture(scope="module")
def stored(
    tmp_path_factory: pytest.TempPathFactory, bank_full_path: Path, ingested_home: Path
) -> tuple[Path, dg.DagsterInstance]:
    home = ingested_copy(ingested_home, tmp_path_factory.mktemp("stored") / "home")
    settings = make_settings(home, bank_full_path)
    with dg.instance_for_test(temp_dir=str(settings.dagster_home)) as instance:
        defs = build_definitions(settings)
        assert backfill_contacts(defs, instance, [MAY])[0].success
        yield home, instance


BAD_SOURCES = {**{name: (f, m) for name, (f, m, _) in BAD_FILES.items()},
               "shuffled rows": ("bank-full.csv", variants.shuffled)}  # fmt: skip


@pytest.mark.parametrize("case", sorted([*BAD_SOURCES, "missing path"]))
def test_a_bad_source_fails_ingest_and_leaves_stored_data_untouched(
    case: str,
    stored: tuple[Path, dg.DagsterInstance],
    bank_full_bytes: bytes,
    tmp_path: Path,
) -> None:
    home, instance = stored
    path = tmp_path / "missing.csv"
    if case != "missing path":
        name, make = BAD_SOURCES[case]
        path = tmp_path / name
        path.write_bytes(make(bank_full_bytes))
    raw_before = _latest(instance, RAW)
    may_before = _latest(instance, CONTACTS, MAY)
    defs = build_definitions(make_settings(home, path))

    result = run_ingest(defs, instance)

    assert not result.success
    message = failure_message(result)
    assert str(path) in message
    assert "Stack Trace" not in message
    assert _latest(instance, RAW) == raw_before
    assert _latest(instance, CONTACTS, MAY) == may_before
    assert len(_load(defs, RAW)) == 45_211
