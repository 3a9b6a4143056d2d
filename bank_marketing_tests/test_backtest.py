"""`bank-marketing policies`: the retraining policy backtest on the real data over a short range
(the plumbing tests' small candidates), and the rule that chooses the default on 2009."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bank_marketing.cli import main
from bank_marketing.monitoring import backtest
from bank_marketing.monitoring.policy import MonthSignals, RetrainRule, decide

CONTRACT = [
    "policy",
    "retrains",
    "mean_roc_auc_2009",
    "mean_roc_auc_2010",
    "mean_roc_auc",
    "auc_gain_per_retrain",
]
FIRST, LAST = "2009-11", "2010-02"


@pytest.fixture(scope="module")
def reports(bank_full_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("policies") / "home"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BANK_MARKETING_HOME", str(home))
        patch.setenv("BANK_MARKETING_SOURCE", str(bank_full_path))
        assert main(["policies", "--first", FIRST, "--last", LAST]) == 0
    return home


@pytest.mark.integration
def test_the_backtest_writes_one_row_per_policy_with_the_contract_columns(reports: Path):
    summaries = pd.read_csv(reports / "reports" / "policies.csv")
    assert list(summaries.columns[: len(CONTRACT)]) == CONTRACT
    assert summaries["policy"].is_unique
    by_name = summaries.set_index("policy")
    months = backtest.month_keys(FIRST, LAST)
    # No retrain as of the last month: it would serve no month of the range.
    assert by_name.loc["every month", "retrains"] == len(months) - 1
    assert by_name.loc["every 2 months", "retrains"] == 1  # as of 2009-12
    assert by_name.loc["never", "retrains"] == 0
    assert math.isnan(by_name.loc["never", "auc_gain_per_retrain"])
    every = by_name.loc["every month"]
    gain = (every["mean_roc_auc"] - by_name.loc["never", "mean_roc_auc"]) / every["retrains"]
    assert every["auc_gain_per_retrain"] == pytest.approx(gain, abs=1e-4)
    assert (reports / "reports" / "policies.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.integration
def test_each_month_is_judged_by_the_sensors_decision_code(reports: Path) -> None:
    months = pd.read_csv(reports / "reports" / "policy_months.csv")
    rules = backtest.catalog()
    today = months[months["policy"] == backtest.TODAY].reset_index(drop=True)
    assert today["month"].tolist() == backtest.month_keys(FIRST, LAST)
    # The first champion scores the first month under every policy.
    first = months[months["month"] == FIRST]
    assert first["scored_by"].nunique() == 1 and first["roc_auc"].nunique() == 1
    last_trained = f"{backtest.previous_month(FIRST)}-01"
    for place, row in today.iterrows():
        signals = MonthSignals(
            month=f"{row['month']}-01",
            rows=1,
            prediction_drift=row["prediction_drift"],
            drift_p_value=row["drift_p_value"],
            realized_z=row["realized_z"],
            estimated_drop=row["estimated_drop"],
        )
        retrain = decide(rules[backtest.TODAY], signals, last_trained).retrain
        assert bool(row["retrained"]) is (retrain and place < len(today) - 1), row["month"]
        if row["retrained"]:
            last_trained = f"{row['month']}-01"
    for column in ("drift_p_value", "estimated_roc_auc", "realized_roc_auc"):
        assert months[column].notna().all(), column
    assert months["drift_p_value"].between(0, 1).all()
    # The realized ROC AUC of the month is the ROC AUC the policy is scored on.
    np.testing.assert_allclose(months["realized_roc_auc"], months["roc_auc"], atol=1e-4)


@pytest.mark.integration
def test_rounds_are_fitted_once_and_read_back_from_the_cache(reports: Path) -> None:
    cached = sorted((reports / "cache" / "policies").glob("*/*.npz"))
    as_ofs = [backtest.previous_month(FIRST), *backtest.month_keys(FIRST, LAST)[:-1]]
    assert [path.stem for path in cached] == as_ofs
    stamps = [path.stat().st_mtime_ns for path in cached]
    before = pd.read_csv(reports / "reports" / "policies.csv")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BANK_MARKETING_HOME", str(reports))
        assert main(["policies", "--first", FIRST, "--last", LAST]) == 0
    assert [path.stat().st_mtime_ns for path in cached] == stamps
    pd.testing.assert_frame_equal(pd.read_csv(reports / "reports" / "policies.csv"), before)


def test_months_outside_the_data_are_refused(capsys) -> None:
    assert main(["policies", "--first", "2008-01", "--last", "2009-03"]) == 2
    assert "must name months of the data" in capsys.readouterr().err


def summary(name: str, retrains: int, auc: float) -> dict[str, object]:
    return {"policy": name, "retrains_2009": retrains, "mean_roc_auc_2009": auc}


def test_a_signal_policy_is_chosen_only_if_it_beats_the_schedules_with_as_many_retrains():
    rules = {
        "never": RetrainRule(signals=[]),
        "every 2 months": RetrainRule(signals=["schedule"], schedule_months=2),
        "every 3 months": RetrainRule(signals=["schedule"], schedule_months=3),
        "p": RetrainRule(signals=["drift_p_value"]),
    }
    schedules = [
        summary("never", 0, 0.60),
        summary("every 3 months", 4, 0.64),
        summary("every 2 months", 6, 0.65),
    ]
    # 4 retrains, better than every 3 months (4): chosen.
    chosen = backtest.choose([*schedules, summary("p", 4, 0.645)], rules)
    assert chosen.policy == "p" and chosen.schedule == "every 3 months"
    # 5 retrains, better than every 3 months but not than every 2 months: still chosen, since
    # every 2 months needs more retrains.
    assert backtest.choose([*schedules, summary("p", 5, 0.645)], rules).policy == "p"
    # Not better than the schedule with as many retrains: the best schedule is the default.
    lost = backtest.choose([*schedules, summary("p", 4, 0.639)], rules)
    assert lost.policy == "every 2 months"
    assert "no signal policy" in lost.reason
    # Over the budget (more than 6 retrains in 2009): never chosen, however good.
    assert backtest.choose([*schedules, summary("p", 7, 0.70)], rules).policy == "every 2 months"
