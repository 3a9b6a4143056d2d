"""The API's record model: the same rules as the Pandera schema, lenient where the client is."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from pydantic import BaseModel, ValidationError

from bank_marketing.data.fields import CONTACT_FIELDS, FIELDS_BY_NAME
from bank_marketing.data.quality import validate_month
from bank_marketing.data.source import load_contacts
from bank_marketing.serving.contract import SERVING_BOUNDS, bounds, record_model
from bank_marketing.training.features import DEFAULT_INPUTS

RECORD: dict[str, Any] = {
    "age": 41, "job": "technician", "balance": 1200, "housing": "yes", "contact": "cellular",
    "day": 15, "month": "may", "campaign": 2, "pdays": -1, "previous": 0, "poutcome": "unknown",
}  # fmt: skip


@pytest.fixture(scope="module")
def model() -> type[BaseModel]:
    return record_model(DEFAULT_INPUTS)


def _errors(model: type[BaseModel], record: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(ValidationError) as raised:
        model.model_validate(record)
    return {".".join(map(str, e["loc"])): e["msg"] for e in raised.value.errors()}


def test_a_valid_record_passes_unchanged(model: type[BaseModel]) -> None:
    assert {k: v for k, v in model.model_validate(RECORD).model_dump().items() if k in RECORD} == (
        RECORD
    )


def test_the_original_clients_all_strings_form_is_accepted(model: type[BaseModel]) -> None:
    as_strings = {k: str(v) for k, v in RECORD.items()}
    assert (
        model.model_validate(as_strings).model_dump() == model.model_validate(RECORD).model_dump()
    )


@pytest.mark.parametrize("missing", [None, "", "NaN", "nan", " "])
@pytest.mark.parametrize("column", ["job", "contact", "poutcome"])
def test_missing_answers_that_uci_allows_become_unknown(
    model: type[BaseModel], column: str, missing: Any
) -> None:
    assert getattr(model.model_validate({**RECORD, column: missing}), column) == "unknown"


def test_absent_unknown_allowed_fields_default_to_unknown(model: type[BaseModel]) -> None:
    record = {k: v for k, v in RECORD.items() if k not in ("contact", "poutcome")}
    parsed = model.model_validate(record)
    assert (parsed.contact, parsed.poutcome) == ("unknown", "unknown")


def test_day_of_week_stands_for_day(model: type[BaseModel]) -> None:
    record = {k: v for k, v in RECORD.items() if k != "day"} | {"day_of_week": "7"}
    assert model.model_validate(record).day == 7


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("age", "forty", "must be a whole number, not 'forty'"),
        ("age", 17, "must be at least 18, not 17"),
        ("age", True, "must be a whole number"),
        ("balance", 10.5, "must be a whole number, not 10.5"),
        ("day", 32, "must be at most 31, not 32"),
        ("campaign", 0, "must be at least 1, not 0"),
        ("pdays", -2, "must be at least -1, not -2"),
        ("job", "astronaut", "must be one of ['admin.'"),
        ("housing", None, "must be one of ['no', 'yes'], not None"),
        ("month", "mai", "not 'mai'"),
    ],
)
def test_each_bad_field_gets_its_own_message(
    model: type[BaseModel], field: str, value: Any, message: str
) -> None:
    errors = _errors(model, {**RECORD, field: value})
    assert list(errors) == [field]
    assert message in errors[field]


def test_several_bad_fields_are_all_reported(model: type[BaseModel]) -> None:
    errors = _errors(model, {**RECORD, "age": "x", "job": "y", "campaign": -3, "colour": "red"})
    assert set(errors) == {"age", "job", "campaign", "colour"}


def test_a_missing_input_is_reported(model: type[BaseModel]) -> None:
    errors = _errors(model, {k: v for k, v in RECORD.items() if k != "balance"})
    assert errors == {"balance": "Field required"}


def test_api_and_schema_agree_on_what_is_valid(model: type[BaseModel]) -> None:
    """Every value the API accepts, the Pandera schema accepts too, field by field."""
    month = pd.Timestamp("2008-05-01")
    full = {f.name: None for f in CONTACT_FIELDS}
    full.update({"marital": "single", "education": "primary", "default": "no", "loan": "no",
                 "duration": 10, "y": "no"})  # fmt: skip
    rows = []
    for field in CONTACT_FIELDS:
        for value in field.categories or (field.ge if field.ge is not None else -5, field.le or 99):
            record = {**RECORD, **{k: v for k, v in full.items() if k not in RECORD}}
            record[field.name] = value
            try:
                parsed = model.model_validate({k: v for k, v in record.items() if k != "y"})
            except ValidationError:
                continue
            rows.append({**parsed.model_dump(), "y": record["y"], "month": "may",
                         "contact_month": month})  # fmt: skip
    frame = pd.DataFrame(rows).astype({"contact_month": "datetime64[ns]"})
    frame.index = pd.Index(range(2, 2 + len(frame)), name="line")
    frame = frame[[*(f.name for f in CONTACT_FIELDS), "contact_month"]]
    assert validate_month(frame, month).rejected.empty


def test_every_real_contact_is_accepted_within_the_bounds(
    model: type[BaseModel], bank_full_path: Path, tmp_path: Path
) -> None:
    frame = load_contacts(str(bank_full_path), tmp_path).frame
    assert len(frame) == 45_211
    # As a client sends them: the JSON of each row, every field but the label.
    for record in json.loads(frame.drop(columns="y").to_json(orient="records")):
        model.model_validate(record)
    for name in SERVING_BOUNDS:
        low, high = bounds(name)
        assert frame[name].between(low, high).all(), (name, frame[name].min(), frame[name].max())
        # Room to spare: about twice the real extremes, where the data does not fix the range.
        field = FIELDS_BY_NAME[name]
        if field.le is None:
            assert high >= 1.5 * frame[name].max(), name


def test_the_bounds_never_admit_what_the_data_definition_refuses() -> None:
    for name, (low, high) in SERVING_BOUNDS.items():
        field = FIELDS_BY_NAME[name]
        assert low <= high
        assert field.ge is None or low >= field.ge, name
        assert field.le is None or high <= field.le, name
    assert set(SERVING_BOUNDS) == {f.name for f in CONTACT_FIELDS if f.is_numeric}


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("balance", 250_001, "must be at most 250000, not 250001"),
        ("balance", -20_001, "must be at least -20000, not -20001"),
        ("balance", 10**30, "must be at most 250000, not 1000000000000000000000000000000"),
        ("balance", "1e30", "must be at most 250000, not '1e30'"),
        ("balance", 1e300, "must be at most 250000, not 1e+300"),
        ("balance", "9" * 5000, "must be at most 250000, not '99999"),
        ("balance", "1e999999999", "must be at most 250000, not '1e999999999'"),
        ("balance", "-1e999999999", "must be at least -20000"),
        ("balance", "inf", "must be a whole number, not 'inf'"),
        ("balance", "sNaN", "must be a whole number, not 'sNaN'"),
        ("balance", "1e-999999999", "must be a whole number"),
        ("campaign", 151, "must be at most 150, not 151"),
        ("pdays", 2001, "must be at most 2000, not 2001"),
        ("previous", 601, "must be at most 600, not 601"),
    ],
)
def test_a_number_beyond_its_bound_is_refused_naming_the_value_and_the_bound(
    model: type[BaseModel], field: str, value: Any, message: str
) -> None:
    errors = _errors(model, {**RECORD, field: value})
    assert list(errors) == [field]
    assert errors[field].removeprefix("Value error, ").startswith(message)


@pytest.mark.parametrize("name", sorted(SERVING_BOUNDS))
def test_the_bounds_themselves_are_accepted_in_every_form(
    model: type[BaseModel], name: str
) -> None:
    for value in bounds(name):
        for form in (value, float(value), str(value), f" {value}.0 "):
            assert getattr(model.model_validate({**RECORD, "duration": 60, name: form}), name) == (
                value
            )


def test_the_openapi_schema_shows_each_bound(model: type[BaseModel]) -> None:
    properties = model.model_json_schema()["properties"]
    for name in SERVING_BOUNDS:
        assert (properties[name]["minimum"], properties[name]["maximum"]) == bounds(name)
