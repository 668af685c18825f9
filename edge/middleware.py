"""The edge's one ASGI middleware: request id, header limits, HTTP metrics, the 500 of a bug, and a
direct dispatch of the hot API routes.

Pure ASGI rather than BaseHTTPMiddleware, which buffers streaming responses and breaks the
propagation of client disconnects that cancellation of an SSE stream relies on. One layer rather
than one per concern: each layer is a coroutine call and a wrapped ``send`` per message.

The hot routes (chat completions, messages, responses, embeddings: ``POST`` with no path
parameters, a ``Request`` in and a ``Response`` out) are called here directly when tracing is off,
skipping FastAPI's router (a linear match over every route), its exception and exit-stack layers
and its dependency solving, none of which those handlers use. Everything else, and everything
while tracing is on (the OpenTelemetry middleware names the matched route), takes the full stack.
"""

from __future__ import annotations

import inspect
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable, Mapping

import grpc
from prometheus_client import Counter, Histogram
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from edge.errors import error_json
from edge.headers import check_headers
from edge.observability import RESPONSE_TIME_HEADER
from gateway_common.errors import GatewayError, Reason
from gateway_common.logging import request_id_var

log = logging.getLogger(__name__)

REQUESTS = Counter("gateway_http_requests_total", "HTTP requests by route and status.", ["route", "status"])
LATENCY = Histogram(
    "gateway_http_request_duration_seconds",
    "Time to the response's first byte, by route.",
    ["route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)

Endpoint = Callable[[Request], Awaitable[Response]]
"""A route handler that takes the request and returns its response (what the fast path calls)."""

# AI Gateway's clients read it: milliseconds from the request's arrival to its response headers.
_RESPONSE_TIME = RESPONSE_TIME_HEADER.encode()
_REQUEST_ID = b"x-request-id"

# A client's id is echoed back and logged: keep it to something safe to log and to put in a header.
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


class EdgeMiddleware:
    """Sets ``x-request-id`` (the client's when it is safe, else a new one), refuses headers the edge
    will not forward (431/400, see ``edge.headers``), records metrics, dispatches the ``fast_routes``
    (``POST`` path -> handler) directly, and answers an unhandled exception with a 500 that quotes
    the request id.

    The 500 is answered here, not by an app exception handler: Starlette runs those outside every
    middleware (so the log line would lose the request id) and then re-raises, and uvicorn answers a
    re-raised exception by closing the connection after the response, without ``Connection: close``;
    a client reusing the connection then got a reset. Answered here, the connection stays usable.
    """

    def __init__(self, app: ASGIApp, fast_routes: Mapping[str, Endpoint] | None = None) -> None:
        self.app = app
        self.fast_routes = dict(fast_routes or {})
        for path, endpoint in self.fast_routes.items():
            if list(inspect.signature(endpoint).parameters) != ["request"]:
                raise TypeError(f"the fast route {path} must take only the request")
        # Label children, looked up once per label set (labels() takes a lock and builds a tuple).
        self._counted: dict[tuple[str, int], Counter] = {}
        self._timed: dict[str, Histogram] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = ""
        for name, value in scope["headers"]:
            if name == _REQUEST_ID:
                candidate = value.decode("latin-1")
                if _SAFE_ID.match(candidate):
                    request_id = candidate
                break
        # 128 random bits in the format uuid4().hex had, without building a UUID object.
        request_id = request_id or f"req_{os.urandom(16).hex()}"
        scope.setdefault("state", {})["request_id"] = request_id
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        path: str = scope["path"]
        route = _route_label(path)
        id_header = (_REQUEST_ID, request_id.encode())

        started_response = False

        async def send_with_id(message: Message) -> None:
            nonlocal started_response
            if message["type"] == "http.response.start":
                started_response = True
                elapsed = time.perf_counter() - started
                headers = list(message.get("headers", ()))
                headers.append(id_header)
                headers.append((_RESPONSE_TIME, f"{elapsed * 1000:.1f}".encode()))
                message["headers"] = headers
                self._count(route, message["status"])
                self._timer(route).observe(elapsed)
            await send(message)

        try:
            refusal = check_headers(scope["headers"])
            if refusal is not None:
                status, error = refusal
                await Response(error_json(error), status_code=status, media_type="application/json")(
                    scope, receive, send_with_id
                )
                return
            endpoint = self.fast_routes.get(path) if scope["method"] == "POST" and not scope.get("root_path") else None
            if endpoint is not None:
                response = await endpoint(Request(scope, receive))
                await response(scope, receive, send_with_id)
            else:
                await self.app(scope, receive, send_with_id)
        except ClientDisconnect:
            # The client left while its body was still arriving: nothing was started upstream and
            # nobody is there to answer. Not a bug, so no "unhandled error"; counted as abandoned.
            self._count(route, 499)
        except Exception as exc:
            log.error("unhandled error", exc_info=exc)
            if started_response:
                # Part of the answer is out: only closing the connection can tell the client it is cut.
                raise
            await _internal_error(request_id)(scope, receive, send_with_id)
        finally:
            request_id_var.reset(token)

    def _count(self, route: str, status: int) -> None:
        child = self._counted.get((route, status))
        if child is None:
            child = self._counted[(route, status)] = REQUESTS.labels(route, str(status))
        child.inc()

    def _timer(self, route: str) -> Histogram:
        child = self._timed.get(route)
        if child is None:
            child = self._timed[route] = LATENCY.labels(route)
        return child


def _internal_error(request_id: str) -> Response:
    error = GatewayError(
        grpc.StatusCode.INTERNAL,
        Reason.INTERNAL,
        f"internal error; quote request id {request_id} when reporting it",
        {"request_id": request_id},
    )
    return Response(error_json(error), status_code=500, media_type="application/json")


_STATIC_ROUTES = frozenset(
    {
        "/v1/chat/completions",
        "/v1/embeddings",
        "/v1/models",
        "/v1/chat",
        "/v1/chat:stream",
        "/v1/embed",
        "/v1/catalog/models",
        "/health",
        "/ready",
        "/metrics",
    }
)


def _route_label(path: str) -> str:
    # Labels must stay few: ids in paths would make a time series per model or key.
    if path in _STATIC_ROUTES:
        return path
    if path.startswith("/v1/models/"):
        return "/v1/models/{id}"
    if path.startswith("/admin/"):
        return "/admin"
    return "other"
