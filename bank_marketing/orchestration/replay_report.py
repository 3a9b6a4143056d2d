"""The replay's results for people: the table per month, the plot, and the summary line."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from bank_marketing.orchestration.replay import Replay
from bank_marketing.settings import Settings
from bank_marketing.training.baselines import mean_score

LOOP = "closed loop"
FROZEN = "frozen after the first champion"
MONTHLY = "retrained every month, the rule's family each round"
BEST_SCHEDULE = "best fixed schedule"


def frame(replay: Replay, baselines: Mapping[str, Mapping[str, float]]) -> pd.DataFrame:
    """One row per replayed month, with the baselines' ROC AUC beside the loop's."""
    rows = []
    for month in replay.months:
        key = f"{month.month}-01"
        rows.append(
            {
                "month": month.month,
                "rows": month.rows,
                "subscription_rate": month.subscription_rate,
                "prediction_drift": month.prediction_drift,
                "drifted_columns": month.drifted_columns,
                "retrained": month.retrained,
                "scored_by": month.scored_by,
                "champion_after": month.champion_after,
                "champion_family": month.champion_family,
                "roc_auc": month.roc_auc,
                **{f"roc_auc_{name}": got.get(key, math.nan) for name, got in baselines.items()},
            }
        )
    return pd.DataFrame(rows)


def baselines(settings: Settings, replay: Replay) -> dict[str, dict[str, float]]:
    """Fair baselines on the replay's months, from the policy backtest (the same fits, cached
    and shared with ``bank-marketing policies``): the first champion frozen, a round every month
    with the family the promotion rule picks each time, and the best fixed schedule."""
    from bank_marketing.monitoring import backtest
    from bank_marketing.monitoring.policy import RetrainRule

    prepared = backtest.setup(settings.source, settings.cache_dir, settings.training_config)
    months = [m.month for m in replay.months]
    history = backtest.fit_history(
        prepared,
        [backtest.previous_month(months[0]), *months[:-1]],
        inputs=settings.model_inputs,
        cache_dir=settings.policy_cache_dir,
    )
    runner = backtest.Backtest(history, prepared.promotion)

    def scores(rule: RetrainRule) -> tuple[dict[str, float], int]:
        run = runner.run("", rule, months)
        by_month = dict(zip(run.months["month"] + "-01", run.months["roc_auc"], strict=True))
        return by_month, int(run.months["retrained"].sum())

    frozen, _ = scores(RetrainRule(signals=[]))
    monthly, _ = scores(RetrainRule(signals=["schedule"], schedule_months=1, cooldown_months=0))
    schedules = {
        every: scores(RetrainRule(signals=["schedule"], schedule_months=every, cooldown_months=0))
        for every in backtest.SCHEDULES[1:]
    }
    best = max(schedules, key=lambda every: mean_score(schedules[every][0]))
    best_scores, best_retrains = schedules[best]
    return {
        f"{FROZEN} (v{replay.first_champion})": frozen,
        MONTHLY: monthly,
        f"{BEST_SCHEDULE}: {backtest.schedule_name(best)} ({best_retrains} retrains)": best_scores,
    }


HEADERS = [
    "month", "rows", "subscribed", "prediction drift", "drifted columns", "retrained", "champion",
    "family",
]  # fmt: skip


def cells(row: Mapping[str, Any]) -> list[str]:
    """One month of :func:`frame` as text, up to the loop's ROC AUC (the last cell)."""
    champion = f"v{row['scored_by']}"
    if row["retrained"]:
        champion += f" -> v{row['champion_after']}"
    return [
        str(row["month"]),
        str(row["rows"]),
        _share(row["subscription_rate"]),
        number(row["prediction_drift"]),
        str(row["drifted_columns"]),
        "yes" if row["retrained"] else "",
        champion,
        _text(row.get("champion_family")),
        number(row["roc_auc"]),
    ]


def table(months: pd.DataFrame) -> str:
    from tabulate import tabulate

    shown = [cells(row) for row in months.to_dict("records")]
    return tabulate(shown, headers=[*HEADERS, "ROC AUC (live champion)"], disable_numparse=True)


def summary(replay: Replay, baselines: Mapping[str, Mapping[str, float]]) -> str:
    loop = {f"{m.month}-01": m.roc_auc for m in replay.months}
    first, last = replay.months[0].month, replay.months[-1].month
    parts = [f"{LOOP} {mean_score(loop):.3f} ({replay.retrains} retrains)"]
    parts += [f"{name} {mean_score(scores):.3f}" for name, scores in baselines.items()]
    return f"mean monthly ROC AUC {first}..{last}: " + ", ".join(parts)


def by_year(months: pd.DataFrame) -> pd.DataFrame:
    """Mean monthly ROC AUC of the loop and of each baseline over each year's months and over
    all of them (the policy's default is chosen on 2009; 2010 is held out)."""
    series = {LOOP: "roc_auc"}
    series.update(
        {c.removeprefix("roc_auc_"): c for c in months.columns if c.startswith("roc_auc_")}
    )
    year = months["month"].str[:4]
    rows = []
    for name, column in series.items():
        row: dict[str, Any] = {"series": name}
        for label in sorted(year.unique()):
            row[f"mean_roc_auc_{label}"] = float(months[column][year == label].mean())
        row["mean_roc_auc"] = float(months[column].mean())
        rows.append(row)
    return pd.DataFrame(rows)


def plot(months: pd.DataFrame, baselines: Mapping[str, Mapping[str, float]], path: Path) -> Path:
    """A PNG of monthly ROC AUC: the loop against the baselines, retrains marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dates = pd.to_datetime(months["month"] + "-01")
    figure, axes = plt.subplots(figsize=(11, 4.5))
    axes.plot(dates, months["roc_auc"], marker="o", linewidth=2, label=LOOP)
    for name in baselines:
        axes.plot(dates, months[f"roc_auc_{name}"], marker=".", linestyle="--", label=name)
    retrained = months["retrained"].to_numpy(dtype=bool)
    axes.scatter(
        dates[retrained],
        months["roc_auc"][retrained],
        s=120,
        facecolors="none",
        edgecolors="black",
        label="retrained after this month",
        zorder=3,
    )
    axes.axhline(0.5, color="grey", linewidth=0.8)
    axes.set_ylabel("ROC AUC of the month (month-ahead)")
    axes.set_title("bank-marketing: monthly ROC AUC of the live champion")
    axes.legend(loc="lower left", fontsize=8)
    axes.grid(alpha=0.3)
    figure.autofmt_xdate()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(figure)
    return path


def number(value: float | None) -> str:
    """Three decimals, or "-" for a missing value."""
    return "-" if value is None or math.isnan(value) else f"{value:.3f}"


def _text(value: Any) -> str:
    """A text cell; empty for a missing value (a CSV reads an empty cell back as NaN)."""
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


def _share(value: float) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.1%}"
