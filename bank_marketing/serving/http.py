"""What the prediction API and the Grafana webhook answer alike: error bodies and JSON bodies.

Every refusal is a JSON object with a ``detail`` that says what was wrong (and ``errors``, one
per bad field, where there are several), in the spirit of RFC 7807. Bodies are read no further
than a size limit, so an oversized request costs no more memory than the limit, and are parsed
as strict JSON (RFC 8259 and I-JSON, RFC 7493): no NaN or Infinity, no number beyond a double's
range, no key twice in one object, no lone surrogate, and no nesting deeper than
:data:`MAX_JSON_DEPTH`. Python's parser would take each of these, and each would otherwise fail
later, where the client could no longer be told what was wrong.
"""

from __future__ import annotations

import json
import math
import re
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
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# The largest body either endpoint reads.
MAX_BODY_BYTES = 1024 * 1024
# The deepest nesting of arrays and objects a body may have: the deepest body the service takes
# (a Grafana notification) has 4 levels. Python's parser gives up at about 1,000, and an error
# message echoing a value nested nearly that deep could not be written out.
MAX_JSON_DEPTH = 32

Body = TypeVar("Body", bound=BaseModel)


class ProblemResponse(JSONResponse):
    """A JSON response written in ASCII: what it echoes of a request may hold any character."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False).encode("ascii")


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
    return ProblemResponse(status_code=status, content=body, headers=dict(headers or {}))


def shown(value: Any, limit: int = 60) -> str:
    """``repr(value)`` for a message, cut to about ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


class NotAccepted(ValueError):
    """A body that is not JSON, or not JSON the service accepts; the message says why."""


async def read_json(request: Request, max_bytes: int) -> tuple[Any, JSONResponse | None]:
    """The request's body parsed as strict JSON (:func:`parse_json`), or the response refusing it.

    413 when the body is over ``max_bytes`` (by its declared length, or once reading passes the
    limit), 400 when it is not JSON or not JSON the service accepts.
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        return None, problem(413, f"body is {declared} bytes; at most {max_bytes} are accepted")
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_bytes:
                return None, problem(
                    413, f"body is over {max_bytes} bytes; at most {max_bytes} are accepted"
                )
            chunks.append(chunk)
    except ClientDisconnect:
        # Nobody reads this answer; it is what the request is counted as (not a 500).
        return None, problem(400, f"the client left after {size} bytes, before the body's end")
    try:
        return parse_json(b"".join(chunks)), None
    except NotAccepted as error:
        return None, problem(400, str(error))


def parse_json(raw: bytes) -> Any:
    """``raw`` as strict JSON: UTF-8 (RFC 8259), with none of what I-JSON (RFC 7493) excludes.

    Raises :class:`NotAccepted` naming the first problem: invalid UTF-8 or JSON, NaN or
    Infinity, a number beyond a double's range or an integer of over 4,300 digits, a key twice
    in one object, nesting deeper than :data:`MAX_JSON_DEPTH`, a lone surrogate, or the NUL
    character (which PostgreSQL cannot store in text).
    """
    try:
        text = raw.decode("utf-8")
        value = json.loads(
            text, object_pairs_hook=_object, parse_constant=_constant, parse_float=_float
        )
    except NotAccepted:
        raise
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise NotAccepted(f"body is not valid JSON: {error}") from None
    except ValueError as error:
        # Python refuses to read integers of over 4,300 digits (sys.int_info).
        raise NotAccepted(f"body is not accepted: {str(error).split(';')[0]}") from None
    except RecursionError:
        raise NotAccepted(_TOO_DEEP) from None
    # Counting brackets is far cheaper than walking the value: most bodies cannot be that deep.
    if text.count("[") + text.count("{") > MAX_JSON_DEPTH and _deeper_than(value, MAX_JSON_DEPTH):
        raise NotAccepted(_TOO_DEEP)
    # Both can only come from \u escapes: raw NUL bytes are not JSON, nor are surrogates in UTF-8.
    if _SUSPECT_ESCAPE.search(text):
        where = _bad_text(value)
        if where is not None:
            raise NotAccepted(f"body is not accepted: {where}")
    return value


_TOO_DEEP = f"body is not accepted: arrays and objects nested deeper than {MAX_JSON_DEPTH} levels"
_SUSPECT_ESCAPE = re.compile(r"\\u(?:0000|[dD][89a-fA-F])")
_BAD_CHARACTER = re.compile("[\x00\ud800-\udfff]")


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    value = dict(pairs)
    if len(value) < len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise NotAccepted(
                    f"body is not accepted: the key {shown(key)} appears twice in one object"
                )
            seen.add(key)
    return value


def _constant(name: str) -> Any:
    raise NotAccepted(f"body is not valid JSON: {name} is not a JSON value (send a number or null)")


def _float(text: str) -> float:
    number = float(text)
    if math.isinf(number):
        raise NotAccepted(
            f"body is not accepted: the number {shown(text)} is beyond the range of a double "
            f"(about 1.8e308)"
        )
    return number


def _deeper_than(value: Any, limit: int) -> bool:
    level, depth = [value], 0
    while level:
        depth += 1
        if depth > limit:
            return True
        deeper = []
        for item in level:
            if isinstance(item, dict):
                deeper.extend(v for v in item.values() if isinstance(v, dict | list))
            elif isinstance(item, list):
                deeper.extend(v for v in item if isinstance(v, dict | list))
        level = deeper
    return False


def _bad_text(value: Any) -> str | None:
    """Where the first string (key or value) holding NUL or a lone surrogate is, and which."""
    stack: list[tuple[Any, str]] = [(value, "body")]
    while stack:
        item, where = stack.pop()
        if isinstance(item, dict):
            for key, child in item.items():
                if _BAD_CHARACTER.search(key):
                    return _bad_character(key, f"a key of {where}")
                stack.append((child, f"{where}.{key}"))
        elif isinstance(item, list):
            stack.extend((child, f"{where}[{index}]") for index, child in enumerate(item))
        elif isinstance(item, str) and _BAD_CHARACTER.search(item):
            return _bad_character(item, where)
    return None


def _bad_character(text: str, where: str) -> str:
    found = _BAD_CHARACTER.search(text)
    assert found is not None
    if found.group() == "\x00":
        return f"{where} holds the NUL character (\\u0000), which the service cannot store"
    return (
        f"{where} holds a lone surrogate (\\u{ord(found.group()):04x}), which is not Unicode text"
    )


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


def request_id_refusal(sent: str) -> JSONResponse:
    """The 400 for an ``x-request-id`` that :func:`valid_request_id` refuses, naming the header."""
    return problem(
        400,
        f"header {REQUEST_ID_HEADER} must be 1 to {MAX_REQUEST_ID} visible ASCII characters; "
        f"got {len(sent)} character(s)",
    )


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
                await request_id_refusal(sent)(scope, receive, send_with_id)
            else:
                await self.app(scope, receive, send_with_id)
        finally:
            latency_ms = (time.perf_counter() - started) * 1000.0
            self.on_answer(path if path in ROUTES else "other", status, latency_ms)
