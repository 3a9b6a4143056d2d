"""Pandera schemas of validated contacts, built from the field definitions in ``fields.py``."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pandera.pandas as pa
from pandera.typing.pandas import Index, Series

from bank_marketing.data.fields import FIELDS_BY_NAME, MONTHS


def contact_field(name: str) -> Any:
    """A Pandera field carrying the categories, range and description of contact field ``name``."""
    spec = FIELDS_BY_NAME[name]
    return pa.Field(
        description=spec.description,
        isin=list(spec.categories) if spec.categories else None,
        ge=spec.ge,
        le=spec.le,
        nullable=False,
    )


class Contacts(pa.DataFrameModel):
    """Validated contact records in the file's order, each with its recovered calendar month."""

    line: Index[int] = pa.Field(ge=2, unique=True, description="Line number in the source CSV.")
    age: Series[int] = contact_field("age")
    job: Series[str] = contact_field("job")
    marital: Series[str] = contact_field("marital")
    education: Series[str] = contact_field("education")
    default: Series[str] = contact_field("default")
    balance: Series[int] = contact_field("balance")
    housing: Series[str] = contact_field("housing")
    loan: Series[str] = contact_field("loan")
    contact: Series[str] = contact_field("contact")
    day: Series[int] = contact_field("day")
    month: Series[str] = contact_field("month")
    duration: Series[int] = contact_field("duration")
    campaign: Series[int] = contact_field("campaign")
    pdays: Series[int] = contact_field("pdays")
    previous: Series[int] = contact_field("previous")
    poutcome: Series[str] = contact_field("poutcome")
    y: Series[str] = contact_field("y")
    contact_month: Series[pd.Timestamp] = pa.Field(
        description="First day of the contact's calendar month, recovered from row order."
    )

    class Config:
        strict = True
        ordered = True


def contacts_month_schema(month: pd.Timestamp) -> pa.DataFrameSchema:
    """The ``Contacts`` schema for one month: every row's month must be that month."""
    schema = Contacts.to_schema()
    month_name = MONTHS[month.month - 1]
    return schema.update_columns(
        {
            "month": {"checks": [*schema.columns["month"].checks, pa.Check.eq(month_name)]},
            "contact_month": {"checks": [pa.Check.eq(month)]},
        }
    )
