"""The request side of the HTTP contract: a pydantic model of a contact record.

Built from the same field definitions as the Pandera schema (``bank_marketing.data.fields``), so
what the API accepts and what training validated cannot drift apart. Lenient where the original
client is: numbers may come as strings, ``day_of_week`` stands for ``day``, and a missing, null,
empty or ``"NaN"`` answer to a question UCI records as ``unknown`` becomes ``unknown``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Annotated, Any

from pydantic import AliasChoices, BaseModel, BeforeValidator, ConfigDict, Field, create_model

from bank_marketing.data.fields import CONTACT_FIELDS, LABEL, ContactField

MISSING_ANSWERS = {"", "nan", "null", "none"}

# One contact as a client sends it (the command scores it after a rollout; the docs show it).
EXAMPLE_RECORD: dict[str, Any] = {
    "age": 35, "job": "management", "balance": 1500, "housing": "no", "contact": "cellular",
    "day": 12, "month": "may", "campaign": 1, "pdays": -1, "previous": 0, "poutcome": "unknown",
}  # fmt: skip


def _whole_number(field: ContactField) -> Any:
    def parse(value: Any) -> int:
        if isinstance(value, bool):
            raise ValueError(f"must be a whole number, not {value!r}")
        if isinstance(value, str):
            text = value.strip()
            try:
                number = float(text) if text else math.nan
            except ValueError:
                raise ValueError(f"must be a whole number, not {value!r}") from None
        elif isinstance(value, int | float):
            number = float(value)
        else:
            raise ValueError(f"must be a whole number, not {value!r}")
        if not math.isfinite(number) or number != int(number):
            raise ValueError(f"must be a whole number, not {value!r}")
        whole = int(number)
        if field.ge is not None and whole < field.ge:
            raise ValueError(f"must be at least {field.ge}, not {whole}")
        if field.le is not None and whole > field.le:
            raise ValueError(f"must be at most {field.le}, not {whole}")
        return whole

    return parse


def _category(field: ContactField) -> Any:
    allowed = field.categories or ()

    def parse(value: Any) -> str:
        if value is None and field.unknown_allowed:
            return "unknown"
        if isinstance(value, float) and math.isnan(value) and field.unknown_allowed:
            return "unknown"
        if not isinstance(value, str):
            raise ValueError(f"must be one of {list(allowed)}, not {value!r}")
        text = value.strip().lower()
        if text in MISSING_ANSWERS and field.unknown_allowed:
            return "unknown"
        if text not in allowed:
            raise ValueError(f"must be one of {list(allowed)}, not {value!r}")
        return text

    return parse


def _annotation(field: ContactField, required: bool) -> tuple[Any, Any]:
    parse = _whole_number(field) if field.is_numeric else _category(field)
    kind = int if field.is_numeric else str
    default: Any = ...
    if not required or (field.unknown_allowed and not field.is_numeric):
        default = "unknown" if field.unknown_allowed else None
        kind = kind | None  # type: ignore[assignment]
    extra: dict[str, Any] = {"description": field.description}
    if field.categories:
        extra["json_schema_extra"] = {"enum": list(field.categories)}
    if field.name == "day":
        extra["validation_alias"] = AliasChoices("day", "day_of_week")
    annotated = Annotated[kind, BeforeValidator(parse)]
    return annotated, Field(default, **extra)


def record_model(inputs: Sequence[str]) -> type[BaseModel]:
    """A pydantic model of one contact record whose ``inputs`` are required.

    Every other UCI field (the label aside) is accepted and checked when present; unknown keys
    are refused, so a misspelt field name is reported instead of silently ignored.
    """
    wanted = set(inputs)
    fields = {
        field.name: _annotation(field, field.name in wanted)
        for field in CONTACT_FIELDS
        if field.name != LABEL
    }
    return create_model(
        "ContactRecord",
        __config__=ConfigDict(extra="forbid", populate_by_name=True),
        __doc__="One contact: UCI field names and values (bank-names.txt).",
        **fields,
    )
