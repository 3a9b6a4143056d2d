"""The promotion rule: when a challenger replaces the champion, its audit tags, round ranking."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from mlflow import MlflowClient

from bank_marketing.training.registry import (
    Decision,
    NoChampion,
    comparison_rows,
    decide,
    rank,
    require_champion,
    select,
)
from bank_marketing.training.tracking import CandidateRecord

# Binary fractions, so "better by exactly the margin" is exact in floating point.
CHAMPION, MARGIN, FLOOR = 0.75, 0.0625, 0.5


def _decide(**overrides: Any) -> Decision:
    arguments: dict[str, Any] = {
        "challenger_version": "7",
        "challenger_roc_auc": 0.875,
        "challenger_problem": None,
        "champion_version": "3",
        "champion_roc_auc": CHAMPION,
        "champion_problem": None,
        "margin": MARGIN,
        "floor": FLOOR,
    }
    return decide(**{**arguments, **overrides})


def test_first_usable_challenger_becomes_champion() -> None:
    decision = _decide(champion_version=None, champion_roc_auc=None)
    assert decision.promoted and "no champion yet" in decision.reason


def test_challenger_beating_champion_by_more_than_margin_is_promoted() -> None:
    decision = _decide(challenger_roc_auc=CHAMPION + MARGIN + 0.0001)
    assert decision.promoted and "v7" in decision.reason and "v3" in decision.reason


@pytest.mark.parametrize(
    "challenger", [CHAMPION - 0.1, CHAMPION, CHAMPION + MARGIN / 2, CHAMPION + MARGIN]
)
def test_champion_stays_unless_beaten_by_more_than_margin(challenger: float) -> None:
    decision = _decide(challenger_roc_auc=challenger)
    assert not decision.promoted and "the champion stays" in decision.reason
    assert (decision.challenger_roc_auc, decision.champion_roc_auc) == (challenger, CHAMPION)


@pytest.mark.parametrize("champion_version", [None, "3"])
def test_challenger_below_floor_is_never_promoted(champion_version: str | None) -> None:
    decision = _decide(challenger_roc_auc=FLOOR - 0.01, champion_version=champion_version)
    assert not decision.promoted and "below the floor" in decision.reason


@pytest.mark.parametrize("score", [None, 0.99])
def test_challenger_with_a_problem_is_not_promoted(score: float | None) -> None:
    decision = _decide(challenger_roc_auc=score, challenger_problem="cannot load the model")
    assert not decision.promoted and "cannot load the model" in decision.reason


def test_champion_that_cannot_be_scored_stays() -> None:
    decision = _decide(
        challenger_roc_auc=0.99, champion_roc_auc=None, champion_problem="probabilities are NaN"
    )
    assert not decision.promoted
    assert "stays" in decision.reason and "probabilities are NaN" in decision.reason


def test_tags_record_the_decision_and_both_scores() -> None:
    decision = _decide()
    tags = decision.as_tags()
    assert tags["promotion_promoted"] == "True"
    assert tags["promotion_reason"] == decision.reason
    assert float(tags["promotion_challenger_roc_auc"]) == 0.875
    assert float(tags["promotion_champion_roc_auc"]) == CHAMPION
    assert tags["promotion_champion_version"] == "3"
    assert all(isinstance(value, str) for value in tags.values())


def _record(
    version: str, roc_auc: float, family: str = "logistic", standard_error: float = 0.0173
) -> CandidateRecord:
    return CandidateRecord(
        family=family,
        run_id=f"run-{version}",
        model_version=version,
        model_uri=f"models:/bank-marketing/{version}",
        train_metrics={"roc_auc": 1 - roc_auc},  # ranking by train would reverse the order
        validation_metrics={"roc_auc": roc_auc},
        fit_seconds=1.0,
        validation_roc_auc_standard_error=standard_error,
    )


def test_rank_is_best_validation_roc_auc_first_ties_to_the_older_version() -> None:
    records = [_record("10", 0.8), _record("2", 0.7), _record("9", 0.8), _record("11", 0.9)]
    assert [record.model_version for record in rank(records)] == ["11", "9", "10", "2"]


def _validation(rows_by_month: dict[str, tuple[int, int]]) -> pd.DataFrame:
    """Validation rows: for each month, (no, yes) counts of labels."""
    frames = [
        pd.DataFrame(
            {
                "contact_month": pd.Timestamp(f"{month}-01"),
                "y": ["no"] * no + ["yes"] * yes,
            }
        )
        for month, (no, yes) in rows_by_month.items()
    ]
    return pd.concat(frames, ignore_index=True)


def test_champion_and_challenger_are_compared_on_months_the_champion_never_saw() -> None:
    validation = _validation({"2009-04": (300, 30), "2009-05": (200, 25), "2009-06": (180, 40)})
    rows, described = comparison_rows(validation, "2009-04", "3")
    assert rows["contact_month"].min() == pd.Timestamp("2009-05-01")
    assert len(rows) == 445
    assert described == "445 validation rows from 2009-05..2009-06, after v3's as-of month 2009-04"


@pytest.mark.parametrize(
    ("later", "why"),
    [
        ({"2009-06": (150, 30)}, "only 180 are after"),  # too few rows
        ({"2009-06": (400, 5)}, "(5 in the smaller class)"),  # too few subscribers
        ({"2009-06": (400, 0)}, "(0 in the smaller class)"),  # one label
    ],
)
def test_too_few_unseen_rows_fall_back_to_all_validation_rows_and_say_so(
    later: dict[str, tuple[int, int]], why: str
) -> None:
    validation = _validation({"2009-04": (300, 30), **later})
    rows, described = comparison_rows(validation, "2009-05", "3")
    assert len(rows) == len(validation)
    assert described.startswith(f"all {len(validation):,} validation rows: ")
    assert why in described


def test_without_a_champion_every_validation_row_is_compared() -> None:
    validation = _validation({"2009-04": (300, 30)})
    rows, described = comparison_rows(validation, None)
    assert rows is validation and described == "all 330 validation rows"


def test_the_floor_applies_to_the_whole_validation_score() -> None:
    decision = _decide(challenger_roc_auc=0.9, challenger_validation_roc_auc=FLOOR - 0.01)
    assert not decision.promoted and "below the floor" in decision.reason
    decision = _decide(challenger_roc_auc=0.9, challenger_validation_roc_auc=FLOOR + 0.01)
    assert decision.promoted and decision.compared_on in decision.reason


ROUND = [
    _record("14", 0.72, "xgboost"),
    _record("13", 0.715, "random_forest"),
    _record("11", 0.71, "logistic_regression"),
    _record("15", 0.69, "mlp"),
    _record("12", 0.66, "svc"),
]


def test_the_simplest_family_within_one_standard_error_of_the_best_is_the_challenger() -> None:
    chosen = select(rank(ROUND), standard_errors=1.0)
    assert chosen.candidate.model_version == "11"
    assert chosen.reason == (
        "logistic_regression v11 (validation ROC AUC 0.7100) is the simplest of the 3 candidates "
        "within 1 standard error(s) (0.0173) of the best, xgboost v14 (0.7200)"
    )


def test_the_tolerance_is_the_best_candidates_own_standard_error() -> None:
    # Validation days that agree closely: the best's lead of 0.005 is outside its noise.
    precise = [
        _record(c.model_version, c.validation_metrics["roc_auc"], c.family, standard_error=0.1)
        for c in ROUND[1:]
    ]
    best = _record("14", 0.72, "xgboost", standard_error=0.004)
    chosen = select(rank([best, *precise]), standard_errors=1.0)
    assert chosen.candidate.model_version == "14"
    assert "no other candidate is within 1 standard error(s) (0.0040)" in chosen.reason


def test_an_unknown_standard_error_keeps_the_best() -> None:
    best = _record("14", 0.72, "xgboost", standard_error=float("nan"))
    chosen = select(rank([best, *ROUND[1:]]), standard_errors=1.0)
    assert chosen.candidate.model_version == "14"


def test_a_lead_larger_than_the_tolerance_keeps_the_best() -> None:
    chosen = select(rank(ROUND), standard_errors=0.5)
    assert (
        chosen.candidate.model_version == "13"
    )  # random_forest: simpler than xgboost, within 0.0086
    chosen = select(rank(ROUND), standard_errors=0.0)
    assert chosen.candidate.model_version == "14"
    assert chosen.reason.startswith("xgboost v14 has the best validation ROC AUC 0.7200, and no ")


def test_the_order_of_simplicity_is_configuration_and_unlisted_families_come_last() -> None:
    chosen = select(rank(ROUND), standard_errors=1.0, order=["random_forest"])
    assert chosen.candidate.family == "random_forest"
    chosen = select(rank(ROUND), standard_errors=1.0, order=["svc"])
    assert chosen.candidate.family == "xgboost"  # svc is outside the tolerance; then by rank
    assert "is the simplest of the 3 candidates" in chosen.reason


def test_an_unknown_family_in_the_order_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match=r"simplicity_order names \['lightgbm'\], which"):
        select(rank(ROUND), standard_errors=1.0, order=["lightgbm", "svc"])


def test_the_choice_is_recorded_with_the_decision() -> None:
    tags = _decide(selection="logistic_regression v11 ... is the simplest").as_tags()
    assert tags["promotion_selection"] == "logistic_regression v11 ... is the simplest"


def test_the_champion_is_required_by_name_where_there_is_none(
    tmp_path: Path, registry: str
) -> None:
    empty = MlflowClient(f"sqlite:///{tmp_path / 'empty.db'}")
    with pytest.raises(NoChampion) as raised:
        require_champion(empty)
    assert str(raised.value) == (
        f"models:/bank-marketing@champion at {empty.tracking_uri} is not set; train one first "
        f"(training_job)"
    )
    assert require_champion(MlflowClient(registry)) == "1"
