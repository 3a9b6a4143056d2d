"""A day of live traffic against the models' reference data: the rows of ``served_traffic``.

For each model version and role present in the day's answered records (``served.read_served``),
the comparison ``drift_report`` makes for a month (``drift.compare``: drift per input, drifted
share, prediction drift, missing values) of the served inputs and probabilities with that
version's reference data, scored by that version; and the realized quality on the records whose
outcome was reported. A day's rows are replaced in one transaction, so re-running a day as late
outcomes arrive updates it in place.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pandas as pd
import sqlalchemy as sa

from bank_marketing.data.fields import LABEL
from bank_marketing.monitoring import drift, quality
from bank_marketing.monitoring.scoring import PROBABILITY, Scorer, probabilities
from bank_marketing.monitoring.served import LIVE
from bank_marketing.monitoring.store import served_traffic
from bank_marketing.training.features import check_inputs

TRAFFIC_COLUMNS = tuple(column.name for column in served_traffic.columns)
# The realized quality of a day's labelled records (the rest of the row is the drift's).
TRAFFIC_QUALITY = ("roc_auc", "accuracy", "subscription_rate")
NO_OUTCOMES_NOTE = "no outcome reported yet: roc_auc, accuracy and subscription_rate are null"
ONE_OUTCOME_NOTE = "every reported outcome is the same: roc_auc is null"


@dataclass(frozen=True)
class VersionReference:
    """What a version's served records are compared with: its reference data (inputs and its
    own ``prediction`` on them) and the inputs it takes."""

    frame: pd.DataFrame
    inputs: tuple[str, ...]


def scored_reference(model: Scorer, reference: pd.DataFrame) -> VersionReference:
    """``reference`` (the model's validation rows, ``reference.load_reference``) with the
    model's probabilities as ``prediction``, as ``drift_report`` compares a month with it."""
    frame = reference.assign(**{drift.PREDICTION: probabilities(model, reference)})
    return VersionReference(frame, tuple(model.inputs))


def groups(served: pd.DataFrame) -> list[tuple[str, str]]:
    """The (model_version, role) pairs present in ``served``: live first, then by version."""
    pairs = served[["model_version", "role"]].drop_duplicates().itertuples(index=False)
    return sorted(
        ((str(version), str(role)) for version, role in pairs),
        key=lambda pair: (pair[1] != LIVE, pair[1], _version_order(pair[0])),
    )


def served_inputs(served: pd.DataFrame, inputs: Sequence[str]) -> pd.DataFrame:
    """The served records as ``drift.compare`` takes them: the model's inputs, read from each
    record's JSON, and the served probability as ``prediction``."""
    records = pd.DataFrame.from_records(
        served["inputs"].tolist(), columns=list(inputs), index=served.index
    )
    lacking = [name for name in inputs if any(name not in record for record in served["inputs"])]
    if lacking:
        raise ValueError(f"served records lack the model's input(s) {lacking}")
    numeric, _ = check_inputs(inputs)
    # A number the record left out is a missing value, not text (Evidently needs a numeric dtype).
    for name in numeric:
        records[name] = pd.to_numeric(records[name])
    return records.assign(**{drift.PREDICTION: served[PROBABILITY].astype(np.float64)})


def realized(served: pd.DataFrame) -> dict[str, float | int]:
    """Labelled rows, and ROC AUC (NaN with a single label), accuracy at 0.5 and subscription
    rate on the records with a reported outcome (all NaN without one)."""
    labelled = served[served["subscribed"].notna()]
    if labelled.empty:
        return {"labelled_rows": 0, **{name: np.nan for name in TRAFFIC_QUALITY}}
    outcomes = pd.DataFrame(
        {LABEL: np.where(labelled["subscribed"].astype(bool), "yes", "no")}, index=labelled.index
    )
    measured = quality.realized_quality(outcomes, labelled[PROBABILITY].to_numpy())
    return {"labelled_rows": int(measured["rows"]), **{n: measured[n] for n in TRAFFIC_QUALITY}}


def measure_day(
    day: date,
    served: pd.DataFrame,
    reference_for: Callable[[str], VersionReference],
    prediction_method: str = drift.PREDICTION_DRIFT_METHOD,
    computed_at: pd.Timestamp | None = None,
) -> pd.DataFrame:
    """The day's ``served_traffic`` rows (schema ``ServedTraffic``): one per version and role in
    ``served`` (the day's ``read_served``), each compared with ``reference_for(version)``.

    An empty ``served`` gives no rows.
    """
    computed_at = computed_at if computed_at is not None else pd.Timestamp.now(tz="UTC")
    references: dict[str, VersionReference] = {}
    rows = []
    for version, role in groups(served):
        if version not in references:
            references[version] = reference_for(version)
        reference = references[version]
        these = served[(served["model_version"] == version) & (served["role"] == role)]
        result = drift.compare(
            served_inputs(these, reference.inputs),
            reference.frame,
            reference.inputs,
            prediction_method,
            metadata={"day": day.isoformat(), "model_version": version, "role": role},
        )
        rows.append(_row(day, version, role, these, result, computed_at))
    return traffic_frame(rows)


def _row(
    day: date,
    version: str,
    role: str,
    served: pd.DataFrame,
    result: drift.DriftResult,
    computed_at: pd.Timestamp,
) -> dict[str, object]:
    measured = realized(served)
    notes = [result.note]
    if measured["labelled_rows"] == 0:
        notes.append(NO_OUTCOMES_NOTE)
    elif np.isnan(measured["roc_auc"]):
        notes.append(ONE_OUTCOME_NOTE)
    return {
        "day": pd.Timestamp(day),
        "model_version": version,
        "role": role,
        "requests": served["request_id"].nunique(),
        "rows": len(served),
        "reference_rows": result.reference_rows,
        "input_columns": result.input_columns,
        "drifted_columns": result.drifted_columns,
        "drifted_share": result.drifted_share,
        "prediction_drift": result.prediction_drift,
        "prediction_drift_method": result.prediction_drift_method,
        "missing_share": result.missing_share,
        "mean_probability": float(served[PROBABILITY].mean()),
        **measured,
        "note": "; ".join(note for note in notes if note) or None,
        "computed_at": computed_at,
    }


_INTEGERS = ("requests", "rows", "reference_rows", "input_columns", "drifted_columns")
_FLOATS = ("drifted_share", "prediction_drift", "missing_share", "mean_probability")


def traffic_frame(rows: list[dict[str, object]]) -> pd.DataFrame:
    """The rows with the table's columns in order, typed as the schema wants them."""
    frame = pd.DataFrame(rows, columns=list(TRAFFIC_COLUMNS))
    return frame.astype(
        {
            "day": "datetime64[ns]",
            "model_version": object,
            "role": object,
            **dict.fromkeys((*_INTEGERS, "labelled_rows"), np.int64),
            **dict.fromkeys((*_FLOATS, *TRAFFIC_QUALITY), np.float64),
            "prediction_drift_method": object,
            "note": object,
            "computed_at": "datetime64[ns, UTC]",
        }
    )


def replace_traffic(engine: sa.Engine, day: date, rows: pd.DataFrame) -> int:
    """Replace ``day``'s ``served_traffic`` rows with ``rows``, in one transaction."""
    records = [
        {
            name: _plain(value) if name != "day" else pd.Timestamp(value).date()
            for name, value in record.items()
        }
        for record in rows.to_dict("records")
    ]
    with engine.begin() as connection:
        connection.execute(sa.delete(served_traffic).where(served_traffic.c.day == day))
        if records:
            connection.execute(sa.insert(served_traffic), records)
    return len(records)


def read_traffic(engine: sa.Engine, day: date | None = None) -> pd.DataFrame:
    """The stored ``served_traffic`` rows (of ``day``), by day, role and version."""
    query = sa.select(served_traffic).order_by(
        served_traffic.c.day, served_traffic.c.role, served_traffic.c.model_version
    )
    if day is not None:
        query = query.where(served_traffic.c.day == day)
    with engine.connect() as connection:
        return pd.read_sql(query, connection)


def retention_cutoff(now: datetime, retention_days: int) -> datetime:
    """Answers received before this instant are past retention: UTC midnight ``retention_days``
    days before ``now``'s day. Whole days go at once, so a day is never summarized half purged."""
    if retention_days < 1:
        raise ValueError(f"retention must be at least one day, not {retention_days}")
    today = now.astimezone(UTC).date()
    cutoff = today - timedelta(days=retention_days)
    return datetime(cutoff.year, cutoff.month, cutoff.day, tzinfo=UTC)


def _plain(value: object) -> object:
    """A plain Python value for the driver: None for NaN and NaT."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    if isinstance(value, pd.Timestamp):
        return value.to_pydatetime()
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return value


def _version_order(version: str) -> tuple[int, str]:
    return (int(version), "") if version.isdigit() else (0, version)
