"""The compiled featurizer: exactly the pipeline's probabilities, or the pipeline itself."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import (
    FunctionTransformer,
    KBinsDiscretizer,
    OneHotEncoder,
    StandardScaler,
)

from bank_marketing.data.source import load_contacts
from bank_marketing.serving.contract import record_model
from bank_marketing.serving.featurizer import compile_featurizer
from bank_marketing.serving.model import LoadedModel, load_version
from bank_marketing.training.candidates import fit_candidate
from bank_marketing.training.features import (
    DEFAULT_INPUTS,
    PRE_CALL_INPUTS,
    build_pipeline,
    labels,
)
from bank_marketing_tests.registries import log_round

FAMILIES = {
    "xgboost": {"n_estimators": 60, "learning_rate": 0.1, "max_depth": 4,
                "min_child_weight": 1.0, "subsample": 0.8, "colsample_bytree": 0.6,
                "reg_lambda": 1.0, "n_jobs": 1},
    "logistic_regression": {"C": 1.0, "max_iter": 2000, "class_weight": "none"},
    "random_forest": {"n_estimators": 20, "max_depth": 6, "min_samples_leaf": 3,
                      "max_features": "sqrt", "class_weight": "none", "n_jobs": 1},
    "mlp": {"hidden_layer_sizes": [16], "alpha": 1e-3, "learning_rate_init": 1e-3,
            "max_iter": 50},
}  # fmt: skip


@pytest.fixture(scope="module")
def contacts(bank_full_path: Path, tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    return load_contacts(str(bank_full_path), tmp_path_factory.mktemp("contacts")).frame


@pytest.fixture(scope="module")
def served_records(contacts: pd.DataFrame) -> list[dict[str, Any]]:
    """5,000 real contacts from across the file, as the API hands them to the model."""
    sample = contacts.iloc[::9].head(5000).drop(columns="y")
    Record = record_model(DEFAULT_INPUTS)
    raw = json.loads(sample.to_json(orient="records"))
    return [Record.model_validate(record).model_dump() for record in raw]


def _model(pipeline: Pipeline, inputs: tuple[str, ...] = DEFAULT_INPUTS) -> LoadedModel:
    return LoadedModel(
        name="bank-marketing",
        version="1",
        run_id="run",
        inputs=list(inputs),
        training_window=None,
        as_of=None,
        family=None,
        validation_metrics={},
        pipeline=pipeline,
        featurizer=compile_featurizer(pipeline, inputs),
    )


def _expected(model: LoadedModel, records: list[dict[str, Any]]) -> np.ndarray:
    frame = pd.DataFrame.from_records(records, columns=model.inputs)
    return model.pipeline.predict_proba(frame)[:, 1]


# Each family, and a scaled and an unscaled one that derive the day of the year (and, pdays being
# a default input, the previous contact's).
VARIANTS = [*sorted(FAMILIES), "logistic_regression+day_of_year", "xgboost+day_of_year"]


@pytest.fixture(scope="module", params=VARIANTS)
def fitted(request: pytest.FixtureRequest, contacts: pd.DataFrame) -> LoadedModel:
    frame = contacts.iloc[:6000]
    family, _, derived = request.param.partition("+")
    candidate = fit_candidate(
        family,
        FAMILIES[family],
        DEFAULT_INPUTS,
        frame,
        frame.iloc[:500],
        day_of_year=bool(derived),
    )
    return _model(candidate.pipeline)


def test_each_family_compiles_and_scores_real_records_exactly(
    fitted: LoadedModel, served_records: list[dict[str, Any]]
) -> None:
    assert fitted.featurizer is not None
    features = fitted.featurizer.transform(served_records)
    frame = pd.DataFrame.from_records(served_records, columns=fitted.inputs)
    assert np.array_equal(features, fitted.pipeline[0].transform(frame))
    assert np.array_equal(fitted.predict_records(served_records), _expected(fitted, served_records))


def test_one_record_at_a_time_scores_the_same(
    fitted: LoadedModel, served_records: list[dict[str, Any]]
) -> None:
    for record in served_records[:200]:
        assert np.array_equal(fitted.predict_records([record]), _expected(fitted, [record]))


UNRECOGNISED = [
    ("unseen category", {"job": "astronaut"}),
    ("category in another case", {"month": "May"}),
    ("missing categorical", {"poutcome": None}),
    ("number as a string", {"age": "41"}),
    ("boolean number", {"previous": True}),
    ("missing number", {"balance": None}),
    ("NaN number", {"balance": float("nan")}),
    ("day as a string", {"day": "5"}),
]


@pytest.mark.parametrize(("case", "change"), UNRECOGNISED, ids=[u[0] for u in UNRECOGNISED])
def test_what_it_does_not_recognise_goes_to_the_pipeline(
    fitted: LoadedModel, served_records: list[dict[str, Any]], case: str, change: dict[str, Any]
) -> None:
    records = [*served_records[:300], served_records[300] | change, *served_records[301:400]]
    assert fitted.featurizer.transform(records) is None
    try:
        expected = _expected(fitted, records)
    except (ValueError, TypeError) as error:  # the pipeline refuses it: so does the service
        with pytest.raises(type(error)):
            fitted.predict_records(records)
        return
    assert np.array_equal(fitted.predict_records(records), expected, equal_nan=True)


def test_all_fifteen_inputs_and_unseen_categories_across_a_batch(
    contacts: pd.DataFrame,
) -> None:
    frame = contacts.iloc[:6000]
    pipeline = fit_candidate(
        "logistic_regression",
        FAMILIES["logistic_regression"],
        PRE_CALL_INPUTS,
        frame,
        frame.iloc[:500],
    ).pipeline
    model = _model(pipeline, PRE_CALL_INPUTS)
    assert model.featurizer is not None
    records = json.loads(
        contacts.iloc[20000:23000][list(PRE_CALL_INPUTS)].to_json(orient="records")
    )
    assert np.array_equal(model.predict_records(records), _expected(model, records))
    unseen = [record | {"education": "doctorate"} for record in records[:50]]
    assert model.featurizer.transform(unseen) is None
    assert np.array_equal(model.predict_records(unseen), _expected(model, unseen))


def test_without_pdays_only_the_day_of_the_year_is_derived_and_compiled(
    contacts: pd.DataFrame, served_records: list[dict[str, Any]]
) -> None:
    inputs = tuple(name for name in DEFAULT_INPUTS if name != "pdays")
    frame = contacts.iloc[:6000]
    pipeline = fit_candidate(
        "random_forest", FAMILIES["random_forest"], inputs, frame, frame.iloc[:500],
        day_of_year=True,
    ).pipeline  # fmt: skip
    model = _model(pipeline, inputs)
    assert model.featurizer is not None
    assert model.featurizer.day_of_year is not None
    assert model.featurizer.previous_contact_day is None
    records = [{name: record[name] for name in inputs} for record in served_records[:1000]]
    assert np.array_equal(model.predict_records(records), _expected(model, records))


def _tiny_frame(contacts: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    frame = contacts.iloc[:3000]
    return frame, labels(frame)


@pytest.mark.parametrize(
    "preprocess",
    [
        ColumnTransformer([("log", FunctionTransformer(np.log1p), ["age", "day"])]),
        ColumnTransformer(
            [("categorical", OneHotEncoder(drop="first"), ["job", "month"])],
        ),
        ColumnTransformer(
            [("categorical", OneHotEncoder(min_frequency=50), ["job", "month"])],
        ),
        ColumnTransformer(
            [("categorical", OneHotEncoder(sparse_output=True), ["job", "month"])],
            sparse_threshold=1.0,
        ),
        ColumnTransformer(
            [
                ("scaled", StandardScaler(), ["age"]),
                ("binned", KBinsDiscretizer(n_bins=3, encode="onehot-dense"), ["balance"]),
            ]
        ),
    ],
    ids=["custom function", "drop first", "infrequent categories", "sparse", "binned"],
)
def test_pipelines_it_does_not_recognise_are_scored_by_the_pipeline(
    contacts: pd.DataFrame, served_records: list[dict[str, Any]], preprocess: ColumnTransformer
) -> None:
    frame, y = _tiny_frame(contacts)
    pipeline = Pipeline([("preprocess", preprocess), ("model", LogisticRegression(max_iter=500))])
    pipeline.fit(frame, y)
    model = _model(pipeline)
    assert model.featurizer is None
    records = served_records[:500]
    assert np.array_equal(model.predict_records(records), _expected(model, records))


def test_a_plain_estimator_is_not_compiled(contacts: pd.DataFrame) -> None:
    frame, y = _tiny_frame(contacts)
    estimator = LogisticRegression(max_iter=500).fit(frame[["age", "balance"]], y)
    assert compile_featurizer(estimator, ["age", "balance"]) is None


def test_the_training_pipeline_is_recognised_without_fitting_twice(contacts: pd.DataFrame) -> None:
    frame, y = _tiny_frame(contacts)
    pipeline = build_pipeline(DEFAULT_INPUTS, LogisticRegression(max_iter=500), scale_numeric=True)
    assert compile_featurizer(pipeline, DEFAULT_INPUTS) is None  # not fitted yet
    pipeline.fit(frame, y)
    assert compile_featurizer(pipeline, DEFAULT_INPUTS) is not None


# Through MLflow on a real backend store (SQLite): run with the integration tests.
@pytest.mark.integration
def test_a_logged_day_of_year_model_loads_from_the_registry_and_compiles(
    contacts: pd.DataFrame,
    served_records: list[dict[str, Any]],
    tmp_path: Path,
) -> None:
    """skops must trust the derived features, and the loaded pipeline must compile exactly."""
    frame = contacts.iloc[:6000].assign(contact_month=pd.Timestamp("2008-05-01"))
    train, validation = frame.iloc[:5000], frame.iloc[5000:]
    fitted = fit_candidate(
        "xgboost", FAMILIES["xgboost"], DEFAULT_INPUTS, train, validation, day_of_year=True
    )
    uri, [record] = log_round(tmp_path, [(fitted, FAMILIES["xgboost"])], train, validation)
    client = MlflowClient(uri)
    model = load_version(client, record.model_version)
    assert model.day_of_year
    assert model.featurizer is not None and model.featurizer.day_of_year is not None
    assert model.featurizer.previous_contact_day is not None
    records = served_records[:1000]
    assert np.array_equal(
        model.predict_records(records),
        fitted.pipeline.predict_proba(
            pd.DataFrame.from_records(records, columns=list(DEFAULT_INPUTS))
        )[:, 1],
    )
