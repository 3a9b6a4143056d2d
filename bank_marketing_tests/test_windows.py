"""Training windows: the months a window holds, and their stratified, seeded train/test split."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from bank_marketing.training.windows import (
    TRAIN,
    VALIDATION,
    TrainingDataError,
    assemble_window,
    call_days,
    split_window,
    window_months,
)

MAY = pd.Timestamp("2008-05-01")
WHERE = "2008-03..2008-05 (3 month(s))"


def _contacts(labels: list[str], first_line: int = 2) -> pd.DataFrame:
    lines = pd.Index(range(first_line, first_line + len(labels)), name="line")
    return pd.DataFrame({"age": [30 + i % 50 for i in range(len(labels))], "y": labels}, lines)


@pytest.mark.parametrize(
    ("months", "expected"),
    [
        (1, ["2008-05"]),
        (3, ["2008-03", "2008-04", "2008-05"]),
        (7, ["2007-11", "2007-12", "2008-01", "2008-02", "2008-03", "2008-04", "2008-05"]),
    ],
)
def test_window_is_the_months_up_to_the_as_of_month_oldest_first(
    months: int, expected: list[str]
) -> None:
    assert [f"{month:%Y-%m}" for month in window_months(MAY, months)] == expected


@pytest.mark.parametrize("months", [0, -1])
def test_a_window_has_at_least_one_month(months: int) -> None:
    with pytest.raises(ValueError, match="at least one month"):
        window_months(MAY, months)


def test_window_keeps_only_its_months_and_never_one_after_the_as_of_month() -> None:
    by_month = {  # ten lines per month, in file order; given out of order on purpose
        f"2008-{month:02d}-01": _contacts(["no"] * 10, first_line=10 * month)
        for month in range(1, 7)
    }
    by_month = dict(reversed(by_month.items()))
    frame = assemble_window(by_month, MAY, 3)
    assert frame.index.tolist() == list(range(30, 60))  # March, April, May; no June (60..69)


def test_window_reaching_before_the_data_holds_the_stored_months() -> None:
    frame = assemble_window({"2008-05-01": _contacts(["no", "yes"])}, MAY, 12)
    assert frame.index.tolist() == [2, 3]


@pytest.mark.parametrize("by_month", [{}, {"2008-06-01": _contacts(["no", "yes"])}])
def test_window_without_stored_months_cannot_train(by_month: dict[str, pd.DataFrame]) -> None:
    with pytest.raises(TrainingDataError, match=re.escape(WHERE)):
        assemble_window(by_month, MAY, 3)


def test_split_is_stratified_and_keeps_every_row_once() -> None:
    frame = _contacts(["yes" if i % 5 == 0 else "no" for i in range(100)])
    split = split_window(frame, 0.25, 42, WHERE)
    pd.testing.assert_frame_equal(split.drop(columns="split"), frame)
    assert set(split["split"]) == {TRAIN, VALIDATION}
    assert (split["split"] == VALIDATION).sum() == 25
    share = split.groupby("split")["y"].apply(lambda y: (y == "yes").mean())
    assert share[TRAIN] == pytest.approx(0.2, abs=0.02)
    assert share[VALIDATION] == pytest.approx(0.2, abs=0.02)


def test_split_is_seeded() -> None:
    frame = _contacts(["yes" if i % 4 == 0 else "no" for i in range(80)])
    first = split_window(frame, 0.2, 7, WHERE)["split"]
    assert first.equals(split_window(frame, 0.2, 7, WHERE)["split"])
    assert not first.equals(split_window(frame, 0.2, 8, WHERE)["split"])


@pytest.mark.parametrize(
    ("labels", "problem"),
    [
        ([], "no contacts"),
        (["no"] * 20, "only 'no' labels"),
        (["yes"] * 20, "only 'yes' labels"),
        (["no"] * 19 + ["yes"], "too small to split"),
        (["no", "yes", "no", "yes"], "too small to split"),  # 20 % of 4 rows is under 2
    ],
)
def test_untrainable_window_is_refused_naming_the_window(labels: list[str], problem: str) -> None:
    with pytest.raises(TrainingDataError, match=re.escape(WHERE)) as raised:
        split_window(_contacts(labels), 0.2, 42, WHERE)
    assert problem in str(raised.value)


@pytest.mark.parametrize(("no", "yes"), [(8, 2), (48, 2)])
def test_a_split_that_would_leave_one_label_in_validation_is_refused(no: int, yes: int) -> None:
    frame = pd.DataFrame({"y": ["no"] * no + ["yes"] * yes})
    with pytest.raises(TrainingDataError, match="too small to split"):
        split_window(frame, 0.2, 42, "w")


def _calls(days: int, per_day: int = 10) -> pd.DataFrame:
    """``per_day`` calls on each of ``days`` days of 2009, one in five subscribing."""
    count = days * per_day
    lines = pd.Index(range(2, 2 + count), name="line")
    day_of = [i // per_day for i in range(count)]
    return pd.DataFrame(
        {
            "contact_month": [pd.Timestamp(f"2009-{1 + d // 28:02d}-01") for d in day_of],
            "day": [1 + d % 28 for d in day_of],
            "y": ["yes" if i % 5 == 0 else "no" for i in range(count)],
        },
        lines,
    )


def test_split_by_day_keeps_each_days_calls_on_one_side() -> None:
    frame = _calls(days=56)
    split = split_window(frame, 0.2, 42, WHERE, by="day")
    pd.testing.assert_frame_equal(split.drop(columns="split"), frame)
    sides = split.groupby(call_days(frame))["split"].nunique()
    assert (sides == 1).all()
    assert (split["split"] == VALIDATION).mean() == pytest.approx(0.2, abs=0.02)
    share = split.groupby("split")["y"].apply(lambda y: (y == "yes").mean())
    assert share[VALIDATION] == pytest.approx(0.2, abs=0.05)
    again = split_window(frame, 0.2, 42, WHERE, by="day")["split"]
    assert again.equals(split["split"])


def test_a_day_is_on_the_same_side_in_every_window_that_holds_it() -> None:
    frame = _calls(days=84)  # three months of 28 call days
    months = frame["contact_month"]
    january_to_march = split_window(frame, 0.2, 42, WHERE, by="day")["split"]
    february_alone = split_window(frame[months == "2009-02-01"], 0.2, 42, WHERE, by="day")
    february_to_march = split_window(frame[months >= "2009-02-01"], 0.2, 42, WHERE, by="day")
    assert february_alone["split"].equals(january_to_march[months == "2009-02-01"])
    assert february_to_march["split"].equals(january_to_march[months >= "2009-02-01"])
    assert (january_to_march == VALIDATION).groupby(months).mean().between(0.15, 0.25).all()


def test_a_month_with_fewer_call_days_than_folds_trains_whole() -> None:
    frame = pd.concat([_calls(days=28), _calls(days=3, per_day=30).assign(
        contact_month=pd.Timestamp("2009-02-01"))])  # fmt: skip
    frame.index = pd.RangeIndex(2, 2 + len(frame), name="line")
    split = split_window(frame, 0.2, 42, WHERE, by="day")["split"]
    assert (split[frame["contact_month"] == "2009-02-01"] == TRAIN).all()
    assert (split[frame["contact_month"] == "2009-01-01"] == VALIDATION).any()


def test_call_days_join_the_recovered_month_and_the_day() -> None:
    frame = _calls(days=30, per_day=1)
    assert call_days(frame).iloc[[0, 29]].tolist() == ["2009-01-01", "2009-02-02"]


def test_call_days_name_the_missing_column() -> None:
    with pytest.raises(ValueError, match="the frame has no contact_month column"):
        call_days(pd.DataFrame({"day": [1, 2]}))


def test_split_by_day_needs_more_days_than_folds() -> None:
    frame = _calls(days=4, per_day=20)
    with pytest.raises(TrainingDataError, match=r"no month with 5 call days or more: too few"):
        split_window(frame, 0.2, 42, WHERE, by="day")


def test_split_by_anything_but_day_or_row_is_refused() -> None:
    with pytest.raises(ValueError, match="'day' or 'row', not 'month'"):
        split_window(_calls(days=60), 0.2, 42, WHERE, by="month")


def test_months_that_landed_as_files_of_their_own_get_one_numbering() -> None:
    """Each landed file numbers its lines from 2: the window renumbers, keeping the order."""

    def month(key: str, label: str, rows: int) -> pd.DataFrame:
        frame = pd.DataFrame({"y": [label] * rows, "contact_month": pd.Timestamp(key)})
        frame.index = pd.Index(range(2, rows + 2), name="line")
        return frame

    window = assemble_window(
        {"2009-02-01": month("2009-02-01", "no", 3), "2009-01-01": month("2009-01-01", "yes", 2)},
        pd.Timestamp("2009-02-01"),
        2,
    )
    assert window.index.tolist() == [2, 3, 4, 5, 6] and window.index.name == "line"
    assert window["y"].tolist() == ["yes", "yes", "no", "no", "no"]
