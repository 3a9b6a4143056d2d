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
        return MonthValidation(
            valid=schema.validate(frame, lazy=True),
            rejected=frame.iloc[:0].assign(reasons=pd.Series(dtype=str)),
            failures=_failures(_NO_CASES),
        )
    except pandera.errors.SchemaErrors as errors:
        cases = errors.failure_cases
        if not (cases["index"].notna() & cases["column"].notna()).all():
            raise
    failures = _failures(cases)
    bad_lines = failures["line"].unique()
    reasons = (
        (failures["column"] + "=" + failures["value"] + " fails " + failures["check"])
        .groupby(failures["line"])
        .agg("; ".join)
    )
    return MonthValidation(
        valid=schema.validate(frame.drop(index=bad_lines)),
        rejected=frame.loc[bad_lines].assign(reasons=reasons.reindex(bad_lines).to_numpy()),
        failures=failures,
    )


_NO_CASES = pd.DataFrame({"index": [], "column": [], "check": [], "failure_case": []})


def _failures(cases: pd.DataFrame) -> pd.DataFrame:
    """One row per failed check: the line, the column, the check and the offending value."""
    return pd.DataFrame(
        {
            "line": cases["index"].astype("int64"),
            "column": cases["column"].astype(str),
            "check": cases["check"].astype(str),
            "value": cases["failure_case"].map(repr).astype(str),
        }
    ).sort_values(["line", "column"], kind="stable", ignore_index=True)
