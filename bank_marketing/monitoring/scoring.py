"""The champion's scores for a month of contacts, as the frame the predictions table holds."""

from __future__ import annotations

from typing import Protocol

import numpy as np
import pandas as pd

PROBABILITY = "probability"
PREDICTION_COLUMNS = ("month", PROBABILITY, "model_version", "scored_at")


class Scorer(Protocol):
    """What scoring needs of a loaded model (``serving.model.LoadedModel`` is one)."""

    version: str
    inputs: list[str]

    def predict_proba(self, records: pd.DataFrame) -> np.ndarray: ...


def probabilities(model: Scorer, contacts: pd.DataFrame) -> np.ndarray:
    """P(subscribed) for each contact; an empty frame gives an empty array (sklearn refuses it)."""
    missing = [name for name in model.inputs if name not in contacts.columns]
    if missing:
        raise ValueError(
            f"model v{model.version} needs input column(s) {missing}, not in the frame"
        )
    if contacts.empty:
        return np.empty(0, dtype=np.float64)
    return np.asarray(model.predict_proba(contacts), dtype=np.float64)


def score_month(
    model: Scorer, contacts: pd.DataFrame, month: pd.Timestamp, scored_at: pd.Timestamp
) -> pd.DataFrame:
    """One row per contact, indexed by source line: month, probability, model version, time."""
    rows = len(contacts)
    return pd.DataFrame(
        {
            "month": pd.Series([month] * rows, index=contacts.index, dtype="datetime64[ns]"),
            PROBABILITY: probabilities(model, contacts),
            "model_version": pd.Series(
                [str(model.version)] * rows, index=contacts.index, dtype=object
            ),
            "scored_at": pd.Series(
                [scored_at] * rows, index=contacts.index, dtype="datetime64[ns, UTC]"
            ),
        },
        index=contacts.index.rename("line").astype(np.int64),
    )
