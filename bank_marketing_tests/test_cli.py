"""The `bank-marketing run` command that `make run` calls."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from bank_marketing.cli import main


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
