"""The live-traffic tables: every answered record (``served_predictions``), the outcomes clients
report back (``served_outcomes``) and each day's comparison of the served traffic with the
model's reference (``served_traffic``).

Databases made before migrations (``create_all``) that have them are at this revision.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision: str | None = "0001"
branch_labels = None
depends_on = None


def _served_predictions() -> list[sa.SchemaItem]:
    return [
        sa.Column(
            "request_id", sa.String(128), nullable=False, comment="x-request-id of the answer."
        ),
        sa.Column("record", sa.Integer, nullable=False, comment="Position in the request, from 0."),
        sa.Column(
            "role",
            sa.String(8),
            nullable=False,
            comment="'live': the answer returned; 'shadow': the challenger's score, not returned.",
        ),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False, comment="UTC."),
        sa.Column(
            "model_version", sa.String(32), nullable=False, comment="Version that scored it."
        ),
        sa.Column("inputs", sa.JSON, nullable=False, comment="The validated record, as scored."),
        sa.Column("probability", sa.Double, nullable=False, comment="Predicted P(subscribed)."),
        sa.Column(
            "latency_ms", sa.Double, nullable=True, comment="The request's time in the app (live)."
        ),
        sa.PrimaryKeyConstraint("request_id", "record", "role"),
        sa.Index("served_predictions_received_at", "received_at"),
    ]


def _served_outcomes() -> list[sa.SchemaItem]:
    return [
        sa.Column(
            "request_id", sa.String(128), nullable=False, comment="The answer's x-request-id."
        ),
        sa.Column("record", sa.Integer, nullable=False, comment="Position in the request, from 0."),
        sa.Column("subscribed", sa.Boolean, nullable=False, comment="What the client did."),
        sa.Column("reported_at", sa.DateTime(timezone=True), nullable=False, comment="UTC."),
        sa.PrimaryKeyConstraint("request_id", "record"),
    ]


def _served_traffic() -> list[sa.SchemaItem]:
    return [
        sa.Column("day", sa.Date, nullable=False, comment="UTC day of the answers."),
        sa.Column(
            "model_version", sa.String(32), nullable=False, comment="Version that scored them."
        ),
        sa.Column("role", sa.String(8), nullable=False, comment="'live' or 'shadow'."),
        sa.Column("requests", sa.Integer, nullable=False, comment="Requests answered."),
        sa.Column("rows", sa.Integer, nullable=False, comment="Records scored."),
        sa.Column(
            "reference_rows", sa.Integer, nullable=False, comment="Rows of the reference data."
        ),
        sa.Column("input_columns", sa.Integer, nullable=False, comment="Inputs checked for drift."),
        sa.Column("drifted_columns", sa.Integer, nullable=False, comment="Inputs found drifted."),
        sa.Column("drifted_share", sa.Double, comment="drifted_columns / input_columns."),
        sa.Column("prediction_drift", sa.Double, comment="Drift score of the probability."),
        sa.Column("prediction_drift_method", sa.String(64), nullable=False),
        sa.Column("missing_share", sa.Double, comment="Missing cells over all input cells."),
        sa.Column("mean_probability", sa.Double, comment="Mean predicted probability."),
        sa.Column("labelled_rows", sa.Integer, nullable=False, comment="Records with an outcome."),
        sa.Column("roc_auc", sa.Double, comment="On labelled records; null with a single label."),
        sa.Column("accuracy", sa.Double, comment="At the 0.5 threshold, on labelled records."),
        sa.Column("subscription_rate", sa.Double, comment="Share of labelled records subscribed."),
        sa.Column("note", sa.Text, comment="Why values are null, when they are."),
        sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("day", "model_version", "role"),
    ]


# Each table's columns, constraints and indexes, made anew for every use.
TABLES: dict[str, Callable[[], list[sa.SchemaItem]]] = {
    "served_predictions": _served_predictions,
    "served_outcomes": _served_outcomes,
    "served_traffic": _served_traffic,
}


def tables(metadata: sa.MetaData) -> list[sa.Table]:
    """This revision's tables in ``metadata``, as the code before migrations declared them."""
    return [sa.Table(name, metadata, *items()) for name, items in TABLES.items()]


def upgrade() -> None:
    for name, items in TABLES.items():
        op.create_table(name, *items())


def downgrade() -> None:
    for name in reversed(TABLES):
        op.drop_table(name)
