"""The training defaults as plain typed models: the model inputs, the window and its split, each
family's hyperparameters, and the promotion rule; and a file that changes them for every round.

They are the one place these defaults live. The Dagster configs and resources in
``bank_marketing.orchestration`` wrap them (so the Dagster UI documents the same fields), and the
benchmarks, the replay's baselines and the tests read them here without Dagster.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import pandas as pd
import yaml
from pydantic import BaseModel, Field, ValidationError

from bank_marketing.training.candidates import FittedCandidate, fit_candidate
from bank_marketing.training.families import SIMPLICITY_ORDER
from bank_marketing.training.features import DEFAULT_INPUTS, check_inputs

ENV_MODEL_INPUTS = "BANK_MARKETING_MODEL_INPUTS"
ENV_DAY_OF_YEAR = "BANK_MARKETING_DAY_OF_YEAR"


class Inputs(BaseModel):
    """The contact fields every candidate model takes as input (its signature for serving)."""

    columns: list[str] = Field(
        default=list(DEFAULT_INPUTS),
        description=f"UCI column names ({ENV_MODEL_INPUTS}, comma-separated); 'duration' and 'y' "
        "are known only after the call and refused. The default follows the original project.",
    )
    day_of_year: bool = Field(
        default=False,
        description=f"Also derive the day of the year from month and day inside the model, and "
        f"the previous contact's (day of the year less pdays) when pdays is a column "
        f"({ENV_DAY_OF_YEAR}; needs month and day). It helps gradient boosting on a random split "
        "of all data but mostly hurts on the monthly windows (BENCHMARKS.md), so it is off.",
    )

    def checked(self) -> list[str]:
        """The columns, after refusing unknown, post-call or incomplete ones."""
        check_inputs(self.columns, day_of_year=self.day_of_year)
        return list(self.columns)


class WindowSplit(BaseModel):
    """Which months a round trains on, and how its window is split for validation."""

    window_months: int = Field(
        default=12, ge=1, le=31, description="Months up to and including the as-of month."
    )
    validation_share: float = Field(
        default=0.2, gt=0.0, lt=1.0, description="Share of the window held out for validation."
    )
    seed: int = Field(default=42, description="Seed of the stratified train/validation split.")
    split_by: Literal["day", "row"] = Field(
        default="day",
        description="'day': all calls of one day go to the same side of the split, and each "
        "month's days are split on their own, so a day is on the same side in every window. "
        "Calls of a day share a campaign and an outcome rate, so a row split puts near-copies of "
        "training rows into validation and rewards models that memorize dates. 'row': a plain "
        "stratified row split of the window.",
    )


class CandidateParams(BaseModel):
    """What every family's configuration has: class weighting and a seed."""

    class_weight: Literal["none", "balanced"] = Field(
        default="none",
        description="'balanced' weights classes inversely to their frequency. The default keeps "
        "probabilities calibrated, which the monitoring compares with subscription rates.",
    )
    seed: int = Field(default=42, description="Random seed of the estimator.")

    def fit_arguments(self) -> tuple[dict[str, Any], int, int | None]:
        """The estimator's hyperparameters, the seed, and the training-row cap (SVC's), apart."""
        params = self.model_dump()
        return params, params.pop("seed"), params.pop("max_train_rows", None)

    def fit(
        self, family: str, inputs: Inputs, train: pd.DataFrame, validation: pd.DataFrame
    ) -> FittedCandidate:
        """``family`` fitted with these parameters on ``inputs``, as a candidate asset fits it."""
        params, seed, max_rows = self.fit_arguments()
        return fit_candidate(
            family,
            params,
            inputs.checked(),
            train,
            validation,
            max_train_rows=max_rows,
            seed=seed,
            day_of_year=inputs.day_of_year,
        )


class LogisticRegressionParams(CandidateParams):
    C: float = Field(default=1.0, gt=0, description="Inverse regularization strength.")
    max_iter: int = Field(default=2000, ge=1, description="Solver iterations at most.")


class RandomForestParams(CandidateParams):
    n_estimators: int = Field(default=400, ge=1, description="Number of trees.")
    max_depth: int | None = Field(default=None, description="Depth limit (None: unlimited).")
    min_samples_leaf: int = Field(default=3, ge=1, description="Smallest leaf, in rows.")
    max_features: str = Field(default="sqrt", description="Features tried at each split.")
    n_jobs: int = Field(default=1, description="Threads; keep 1 when candidates run in parallel.")


