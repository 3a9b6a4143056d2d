"""``POST /webhooks/grafana``: Grafana alert notifications, stored for the retraining sensor.

Grafana's webhook contact point posts its notification body (see Grafana's "Configure the
webhook notifier" page) with ``Authorization: Bearer <token>``, set in the contact point as
``authorization_credentials``. The receiver checks the token against
``BANK_MARKETING_WEBHOOK_TOKEN`` (answering 401 to everything while it is unset), validates the
body and stores each alert once by fingerprint and start time in the monitoring database; the
``retrain_on_grafana_alert`` sensor reads them from there. Nothing here imports Dagster.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.concurrency import run_in_threadpool

from bank_marketing.monitoring import alerts, store
from bank_marketing.serving.http import MAX_BODY_BYTES, problem, read_authorized
from bank_marketing.settings import Settings

PATH = "/webhooks/grafana"
TOKEN_VARIABLE = "BANK_MARKETING_WEBHOOK_TOKEN"

# Refusals are answered here, with reasons, rather than by HTTPBearer's own 403.
BEARER = HTTPBearer(auto_error=False, description=f"The token in {TOKEN_VARIABLE}.")

log = logging.getLogger(__name__)


class GrafanaAlert(BaseModel):
    """One alert of a notification; fields Grafana adds later are kept, not refused."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    status: Literal["firing", "resolved"]
    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)
    starts_at: datetime = Field(alias="startsAt")
    ends_at: datetime | None = Field(default=None, alias="endsAt")
    values: dict[str, Any] | None = Field(
        default=None, description="Values of the rule's expressions that set the status."
    )
    generator_url: str | None = Field(default=None, alias="generatorURL")
    fingerprint: str = Field(min_length=1, max_length=128)
    silence_url: str | None = Field(default=None, alias="silenceURL")
    dashboard_url: str | None = Field(default=None, alias="dashboardURL")
    panel_url: str | None = Field(default=None, alias="panelURL")
    image_url: str | None = Field(default=None, alias="imageURL")
    value_string: str | None = Field(default=None, alias="valueString")

    @field_validator("starts_at", "ends_at")
    @classmethod
    def _storable(cls, moment: datetime | None) -> datetime | None:
        # Stored in UTC: 9999-12-31T23:00:00-05:00 is a valid timestamp with no UTC year.
        if moment is not None and moment.tzinfo is not None:
            try:
                moment.astimezone(UTC)
            except OverflowError:
                raise ValueError("is outside years 1 to 9999 once converted to UTC") from None
        return moment

    def received(self) -> alerts.ReceivedAlert:
        # Grafana sends 0001-01-01T00:00:00Z while the alert has not ended.
        ended = self.ends_at is not None and self.ends_at.year > 1
        return alerts.ReceivedAlert(
            fingerprint=self.fingerprint,
            starts_at=self.starts_at,
            status=self.status,
            labels=self.labels,
            annotations=self.annotations,
            ends_at=self.ends_at if ended else None,
            trigger_values=self.values,
            generator_url=self.generator_url or None,
        )


