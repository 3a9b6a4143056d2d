"""What the prediction API and the Grafana webhook answer alike: error bodies and JSON bodies.

Every refusal is a JSON object with a ``detail`` that says what was wrong (and ``errors``, one
per bad field, where there are several), in the spirit of RFC 7807. Bodies are read no further
than a size limit, so an oversized request costs no more memory than the limit.
"""

from __future__ import annotations

import json
import secrets
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

from fastapi import Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials
from pydantic import BaseModel, ValidationError
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# The largest body either endpoint reads.
MAX_BODY_BYTES = 1024 * 1024

Body = TypeVar("Body", bound=BaseModel)


def problem(
    status: int,
    message: str,
    errors: list[dict[str, Any]] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """The error response: ``{"detail": message}``, with ``errors`` when there are any."""
    body: dict[str, Any] = {"detail": message}
    if errors:
        body["errors"] = errors
    return JSONResponse(status_code=status, content=body, headers=dict(headers or {}))


async def read_json(request: Request, max_bytes: int) -> tuple[Any, JSONResponse | None]:
    """The request's body parsed as JSON, or the response refusing it.

    413 when the body is over ``max_bytes`` (by its declared length, or once reading passes the
    limit), 400 when it is not JSON.
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        return None, problem(413, f"body is {declared} bytes; at most {max_bytes} are accepted")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            return None, problem(
                413, f"body is over {max_bytes} bytes; at most {max_bytes} are accepted"
            )
        chunks.append(chunk)
    try:
        return json.loads(b"".join(chunks)), None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        return None, problem(400, f"body is not valid JSON: {error}")


def field_errors(error: ValidationError, values: bool = True) -> list[dict[str, Any]]:
    """One ``{field, value, message}`` per problem pydantic found (no value for a missing one)."""
    errors = []
    for detail in error.errors(include_url=False):
        entry: dict[str, Any] = {"field": ".".join(str(part) for part in detail["loc"]) or "body"}
        if values:
            entry["value"] = detail.get("input") if detail["type"] != "missing" else None
        entry["message"] = detail["msg"]
        errors.append(entry)
    return errors


def bearer_refusal(
    token: str | None, credentials: HTTPAuthorizationCredentials | None, variable: str
) -> JSONResponse | None:
    """401 unless ``credentials`` carry ``token`` (compared in constant time); None when they do.

    With ``token`` unset or empty every request is refused: 401 rather than 503, since nothing is
    wrong with the service but no caller can be trusted.
    """
    challenge = {"WWW-Authenticate": "Bearer"}
    if not token:
        return problem(
            401,
            f"this endpoint is disabled: {variable} is not set on the server, so no request can "
            f"be authenticated",
            headers=challenge,
        )
    provided = credentials.credentials if credentials is not None else ""
    if secrets.compare_digest(provided.encode(), token.encode()):
        return None
    reason = "wrong bearer token" if credentials else "missing bearer token"
    return problem(401, f"{reason}: send 'Authorization: Bearer <{variable}>'", headers=challenge)


async def read_authorized(
    request: Request,
    credentials: HTTPAuthorizationCredentials | None,
    *,
    token: str | None,
    variable: str,
    max_bytes: int,
    model: type[Body],
    invalid: str | None = None,
    values: bool = True,
) -> tuple[Body | None, JSONResponse | None]:
    """An authenticated endpoint's body as ``model``, or the response refusing the request.

    In order: 401 (:func:`bearer_refusal`), 413 or 400 (:func:`read_json`), then 422 with one
    entry per bad field (their values too unless ``values`` is False) and the count as its
    detail, after ``invalid`` (what the body is not) when given.
    """
    refusal = bearer_refusal(token, credentials, variable)
    if refusal is not None:
        return None, refusal
    body, refusal = await read_json(request, max_bytes)
    if refusal is not None:
        return None, refusal
    try:
        return model.model_validate(body), None
    except ValidationError as error:
        errors = field_errors(error, values=values)
        detail = (
            f"{len(errors)} invalid field(s)"
            if invalid is None
            else f"{invalid}: {len(errors)} error(s)"
        )
        return None, problem(422, detail, errors)


# -- request ids ---------------------------------------------------------------------------------

REQUEST_ID_HEADER = "x-request-id"
MAX_REQUEST_ID = 128
# The paths the service answers, as metric labels; anything else counts as "other", so a scan of
# random paths cannot multiply the series.
ROUTES = frozenset(
    {"/predict", "/feedback", "/healthz", "/model", "/webhooks/grafana", "/docs", "/openapi.json"}
)


def valid_request_id(value: str) -> bool:
    """1 to 128 visible ASCII characters: safe in a header, a log line and a database key."""
    return 0 < len(value) <= MAX_REQUEST_ID and all(33 <= ord(c) <= 126 for c in value)


class RequestIds:
    """ASGI middleware: every response carries ``x-request-id``, and every request is counted.

    The id is the client's own when it sends a valid one, else a new UUID; an invalid one is
    refused with 400 (answering under another id than the client chose would break its joins).
    The id and the arrival time are in ``request.state.request_id`` / ``.received_at`` /
    ``.started`` for the handlers. ``on_answer(route, status, latency_ms)`` runs after each
    response.

    Under Ray Serve, Serve's own middleware (in its proxy, or in the replica's server in
    throughput mode) has already put the id into the request, generating one when the client
    sent none, and adds it to the response itself: ``echo=False`` leaves the response to it.
    """

    def __init__(
        self, app: ASGIApp, on_answer: Callable[[str, int, float], None], echo: bool = True
    ) -> None:
        self.app = app
        self.on_answer = on_answer
        self.echo = echo

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        sent = Headers(scope=scope).get(REQUEST_ID_HEADER)
        request_id = sent if sent is not None and valid_request_id(sent) else uuid.uuid4().hex
        state = scope.setdefault("state", {})
        state.update(request_id=request_id, received_at=datetime.now(UTC), started=started)
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                if self.echo:
                    MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
            await send(message)

        # The route within the app: Serve mounts it under its route prefix (the root path).
        path, root = scope.get("path", ""), scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :] or "/"
        try:
            if sent is not None and request_id != sent:
                refusal = problem(
                    400,
                    f"header {REQUEST_ID_HEADER} must be 1 to {MAX_REQUEST_ID} visible ASCII "
                    f"characters; got {len(sent)} character(s)",
                )
                await refusal(scope, receive, send_with_id)
            else:
                await self.app(scope, receive, send_with_id)
        finally:
            latency_ms = (time.perf_counter() - started) * 1000.0
            self.on_answer(path if path in ROUTES else "other", status, latency_ms)
