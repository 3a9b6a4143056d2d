"""Features inside the model: allowed inputs, and a pipeline that takes raw contact records."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from bank_marketing.settings import Settings
from bank_marketing.training.config import Inputs
from bank_marketing.training.features import (
    DEFAULT_INPUTS,
    PRE_CALL_INPUTS,
    DayOfYear,
    PreviousContactDay,
    build_pipeline,
    check_inputs,
    day_of_year,
    labels,
    previous_contact_day,
)


def _records(rows: int, jobs: list[str], seed: int = 0) -> pd.DataFrame:
    """Raw contact records as stored: every column, the label and after-the-call fields too."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "age": rng.integers(18, 90, rows),
            "job": [jobs[i % len(jobs)] for i in range(rows)],
            "marital": ["married"] * rows,
            "balance": rng.integers(-500, 5000, rows),
            "housing": ["yes", "no"] * (rows // 2),
            "contact": ["cellular"] * rows,
            "day": rng.integers(1, 29, rows),
            "month": ["may"] * rows,
            "duration": rng.integers(0, 900, rows),
            "campaign": rng.integers(1, 5, rows),
            "pdays": [-1] * rows,
            "previous": [0] * rows,
            "poutcome": ["unknown"] * rows,
            "y": ["no", "no", "no", "yes"] * (rows // 4),
        }
    )


def _fitted(train: pd.DataFrame) -> Pipeline:
    pipeline = build_pipeline(DEFAULT_INPUTS, LogisticRegression(max_iter=500), scale_numeric=True)
    return pipeline.fit(train, labels(train))


def test_default_inputs_are_the_original_projects() -> None:
    assert DEFAULT_INPUTS == (
        "age", "job", "balance", "housing", "contact", "day", "month", "campaign", "pdays",
        "previous", "poutcome",
    )  # fmt: skip


def test_pre_call_inputs_are_every_field_but_duration_and_the_label() -> None:
    assert PRE_CALL_INPUTS == (
        "age", "job", "marital", "education", "default", "balance", "housing", "loan", "contact",
        "day", "month", "campaign", "pdays", "previous", "poutcome",
    )  # fmt: skip


def test_check_inputs_splits_numeric_from_categorical_in_order() -> None:
    assert check_inputs(["month", "age", "job", "balance"]) == (
        ["age", "balance"],
        ["month", "job"],
    )


@pytest.mark.parametrize(
    ("inputs", "problem"),
    [
        (["age", "duration"], "known only after the call"),
        (["y"], "known only after the call"),
        (["age", "salary"], "unknown input column(s) ['salary']"),
        (["age", "job", "age"], "without repeats"),
        ([], "non-empty"),
    ],
)
def test_check_inputs_refuses_leaks_unknowns_and_repeats(inputs: list[str], problem: str) -> None:
    with pytest.raises(ValueError) as raised:
        check_inputs(inputs)
    assert problem in str(raised.value)


def test_pipeline_scores_records_with_extra_columns_and_unseen_categories() -> None:
    model = _fitted(_records(40, ["admin.", "technician"]))
    serving = _records(4, ["astronaut", "student", "admin.", "technician"], seed=1)
    serving["note"] = "extra"
    for frame in (serving, serving[list(DEFAULT_INPUTS)]):
        probability = model.predict_proba(frame)
        assert probability.shape == (4, 2)
        assert np.all((probability >= 0) & (probability <= 1))
        np.testing.assert_allclose(probability.sum(axis=1), 1.0)
    encoded = pd.DataFrame(
        model[:-1].transform(serving), columns=model[:-1].get_feature_names_out()
    )
    job_columns = [name for name in encoded.columns if name.startswith("job_")]
    assert encoded.loc[0, job_columns].eq(0).all()  # astronaut: no job at all
    assert encoded.loc[1, "job_student"] == 1  # allowed though never seen in training


def test_encoded_width_does_not_depend_on_the_categories_seen() -> None:
    # 6 numbers + job 12 + housing 2 + contact 3 + month 12 + poutcome 4 categories
    expected = 6 + 12 + 2 + 3 + 12 + 4
    for jobs in (["admin."], ["student", "retired", "unknown", "housemaid"]):
        model = _fitted(_records(40, jobs))
        assert model[:-1].transform(_records(4, jobs)).shape == (4, expected)


def test_labels_are_one_for_yes_and_zero_for_no() -> None:
    frame = pd.DataFrame({"y": ["yes", "no", "no", "yes"]})
    assert labels(frame).tolist() == [1, 0, 0, 1]


