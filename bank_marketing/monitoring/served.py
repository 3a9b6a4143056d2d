"""Live traffic in the monitoring database: the answered records, their outcomes, their retention.

``served_predictions`` holds one row per record the service answered (role ``live``) and, while a
challenger runs in shadow, one more per record with the challenger's score (role ``shadow``).
Clients report what happened through ``POST /feedback``; the outcome lands in
``served_outcomes``, keyed like the answer, and joins back to both roles. Nothing here imports
FastAPI or Ray: the service writes through :func:`insert_served`, the ``served_traffic`` asset
reads through :func:`read_served`.
"""

from __future__ import annotations

import enum
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sklearn.metrics import roc_auc_score
from sqlalchemy.dialects import postgresql, sqlite

from bank_marketing.monitoring.store import served_outcomes, served_predictions

LIVE = "live"
SHADOW = "shadow"


def _insert_ignoring_duplicates(engine: sa.Engine, table: sa.Table) -> Any:
    """``INSERT ... ON CONFLICT DO NOTHING`` in the engine's dialect."""
    dialect = engine.dialect.name
    if dialect == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    if dialect == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing()
    raise ValueError(f"served traffic needs PostgreSQL or SQLite, not {dialect}")


def insert_served(engine: sa.Engine, rows: Sequence[dict[str, Any]]) -> int:
    """Insert answered records in one transaction; returns how many were new.

    A row whose (request id, record, role) is already stored is left as it was: a client that
    reuses a request id keeps its first answer on record, and the caller counts the difference.
    """
    if not rows:
        return 0
    if engine.dialect.name == "postgresql" and engine.dialect.driver == "psycopg2":
        return _copy_served(engine, rows)
    statement = _insert_ignoring_duplicates(engine, served_predictions).returning(
        served_predictions.c.record
    )
    with engine.begin() as connection:
        return len(connection.execute(statement, list(rows)).all())


def _copy_served(engine: sa.Engine, rows: Sequence[dict[str, Any]]) -> int:
    """``insert_served`` on PostgreSQL: COPY into a temporary table, then one
    ``INSERT ... SELECT ... ON CONFLICT DO NOTHING``.

    About a quarter of the client CPU of an executemany (BENCHMARKS.md, "Serving: keeping the
    traffic"), which matters since the writer shares the replica's cores with the requests.
    """
    preparer = engine.dialect.identifier_preparer
    schema = (engine.get_execution_options().get("schema_translate_map") or {}).get(None)
    table = preparer.quote(served_predictions.name)
    target = f"{preparer.quote_schema(schema)}.{table}" if schema else table
    columns = [column.name for column in served_predictions.columns]
    text = io.StringIO()
    for row in rows:
        latency = row["latency_ms"]
        fields = (
            _copy_text(row["request_id"]),
            str(int(row["record"])),
            _copy_text(row["role"]),
            row["received_at"].isoformat(),
            _copy_text(row["model_version"]),
            _copy_text(json.dumps(row["inputs"])),
            repr(float(row["probability"])),
            "\\N" if latency is None else repr(float(latency)),
        )
        text.write("\t".join(fields))
        text.write("\n")
    text.seek(0)
    with engine.begin() as connection:
        cursor = connection.connection.driver_connection.cursor()
        try:
            # Per session, emptied at each commit; its columns are the table's, in order.
            cursor.execute(
                f"CREATE TEMPORARY TABLE IF NOT EXISTS served_incoming (LIKE {target}) "
                f"ON COMMIT DELETE ROWS"
            )
            cursor.copy_expert(
                f"COPY served_incoming ({', '.join(preparer.quote(c) for c in columns)}) "
                f"FROM STDIN",
                text,
            )
            cursor.execute(
                f"INSERT INTO {target} SELECT * FROM served_incoming ON CONFLICT DO NOTHING"
            )
            return cursor.rowcount
        finally:
            cursor.close()


def _copy_text(value: str) -> str:
    """``value`` escaped for COPY's text format."""
    return (
        value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    )


class Outcome(enum.Enum):
    """What :func:`record_outcome` did with a reported outcome."""

    RECORDED = "recorded"  # new: stored
    ALREADY_RECORDED = "already recorded"  # the same outcome was reported before: nothing to do
    CONFLICT = "conflict"  # a different outcome was reported before: kept, this one refused
    UNKNOWN_REQUEST = "unknown request"  # no answer with this request id is stored
    UNKNOWN_RECORD = "unknown record"  # the request has no record at this position
    RECORD_NEEDED = "record needed"  # the request answered several records: say which


@dataclass(frozen=True)
class Reported:
    """The verdict on one reported outcome, with what the caller needs to explain it."""

    outcome: Outcome
    records: int  # records the request answered (0: unknown request)
    stored: bool | None = None  # the outcome on record, when there is one


