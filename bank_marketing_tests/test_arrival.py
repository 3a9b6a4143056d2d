"""Monthly files arriving in the landing location: the sensor's run requests and the contacts
they validate, on a temporary instance."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from bank_marketing.data.landing import cut_months, sha256
from bank_marketing.orchestration.assets.contacts import _partition_month, contacts, raw_contacts
from bank_marketing.orchestration.runner import failure_message, run_ingest
from bank_marketing.orchestration.sensors import validate_landed_files
from bank_marketing.settings import Settings

CONTACTS = dg.AssetKey("contacts")


def tick(defs: dg.Definitions, instance: dg.DagsterInstance, cursor: str | None):
    context = dg.build_sensor_context(
        instance=instance, cursor=cursor, resources={"data_source": defs.resources["data_source"]}
    )
    result = validate_landed_files(context)
    assert isinstance(result, dg.SensorResult)
    return result


def land(settings: Settings, first: str, through: str | None = None) -> list[Path]:
    return cut_months(settings.source, settings.cache_dir, settings.landing_dir, first, through)


def skipped(result: dg.SensorResult) -> str:
    assert result.skip_reason is not None
    return result.skip_reason.skip_message or ""


def test_each_new_or_changed_file_asks_for_its_month_once(
    settings: Settings, defs: dg.Definitions, instance: dg.DagsterInstance
) -> None:
    empty = tick(defs, instance, None)
    assert not empty.run_requests and "no new or changed file" in skipped(empty)

    january, february = land(settings, "2009-01", "2009-02")
    (settings.landing_dir / ".contacts-2009-03.csv.partial").write_text("half a file")
    first = tick(defs, instance, empty.cursor)
    requests = first.run_requests or []
    assert [r.partition_key for r in requests] == ["2009-01-01", "2009-02-01"]
    assert requests[0].run_key == f"landed-2009-01-{sha256(january)[:16]}"
    assert requests[0].run_config == {
        "ops": {"contacts": {"config": {"landed_file": str(january)}}}
    }
    assert requests[0].tags["bank_marketing/trigger"] == "validate_landed_files"
    assert requests[0].tags["bank_marketing/landed_file"] == "contacts-2009-01.csv"
    assert json.loads(first.cursor or "{}") == {
        "files": {
            "contacts-2009-01.csv": sha256(january),
            "contacts-2009-02.csv": sha256(february),
        },
        "skipped": {},
    }

    # The same months landed again write the same bytes: nothing new.
    land(settings, "2009-01", "2009-02")
    again = tick(defs, instance, first.cursor)
    assert not again.run_requests and "2 file(s) seen" in skipped(again)

    # A changed file is validated again, under a new run key.
    february.write_text(february.read_text().replace('"cellular"', '"telephone"', 1))
    changed = tick(defs, instance, again.cursor)
    assert [(r.partition_key, r.run_key) for r in changed.run_requests or []] == [
        ("2009-02-01", f"landed-2009-02-{sha256(february)[:16]}")
    ]
    # Without a cursor (a daemon whose state is gone) the requests repeat their run keys, which
    # Dagster launches once.
    keys = {r.run_key for r in tick(defs, instance, None).run_requests or []}
    assert keys == {requests[0].run_key, (changed.run_requests or [])[0].run_key}


def test_files_that_can_never_be_a_month_are_skipped_with_the_reason(
    settings: Settings, defs: dg.Definitions, instance: dg.DagsterInstance
) -> None:
    (january,) = land(settings, "2009-01")
    text = january.read_text()
    january.unlink()
    folder = settings.landing_dir
    (folder / "contacts-2011-01.csv").write_text(text)
    (folder / "contacts.csv").write_text(text)
    (folder / "contacts-2009-03.csv").write_text(text)  # January's rows
    first = tick(defs, instance, None)
    # Every later tick still says why, without reading the files again.
    for result in (first, tick(defs, instance, first.cursor)):
        message = skipped(result)
        assert "contacts-2011-01.csv names 2011-01, outside the data's months 2008-05..2010-11" in (
            message
        )
        assert "contacts.csv names no month" in message
        assert "contacts-2009-03.csv names 2009-03 ('mar') but" in message and "'jan'" in message


def test_a_broken_file_still_gets_its_one_run_which_fails_with_the_loaders_message(
    settings: Settings, defs: dg.Definitions, instance: dg.DagsterInstance
) -> None:
    assert run_ingest(defs, instance).success
    assert _materialize(defs, instance, "2009-02-01").success
    stored = _latest(instance, "2009-02-01")
    (february,) = land(settings, "2009-02")
    february.write_text("<html><body>Service unavailable</body></html>")
    (request,) = tick(defs, instance, None).run_requests or []
    result = _materialize(defs, instance, "2009-02-01", request.run_config)
    assert not result.success
    message = failure_message(result) or ""
    assert "contacts-2009-02.csv" in message and "HTML page" in message
    assert "stored data is unchanged" in message
    assert not result.get_asset_check_evaluations()
    assert _latest(instance, "2009-02-01") == stored


def test_a_landed_month_validates_to_the_same_rows_as_the_whole_file(
    settings: Settings, defs: dg.Definitions, instance: dg.DagsterInstance
) -> None:
    (path,) = land(settings, "2009-04")
    config = {"ops": {"contacts": {"config": {"landed_file": str(path)}}}}
    # No raw_contacts at all: a month can arrive as a file alone.
    landed = _materialize(defs, instance, "2009-04-01", config)
    assert landed.success, failure_message(landed)
    from_file = defs.load_asset_value(CONTACTS, partition_key="2009-04-01")
    assert run_ingest(defs, instance).success
    assert _materialize(defs, instance, "2009-04-01").success
    from_raw = defs.load_asset_value(CONTACTS, partition_key="2009-04-01")
    assert len(from_file) == len(from_raw) == 2_718
    pd.testing.assert_frame_equal(from_file.reset_index(drop=True), from_raw.reset_index(drop=True))
    meta = landed.asset_materializations_for_node("contacts")[0].metadata
    assert meta["source_sha256"].value == sha256(path)


def test_months_without_data_fail_naming_the_month_and_record_no_check(
    defs: dg.Definitions, instance: dg.DagsterInstance
) -> None:
    nothing = _materialize(defs, instance, "2009-04-01")
    assert not nothing.success
    assert "no data for the month: raw_contacts was never materialized" in (
        failure_message(nothing) or ""
    )
    assert run_ingest(defs, instance).success
    # Dagster refuses a partition key the partitions do not have before the run starts; a run
    # that reaches the asset some other way fails before any check is recorded.
    with pytest.raises(Exception, match="Could not find a partition with key `2011-01-01`"):
        _materialize(defs, instance, "2011-01-01")
    with pytest.raises(
        dg.Failure,
        match=r"contacts 2011-01: not a month of the data; the "
        r"partitions run 2008-05\.\.2010-11",
    ):
        _partition_month("2011-01-01")
    assert not instance.get_materialized_partitions(CONTACTS)


def _materialize(
    defs: dg.Definitions, instance: dg.DagsterInstance, key: str, config: dict | None = None
) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [raw_contacts, contacts],
        selection=[contacts],
        partition_key=key,
        instance=instance,
        resources=defs.resources,
        run_config=config,
        raise_on_error=False,
    )


def _latest(instance: dg.DagsterInstance, key: str) -> int:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=CONTACTS, asset_partitions=[key]), limit=1
    ).records
    return records[0].storage_id
