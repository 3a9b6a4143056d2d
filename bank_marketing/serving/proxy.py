"""In Ray Serve's HTTP proxy, ahead of Serve: the service's refusal of an invalid request id.

Serve's proxy reads ``x-request-id`` as UTF-8 before any application runs
(``HTTPProxy.setup_request_context_and_handle`` in ``ray/serve/_private/proxy.py``:
``request_context_info["request_id"] = value.decode()``), and answers 500 in plain text to a
value that is not UTF-8. The middleware here runs in the proxy before that, and answers an
``x-request-id`` that :func:`~bank_marketing.serving.http.valid_request_id` refuses as the
service itself does: 400, a JSON ``detail`` naming the header, and a new id in the response's
``x-request-id``.

Serve installs it from the callback named by ``RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH``
(:data:`CALLBACK_ENVIRONMENT`). Serve's proxies are actors that the Ray node starts, and they
read the variable from the environment of that node: it must be set where ``ray start`` runs
(or the process whose ``ray.init`` or ``serve run`` starts a local Ray), on every node that runs
a proxy. Set for ``serve deploy`` or in an application's ``runtime_env`` it has no effect. With
direct ingress (``RAY_SERVE_THROUGHPUT_OPTIMIZED=1``) the replicas' own HTTP servers, which read
the header the same way, take the same callback from the same variable.
"""

from __future__ import annotations

import uuid

from starlette.middleware import Middleware
from starlette.types import ASGIApp, Receive, Scope, Send

from bank_marketing.serving.http import REQUEST_ID_HEADER, request_id_refusal, valid_request_id

# What the environment of a Ray node that runs Serve's proxy holds.
CALLBACK_ENVIRONMENT = {"RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH": f"{__name__}.middlewares"}
# WebSocket close code 1008, policy violation: before the handshake, uvicorn answers it with 403.
POLICY_VIOLATION = 1008


def middlewares() -> list[Middleware]:
    """The middlewares Serve puts in front of its proxy (the callback it calls at start)."""
    return [Middleware(RequestIdGate)]


class RequestIdGate:
    """ASGI middleware: a request whose ``x-request-id`` the service would refuse goes no
    further. Every one of its ``x-request-id`` headers is checked: Serve's proxy reads them all.
    A WebSocket handshake is closed instead (uvicorn answers 403)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        sent = refused_request_id(scope) if scope["type"] in ("http", "websocket") else None
        if sent is None:
            await self.app(scope, receive, send)
        elif scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": POLICY_VIOLATION})
        else:
            refusal = request_id_refusal(sent)
            refusal.headers[REQUEST_ID_HEADER] = uuid.uuid4().hex
            await refusal(scope, receive, send)


def refused_request_id(scope: Scope) -> str | None:
    """The first ``x-request-id`` of the request that the service refuses, read as Latin-1."""
    wanted = REQUEST_ID_HEADER.encode()
    for name, value in scope["headers"]:
        if name.lower() == wanted and not valid_request_id(sent := value.decode("latin-1")):
            return sent
    return None
