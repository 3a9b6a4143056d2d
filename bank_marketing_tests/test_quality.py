"""The contact schema and the month split: every rule, and nothing dropped without a reason."""

from __future__ import annotations

import pandas as pd
import pandera.errors
import pytest

from bank_marketing.data.fields import CONTACT_FIELDS
from bank_marketing.data.quality import validate_month
from bank_marketing.data.schemas import Contacts

MAY = pd.Timestamp("2008-05-01")


def _month(rows: int = 4) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "age": [58, 44, 33, 47][:rows],
            "job": ["management", "technician", "entrepreneur", "blue-collar"][:rows],
            "marital": ["married", "single", "married", "married"][:rows],
            "education": ["tertiary", "secondary", "secondary", "unknown"][:rows],
            "default": ["no"] * rows,
            "balance": [2143, 29, 2, -1506][:rows],
            "housing": ["yes", "yes", "yes", "no"][:rows],
            "loan": ["no", "no", "yes", "no"][:rows],
            "contact": ["unknown"] * rows,
            "day": [5] * rows,
            "month": ["may"] * rows,
            "duration": [261, 151, 76, 92][:rows],
            "campaign": [1] * rows,
            "pdays": [-1] * rows,
            "previous": [0] * rows,
            "poutcome": ["unknown"] * rows,
            "y": ["no", "no", "yes", "no"][:rows],
            "contact_month": [MAY] * rows,
        },
        index=pd.Index(range(2, 2 + rows), name="line"),
    )
    return frame


def test_valid_month_passes_whole() -> None:
    result = validate_month(_month(), MAY)
    assert len(result.valid) == 4 and result.rejected.empty
    assert result.invalid_share == 0.0
    pd.testing.assert_frame_equal(result.valid, _month())


def test_empty_month_is_valid() -> None:
    result = validate_month(_month().iloc[:0], pd.Timestamp("2008-09-01"))
    assert result.rows == 0 and result.invalid_share == 0.0
    assert list(result.valid.columns) == list(_month().columns)


BAD_VALUES = [
    ("age", 17),
    ("age", 111),
    ("job", "astronaut"),
    ("marital", "unknown"),
    ("education", "phd"),
    ("default", "maybe"),
    ("day", 0),
    ("day", 32),
    ("month", "jun"),
    ("duration", -1),
    ("campaign", 0),
    ("pdays", -2),
    ("previous", -1),
    ("poutcome", "pending"),
    ("y", "1"),
    ("contact_month", pd.Timestamp("2008-06-01")),
]


@pytest.mark.parametrize(("column", "value"), BAD_VALUES)
def test_each_rule_rejects_the_row_with_a_reason(column: str, value: object) -> None:
    frame = _month()
    frame.loc[3, column] = value
    result = validate_month(frame, MAY)
    assert result.rejected.index.tolist() == [3]
    assert result.valid.index.tolist() == [2, 4, 5]
    reason = result.rejected.loc[3, "reasons"]
    assert reason.startswith(f"{column}=") and "fails" in reason
    assert result.rejected.loc[3, column] == value  # kept as it came
    assert result.failure_counts()["column"].tolist() == [column]


def test_rows_with_several_problems_list_every_reason() -> None:
    frame = _month()
    frame.loc[2, ["campaign", "job"]] = [-1, "astronaut"]
    frame.loc[5, "age"] = 7
    result = validate_month(frame, MAY)
    assert result.rows == 4 and len(result.valid) == 2
    assert result.invalid_share == 0.5
    reasons = result.rejected["reasons"]
    assert "campaign=-1 fails greater_than_or_equal_to(1)" in reasons[2]
    assert "job='astronaut' fails isin(" in reasons[2]
    assert reasons[5] == "age=7 fails greater_than_or_equal_to(18)"


def test_every_schema_field_is_described() -> None:
    schema = Contacts.to_schema()
    assert set(schema.columns) == {f.name for f in CONTACT_FIELDS} | {"contact_month"}
    assert all(column.description for column in schema.columns.values())
    assert schema.index.description


def test_a_frame_defect_is_raised_not_blamed_on_rows() -> None:
    with pytest.raises(pandera.errors.SchemaErrors, match="balance"):
        validate_month(_month().drop(columns=["balance"]), MAY)
