"""The HTTP contract: POST /predict, GET /healthz, GET /model, and /docs (OpenAPI).

Every response carries ``x-request-id`` (the client's own, if it sent a valid one). With a
:class:`~bank_marketing.serving.capture.ServedLog`, every answered record is queued to be kept in
``served_predictions``, with the shadow challenger's score when one runs beside the model.

Every bad request gets a 4xx with a JSON body that names what was wrong; nothing answers with a
stack trace. The app reads its model from a :class:`ModelState`, so the Ray Serve deployment (or
a test) decides how the model is loaded and swapped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from bank_marketing.monitoring.served import LIVE
from bank_marketing.serving.capture import Answer, NoTelemetry, ServedLog, Telemetry
from bank_marketing.serving.contract import record_model
from bank_marketing.serving.http import MAX_BODY_BYTES, RequestIds, problem, read_json, shown
from bank_marketing.serving.model import LoadedModel, ModelState
from bank_marketing.training.features import DEFAULT_INPUTS

MAX_RECORDS = 1000
THRESHOLD = 0.5
# A refusal lists this many bad fields at most: a body of 40,000 unknown keys would otherwise
# be answered with megabytes.
MAX_LISTED_ERRORS = 100

log = logging.getLogger(__name__)


class Prediction(BaseModel):
    probability: float
    subscribed: bool


class PredictResponse(BaseModel):
    model_version: str
    predictions: list[Prediction]


def _request_body_schema(record_schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "oneOf": [
                        record_schema,
                        {
                            "type": "object",
                            "properties": {
                                "records": {
                                    "type": "array",
                                    "items": record_schema,
                                    "minItems": 1,
                                    "maxItems": MAX_RECORDS,
                                }
                            },
                            "required": ["records"],
                            "additionalProperties": False,
                        },
                    ]
                }
            }
        },
    }


Scorer = Callable[[list[dict[str, Any]]], Awaitable[tuple[LoadedModel, list[float]]]]


def direct_scorer(state: ModelState) -> Scorer:
    """Score each request on its own with the state's current model."""

    async def score(records: list[dict[str, Any]]) -> tuple[LoadedModel, list[float]]:
        model = state.model
        if model is None:
            raise RuntimeError(f"no model is loaded: {state.problem}")
        return model, score_records(model, records)

    return score


def create_app(
    state: ModelState,
    inputs: Sequence[str] = DEFAULT_INPUTS,
    scorer: Scorer | None = None,
    webhook: APIRouter | None = None,
    *,
    served_log: ServedLog | None = None,
    shadow: ModelState | None = None,
    telemetry: Telemetry | None = None,
    feedback: APIRouter | None = None,
    echo_request_id: bool = True,
) -> FastAPI:
    """The FastAPI app over ``state``; ``inputs`` are the fields a record must carry.

    ``scorer`` turns validated records into probabilities with one model (the Ray deployment
    passes one that batches concurrent requests); by default each request is scored alone.
    ``webhook`` adds Grafana's alert receiver (``POST /webhooks/grafana``), ``feedback`` the
    outcomes' (``POST /feedback``). ``served_log`` keeps every answer, and ``shadow`` holds the
    challenger it scores them with too; ``telemetry`` counts requests, latencies and scores.
    ``echo_request_id=False`` leaves ``x-request-id`` on responses to a server that sets it
    (Ray Serve does).
    """
    score = scorer or direct_scorer(state)
    counters = telemetry or NoTelemetry()
    Record = record_model(inputs)
    app = FastAPI(
        title="bank-marketing",
        description="Will this client subscribe a term deposit? Scores contacts with the "
        "champion model of the MLflow registry (models:/bank-marketing@champion).",
        version="1",
    )

    def answered(route: str, status: int, latency_ms: float) -> None:
        model = state.model
        counters.answered(route, status, model.version if model else "none", latency_ms)

    app.add_middleware(RequestIds, on_answer=answered, echo=echo_request_id)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        return problem(error.status_code, _http_error_detail(request, error), headers=error.headers)

    @app.exception_handler(Exception)
    async def unexpected(_: Request, error: Exception) -> JSONResponse:
        log.exception("unexpected error while serving a request")
        return problem(500, "internal error; the server log has the details")

    @app.get("/healthz", summary="200 when a model is loaded, 503 otherwise")
    async def healthz() -> JSONResponse:
        model = state.model
        if model is None:
            return JSONResponse(
                status_code=503, content={"status": "unavailable", "reason": state.problem}
            )
        return JSONResponse(
            status_code=200, content={"status": "ok", "model_version": model.version}
        )

    @app.get(
        "/model",
        summary="The served model: version, run, training window, metrics; the shadow's version",
    )
    async def model_info() -> JSONResponse:
        model = state.model
        if model is None:
            return problem(503, f"no model is loaded: {state.problem}")
        shadow_model = shadow.model if shadow is not None else None
        return JSONResponse(
            status_code=200,
            content={
                **model.describe(),
                "shadow_version": shadow_model.version if shadow_model else None,
            },
        )

    @app.post(
        "/predict",
        response_model=PredictResponse,
        summary="Probability that each contact subscribes",
        openapi_extra={"requestBody": _request_body_schema(Record.model_json_schema())},
        responses={
            400: {"description": "The body is not JSON"},
            413: {"description": f"Body over {MAX_BODY_BYTES} bytes or over {MAX_RECORDS} records"},
            415: {"description": "Content type is not application/json"},
            422: {"description": "One message per bad field"},
            503: {"description": "No model is loaded"},
        },
    )
    async def predict(request: Request) -> JSONResponse:
        content_type = request.headers.get("content-type", "")
        if content_type.split(";")[0].strip().lower() != "application/json":
            return problem(415, f"content type must be application/json, not {content_type!r}")
        body, refusal = await read_json(request, MAX_BODY_BYTES)
        if refusal is not None:
            return refusal
        records, where, refusal = _records_of(body)
        if refusal is not None:
            return refusal
        model = state.model
        if model is None:
            return problem(503, f"no model is loaded: {state.problem}")
        parsed, errors = _validate(Record, records, where)
        if errors:
            detail = f"{len(errors)} invalid field(s)"
            if len(errors) > MAX_LISTED_ERRORS:
                detail += f"; the first {MAX_LISTED_ERRORS} are listed"
            return problem(422, detail, errors[:MAX_LISTED_ERRORS])
        used, probabilities = await score(parsed)
        counters.scored(used.version, LIVE, probabilities)
        if served_log is not None:
            served_log.keep(
                Answer(
                    request_id=request.state.request_id,
                    received_at=request.state.received_at,
                    model=used,
                    records=parsed,
                    probabilities=probabilities,
                    latency_ms=(time.perf_counter() - request.state.started) * 1000.0,
                    shadow=shadow.model if shadow is not None else None,
                )
            )
        return JSONResponse(
            status_code=200,
            content={
                "model_version": used.version,
                "predictions": [
                    {"probability": float(p), "subscribed": bool(p >= THRESHOLD)}
                    for p in probabilities
                ],
            },
        )

    for router in (webhook, feedback):
        if router is not None:
            app.include_router(router)
    return app


