"""What a valid contact record is: the one definition the Pandera schema and the HTTP API share.

Names and values are UCI's (``bank-names.txt``). Categories list every value the data may hold;
``unknown_allowed`` marks the categoricals where UCI records a missing answer as ``unknown`` (the
flat ``data.csv`` leaves those fields empty instead).
"""

from __future__ import annotations

from dataclasses import dataclass

# fmt: off
MONTHS: tuple[str, ...] = (
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
)
# fmt: on


@dataclass(frozen=True)
class ContactField:
    """One column of a contact record."""

    name: str
    description: str
    categories: tuple[str, ...] | None = None
    ge: int | None = None
    le: int | None = None
    unknown_allowed: bool = False
    known_after_call: bool = False

    @property
    def is_numeric(self) -> bool:
        return self.categories is None


YES_NO = ("no", "yes")

CONTACT_FIELDS: tuple[ContactField, ...] = (
    ContactField("age", "Age of the client in years.", ge=18, le=110),
    ContactField(
        "job",
        "Type of job.",
        categories=(
            "admin.",
            "blue-collar",
            "entrepreneur",
            "housemaid",
            "management",
            "retired",
            "self-employed",
            "services",
            "student",
            "technician",
            "unemployed",
            "unknown",
        ),
        unknown_allowed=True,
    ),
    ContactField(
        "marital",
        "Marital status ('divorced' includes widowed).",
        categories=("divorced", "married", "single"),
    ),
    ContactField(
        "education",
        "Highest education level.",
        categories=("primary", "secondary", "tertiary", "unknown"),
        unknown_allowed=True,
    ),
    ContactField("default", "Has credit in default?", categories=YES_NO),
    ContactField("balance", "Average yearly balance in euros (may be negative)."),
    ContactField("housing", "Has a housing loan?", categories=YES_NO),
    ContactField("loan", "Has a personal loan?", categories=YES_NO),
    ContactField(
        "contact",
        "Communication type of the last contact.",
        categories=("cellular", "telephone", "unknown"),
        unknown_allowed=True,
    ),
    ContactField("day", "Day of the month of the last contact.", ge=1, le=31),
    ContactField(
        "month", "Month of the last contact (the year is not in the file).", categories=MONTHS
    ),
    ContactField(
        "duration",
        "Duration of the last contact in seconds. Known only after the call: never a model input.",
        ge=0,
        known_after_call=True,
    ),
    ContactField("campaign", "Number of contacts in this campaign, this one included.", ge=1),
    ContactField(
        "pdays",
        "Days since the client was last contacted in a previous campaign (-1: never).",
        ge=-1,
    ),
    ContactField("previous", "Number of contacts before this campaign.", ge=0),
    ContactField(
        "poutcome",
        "Outcome of the previous campaign.",
        categories=("failure", "other", "success", "unknown"),
        unknown_allowed=True,
    ),
    ContactField(
        "y",
        "Did the client subscribe a term deposit? (the label)",
        categories=YES_NO,
        known_after_call=True,
    ),
)

FIELDS_BY_NAME: dict[str, ContactField] = {field.name: field for field in CONTACT_FIELDS}
COLUMNS: tuple[str, ...] = tuple(field.name for field in CONTACT_FIELDS)
NUMERIC_COLUMNS: tuple[str, ...] = tuple(f.name for f in CONTACT_FIELDS if f.is_numeric)
CATEGORICAL_COLUMNS: tuple[str, ...] = tuple(f.name for f in CONTACT_FIELDS if not f.is_numeric)
UNKNOWN_ALLOWED: tuple[str, ...] = tuple(f.name for f in CONTACT_FIELDS if f.unknown_allowed)
LABEL = "y"
