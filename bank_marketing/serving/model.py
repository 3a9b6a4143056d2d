"""The served model: loaded from the MLflow registry by alias or version, swapped atomically.

A loaded model scores validated records through its compiled :class:`Featurizer` when it has one
(see ``featurizer.py``), else through the plain pipeline; both give the same probabilities.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from bank_marketing.serving.featurizer import Featurizer, after_preprocess, compile_featurizer
from bank_marketing.training.registry import (
    CHAMPION_ALIAS,
    NoChampion,
    load_registered,
    require_champion,
)
from bank_marketing.training.tracking import MODEL_NAME


@dataclass(frozen=True)
class LoadedModel:
    """A registered model version ready to score raw contact records."""

    name: str
    version: str
    run_id: str
    inputs: list[str]
    training_window: str | None
    as_of: str | None
    family: str | None
    validation_metrics: dict[str, float]
    pipeline: Any = field(repr=False)
    featurizer: Featurizer | None = field(default=None, repr=False)
    # Whether the pipeline derives the day of the year (its run's param), as it was trained.
    day_of_year: bool = False

    def predict_proba(self, records: pd.DataFrame) -> np.ndarray:
        """P(subscribed) for each record (a frame with at least the model's inputs)."""
        return np.asarray(self.pipeline.predict_proba(records[self.inputs])[:, 1], dtype=float)

    def predict_records(self, records: Sequence[dict[str, Any]]) -> np.ndarray:
        """P(subscribed) for validated records (dicts): the compiled featurizer when it knows
        every value, else the plain pipeline; equal either way."""
        features = self.featurizer.transform(records) if self.featurizer else None
        if features is None:
            return self.predict_proba(pd.DataFrame.from_records(records, columns=self.inputs))
        return np.asarray(
            after_preprocess(self.pipeline).predict_proba(features)[:, 1], dtype=float
        )

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "run_id": self.run_id,
            "family": self.family,
            "as_of": self.as_of,
            "training_window": self.training_window,
            "inputs": self.inputs,
            "validation_metrics": self.validation_metrics,
        }


def load_version(client: MlflowClient, version: str, name: str = MODEL_NAME) -> LoadedModel:
    """Load ``version`` of the registered model, with what ``GET /model`` reports about it."""
    details = client.get_model_version(name, version)
    run = client.get_run(details.run_id)
    registered = load_registered(client, version, name)
    pipeline, signature = registered.pipeline, registered.signature
    inputs = signature.inputs.input_names() if signature is not None else []
    if not inputs:
        raise ValueError(f"model {name} v{version} has no input signature to validate against")
    metrics = {
        key.removeprefix("validation_"): value
        for key, value in run.data.metrics.items()
        if key.startswith("validation_")
    }
    return LoadedModel(
        name=name,
        version=str(version),
        run_id=details.run_id,
        inputs=list(inputs),
        training_window=run.data.tags.get("window"),
        as_of=run.data.tags.get("as_of"),
        family=run.data.tags.get("family"),
        validation_metrics=metrics,
        pipeline=pipeline,
        featurizer=compile_featurizer(pipeline, inputs),
        day_of_year=run.data.params.get("day_of_year") == "True",
    )


class ModelState:
    """The replica's current model, or why there is none. Swaps are atomic for readers."""

    def __init__(self, tracking_uri: str | None = None) -> None:
        self._client = MlflowClient(tracking_uri)
        self._lock = threading.Lock()
        self.model: LoadedModel | None = None
        self.problem: str | None = "no model loaded yet"
        self.last_error: str | None = None

    def unload(self) -> None:
        """Hold no model (a shadow that is switched off)."""
        with self._lock:
            self.model, self.problem = None, "no model loaded"

    def alias_version(self, alias: str = CHAMPION_ALIAS) -> str:
        """The version ``alias`` points at in the registry now."""
        return require_champion(self._client, alias)

    def load(self, version: str | None = None, alias: str = CHAMPION_ALIAS) -> LoadedModel | None:
        """Load ``version`` (default: the alias's), keeping the current model if loading fails."""
        with self._lock:
            try:
                wanted = version or require_champion(self._client, alias)
                if self.model is not None and self.model.version == wanted:
                    return self.model
                loaded = load_version(self._client, wanted)
            except (MlflowException, NoChampion, OSError, ValueError) as error:
                reason = f"cannot load models:/{MODEL_NAME}/{version or '@' + alias}: {error}"
                self.last_error = reason
                if self.model is None:
                    self.problem = reason
                return None
            self.model, self.problem = loaded, None
            return loaded