class GrafanaNotification(BaseModel):
    """The body of Grafana's webhook notification (payload version 1)."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    receiver: str
    status: Literal["firing", "resolved"]
    alerts: list[GrafanaAlert] = Field(min_length=1)
    org_id: int | None = Field(default=None, alias="orgId")
    group_labels: dict[str, str] = Field(default_factory=dict, alias="groupLabels")
    common_labels: dict[str, str] = Field(default_factory=dict, alias="commonLabels")
    common_annotations: dict[str, str] = Field(default_factory=dict, alias="commonAnnotations")
    external_url: str | None = Field(default=None, alias="externalURL")
    version: str | None = None
    group_key: str | None = Field(default=None, alias="groupKey")
    truncated_alerts: int = Field(default=0, ge=0, alias="truncatedAlerts")
    title: str | None = None
    state: str | None = None
    message: str | None = None


class WebhookAnswer(BaseModel):
    received: int = Field(description="Alerts in the notification.")
    new: int = Field(description="Alerts not stored before (fingerprint and startsAt).")
    new_firing: int = Field(description="New firing alerts: each may request one retrain.")
    resolved: int = Field(description="Alerts recorded as resolved by this notification.")
    truncated: int = Field(description="Alerts Grafana left out of the notification.")


class AlertInbox:
    """The alert table on the monitoring database, created on first use."""

    def __init__(self, db_url: str) -> None:
        self.db_url = db_url
        self._engine: sa.Engine | None = None
        self._lock = threading.Lock()

    def engine(self) -> sa.Engine:
        with self._lock:
            if self._engine is None:
                self._engine = store.connect(self.db_url)
            return self._engine

    def store(self, notification: GrafanaNotification) -> alerts.Stored:
        return alerts.store_notification(
            self.engine(),
            [alert.received() for alert in notification.alerts],
            receiver=notification.receiver,
            group_key=notification.group_key,
        )

    def describe(self) -> str:
        return sa.make_url(self.db_url).render_as_string(hide_password=True)


def _notification_schema() -> dict[str, Any]:
    """The body's JSON schema with the alert's schema inlined, so OpenAPI resolves it."""
    schema = GrafanaNotification.model_json_schema(by_alias=True)
    definitions = schema.pop("$defs", {})
    schema["properties"]["alerts"]["items"] = definitions["GrafanaAlert"]
    return schema


def create_webhook_router(
    db_url: str, token: str | None, max_body_bytes: int = MAX_BODY_BYTES
) -> APIRouter:
    """The router of ``POST /webhooks/grafana``, storing alerts in the database at ``db_url``.

    ``token`` is the bearer token Grafana must send; ``None`` or empty refuses every request.
    """
    inbox = AlertInbox(db_url)
    router = APIRouter(tags=["monitoring"])

    @router.post(
        PATH,
        status_code=202,
        response_model=WebhookAnswer,
        summary="Receive a Grafana alert notification; firing alerts may request a retrain",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _notification_schema()}},
            }
        },
        responses={
            400: {"description": "The body is not JSON"},
            401: {"description": f"Missing or wrong bearer token, or {TOKEN_VARIABLE} unset"},
            413: {"description": f"Body over {max_body_bytes} bytes"},
            422: {"description": "Not a Grafana notification: one message per bad field"},
            503: {"description": "The monitoring database is unavailable; Grafana retries"},
        },
    )
    async def grafana_notification(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)],
    ) -> JSONResponse:
        notification, refusal = await read_authorized(
            request,
            credentials,
            token=token,
            variable=TOKEN_VARIABLE,
            max_bytes=max_body_bytes,
            model=GrafanaNotification,
            invalid="not a Grafana notification",
            values=False,
        )
        if notification is None:
            return refusal
        try:
            stored = await run_in_threadpool(inbox.store, notification)
        except (sa.exc.SQLAlchemyError, alerts.UnsupportedDatabase):
            log.exception("storing a Grafana notification in %s failed", inbox.describe())
            # A 5xx makes Grafana retry the notification later.
            return problem(503, "the monitoring database is unavailable; retry later")
        if notification.truncated_alerts:
            log.warning(
                "Grafana left %d alert(s) out of a notification to %s (max_alerts)",
                notification.truncated_alerts,
                notification.receiver,
            )
        answer = WebhookAnswer(
            received=stored.received,
            new=stored.new,
            new_firing=stored.new_firing,
            resolved=stored.resolved,
            truncated=notification.truncated_alerts,
        )
        return JSONResponse(status_code=202, content=answer.model_dump())

    return router


def webhook_router_from_env(environ: Mapping[str, str] | None = None) -> APIRouter:
    """The router on ``BANK_MARKETING_DB_URL``, with the token ``BANK_MARKETING_WEBHOOK_TOKEN``."""
    settings = Settings.from_env(environ)
    if settings.webhook_token is None:
        log.warning("%s is not set: POST %s refuses every request", TOKEN_VARIABLE, PATH)
    return create_webhook_router(settings.db_url, settings.webhook_token)
