"""Grafana alerts that reached the webhook, kept in the monitoring database (SQLAlchemy Core).

``grafana_alerts`` (in ``store``, with the other monitoring tables) holds one row per alert
instance: Grafana's ``fingerprint`` (a hash of the alert's labels) and ``startsAt`` identify it,
so a notification repeated by Grafana, or posted twice, is stored once. Rows are never deleted;
their ``id`` is the arrival order that the ``retrain_on_grafana_alert`` sensor follows with its
cursor. A later ``resolved`` notification only records when the alert ended. Imports nothing from
Dagster: the webhook serves it alone.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from bank_marketing.monitoring.store import grafana_alerts

FIRING = "firing"
RESOLVED = "resolved"
# The label (or annotation) through which an alert rule names the month it is about.
MONTH_KEY = "month"

_INSERTS = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}
# The key of the PostgreSQL advisory lock that orders the writers of grafana_alerts (any 64-bit
# number no other lock of the monitoring database uses).
_ALERTS_LOCK = 0x62616E6B_616C7274
_MONTH = re.compile(r"^\s*(\d{4})-(\d{2})(?:$|-|T|\s)")


class UnsupportedDatabase(RuntimeError):
    """The monitoring database is neither PostgreSQL nor SQLite."""


@dataclass(frozen=True)
class ReceivedAlert:
    """One alert of a Grafana notification, as the webhook validated it."""

    fingerprint: str
    starts_at: datetime
    status: str
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    ends_at: datetime | None = None
    trigger_values: Mapping[str, Any] | None = None
    generator_url: str | None = None


@dataclass(frozen=True)
class Stored:
    """What storing one notification changed."""

    received: int
    new: int
    new_firing: int
    resolved: int


@dataclass(frozen=True)
class StoredAlert:
    """A row of ``grafana_alerts``."""

    id: int
    fingerprint: str
    starts_at: datetime
    status: str
    alertname: str | None
    month: str | None
    labels: dict[str, str]


def month_named(labels: Mapping[str, str], annotations: Mapping[str, str]) -> str | None:
    """The ``YYYY-MM`` an alert names in its ``month`` label (or annotation), if any."""
    for source in (labels, annotations):
        match = _MONTH.match(str(source.get(MONTH_KEY, "")))
        if match and 1 <= int(match.group(2)) <= 12:
            return f"{match.group(1)}-{match.group(2)}"
    return None


def store_notification(
    engine: sa.Engine,
    alerts: Sequence[ReceivedAlert],
    *,
    receiver: str | None = None,
    group_key: str | None = None,
) -> Stored:
    """Store a notification's alerts in one transaction; known ones are only marked resolved."""
    insert = _INSERTS.get(engine.dialect.name)
    if insert is None:
        raise UnsupportedDatabase(
            f"grafana_alerts needs PostgreSQL or SQLite, not {engine.dialect.name}"
        )
    now = datetime.now(UTC)
    new = new_firing = resolved = 0
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            # Writers take turns, so ids become visible in increasing order: the retraining
            # sensor reads alerts after the last id it saw, and would never come back for one
            # committed after a higher id. (SQLite already lets one writer in at a time.)
            connection.execute(sa.select(sa.func.pg_advisory_xact_lock(_ALERTS_LOCK)))
        for alert in alerts:
            starts_at = _utc(alert.starts_at)
            ends_at = _utc(alert.ends_at) if alert.ends_at is not None else None
            row = {
                "fingerprint": alert.fingerprint,
                "starts_at": starts_at,
                "status": alert.status,
                "alertname": alert.labels.get("alertname"),
                "month": month_named(alert.labels, alert.annotations),
                "ends_at": ends_at,
                "resolved_at": now if alert.status == RESOLVED else None,
                "labels": dict(alert.labels),
                "annotations": dict(alert.annotations),
                "trigger_values": dict(alert.trigger_values) if alert.trigger_values else None,
                "generator_url": alert.generator_url,
                "receiver": receiver,
                "group_key": group_key,
                "received_at": now,
            }
            inserted = connection.execute(
                insert(grafana_alerts)
                .values(row)
                .on_conflict_do_nothing(index_elements=["fingerprint", "starts_at"])
                .returning(grafana_alerts.c.id)
            ).first()
            if inserted is not None:
                new += 1
                new_firing += alert.status == FIRING
                resolved += alert.status == RESOLVED
            elif alert.status == RESOLVED:
                resolved += connection.execute(
                    sa.update(grafana_alerts)
                    .where(
                        grafana_alerts.c.fingerprint == alert.fingerprint,
                        grafana_alerts.c.starts_at == starts_at,
                        grafana_alerts.c.resolved_at.is_(None),
                    )
                    .values(resolved_at=now, ends_at=ends_at)
                ).rowcount
    return Stored(received=len(alerts), new=new, new_firing=new_firing, resolved=resolved)


def alerts_after(engine: sa.Engine, after_id: int, limit: int = 100) -> list[StoredAlert]:
    """Stored alerts with an id above ``after_id``, oldest first."""
    query = (
        sa.select(
            grafana_alerts.c.id,
            grafana_alerts.c.fingerprint,
            grafana_alerts.c.starts_at,
            grafana_alerts.c.status,
            grafana_alerts.c.alertname,
            grafana_alerts.c.month,
            grafana_alerts.c.labels,
        )
        .where(grafana_alerts.c.id > after_id)
        .order_by(grafana_alerts.c.id)
        .limit(limit)
    )
    with engine.connect() as connection:
        return [
            StoredAlert(
                id=row.id,
                fingerprint=row.fingerprint,
                starts_at=_utc(row.starts_at),
                status=row.status,
                alertname=row.alertname,
                month=row.month,
                labels=dict(row.labels),
            )
            for row in connection.execute(query)
        ]


def _utc(moment: datetime) -> datetime:
    """SQLite gives back naive datetimes; everything stored is UTC."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)
