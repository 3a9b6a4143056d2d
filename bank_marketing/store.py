"""Tables of the monitoring database (``BANK_MARKETING_DB_URL``), through SQLAlchemy Core.

``contact_rejects`` keeps every row that failed validation, with its reasons, so rejected data is
visible and queryable instead of silently gone. Writing a month replaces that month's rows in one
transaction.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime

import pandas as pd
import sqlalchemy as sa

metadata = sa.MetaData()

contact_rejects = sa.Table(
    "contact_rejects",
    metadata,
    sa.Column("month", sa.Date, nullable=False, comment="Partition month of the contact."),
    sa.Column("line", sa.Integer, nullable=False, comment="Line number in the source CSV."),
    sa.Column("reasons", sa.Text, nullable=False, comment="Every failed check, '; '-separated."),
    sa.Column("record", sa.Text, nullable=False, comment="The rejected record as JSON."),
    sa.Column("source_sha256", sa.String(64), nullable=False),
    sa.Column("rejected_at", sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint("month", "line"),
)


def create_tables(engine: sa.Engine) -> None:
    metadata.create_all(engine)


def replace_rejects(
    engine: sa.Engine, month: date, rejected: pd.DataFrame, source_sha256: str
) -> int:
    """Replace the stored rejects of ``month`` with ``rejected`` (index: line; column: reasons)."""
    now = datetime.now(UTC)
    records = rejected.drop(columns=["reasons"]).reset_index()
    rows = [
        {
            "month": month,
            "line": int(line),
            "reasons": reasons,
            "record": json.dumps(record, default=str),
            "source_sha256": source_sha256,
            "rejected_at": now,
        }
        for line, reasons, record in zip(
            records["line"], rejected["reasons"], records.to_dict("records"), strict=True
        )
    ]
    with engine.begin() as connection:
        connection.execute(sa.delete(contact_rejects).where(contact_rejects.c.month == month))
        if rows:
            connection.execute(sa.insert(contact_rejects), rows)
    return len(rows)


def read_rejects(engine: sa.Engine, month: date | None = None) -> pd.DataFrame:
    query = sa.select(contact_rejects).order_by(contact_rejects.c.month, contact_rejects.c.line)
    if month is not None:
        query = query.where(contact_rejects.c.month == month)
    with engine.connect() as connection:
        return pd.read_sql(query, connection)
