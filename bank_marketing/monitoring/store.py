"""Tables of the monitoring database (``BANK_MARKETING_DB_URL``), through SQLAlchemy Core.

``contact_rejects`` keeps every row that failed validation, with its reasons, so rejected data is
visible and queryable instead of silently gone. Writing a month replaces that month's rows in one
transaction.

The tables are declared here and made by the revisions in ``migrations/``: a change here needs a
revision there (``test_migrations`` fails until the newest revision makes exactly these tables).
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime

import pandas as pd
import sqlalchemy as sa

from bank_marketing.monitoring import migrations

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


# The schema the monitoring tables live in on PostgreSQL (SQLite has none).
POSTGRES_SCHEMA = "monitoring"


def engine_for(url: str, schema: str | None = None) -> sa.Engine:
    """An engine on the monitoring database whose tables are in ``schema`` (on PostgreSQL
    without one, ``monitoring``), as it is: ``connect`` also upgrades the tables."""
    engine = sa.create_engine(url)
    if schema is None and engine.dialect.name == "postgresql":
        schema = POSTGRES_SCHEMA
    if schema:
        engine = engine.execution_options(schema_translate_map={None: schema})
    return engine


def connect(url: str, schema: str | None = None) -> sa.Engine:
    """An engine on the monitoring database, its tables upgraded to the newest revision.

    The tables go into ``schema``; on PostgreSQL without one, into ``monitoring``. Several
    processes may connect to a new or older database at once: ``migrations.upgrade`` lets one
    of them upgrade it while the others wait.
    """
    engine = engine_for(url, schema)
    try:
        migrations.upgrade(engine)
    except BaseException:
        engine.dispose()
        raise
    return engine


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


# Monitoring: the champion's monthly scores, drift reports and realized quality. Each month's rows
# are replaced in one transaction, so a month is never half-written and re-running it is safe.

predictions = sa.Table(
    "predictions",
    metadata,
    sa.Column("month", sa.Date, nullable=False, comment="Partition month of the contact."),
    sa.Column("line", sa.Integer, nullable=False, comment="Line number in the source CSV."),
    sa.Column("probability", sa.Double, nullable=False, comment="Predicted P(subscribed)."),
    sa.Column("model_version", sa.String(32), nullable=False, comment="Version that scored it."),
    sa.Column("scored_at", sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint("month", "line"),
)

drift_reports = sa.Table(
    "drift_reports",
    metadata,
    sa.Column("month", sa.Date, primary_key=True, comment="Month compared with the reference."),
    sa.Column("model_version", sa.String(32), nullable=False, comment="Model of the reference."),
    sa.Column("rows", sa.Integer, nullable=False, comment="Contacts in the month."),
    sa.Column("reference_rows", sa.Integer, nullable=False, comment="Rows of the reference data."),
    sa.Column("input_columns", sa.Integer, nullable=False, comment="Inputs checked for drift."),
    sa.Column("drifted_columns", sa.Integer, nullable=False, comment="Inputs found drifted."),
    sa.Column("drifted_share", sa.Double, comment="drifted_columns / input_columns."),
    sa.Column("prediction_drift", sa.Double, comment="Drift score of the predicted probability."),
    sa.Column("prediction_drift_method", sa.String(64), nullable=False),
    sa.Column("missing_share", sa.Double, comment="Missing cells over all input cells."),
    sa.Column("note", sa.Text, comment="Why drift values are null, when they are."),
    sa.Column("report_path", sa.Text, nullable=False, comment="The HTML report."),
    sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False),
)

monthly_quality = sa.Table(
    "monthly_quality",
    metadata,
    sa.Column("month", sa.Date, primary_key=True, comment="Month whose outcomes are known."),
    sa.Column("model_version", sa.String(32), nullable=False, comment="Model that scored it."),
    sa.Column("rows", sa.Integer, nullable=False, comment="Labelled contacts in the month."),
    sa.Column("roc_auc", sa.Double, comment="Null when the month has a single label."),
    sa.Column("pr_auc", sa.Double, comment="Average precision; null with a single label."),
    sa.Column("accuracy", sa.Double, nullable=False, comment="At the 0.5 threshold."),
    sa.Column("subscription_rate", sa.Double, nullable=False),
    sa.Column("mean_probability", sa.Double, nullable=False),
    sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False),
)


retrain_signals = sa.Table(
    "retrain_signals",
    metadata,
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
    sa.Column("realized_roc_auc", sa.Double, comment="ROC AUC on the month; null before labels."),
    sa.Column("realized_roc_auc_se", sa.Double, comment="Its day-bootstrap standard error."),
    sa.Column("realized_z", sa.Double, comment="(realized - expected) / both errors combined."),
    sa.Column("estimated_roc_auc", sa.Double, comment="CBPE's label-free estimate."),
    sa.Column("estimated_roc_auc_error", sa.Double, comment="The estimate's stated error."),
    sa.Column("estimated_drop", sa.Double, comment="expected_roc_auc - estimated_roc_auc."),
    sa.Column("note", sa.Text, comment="Why a signal was not computed, when one was not."),
    sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False),
)


def _rows(frame: pd.DataFrame) -> list[dict[str, object]]:
    """Plain Python values for the driver: dates for months, None for NaN and NaT."""
    rows = []
    for record in frame.to_dict("records"):
        row: dict[str, object] = {}
        for key, value in record.items():
            if value is None or (not isinstance(value, str) and pd.isna(value)):
                row[key] = None
            elif key == "month":
                row[key] = pd.Timestamp(value).date()
            elif isinstance(value, pd.Timestamp):
                row[key] = value.to_pydatetime()
            elif hasattr(value, "item"):  # numpy scalars
                row[key] = value.item()
            else:
                row[key] = value
        rows.append(row)
    return rows


def replace_predictions(engine: sa.Engine, month: date, scores: pd.DataFrame) -> int:
    """Replace the stored predictions of ``month`` with ``scores`` (index: line)."""
    rows = _rows(scores.reset_index()[[c.name for c in predictions.columns]])
    with engine.begin() as connection:
        connection.execute(sa.delete(predictions).where(predictions.c.month == month))
        if rows:
            connection.execute(sa.insert(predictions), rows)
    return len(rows)


def replace_drift_report(
    engine: sa.Engine,
    month: date,
    report: pd.DataFrame,
    quality: pd.DataFrame | None,
    signals: pd.DataFrame | None = None,
) -> None:
    """Replace ``month``'s drift report row, its quality row (none: the month has no labels) and
    its retraining signals row, in one transaction."""
    with engine.begin() as connection:
        for table in (drift_reports, monthly_quality, retrain_signals):
            connection.execute(sa.delete(table).where(table.c.month == month))
        connection.execute(sa.insert(drift_reports), _rows(report))
        if quality is not None:
            connection.execute(sa.insert(monthly_quality), _rows(quality))
        if signals is not None:
            connection.execute(sa.insert(retrain_signals), _rows(signals))


def _read(engine: sa.Engine, table: sa.Table, month: date | None, *order: str) -> pd.DataFrame:
    query = sa.select(table).order_by(*(table.c[name] for name in order))
    if month is not None:
        query = query.where(table.c.month == month)
    with engine.connect() as connection:
        return pd.read_sql(query, connection)


def read_predictions(engine: sa.Engine, month: date | None = None) -> pd.DataFrame:
    return _read(engine, predictions, month, "month", "line")


def read_drift_reports(engine: sa.Engine, month: date | None = None) -> pd.DataFrame:
    return _read(engine, drift_reports, month, "month")


def read_monthly_quality(engine: sa.Engine, month: date | None = None) -> pd.DataFrame:
    return _read(engine, monthly_quality, month, "month")


def read_retrain_signals(engine: sa.Engine, month: date | None = None) -> pd.DataFrame:
    return _read(engine, retrain_signals, month, "month")


# Grafana alerts that reached the webhook (see ``bank_marketing.monitoring.alerts``).

grafana_alerts = sa.Table(
    "grafana_alerts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True, comment="Arrival order."),
    sa.Column("fingerprint", sa.String(128), nullable=False, comment="Grafana's labels hash."),
    sa.Column("starts_at", sa.DateTime(timezone=True), nullable=False, comment="UTC."),
    sa.Column("status", sa.String(16), nullable=False, comment="Status when first received."),
    sa.Column("alertname", sa.Text, nullable=True),
    sa.Column("month", sa.String(7), nullable=True, comment="YYYY-MM the alert names, if any."),
    sa.Column("ends_at", sa.DateTime(timezone=True), nullable=True, comment="UTC; unset: open."),
    sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("labels", sa.JSON, nullable=False),
    sa.Column("annotations", sa.JSON, nullable=False),
    sa.Column("trigger_values", sa.JSON, nullable=True, comment="Grafana's 'values'."),
    sa.Column("generator_url", sa.Text, nullable=True),
    sa.Column("receiver", sa.Text, nullable=True),
    sa.Column("group_key", sa.Text, nullable=True),
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    sa.UniqueConstraint("fingerprint", "starts_at", name="grafana_alerts_fingerprint_starts_at"),
)


# Live traffic (see ``bank_marketing.serving.capture`` and ``bank_marketing.monitoring.served``):
# every answered record, the outcomes clients report back, and each day's comparison of the
# served inputs and probabilities with the model's reference.

served_predictions = sa.Table(
    "served_predictions",
    metadata,
    sa.Column("request_id", sa.String(128), nullable=False, comment="x-request-id of the answer."),
    sa.Column("record", sa.Integer, nullable=False, comment="Position in the request, from 0."),
    sa.Column(
        "role",
        sa.String(8),
        nullable=False,
        comment="'live': the answer returned; 'shadow': the challenger's score, not returned.",
    ),
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False, comment="UTC."),
    sa.Column("model_version", sa.String(32), nullable=False, comment="Version that scored it."),
    sa.Column("inputs", sa.JSON, nullable=False, comment="The validated record, as scored."),
    sa.Column("probability", sa.Double, nullable=False, comment="Predicted P(subscribed)."),
    sa.Column(
        "latency_ms", sa.Double, nullable=True, comment="The request's time in the app (live)."
    ),
    sa.PrimaryKeyConstraint("request_id", "record", "role"),
    sa.Index("served_predictions_received_at", "received_at"),
)

served_outcomes = sa.Table(
    "served_outcomes",
    metadata,
    sa.Column("request_id", sa.String(128), nullable=False, comment="The answer's x-request-id."),
    sa.Column("record", sa.Integer, nullable=False, comment="Position in the request, from 0."),
    sa.Column("subscribed", sa.Boolean, nullable=False, comment="What the client did."),
    sa.Column("reported_at", sa.DateTime(timezone=True), nullable=False, comment="UTC."),
    sa.PrimaryKeyConstraint("request_id", "record"),
)

served_traffic = sa.Table(
    "served_traffic",
    metadata,
    sa.Column("day", sa.Date, nullable=False, comment="UTC day of the answers."),
    sa.Column("model_version", sa.String(32), nullable=False, comment="Version that scored them."),
    sa.Column("role", sa.String(8), nullable=False, comment="'live' or 'shadow'."),
    sa.Column("requests", sa.Integer, nullable=False, comment="Requests answered."),
    sa.Column("rows", sa.Integer, nullable=False, comment="Records scored."),
    sa.Column("reference_rows", sa.Integer, nullable=False, comment="Rows of the reference data."),
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
)