def record_outcome(
    engine: sa.Engine, request_id: str, subscribed: bool, record: int | None = None
) -> Reported:
    """Store what the client did after the answer ``request_id`` (its ``record``-th record).

    ``record`` may be left out when the request answered a single record. Idempotent: the same
    outcome again changes nothing; a different one is refused and the first kept.
    """
    with engine.begin() as connection:
        records = connection.execute(
            sa.select(sa.func.count())
            .select_from(served_predictions)
            .where(served_predictions.c.request_id == request_id)
            .where(served_predictions.c.role == LIVE)
        ).scalar_one()
        if records == 0:
            return Reported(Outcome.UNKNOWN_REQUEST, 0)
        if record is None:
            if records > 1:
                return Reported(Outcome.RECORD_NEEDED, records)
            record = 0
        if not 0 <= record < records:
            return Reported(Outcome.UNKNOWN_RECORD, records)
        key = (served_outcomes.c.request_id == request_id) & (served_outcomes.c.record == record)
        stored = connection.execute(sa.select(served_outcomes.c.subscribed).where(key)).scalar()
        if stored is not None:
            verdict = Outcome.ALREADY_RECORDED if stored == subscribed else Outcome.CONFLICT
            return Reported(verdict, records, stored)
        inserted = connection.execute(
            _insert_ignoring_duplicates(engine, served_outcomes).returning(
                served_outcomes.c.subscribed
            ),
            {
                "request_id": request_id,
                "record": record,
                "subscribed": subscribed,
                "reported_at": datetime.now(UTC),
            },
        ).all()
        if inserted:
            return Reported(Outcome.RECORDED, records, subscribed)
        # Another report of the same record committed in between: judge against it.
        stored = connection.execute(sa.select(served_outcomes.c.subscribed).where(key)).scalar()
        verdict = Outcome.ALREADY_RECORDED if stored == subscribed else Outcome.CONFLICT
        return Reported(verdict, records, stored)


def read_served(
    engine: sa.Engine,
    start: datetime | None = None,
    end: datetime | None = None,
    role: str | None = None,
) -> pd.DataFrame:
    """Answered records received in [start, end), each with its outcome (``subscribed``, null
    until reported), ordered by time, request and record."""
    joined = served_predictions.outerjoin(
        served_outcomes,
        (served_outcomes.c.request_id == served_predictions.c.request_id)
        & (served_outcomes.c.record == served_predictions.c.record),
    )
    query = (
        sa.select(served_predictions, served_outcomes.c.subscribed)
        .select_from(joined)
        .order_by(
            served_predictions.c.received_at,
            served_predictions.c.request_id,
            served_predictions.c.record,
            served_predictions.c.role,
        )
    )
    if start is not None:
        query = query.where(served_predictions.c.received_at >= start)
    if end is not None:
        query = query.where(served_predictions.c.received_at < end)
    if role is not None:
        query = query.where(served_predictions.c.role == role)
    with engine.connect() as connection:
        frame = pd.read_sql(query, connection)
    frame["received_at"] = pd.to_datetime(frame["received_at"], utc=True)
    return frame


def day_bounds(day: date) -> tuple[datetime, datetime]:
    """The UTC instants a day of traffic runs between: [midnight, next midnight)."""
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return start, start + timedelta(days=1)


def purge_served(engine: sa.Engine, before: datetime) -> tuple[int, int]:
    """Delete answers received before ``before`` and their outcomes; returns both counts."""
    old = sa.select(served_predictions.c.request_id).where(
        served_predictions.c.received_at < before
    )
    with engine.begin() as connection:
        outcomes = connection.execute(
            sa.delete(served_outcomes).where(served_outcomes.c.request_id.in_(old))
        ).rowcount
        answers = connection.execute(
            sa.delete(served_predictions).where(served_predictions.c.received_at < before)
        ).rowcount
    return answers, outcomes


@dataclass(frozen=True)
class ShadowEvidence:
    """How a challenger in shadow did beside the answers, on the same records."""

    shadow_version: str
    live_versions: list[str]
    records: int  # records scored by both
    agreement: float  # share answered the same way at the 0.5 threshold
    mean_abs_difference: float  # mean |live - shadow| probability
    labelled: int  # of those, records with a reported outcome
    live_roc_auc: float | None  # on the labelled records; None with fewer than both outcomes
    shadow_roc_auc: float | None

    def as_metadata(self) -> dict[str, Any]:
        return {
            "shadow_version": self.shadow_version,
            "shadow_beside_versions": ", ".join(self.live_versions),
            "shadow_records": self.records,
            "shadow_agreement": self.agreement,
            "shadow_mean_abs_difference": self.mean_abs_difference,
            "shadow_labelled_records": self.labelled,
            "shadow_live_roc_auc": self.live_roc_auc,
            "shadow_roc_auc": self.shadow_roc_auc,
        }


def shadow_evidence(
    engine: sa.Engine, shadow_version: str, start: datetime | None = None
) -> ShadowEvidence | None:
    """What the shadow rows of ``shadow_version`` (received since ``start``) say against the
    answers given for the same records; None when it has none."""
    shadow = read_served(engine, start=start, role=SHADOW)
    shadow = shadow[shadow["model_version"] == str(shadow_version)]
    if shadow.empty:
        return None
    live = read_served(engine, start=start, role=LIVE)
    both = shadow.merge(
        live[["request_id", "record", "model_version", "probability"]],
        on=["request_id", "record"],
        suffixes=("_shadow", "_live"),
    )
    if both.empty:
        return None
    agree = (both["probability_shadow"] >= 0.5) == (both["probability_live"] >= 0.5)
    labelled = both.dropna(subset=["subscribed"])
    outcomes = labelled["subscribed"].astype(bool)

    def auc(column: str) -> float | None:
        if outcomes.nunique() < 2:
            return None
        return float(roc_auc_score(outcomes, labelled[column]))

    return ShadowEvidence(
        shadow_version=str(shadow_version),
        live_versions=sorted(set(both["model_version_live"]), key=lambda v: (len(v), v)),
        records=len(both),
        agreement=float(agree.mean()),
        mean_abs_difference=float(
            (both["probability_shadow"] - both["probability_live"]).abs().mean()
        ),
        labelled=len(labelled),
        live_roc_auc=auc("probability_live"),
        shadow_roc_auc=auc("probability_shadow"),
    )
