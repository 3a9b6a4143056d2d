"""When the loop asks for a new model: the retraining rule's thresholds as a plain typed model.

The sensors in ``bank_marketing.orchestration`` judge drift reports and Grafana alerts with it
(their ``retrain_policy`` resource wraps it); ``bank_marketing.settings`` reads it from the
environment (``BANK_MARKETING_RETRAIN_*``).
"""

from __future__ import annotations

from pydantic import BaseModel, Field

ENV_PREDICTION_DRIFT = "BANK_MARKETING_RETRAIN_PREDICTION_DRIFT"
ENV_DRIFTED_SHARE = "BANK_MARKETING_RETRAIN_DRIFTED_SHARE"
ENV_COOLDOWN_MONTHS = "BANK_MARKETING_RETRAIN_COOLDOWN_MONTHS"
ENV_ALERT_NAMES = "BANK_MARKETING_RETRAIN_ALERT_NAMES"


class RetrainRule(BaseModel):
    """When the retraining sensors ask for a new model (``BANK_MARKETING_RETRAIN_*``)."""

    prediction_drift_threshold: float = Field(
        default=0.1,
        ge=0.0,
        description="Retrain when a month's prediction drift score is above this "
        f"({ENV_PREDICTION_DRIFT}); 0.1 as in the original project.",
    )
    drifted_share_threshold: float = Field(
        default=1.0,
        ge=0.0,
        le=1.0,
        description="Retrain when the share of drifted input columns is above this "
        f"({ENV_DRIFTED_SHARE}); 1.0, the default, never fires. On this data the share is "
        "high in nearly every month (BENCHMARKS.md, the replay notes): the calendar inputs "
        "and the campaign history move every month, so a share threshold would retrain every "
        "month; prediction drift is the signal that separates months.",
    )
    cooldown_months: int = Field(
        default=2,
        ge=0,
        description="A retrain as of month M is requested only if no training run (requested "
        "or done, by any sensor or by hand) is as of a month fewer than this many months "
        f"before M, or later ({ENV_COOLDOWN_MONTHS}). 2, the default: no retrain in the month "
        "right after one, so a model is judged on at least one month before it is replaced "
        "(prediction drift is above the default threshold in almost every month of 2009-2010: "
        "BENCHMARKS.md, the replay); 1: at most one retrain per month; 0: no cooldown.",
    )
    alert_names: list[str] = Field(
        default_factory=list,
        description="Only firing alerts whose alertname is listed request a retrain "
        f"({ENV_ALERT_NAMES}, comma-separated); empty: every firing alert does. Listing the "
        "drift rules keeps other alerts, and Grafana's contact-point test, from retraining.",
    )
