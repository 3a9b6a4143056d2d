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
MONTHLY = "retrained every month"


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
    """The first champion frozen, and its family retrained every month, on the same months."""
    from mlflow import MlflowClient

    from bank_marketing.data.months import recover_months
    from bank_marketing.data.source import load_contacts
    from bank_marketing.serving.model import load_version
    from bank_marketing.training import baselines as month_ahead
    from bank_marketing.training.config import FAMILY_PARAMS, Inputs, WindowSplit
    from bank_marketing.training.features import DEFAULT_INPUTS

    contacts = load_contacts(settings.source, settings.cache_dir).frame
    by_month = month_ahead.by_month(contacts, recover_months(contacts["month"]))
    keys = [f"{m.month}-01" for m in replay.months]
    first = load_version(MlflowClient(settings.mlflow_tracking_uri), replay.first_champion)
    inputs = Inputs(columns=list(first.inputs or DEFAULT_INPUTS), day_of_year=first.day_of_year)
    config = FAMILY_PARAMS[first.family]()
    window = WindowSplit()
    monthly = month_ahead.retrained_every_month(
        by_month,
        keys,
        fit=lambda train, validation: config.fit(first.family, inputs, train, validation),
        window=window.window_months,
        validation_share=window.validation_share,
        seed=window.seed,
        split_by=window.split_by,
    )
    return {
        f"{FROZEN} (v{first.version})": month_ahead.frozen(first.pipeline, by_month, keys),
        f"{first.family} {MONTHLY}": monthly,
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