def _http_error_detail(request: Request, error: StarletteHTTPException) -> str:
    """What Starlette's routing refused, said with the path and method it refused."""
    path = request.url.path
    if error.status_code == 404:
        return f"no such path: {shown(path)}; /docs lists the service's paths"
    if error.status_code == 405:
        allowed = (error.headers or {}).get("Allow", "")
        return f"method {shown(request.method)} is not allowed on {shown(path)}; use {allowed}"
    return str(error.detail)


def _records_of(body: Any) -> tuple[list[Any], str, JSONResponse | None]:
    """The records of a body, where their errors are located, or the response refusing it."""
    if isinstance(body, dict) and "records" in body:
        records = body["records"]
        extra = sorted(set(body) - {"records"})
        if extra:
            return [], "", problem(422, f"unexpected key(s) beside 'records': {extra}")
        if not isinstance(records, list):
            return [], "", problem(422, "'records' must be a list of contact records")
        if not records:
            return [], "", problem(422, "'records' is empty: send at least one record")
        if len(records) > MAX_RECORDS:
            return (
                [],
                "",
                problem(
                    413, f"{len(records)} records; at most {MAX_RECORDS} per request are accepted"
                ),
            )
        return records, "records", None
    if isinstance(body, dict):
        return [body], "", None
    return [], "", problem(422, 'body must be a contact record (an object) or {"records": [...]}')


def _validate(
    record: type[BaseModel], records: list[Any], where: str
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    parsed, errors = [], []
    for index, item in enumerate(records):
        prefix = f"{where}[{index}]." if where else ""
        if not isinstance(item, dict):
            errors.append(
                {"field": prefix.rstrip("."), "value": item, "message": "must be an object"}
            )
            continue
        try:
            parsed.append(record.model_validate(item).model_dump())
        except ValidationError as error:
            for detail in error.errors(include_url=False):
                name = ".".join(str(part) for part in detail["loc"])
                errors.append(
                    {
                        "field": f"{prefix}{name}",
                        "value": detail.get("input") if detail["type"] != "missing" else None,
                        "message": detail["msg"].removeprefix("Value error, "),
                    }
                )
    return parsed, errors


def score_records(model: LoadedModel, records: list[dict[str, Any]]) -> list[float]:
    """Probabilities for validated records, in order."""
    return model.predict_records(records).tolist()