@pytest.mark.parametrize(
    ("month", "day", "expected"),
    [("jan", 1, 1), ("feb", 28, 59), ("mar", 1, 60), ("jun", 15, 166), ("dec", 31, 365)],
)
def test_day_of_year_counts_from_the_first_of_january(month: str, day: int, expected: int) -> None:
    frame = pd.DataFrame({"month": [month], "day": [day]})
    assert DayOfYear().fit(frame).transform(frame).tolist() == [[expected]]
    assert day_of_year(month, day) == expected


def test_day_of_year_names_a_month_it_cannot_place() -> None:
    frame = pd.DataFrame({"month": ["may", "Sept", "jun"], "day": [1, 2, 3]})
    with pytest.raises(ValueError, match=r"month must be one of .*got \['Sept'\]"):
        DayOfYear().fit(frame).transform(frame)


@pytest.mark.parametrize(
    ("month", "day", "pdays", "expected"),
    [("jun", 15, 100, 66), ("jun", 15, 166, 0), ("feb", 1, 200, -168), ("jun", 15, -1, 167)],
    ids=["this year", "the last day of last year", "last year", "never contacted"],
)
def test_the_previous_contact_day_counts_back_pdays_from_the_call(
    month: str, day: int, pdays: int, expected: int
) -> None:
    frame = pd.DataFrame({"month": [month], "day": [day], "pdays": [pdays]})
    assert PreviousContactDay().fit(frame).transform(frame).tolist() == [[expected]]
    assert previous_contact_day(month, day, pdays) == expected


def test_the_previous_contact_day_names_a_month_it_cannot_place() -> None:
    frame = pd.DataFrame({"month": ["may", "Sept"], "day": [1, 2], "pdays": [-1, 30]})
    with pytest.raises(ValueError, match=r"month must be one of .*got \['Sept'\]"):
        PreviousContactDay().fit(frame).transform(frame)


def test_a_pipeline_with_the_day_of_year_derives_it_and_needs_month_and_day() -> None:
    train = _records(40, ["admin.", "technician"])
    plain = len(_fitted(train)[:-1].get_feature_names_out())
    pipeline = build_pipeline(
        DEFAULT_INPUTS, LogisticRegression(max_iter=500), scale_numeric=True, day_of_year=True
    ).fit(train, labels(train))
    names = list(pipeline[:-1].get_feature_names_out())
    # pdays is a default input, so the previous contact's day of the year comes with it.
    assert names[-2:] == ["day_of_year", "previous_contact_day_of_year"]
    assert len(names) == plain + 2
    without_pdays = [name for name in DEFAULT_INPUTS if name != "pdays"]
    pipeline = build_pipeline(
        without_pdays, LogisticRegression(max_iter=500), scale_numeric=True, day_of_year=True
    ).fit(train, labels(train))
    names = list(pipeline[:-1].get_feature_names_out())
    assert names[-1] == "day_of_year" and len(names) == plain - 1 + 1
    without_day = [name for name in DEFAULT_INPUTS if name != "day"]
    with pytest.raises(ValueError, match=r"inputs lack \['day'\]"):
        build_pipeline(without_day, LogisticRegression(), scale_numeric=True, day_of_year=True)
    with pytest.raises(ValueError, match=r"inputs lack \['month'\]"):
        Inputs(columns=["age", "day"], day_of_year=True).checked()
    assert Inputs(columns=["age", "day"]).checked() == ["age", "day"]


def test_model_inputs_come_from_the_environment_and_are_checked_there() -> None:
    assert Settings.from_env({}).model_inputs == Inputs()
    inputs = Settings.from_env(
        {
            "BANK_MARKETING_MODEL_INPUTS": " age, month ,day,loan",
            "BANK_MARKETING_DAY_OF_YEAR": "true",
        }
    ).model_inputs
    assert inputs.columns == ["age", "month", "day", "loan"]
    assert inputs.day_of_year is True
    assert Settings.from_env({"BANK_MARKETING_DAY_OF_YEAR": "0"}).model_inputs.day_of_year is False
    with pytest.raises(ValueError, match=r"BANK_MARKETING_DAY_OF_YEAR='maybe' is not one of"):
        Settings.from_env({"BANK_MARKETING_DAY_OF_YEAR": "maybe"})
    with pytest.raises(ValueError, match=r"BANK_MARKETING_MODEL_INPUTS.*\['duration'\].*after"):
        Settings.from_env({"BANK_MARKETING_MODEL_INPUTS": "age,duration"})
    with pytest.raises(ValueError, match=r"BANK_MARKETING_DAY_OF_YEAR: .*lack \['day'\]"):
        Settings.from_env(
            {"BANK_MARKETING_MODEL_INPUTS": "age,month", "BANK_MARKETING_DAY_OF_YEAR": "yes"}
        )
