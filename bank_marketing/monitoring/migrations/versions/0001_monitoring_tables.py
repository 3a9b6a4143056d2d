"""The monitoring tables as they were before the live-traffic tables: rejected rows, the
champion's monthly predictions, drift reports, realized quality, retraining signals and the
Grafana alerts that reached the webhook.

Databases made before migrations (``create_all``) that lack the live-traffic tables are at this
revision; ``tables`` is what that code created, so they can be recognized.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision: str | None = None
branch_labels = None
depends_on = None


def _contact_rejects() -> list[sa.SchemaItem]:
    return [
        sa.Column("month", sa.Date, nullable=False, comment="Partition month of the contact."),
        sa.Column("line", sa.Integer, nullable=False, comment="Line number in the source CSV."),
        sa.Column(
            "reasons", sa.Text, nullable=False, comment="Every failed check, '; '-separated."
        ),
        sa.Column("record", sa.Text, nullable=False, comment="The rejected record as JSON."),
        sa.Column("source_sha256", sa.String(64), nullable=False),
        sa.Column("rejected_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("month", "line"),
    ]


def _predictions() -> list[sa.SchemaItem]:
    return [
        sa.Column("month", sa.Date, nullable=False, comment="Partition month of the contact."),
        sa.Column("line", sa.Integer, nullable=False, comment="Line number in the source CSV."),
        sa.Column("probability", sa.Double, nullable=False, comment="Predicted P(subscribed)."),
        sa.Column(
            "model_version", sa.String(32), nullable=False, comment="Version that scored it."
        ),
        sa.Column("scored_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("month", "line"),
    ]


def _drift_reports() -> list[sa.SchemaItem]:
    return [
        sa.Column("month", sa.Date, primary_key=True, comment="Month compared with the reference."),
        sa.Column(
            "model_version", sa.String(32), nullable=False, comment="Model of the reference."
        ),
        sa.Column("rows", sa.Integer, nullable=False, comment="Contacts in the month."),
        sa.Column(
            "reference_rows", sa.Integer, nullable=False, comment="Rows of the reference data."
        ),
        sa.Column("input_columns", sa.Integer, nullable=False, comment="Inputs checked for drift."),
        sa.Column("drifted_columns", sa.Integer, nullable=False, comment="Inputs found drifted."),
        sa.Column("drifted_share", sa.Double, comment="drifted_columns / input_columns."),
        sa.Column(
            "prediction_drift", sa.Double, comment="Drift score of the predicted probability."
        ),
        sa.Column("prediction_drift_method", sa.String(64), nullable=False),
        sa.Column("missing_share", sa.Double, comment="Missing cells over all input cells."),
        sa.Column("note", sa.Text, comment="Why drift values are null, when they are."),
        sa.Column("report_path", sa.Text, nullable=False, comment="The HTML report."),
        sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False),
    ]


def _monthly_quality() -> list[sa.SchemaItem]:
    return [
        sa.Column("month", sa.Date, primary_key=True, comment="Month whose outcomes are known."),
        sa.Column("model_version", sa.String(32), nullable=False, comment="Model that scored it."),
        sa.Column("rows", sa.Integer, nullable=False, comment="Labelled contacts in the month."),
        sa.Column("roc_auc", sa.Double, comment="Null when the month has a single label."),
        sa.Column("pr_auc", sa.Double, comment="Average precision; null with a single label."),
        sa.Column("accuracy", sa.Double, nullable=False, comment="At the 0.5 threshold."),
        sa.Column("subscription_rate", sa.Double, nullable=False),
        sa.Column("mean_probability", sa.Double, nullable=False),
        sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False),
    ]


def _retrain_signals() -> list[sa.SchemaItem]:
    return [
        sa.Column("month", sa.Date, primary_key=True, comment="Month the signals are of."),
        sa.Column("model_version", sa.String(32), nullable=False, comment="Model that scored it."),
        sa.Column("rows", sa.Integer, nullable=False, comment="Contacts in the month."),
        sa.Column("prediction_drift", sa.Double, comment="Normed Wasserstein of the probability."),
        sa.Column(
            "drift_null_mean",
            sa.Double,
            comment="Its mean over months of this size drawn from the reference.",
        ),
        sa.Column("drift_null_sd", sa.Double, comment="Their standard deviation."),
        sa.Column("drift_z", sa.Double, comment="(prediction_drift - null mean) / null sd."),
        sa.Column("drift_p_value", sa.Double, comment="Share of those months drifting as much."),
        sa.Column("expected_roc_auc", sa.Double, comment="The model's ROC AUC on its reference."),
        sa.Column("expected_roc_auc_se", sa.Double, comment="Its day-bootstrap standard error."),
        sa.Column(
            "realized_roc_auc", sa.Double, comment="ROC AUC on the month; null before labels."
        ),
        sa.Column("realized_roc_auc_se", sa.Double, comment="Its day-bootstrap standard error."),
        sa.Column("realized_z", sa.Double, comment="(realized - expected) / both errors combined."),
        sa.Column("estimated_roc_auc", sa.Double, comment="CBPE's label-free estimate."),
        sa.Column("estimated_roc_auc_error", sa.Double, comment="The estimate's stated error."),
        sa.Column("estimated_drop", sa.Double, comment="expected_roc_auc - estimated_roc_auc."),
        sa.Column("note", sa.Text, comment="Why a signal was not computed, when one was not."),
        sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False),
    ]


def _grafana_alerts() -> list[sa.SchemaItem]:
    return [
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True, comment="Arrival order."),
        sa.Column("fingerprint", sa.String(128), nullable=False, comment="Grafana's labels hash."),
        sa.Column("starts_at", sa.DateTime(timezone=True), nullable=False, comment="UTC."),
        sa.Column("status", sa.String(16), nullable=False, comment="Status when first received."),
        sa.Column("alertname", sa.Text, nullable=True),
        sa.Column("month", sa.String(7), nullable=True, comment="YYYY-MM the alert names, if any."),
        sa.Column(
            "ends_at", sa.DateTime(timezone=True), nullable=True, comment="UTC; unset: open."
        ),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("labels", sa.JSON, nullable=False),
        sa.Column("annotations", sa.JSON, nullable=False),
        sa.Column("trigger_values", sa.JSON, nullable=True, comment="Grafana's 'values'."),
        sa.Column("generator_url", sa.Text, nullable=True),
        sa.Column("receiver", sa.Text, nullable=True),
        sa.Column("group_key", sa.Text, nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint(
            "fingerprint", "starts_at", name="grafana_alerts_fingerprint_starts_at"
        ),
    ]


# Each table's columns and constraints, made anew for every use: a column belongs to one table.
TABLES: dict[str, Callable[[], list[sa.SchemaItem]]] = {
    "contact_rejects": _contact_rejects,
    "predictions": _predictions,
    "drift_reports": _drift_reports,
    "monthly_quality": _monthly_quality,
    "retrain_signals": _retrain_signals,
    "grafana_alerts": _grafana_alerts,
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
