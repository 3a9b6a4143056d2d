"""Month recovery from row order, on small series and on the real file."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from bank_marketing.data.months import MonthOrderError, recover_months
from bank_marketing.data.source import load_contacts
from bank_marketing_tests import variants


def _months(names: list[str]) -> list[str]:
    return recover_months(pd.Series(names)).dt.strftime("%Y-%m").tolist()


def test_year_goes_up_each_time_the_month_goes_down() -> None:
    names = ["may", "may", "jun", "dec", "jan", "jan", "mar", "feb", "nov"]
    assert _months(names) == [
        "2008-05", "2008-05", "2008-06", "2008-12", "2009-01", "2009-01", "2009-03",
        "2010-02", "2010-11",
    ]  # fmt: skip


def test_skipped_months_do_not_change_the_year() -> None:
    assert _months(["aug", "oct"]) == ["2008-08", "2008-10"]


def test_index_is_kept() -> None:
    months = recover_months(pd.Series(["may", "jun"], index=pd.Index([2, 3], name="line")))
    assert months.index.tolist() == [2, 3]
    assert months.dtype == "datetime64[ns]"


def test_a_file_starting_before_may_2008_is_out_of_order() -> None:
    with pytest.raises(MonthOrderError, match=r"line 0: 'jan' -> 2008-01"):
        recover_months(pd.Series(["jan", "may"]))


def test_unknown_month_name_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown month names"):
        recover_months(pd.Series(["may", "Mai"]))


@pytest.fixture(scope="module")
def real(bank_full_path: Path, tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    frame = load_contacts(str(bank_full_path), tmp_path_factory.mktemp("cache")).frame
    return frame.assign(contact_month=recover_months(frame["month"]))


def test_real_file_has_the_months_the_data_describes(real: pd.DataFrame) -> None:
    counts = real["contact_month"].dt.strftime("%Y-%m").value_counts()
    assert len(counts) == 30
    assert counts.sum() == 45_211
    assert counts["2008-05"] == 7_957
    assert counts["2010-11"] == 75
    assert "2008-09" not in counts
    assert counts.index.min() == "2008-05" and counts.index.max() == "2010-11"
    rate = real.groupby(real["contact_month"].dt.strftime("%Y-%m"))["y"].apply(
        lambda y: (y == "yes").mean()
    )
    assert rate["2008-05"] == pytest.approx(0.032, abs=0.001)
    assert rate["2010-11"] == pytest.approx(0.48, abs=0.001)


def test_shuffled_rows_leave_the_period_and_are_named(
    bank_full_bytes: bytes, tmp_path: Path
) -> None:
    path = tmp_path / "bank-full.csv"
    path.write_bytes(variants.shuffled(bank_full_bytes))
    frame = load_contacts(str(path), tmp_path / "cache").frame
    with pytest.raises(MonthOrderError) as raised:
        recover_months(frame["month"], str(path))
    message = str(raised.value)
    assert str(path) in message
    assert "column 'month'" in message
    assert "outside 2008-05..2010-11" in message
    assert "line " in message and "original date order" in message
