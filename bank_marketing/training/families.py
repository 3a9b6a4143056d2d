"""The five candidate families: estimators built from plain hyperparameters.

Class imbalance: the target is rare early on (3 % in 2008-05), so candidates are compared on ROC
AUC, the split is stratified, and each family can reweight classes. The default does not
reweight: reweighting barely moves ROC AUC but inflates probabilities, and the monitoring compares
mean predicted probability with the real subscription rate, which needs calibrated probabilities.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.neural_network import MLPClassifier
from sklearn.svm import SVC
from sklearn.utils.class_weight import compute_sample_weight
from xgboost import XGBClassifier

FAMILIES = ("logistic_regression", "random_forest", "xgboost", "svc", "mlp")
# The same families from the simplest to the most flexible: the one-standard-error rule's
# preference when it chooses a round's challenger (registry.select).
SIMPLICITY_ORDER = ("logistic_regression", "svc", "mlp", "random_forest", "xgboost")
# Families whose numeric inputs are standardized before the estimator.
SCALED = {"logistic_regression", "svc", "mlp"}


def logistic_regression(
    C: float, max_iter: int, class_weight: str, seed: int, **_: Any
) -> BaseEstimator:
    return LogisticRegression(
        C=C, max_iter=max_iter, class_weight=_weights(class_weight), random_state=seed
    )


def random_forest(
    n_estimators: int,
    max_depth: int | None,
    min_samples_leaf: int,
    max_features: str | float,
    class_weight: str,
    n_jobs: int,
    seed: int,
    **_: Any,
) -> BaseEstimator:
    return RandomForestClassifier(
        n_estimators=n_estimators,
        max_depth=max_depth,
        min_samples_leaf=min_samples_leaf,
        max_features=max_features,
        class_weight="balanced_subsample" if class_weight == "balanced" else None,
        n_jobs=n_jobs,
        random_state=seed,
    )


def xgboost(
    n_estimators: int,
    learning_rate: float,
    max_depth: int,
    min_child_weight: float,
    subsample: float,
    colsample_bytree: float,
    reg_lambda: float,
    n_jobs: int,
    seed: int,
    **_: Any,
) -> BaseEstimator:
    return XGBClassifier(
        n_estimators=n_estimators,
        learning_rate=learning_rate,
        max_depth=max_depth,
        min_child_weight=min_child_weight,
        subsample=subsample,
        colsample_bytree=colsample_bytree,
        reg_lambda=reg_lambda,
        tree_method="hist",
        eval_metric="logloss",
        n_jobs=n_jobs,
        random_state=seed,
    )


def svc(C: float, gamma: str | float, class_weight: str, seed: int, **_: Any) -> BaseEstimator:
    # Platt scaling on out-of-fold decision values: scikit-learn's replacement for
    # SVC(probability=True), which 1.9 deprecates. The folds are shuffled: a window's rows are in
    # time order, and unshuffled folds are blocks of months whose subscription rates differ, so
    # the sigmoid fitted across them can come out reversed (ROC AUC below 0.5 as of 2010-06:
    # BENCHMARKS.md, the replay notes).
    return CalibratedClassifierCV(
        SVC(C=C, kernel="rbf", gamma=gamma, class_weight=_weights(class_weight), random_state=seed),
        method="sigmoid",
        cv=StratifiedKFold(n_splits=5, shuffle=True, random_state=seed),
        ensemble=False,
    )


def mlp(
    hidden_layer_sizes: list[int],
    alpha: float,
    learning_rate_init: float,
    max_iter: int,
    seed: int,
    **_: Any,
) -> BaseEstimator:
    return MLPClassifier(
        hidden_layer_sizes=tuple(hidden_layer_sizes),
        alpha=alpha,
        learning_rate_init=learning_rate_init,
        max_iter=max_iter,
        early_stopping=True,
        n_iter_no_change=10,
        random_state=seed,
    )


BUILDERS: dict[str, Callable[..., BaseEstimator]] = {
    "logistic_regression": logistic_regression,
    "random_forest": random_forest,
    "xgboost": xgboost,
    "svc": svc,
    "mlp": mlp,
}


def sample_weights(family: str, class_weight: str, y: np.ndarray) -> np.ndarray | None:
    """Balanced sample weights for the families that take them in ``fit`` rather than a param."""
    if class_weight == "balanced" and family in {"xgboost", "mlp"}:
        return compute_sample_weight("balanced", y)
    return None


def _weights(class_weight: str) -> str | None:
    if class_weight not in ("balanced", "none"):
        raise ValueError(f"class_weight must be 'balanced' or 'none', not {class_weight!r}")
    return "balanced" if class_weight == "balanced" else None
