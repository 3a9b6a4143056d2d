"""The replay's report: the month table, the summary line, the plot and the benchmark section."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from bank_marketing.benchmarks import replay as replay_benchmark
from bank_marketing.orchestration import replay_report
from bank_marketing.orchestration.replay import Replay, ReplayMonth

BASELINES = {
    "frozen": {"2009-01-01": 0.5, "2009-02-01": 0.6, "2009-03-01": math.nan},
    "monthly": {"2009-01-01": 0.7, "2009-02-01": 0.8, "2009-03-01": 0.9},
}


def _replay() -> Replay:
    return Replay(
        first_as_of="2008-12",
        first_champion="2",
        months=[
            ReplayMonth("2009-01", 300, 0.1, 0.4, 7, "2", 0.6, True, "9", champion_family="mlp"),
            ReplayMonth("2009-02", 200, 0.2, 0.05, 3, "9", 0.7, champion_family="mlp"),
            ReplayMonth("2009-03", 75, 0.5, math.nan, 0, "9", math.nan),
        ],
    )


def test_table_marks_retrains_and_the_champion_switch() -> None:
    months = replay_report.frame(_replay(), BASELINES)
    assert months["roc_auc_frozen"].tolist()[:2] == [0.5, 0.6]
    lines = replay_report.table(months).splitlines()
    first = next(line for line in lines if line.startswith("2009-01"))
    assert "yes" in first and "v2 -> v9" in first and "10.0%" in first
    assert first.split()[-2:] == ["mlp", "0.600"]  # the family of the champion after the month
    last = next(line for line in lines if line.startswith("2009-03"))
    assert last.split()[-1] == "-"  # one label: no ROC AUC


def test_summary_means_each_series_over_the_months_it_has_and_counts_retrains() -> None:
    line = replay_report.summary(_replay(), BASELINES)
    assert line == (
        "mean monthly ROC AUC 2009-01..2009-03: closed loop 0.650 (1 retrains), frozen 0.550, "
        "monthly 0.800"
    )


def test_by_year_means_each_series_over_each_years_months() -> None:
    replay = _replay()
    replay.months.append(ReplayMonth("2010-01", 90, 0.5, 0.3, 2, "9", 0.9))
    baselines = {name: {**scores, "2010-01-01": 0.4} for name, scores in BASELINES.items()}
    years = replay_report.by_year(replay_report.frame(replay, baselines)).set_index("series")
    assert list(years.columns) == ["mean_roc_auc_2009", "mean_roc_auc_2010", "mean_roc_auc"]
    loop = years.loc[replay_report.LOOP].tolist()
    assert loop == pytest.approx([0.65, 0.9, (0.6 + 0.7 + 0.9) / 3])
    assert years.loc["frozen"].tolist() == pytest.approx([0.55, 0.4, 0.5])


def test_plot_is_written(tmp_path: Path) -> None:
    months = replay_report.frame(_replay(), BASELINES)
    path = replay_report.plot(months, BASELINES, tmp_path / "plots" / "replay.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_benchmark_section_states_the_goal_verdicts(tmp_path: Path) -> None:
    months = replay_report.frame(_replay(), BASELINES)
    csv = tmp_path / "replay.csv"
    months.to_csv(csv, index=False)
    run = replay_benchmark.Run(
        seconds=420.0,
        peak_mib=900.0,
        summary=replay_report.summary(_replay(), BASELINES),
        months=replay_benchmark.read_months(csv),
        plot=None,
    )
    section = replay_benchmark.report(run, serve=True, plot=Path("docs/replay.png"))
    assert section.startswith(replay_benchmark.SECTION + "\n")
    assert "wall time 420 s (goal under 900 s: met)" in section
    assert "closed loop 0.650 with 1 retrains (goal at least 0.66 with at most 12: not met)" in (
        section
    )
    assert "![monthly ROC AUC](docs/replay.png)" in section
    # The family column survives the CSV, also where a month has none.
    assert (
        "| 2009-01 | 300 | 10.0% | 0.400 | 7 | yes | v2 -> v9 | mlp | 0.600 | 0.500 | 0.700 |"
        in (section)
    )
    assert "| 2009-03 | 75 | 50.0% | - | 0 |  | v9 |  | - | - | 0.900 |" in section
