"""Splitting a month of contacts into valid rows and rejected rows with their reasons."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import pandera.errors

from bank_marketing.data.schemas import contacts_month_schema


@dataclass(frozen=True)
class MonthValidation:
    """The outcome of validating one month: nothing is dropped without a reason."""

    valid: pd.DataFrame
    rejected: pd.DataFrame
    failures: pd.DataFrame

    @property
    def rows(self) -> int:
        return len(self.valid) + len(self.rejected)

    @property
    def invalid_share(self) -> float:
        return len(self.rejected) / self.rows if self.rows else 0.0

    def failure_counts(self) -> pd.DataFrame:
        """Rejected rows per column and check, most frequent first."""
        if self.failures.empty:
            return pd.DataFrame(columns=["column", "check", "rows"])
        return (
            self.failures.groupby(["column", "check"])["line"]
            .nunique()
            .rename("rows")
            .reset_index()
            .sort_values("rows", ascending=False, kind="stable")
            .reset_index(drop=True)
        )


def validate_month(frame: pd.DataFrame, month: pd.Timestamp) -> MonthValidation:
    """Validate ``frame`` against the month's schema and split off the rows that fail it.

    ``rejected`` holds the failing rows, unchanged, with a ``reasons`` column; ``failures`` one row
    per failed check (line, column, check, value). A failure that is not about particular rows
    (a missing column, a wrong dtype) is a defect of the frame, not of the data, and is raised.
    """
    schema = contacts_month_schema(month)
    try:
        valid = schema.validate(frame, lazy=True)
    except pandera.errors.SchemaErrors as caught:
        errors = caught
    else:
        return MonthValidation(
            valid=valid, rejected=_rejected(frame.iloc[:0], []), failures=_none()
        )
    cases = errors.failure_cases
    if not (cases["index"].notna() & cases["column"].notna()).all():
        raise errors
    failures = pd.DataFrame(
        {
            "line": cases["index"].astype("int64"),
            "column": cases["column"].astype(str),
            "check": cases["check"].astype(str),
            "value": cases["failure_case"].map(repr),
        }
    ).sort_values(["line", "column"], kind="stable", ignore_index=True)
    bad_lines = failures["line"].unique()
    rejected = _rejected(frame.loc[bad_lines], failures)
    valid = schema.validate(frame.drop(index=bad_lines))
    return MonthValidation(valid=valid, rejected=rejected, failures=failures)


def _rejected(rows: pd.DataFrame, failures: pd.DataFrame | list) -> pd.DataFrame:
    rejected = rows.copy()
    if len(rejected) == 0:
        rejected["reasons"] = pd.Series(dtype=str)
        return rejected
    reasons = (
        failures.assign(
            reason=failures["column"] + "=" + failures["value"] + " fails " + failures["check"]
        )
        .groupby("line")["reason"]
        .agg("; ".join)
    )
    rejected["reasons"] = reasons.reindex(rejected.index)
    return rejected


def _none() -> pd.DataFrame:
    return pd.DataFrame(
        {"line": pd.Series(dtype="int64"), "column": [], "check": [], "value": []}
    ).astype({"column": str, "check": str, "value": str})
