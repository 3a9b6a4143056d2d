"""``POST /feedback``: what the client did after an answer, joined to it by ``x-request-id``.

The body names the answer (``request_id``, and ``record`` when the request carried several) and
the outcome (``subscribed``). It needs the webhook's bearer token
(``BANK_MARKETING_WEBHOOK_TOKEN``). Reporting the same outcome again changes nothing (200); a
different outcome for a record that has one is refused (409) and the first kept. An id the
service has not kept answers 404: unknown, not written yet (answers are written within about a
second), sampled out, or past the retention period.
"""

from __future__ import annotations

import logging
import threading
from typing import Annotated

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, StrictBool
from starlette.concurrency import run_in_threadpool

from bank_marketing.monitoring import served, store
from bank_marketing.serving.http import MAX_REQUEST_ID, problem, read_authorized
from bank_marketing.serving.webhook import TOKEN_VARIABLE

PATH = "/feedback"
MAX_FEEDBACK_BYTES = 4096

BEARER = HTTPBearer(auto_error=False, description=f"The token in {TOKEN_VARIABLE}.")

log = logging.getLogger(__name__)


class Feedback(BaseModel):
    """One outcome: did the client of this answer subscribe?"""

    model_config = ConfigDict(extra="forbid")

    request_id: str = Field(
        min_length=1,
        max_length=MAX_REQUEST_ID,
        description="The x-request-id of the answer (the response header).",
    )
    subscribed: StrictBool = Field(description="Whether the client subscribed a term deposit.")
    record: int | None = Field(
        default=None,
        ge=0,
        description="Which record of the request, from 0; needed when it carried several.",
    )


class FeedbackAnswer(BaseModel):
    request_id: str
    record: int
    subscribed: bool
    status: str = Field(description="'recorded', or 'already recorded' for a repeat.")


class _Outcomes:
    """The monitoring database, connected on first use."""

    def __init__(self, db_url: str) -> None:
        self.db_url = db_url
        self._engine: sa.Engine | None = None
        self._lock = threading.Lock()

    def record(self, feedback: Feedback) -> served.Reported:
        with self._lock:
            if self._engine is None:
                self._engine = store.connect(self.db_url)
        return served.record_outcome(
            self._engine, feedback.request_id, feedback.subscribed, feedback.record
        )

    def describe(self) -> str:
        return sa.make_url(self.db_url).render_as_string(hide_password=True)


def create_feedback_router(db_url: str, token: str | None) -> APIRouter:
    """The router of ``POST /feedback``, storing outcomes in the database at ``db_url``."""
    outcomes = _Outcomes(db_url)
    router = APIRouter(tags=["monitoring"])

    @router.post(
        PATH,
        response_model=FeedbackAnswer,
        summary="Report whether the client of an answer subscribed",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": Feedback.model_json_schema()}},
            }
        },
        responses={
            201: {"description": "Recorded", "model": FeedbackAnswer},
            400: {"description": "The body is not JSON"},
            401: {"description": f"Missing or wrong bearer token, or {TOKEN_VARIABLE} unset"},
            404: {"description": "No kept answer has this request id, or no such record"},
            409: {"description": "The record already has the other outcome"},
            413: {"description": f"Body over {MAX_FEEDBACK_BYTES} bytes"},
            422: {"description": "One message per bad field"},
            503: {"description": "The monitoring database is unavailable; retry later"},
        },
    )
    async def feedback(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)],
    ) -> JSONResponse:
        report, refusal = await read_authorized(
            request,
            credentials,
            token=token,
            variable=TOKEN_VARIABLE,
            max_bytes=MAX_FEEDBACK_BYTES,
            model=Feedback,
        )
        if report is None:
            return refusal
        try:
            reported = await run_in_threadpool(outcomes.record, report)
        except sa.exc.SQLAlchemyError:
            log.exception("storing an outcome in %s failed", outcomes.describe())
            return problem(503, "the monitoring database is unavailable; retry later")
        return _answer(report, reported)

    return router


def _answer(report: Feedback, reported: served.Reported) -> JSONResponse:
    which = f"request {report.request_id!r}"
    record = report.record if report.record is not None else 0
    match reported.outcome:
        case served.Outcome.UNKNOWN_REQUEST:
            return problem(
                404,
                f"no kept answer has {which}: unknown, not written yet (answers are written "
                f"within about a second), not sampled, or past the retention period",
            )
        case served.Outcome.UNKNOWN_RECORD:
            return problem(
                404,
                f"{which} answered {reported.records} record(s), numbered from 0; it has no "
                f"record {record}",
            )
        case served.Outcome.RECORD_NEEDED:
            return problem(
                422,
                f"{which} answered {reported.records} records: say which with 'record' "
                f"(0 to {reported.records - 1})",
                [{"field": "record", "value": None, "message": "required for this request"}],
            )
        case served.Outcome.CONFLICT:
            return problem(
                409,
                f"record {record} of {which} already has the outcome subscribed="
                f"{str(reported.stored).lower()}; the first report is kept",
            )
    status = 201 if reported.outcome is served.Outcome.RECORDED else 200
    answer = FeedbackAnswer(
        request_id=report.request_id,
        record=record,
        subscribed=report.subscribed,
        status=reported.outcome.value,
    )
    return JSONResponse(status_code=status, content=answer.model_dump())
