"""What the prediction API and the Grafana webhook answer alike: error bodies and JSON bodies.

Every refusal is a JSON object with a ``detail`` that says what was wrong (and ``errors``, one
per bad field, where there are several), in the spirit of RFC 7807. Bodies are read no further
than a size limit, so an oversized request costs no more memory than the limit.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse

# The largest body either endpoint reads.
MAX_BODY_BYTES = 1024 * 1024


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
