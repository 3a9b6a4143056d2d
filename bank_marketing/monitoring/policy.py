"""When the loop asks for a new model: the retraining rule and the one function that applies it.

A month's monitoring yields signals (:class:`MonthSignals`): the raw prediction drift, that drift
judged against its own sampling noise (a p-value), the live model's realized ROC AUC against its
expected level in standard errors once the month's labels are in, and its label-free estimate
(CBPE); ``bank_marketing.monitoring.signals`` computes them. :func:`decide` turns them, the rule
and the month of the last training into a verdict. The retraining sensors in
``bank_marketing.orchestration`` and the policy backtest (``bank_marketing.monitoring.backtest``)
both call it, so the backtest replays exactly what the sensors would do. ``bank_marketing.settings``
reads the rule from the environment (``BANK_MARKETING_RETRAIN_*``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field, field_validator

ENV_SIGNALS = "BANK_MARKETING_RETRAIN_SIGNALS"
ENV_COMBINE = "BANK_MARKETING_RETRAIN_COMBINE"
ENV_PREDICTION_DRIFT = "BANK_MARKETING_RETRAIN_PREDICTION_DRIFT"
ENV_DRIFT_P_VALUE = "BANK_MARKETING_RETRAIN_DRIFT_P_VALUE"
ENV_DRIFT_Z = "BANK_MARKETING_RETRAIN_DRIFT_Z"
ENV_REALIZED_Z = "BANK_MARKETING_RETRAIN_REALIZED_Z"
ENV_ESTIMATED_DROP = "BANK_MARKETING_RETRAIN_ESTIMATED_DROP"
ENV_SCHEDULE_MONTHS = "BANK_MARKETING_RETRAIN_SCHEDULE_MONTHS"
ENV_DRIFTED_SHARE = "BANK_MARKETING_RETRAIN_DRIFTED_SHARE"
ENV_COOLDOWN_MONTHS = "BANK_MARKETING_RETRAIN_COOLDOWN_MONTHS"
ENV_ALERT_NAMES = "BANK_MARKETING_RETRAIN_ALERT_NAMES"

SIGNALS = (
    "prediction_drift",
    "drift_p_value",
    "drift_z",
    "realized_performance",
    "estimated_performance",
    "drifted_share",
    "schedule",
)
COMBINATIONS = ("any", "all")


class RetrainRule(BaseModel):
    """When the retraining sensors ask for a new model (``BANK_MARKETING_RETRAIN_*``)."""

    # Plain strings, checked below: Dagster's config (the sensors' resource) has no Literal type.
    signals: list[str] = Field(
        # The backtest's default (BENCHMARKS.md, the policy backtest): chosen on 2009, a signal
        # policy did not beat this schedule on 2010, so the schedule is the default.
        default_factory=lambda: ["schedule"],
        description=f"The signals that may ask for a retrain ({ENV_SIGNALS}, comma-separated; "
        f"empty: none, the loop never retrains by itself): {', '.join(SIGNALS)}. Each fires "
        "past its threshold below; 'schedule' fires when the last training is schedule_months "
        "or more before the month.",
    )
    combine: str = Field(
        default="any",
        description=f"'any': a retrain when one listed signal fires; 'all': only when every "
        f"listed signal fires ({ENV_COMBINE}).",
    )

    @field_validator("signals")
    @classmethod
    def _known_signals(cls, signals: list[str]) -> list[str]:
        unknown = [name for name in signals if name not in SIGNALS]
        if unknown:
            raise ValueError(f"unknown signal(s) {unknown}; the signals are {list(SIGNALS)}")
        return signals

    @field_validator("combine")
    @classmethod
    def _known_combination(cls, combine: str) -> str:
        if combine not in COMBINATIONS:
            raise ValueError(f"combine is {combine!r}; expected one of {list(COMBINATIONS)}")
        return combine

    prediction_drift_threshold: float = Field(
        default=0.1,
        ge=0.0,
        description="'prediction_drift' fires when the month's prediction drift score "
        f"(normed Wasserstein) is above this ({ENV_PREDICTION_DRIFT}); 0.1 as in the original "
        "project.",
    )
    drift_p_value_threshold: float = Field(
        default=0.01,
        gt=0.0,
        le=1.0,
        description="'drift_p_value' fires when the prediction drift's p-value against months of "
        f"the same size drawn from the reference is below this ({ENV_DRIFT_P_VALUE}).",
    )
    drift_z_threshold: float = Field(
        default=20.0,
        description="'drift_z' fires when the prediction drift is more than this many standard "
        "deviations above its mean over months of the same size drawn from the reference "
        f"({ENV_DRIFT_Z}). On this data nearly every month is beyond the p-value's reach (no "
        "drawn month drifts as much), so the z-score is what tells months apart.",
    )
    realized_z_threshold: float = Field(
        default=2.0,
        ge=0.0,
        description="'realized_performance' fires when the month's realized ROC AUC is more "
        "than this many standard errors below the model's expected level, its validation ROC "
        f"AUC ({ENV_REALIZED_Z}).",
    )
    estimated_drop_threshold: float = Field(
        default=0.05,
        description="'estimated_performance' fires when the label-free estimate of the month's "
        f"ROC AUC (CBPE) is more than this below the expected level ({ENV_ESTIMATED_DROP}).",
    )
    schedule_months: int = Field(
        default=3,
        ge=1,
        description="'schedule' fires when the last training is as of this many months before "
        f"the month, or more ({ENV_SCHEDULE_MONTHS}).",
    )
    drifted_share_threshold: float = Field(
        default=1.0,
        ge=0.0,
        le=1.0,
        description="'drifted_share' fires when the share of drifted input columns is above "
        f"this ({ENV_DRIFTED_SHARE}). On this data the share is high in nearly every month "
        "(BENCHMARKS.md, the replay notes): the calendar inputs and the campaign history move "
        "every month.",
    )
    cooldown_months: int = Field(
        default=2,
        ge=0,
        description="A retrain as of month M is requested only if no training run (requested "
        "or done, by any sensor or by hand) is as of a month fewer than this many months "
        f"before M, or later ({ENV_COOLDOWN_MONTHS}). 1: at most one retrain per month; 0: no "
        "cooldown.",
    )
    alert_names: list[str] = Field(
        default_factory=list,
        description="Only firing alerts whose alertname is listed request a retrain "
        f"({ENV_ALERT_NAMES}, comma-separated); empty: every firing alert does. Listing the "
        "drift rules keeps other alerts, and Grafana's contact-point test, from retraining.",
    )


# Each setting's variable, the rule's field and how the text is read (``settings`` reads them).
ENV_FIELDS: tuple[tuple[str, str, type], ...] = (
    (ENV_COMBINE, "combine", str),
    (ENV_PREDICTION_DRIFT, "prediction_drift_threshold", float),
    (ENV_DRIFT_P_VALUE, "drift_p_value_threshold", float),
    (ENV_DRIFT_Z, "drift_z_threshold", float),
    (ENV_REALIZED_Z, "realized_z_threshold", float),
    (ENV_ESTIMATED_DROP, "estimated_drop_threshold", float),
    (ENV_SCHEDULE_MONTHS, "schedule_months", int),
    (ENV_DRIFTED_SHARE, "drifted_share_threshold", float),
    (ENV_COOLDOWN_MONTHS, "cooldown_months", int),
)


@dataclass(frozen=True)
class MonthSignals:
    """What a month's monitoring measured; NaN where a signal was not computed (no rows, no
    labels, or a report from before the signal existed)."""

    month: str  # partition key, YYYY-MM-DD
    rows: int
    prediction_drift: float = math.nan
    drifted_share: float = math.nan
    drift_p_value: float = math.nan
    drift_z: float = math.nan
    realized_z: float = math.nan
    estimated_drop: float = math.nan

    @classmethod
    def from_metadata(cls, month: str, metadata: Mapping[str, Any]) -> MonthSignals:
        """The signals a ``drift_report`` materialization recorded (its metadata keys)."""

        def number(key: str) -> float:
            value = metadata.get(key)
            try:
                return math.nan if value is None else float(value)
            except (TypeError, ValueError):
                return math.nan

        return cls(
            month=month,
            rows=int(metadata["rows"]),
            prediction_drift=number("prediction_drift"),
            drifted_share=number("drifted_share"),
            drift_p_value=number("drift_p_value"),
            drift_z=number("drift_z"),
            realized_z=number("realized_z"),
            estimated_drop=number("estimated_drop"),
        )


@dataclass(frozen=True)
class Verdict:
    """Whether a month asks for a retrain, and why (the line the sensor logs and tags)."""

    retrain: bool
    reason: str


def months_between(earlier: str, later: str) -> int:
    """Whole months from one partition key (``YYYY-MM-DD`` or ``YYYY-MM``) to another."""
    return (int(later[:4]) - int(earlier[:4])) * 12 + int(later[5:7]) - int(earlier[5:7])


def cooldown_blocks(last_trained: str | None, month: str, cooldown_months: int) -> str | None:
    """Why the cooldown forbids a retrain as of ``month``, or None when it allows one."""
    if cooldown_months == 0 or last_trained is None:
        return None
    gap = months_between(last_trained, month)
    if gap < 0:
        return f"a training run as of the later month {last_trained[:7]} exists"
    if gap < cooldown_months:
        return (
            f"cooldown: last training as of {last_trained[:7]}, {gap} month(s) before; "
            f"at least {cooldown_months} required"
        )
    return None


# Each threshold signal: its name in reasons, the month's field, the rule's threshold field, the
# side that fires (">": above), the digits shown, and whether the threshold is negated.
_READINGS: dict[str, tuple[str, str, str, str, int, bool]] = {
    "prediction_drift": ("prediction drift", "prediction_drift", "prediction_drift_threshold",
                         ">", 3, False),
    "drifted_share": ("drifted share", "drifted_share", "drifted_share_threshold", ">", 2, False),
    "drift_p_value": ("prediction drift p-value", "drift_p_value", "drift_p_value_threshold",
                      "<", 4, False),
    "drift_z": ("prediction drift z", "drift_z", "drift_z_threshold", ">", 1, False),
    "realized_performance": ("realized ROC AUC z", "realized_z", "realized_z_threshold",
                             "<", 2, True),
    "estimated_performance": ("estimated ROC AUC drop (CBPE)", "estimated_drop",
                              "estimated_drop_threshold", ">", 3, False),
}  # fmt: skip


def _fires(
    rule: RetrainRule, signal: str, month: MonthSignals, last_trained: str | None
) -> bool | None:
    """Whether one signal fires; None when it was not computed for the month."""
    if signal == "schedule":
        return last_trained is None or months_between(last_trained, month.month) >= (
            rule.schedule_months
        )
    _, field_name, threshold_name, sign, _, negated = _READINGS[signal]
    value = getattr(month, field_name)
    threshold = -getattr(rule, threshold_name) if negated else getattr(rule, threshold_name)
    if math.isnan(value):
        return None
    return value > threshold if sign == ">" else value < threshold


def _describe(rule: RetrainRule, signal: str, month: MonthSignals, fired: bool | None) -> str:
    if signal == "schedule":
        return f"schedule: every {rule.schedule_months} month(s) " + ("due" if fired else "not due")
    name, field_name, threshold_name, sign, digits, negated = _READINGS[signal]
    if fired is None:
        return f"{name} not computed"
    threshold = -getattr(rule, threshold_name) if negated else getattr(rule, threshold_name)
    opposite = {">": "<=", "<": ">="}[sign]
    value = getattr(month, field_name)
    return f"{name} {value:.{digits}f} {sign if fired else opposite} {threshold:g}"


def judge(rule: RetrainRule, month: MonthSignals, last_trained: str | None) -> Verdict:
    """Whether the month's signals ask for a retrain under ``rule``, before the cooldown.

    An empty month never does. With ``combine='all'`` a signal that was not computed counts as
    not firing.
    """
    if month.rows == 0:
        return Verdict(False, "empty month (0 rows)")
    if not rule.signals:
        return Verdict(False, "the policy lists no signal")
    fired = {signal: _fires(rule, signal, month, last_trained) for signal in rule.signals}
    described = [_describe(rule, signal, month, fired[signal]) for signal in rule.signals]
    hits = [line for signal, line in zip(rule.signals, described, strict=True) if fired[signal]]
    retrain = all(fired.values()) if rule.combine == "all" else any(fired.values())
    if retrain:
        return Verdict(True, " and ".join(hits))
    return Verdict(False, "; ".join(described))


def decide(rule: RetrainRule, month: MonthSignals, last_trained: str | None) -> Verdict:
    """The verdict on ``month``: its signals (:func:`judge`), then the cooldown."""
    verdict = judge(rule, month, last_trained)
    if not verdict.retrain:
        return verdict
    blocked = cooldown_blocks(last_trained, month.month, rule.cooldown_months)
    if blocked is not None:
        return Verdict(False, f"{verdict.reason}, but {blocked}")
    return verdict
