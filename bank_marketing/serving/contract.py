"""The request side of the HTTP contract: a pydantic model of a contact record.

Built from the same field definitions as the Pandera schema (``bank_marketing.data.fields``), so
what the API accepts and what training validated cannot drift apart. Lenient where the original
client is: numbers may come as strings, ``day_of_week`` stands for ``day``, and a missing, null,
empty or ``"NaN"`` answer to a question UCI records as ``unknown`` becomes ``unknown``.

Stricter than the schema on numbers: each has :data:`SERVING_BOUNDS`. A model asked about a
balance of 10^30 would still answer, extrapolating with a confidence nothing in its training
supports; the service refuses such a record instead (422 naming the field, the value and the
bound). The bounds are in the OpenAPI schema (``minimum``, ``maximum``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

from pydantic import AliasChoices, BaseModel, BeforeValidator, ConfigDict, Field, create_model

from bank_marketing.data.fields import CONTACT_FIELDS, FIELDS_BY_NAME, LABEL, ContactField
from bank_marketing.serving.http import shown

MISSING_ANSWERS = {"", "nan", "null", "none"}

# One contact as a client sends it (the command scores it after a rollout; the docs show it).
EXAMPLE_RECORD: dict[str, Any] = {
    "age": 35, "job": "management", "balance": 1500, "housing": "no", "contact": "cellular",
    "day": 12, "month": "may", "campaign": 1, "pdays": -1, "previous": 0, "poutcome": "unknown",
}  # fmt: skip


# The range the service answers for, per numeric field. Age and day keep the data's own range;
# the others are about twice the extremes of UCI's 45,211 contacts (balance -8,019 to 102,127
# euros, duration up to 4,918 s, campaign up to 63, pdays up to 871, previous up to 275), so every
# real contact passes with room to spare while values nothing in training comes near are refused.
SERVING_BOUNDS: dict[str, tuple[int, int]] = {
    "age": (18, 110),
    "balance": (-20_000, 250_000),
    "day": (1, 31),
    "duration": (0, 10_000),
    "campaign": (1, 150),
    "pdays": (-1, 2_000),
    "previous": (0, 600),
}


def bounds(name: str) -> tuple[int, int]:
    """The lowest and highest value the service accepts for the numeric field ``name``."""
    field = FIELDS_BY_NAME[name]
    low, high = SERVING_BOUNDS[name]
    if field.ge is not None:
        low = max(low, field.ge)
    if field.le is not None:
        high = min(high, field.le)
    return low, high


def _whole_number(field: ContactField) -> Any:
    low, high = bounds(field.name)

    def parse(value: Any) -> int:
        number: int | float | Decimal
        whole_float = isinstance(value, float) and math.isfinite(value) and value.is_integer()
        if (isinstance(value, int) and not isinstance(value, bool)) or whole_float:
            number = value
        elif isinstance(value, str):
            # Decimal reads "1e30" exactly; bounds are checked before the value becomes an int,
            # since int(Decimal("1e999999")) would build a million digits.
            try:
                number = Decimal(value.strip())
            except InvalidOperation:
                raise ValueError(f"must be a whole number, not {shown(value)}") from None
            if not number.is_finite() or number != number.to_integral_value():
                raise ValueError(f"must be a whole number, not {shown(value)}")
        else:
            raise ValueError(f"must be a whole number, not {shown(value)}")
        if number < low:
            raise ValueError(f"must be at least {low}, not {shown(value)}")
        if number > high:
            raise ValueError(f"must be at most {high}, not {shown(value)}")
        return int(number)

    return parse


def _category(field: ContactField) -> Any:
    allowed = field.categories or ()

    def parse(value: Any) -> str:
        if value is None and field.unknown_allowed:
            return "unknown"
        if isinstance(value, float) and math.isnan(value) and field.unknown_allowed:
            return "unknown"
        if not isinstance(value, str):
            raise ValueError(f"must be one of {list(allowed)}, not {shown(value)}")
        text = value.strip().lower()
        if text in MISSING_ANSWERS and field.unknown_allowed:
            return "unknown"
        if text not in allowed:
            raise ValueError(f"must be one of {list(allowed)}, not {shown(value)}")
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
    else:
        low, high = bounds(field.name)
        extra["json_schema_extra"] = {"minimum": low, "maximum": high}
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