class XGBoostParams(CandidateParams):
    # Chosen by 5-fold cross-validation over all contacts and checked on monthly windows
    # validated by call day (BENCHMARKS.md, the training benchmark).
    n_estimators: int = Field(default=2000, ge=1, description="Boosting rounds.")
    learning_rate: float = Field(default=0.01, gt=0, description="Shrinkage per round.")
    max_depth: int = Field(default=5, ge=1, description="Depth of each tree.")
    min_child_weight: float = Field(default=10.0, ge=0, description="Smallest leaf weight.")
    subsample: float = Field(default=0.8, gt=0, le=1, description="Rows sampled per tree.")
    colsample_bytree: float = Field(default=0.5, gt=0, le=1, description="Columns per tree.")
    reg_lambda: float = Field(default=1.0, ge=0, description="L2 regularization.")
    n_jobs: int = Field(default=1, description="Threads; keep 1 when candidates run in parallel.")


class SVCParams(CandidateParams):
    C: float = Field(default=1.0, gt=0, description="Regularization (RBF kernel).")
    gamma: str = Field(default="scale", description="Kernel coefficient.")
    max_train_rows: int = Field(
        default=6000,
        ge=100,
        description="SVC fits in quadratic time: larger windows are subsampled (stratified) to "
        "this many rows; the cap is logged with the run.",
    )


class MLPParams(CandidateParams):
    hidden_layer_sizes: list[int] = Field(default=[64, 32], description="Units per hidden layer.")
    alpha: float = Field(default=1e-3, ge=0, description="L2 penalty.")
    learning_rate_init: float = Field(default=1e-3, gt=0, description="Adam's learning rate.")
    max_iter: int = Field(default=200, ge=1, description="Epochs at most (early stopping on).")


FAMILY_PARAMS: dict[str, type[CandidateParams]] = {
    "logistic_regression": LogisticRegressionParams,
    "random_forest": RandomForestParams,
    "xgboost": XGBoostParams,
    "svc": SVCParams,
    "mlp": MLPParams,
}


class PromotionRule(BaseModel):
    """How a round picks its challenger and when the challenger replaces the champion."""

    margin: float = Field(
        default=0.0,
        ge=0.0,
        description="The challenger must beat the champion's ROC AUC by more than this, on the "
        "same validation data, to replace it.",
    )
    roc_auc_floor: float = Field(
        default=0.6,
        ge=0.0,
        le=1.0,
        description="No model below this validation ROC AUC is promoted or passes the check.",
    )
    standard_errors: float = Field(
        default=1.0,
        ge=0.0,
        description="The round's challenger is the simplest family (simplicity_order) whose "
        "validation ROC AUC is within this many standard errors of the best candidate's (the "
        "one-standard-error rule; the standard error is a bootstrap over the validation's call "
        "days, logged as validation_roc_auc_standard_error); 0 takes the best.",
    )
    simplicity_order: list[str] = Field(
        default=list(SIMPLICITY_ORDER),
        description="The families from the simplest to the most flexible, for standard_errors.",
    )


# What each training asset's parameters are, by asset name, for a file of training defaults.
ASSET_PARAMS: dict[str, type[BaseModel]] = {
    "training_set": WindowSplit,
    **{f"{family}_candidate": params for family, params in FAMILY_PARAMS.items()},
    "champion_model": PromotionRule,
}


class TrainingConfigError(ValueError):
    """A file of training defaults that cannot be used; the message names the file and the key."""


def read_training_config(path: Path) -> dict[str, dict[str, Any]]:
    """The parameters a YAML file of training defaults sets, by asset, each checked.

    The file maps training assets to the parameters that differ from the defaults above, e.g.
    ``xgboost_candidate: {n_estimators: 300}``; every round starts from it (the ones sensors
    launch included), and a run's own configuration still overrides it.
    """
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as error:
        raise TrainingConfigError(f"training config {path}: cannot be read: {error}") from error
    if not isinstance(loaded, dict):
        raise TrainingConfigError(
            f"training config {path}: expected a mapping of training assets to parameters, "
            f"got {type(loaded).__name__}"
        )
    checked: dict[str, dict[str, Any]] = {}
    for asset, values in loaded.items():
        model = ASSET_PARAMS.get(asset)
        if model is None:
            raise TrainingConfigError(
                f"training config {path}: {asset!r} is not a training asset; expected one of "
                f"{sorted(ASSET_PARAMS)}"
            )
        values = values or {}
        if not isinstance(values, dict):
            raise TrainingConfigError(f"training config {path}: {asset} must map parameters")
        unknown = sorted(set(values) - set(model.model_fields))
        if unknown:
            raise TrainingConfigError(
                f"training config {path}: {asset} has no parameter {', '.join(unknown)}; "
                f"its parameters are {sorted(model.model_fields)}"
            )
        try:
            model.model_validate(values)
        except ValidationError as error:
            problems = "; ".join(
                f"{'.'.join(str(part) for part in e['loc'])}: {e['msg']}" for e in error.errors()
            )
            raise TrainingConfigError(f"training config {path}: {asset}: {problems}") from error
        checked[asset] = dict(values)
    return checked
