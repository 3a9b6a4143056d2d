"""The retraining policy: each signal against its threshold, combinations, schedule, cooldown, and
the environment that sets it."""

from __future__ import annotations

import math

import pytest

from bank_marketing.monitoring.policy import MonthSignals, RetrainRule, decide, judge
from bank_marketing.settings import Settings

CALM = MonthSignals(
    month="2009-06-01",
    rows=300,
    prediction_drift=0.05,
    drifted_share=0.2,
    drift_p_value=0.4,
    realized_z=0.3,
    estimated_drop=0.01,
)


def alarm(**values: float) -> MonthSignals:
    return MonthSignals(**{**vars(CALM), **values})


@pytest.mark.parametrize(
    ("signal", "month"),
    [
        ("prediction_drift", alarm(prediction_drift=0.11)),
        ("drift_p_value", alarm(drift_p_value=0.009)),
        ("realized_performance", alarm(realized_z=-2.01)),
        ("estimated_performance", alarm(estimated_drop=0.051)),
        ("drifted_share", alarm(drifted_share=0.95)),
    ],
)
def test_each_signal_fires_past_its_threshold_and_only_then(
    signal: str, month: MonthSignals
) -> None:
    rule = RetrainRule(signals=[signal], drifted_share_threshold=0.9, cooldown_months=0)
    assert judge(rule, month, "2009-01-01").retrain
    assert not judge(rule, CALM, "2009-01-01").retrain


def test_thresholds_are_strict_and_the_reason_names_the_number() -> None:
    rule = RetrainRule(signals=["drift_p_value"], drift_p_value_threshold=0.01)
    at = judge(rule, alarm(drift_p_value=0.01), None)
    assert not at.retrain and "prediction drift p-value 0.0100 >= 0.01" in at.reason
    below = judge(rule, alarm(drift_p_value=0.002), None)
    assert below.retrain and "0.0020 < 0.01" in below.reason


def test_a_signal_that_was_not_computed_never_fires() -> None:
    rule = RetrainRule(signals=["realized_performance", "estimated_performance"])
    unlabelled = alarm(realized_z=math.nan, estimated_drop=math.nan)
    verdict = judge(rule, unlabelled, None)
    assert not verdict.retrain
    assert "realized ROC AUC z not computed" in verdict.reason


def test_any_and_all() -> None:
    signals = ["drift_p_value", "realized_performance"]
    one = alarm(drift_p_value=0.001)
    both = alarm(drift_p_value=0.001, realized_z=-3.0)
    assert judge(RetrainRule(signals=signals, combine="any"), one, None).retrain
    assert not judge(RetrainRule(signals=signals, combine="all"), one, None).retrain
    assert judge(RetrainRule(signals=signals, combine="all"), both, None).retrain
    # "all" with a signal not computed (no labels yet) does not fire.
    unlabelled = alarm(drift_p_value=0.001, realized_z=math.nan)
    assert not judge(RetrainRule(signals=signals, combine="all"), unlabelled, None).retrain


@pytest.mark.parametrize(
    ("last", "month", "every", "due"),
    [
        (None, "2009-01-01", 3, True),
        ("2009-01-01", "2009-03-01", 3, False),
        ("2009-01-01", "2009-04-01", 3, True),
        ("2009-11-01", "2010-01-01", 2, True),
        ("2009-11-01", "2009-12-01", 1, True),
    ],
)
def test_the_schedule_is_due_every_n_months(
    last: str | None, month: str, every: int, due: bool
) -> None:
    rule = RetrainRule(signals=["schedule"], schedule_months=every, cooldown_months=0)
    assert judge(rule, alarm(month=month), last).retrain is due


def test_the_cooldown_comes_after_the_signals() -> None:
    rule = RetrainRule(signals=["prediction_drift"], cooldown_months=2)
    month = alarm(prediction_drift=0.5, month="2009-06-01")
    verdict = decide(rule, month, "2009-05-01")
    assert not verdict.retrain
    assert "prediction drift 0.500 > 0.1, but cooldown" in verdict.reason
    assert decide(rule, month, "2009-04-01").retrain


def test_empty_months_and_empty_policies_never_retrain() -> None:
    everything = RetrainRule(signals=["schedule", "prediction_drift"], cooldown_months=0)
    assert not judge(everything, MonthSignals("2009-06-01", rows=0), None).retrain
    assert judge(RetrainRule(signals=[]), alarm(prediction_drift=9.0), None).reason == (
        "the policy lists no signal"
    )


def test_unknown_signals_and_combinations_are_refused() -> None:
    with pytest.raises(ValueError, match=r"unknown signal\(s\) \['drift'\]"):
        RetrainRule(signals=["drift"])
    with pytest.raises(ValueError, match="combine is 'either'"):
        RetrainRule(combine="either")


def test_the_environment_sets_the_policy() -> None:
    settings = Settings.from_env(
        {
            "BANK_MARKETING_RETRAIN_SIGNALS": "drift_p_value, realized_performance",
            "BANK_MARKETING_RETRAIN_COMBINE": "all",
            "BANK_MARKETING_RETRAIN_DRIFT_P_VALUE": "0.05",
            "BANK_MARKETING_RETRAIN_REALIZED_Z": "1.5",
            "BANK_MARKETING_RETRAIN_ESTIMATED_DROP": "0.03",
            "BANK_MARKETING_RETRAIN_SCHEDULE_MONTHS": "3",
            "BANK_MARKETING_RETRAIN_COOLDOWN_MONTHS": "1",
        }
    )
    rule = settings.retrain_rule
    assert rule.signals == ["drift_p_value", "realized_performance"]
    assert rule.combine == "all"
    assert (rule.drift_p_value_threshold, rule.realized_z_threshold) == (0.05, 1.5)
    assert (rule.estimated_drop_threshold, rule.schedule_months, rule.cooldown_months) == (
        0.03,
        3,
        1,
    )
    # Set and empty: no signal, the loop never retrains by itself.
    assert Settings.from_env({"BANK_MARKETING_RETRAIN_SIGNALS": ""}).retrain_rule.signals == []
    assert Settings.from_env({}).retrain_rule.signals == RetrainRule().signals


def test_a_bad_setting_names_the_variable() -> None:
    with pytest.raises(ValueError, match="BANK_MARKETING_RETRAIN_REALIZED_Z='high'"):
        Settings.from_env({"BANK_MARKETING_RETRAIN_REALIZED_Z": "high"})
    with pytest.raises(ValueError, match=r"BANK_MARKETING_RETRAIN_\*: signals: .*unknown"):
        Settings.from_env({"BANK_MARKETING_RETRAIN_SIGNALS": "moon_phase"})
