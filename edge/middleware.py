"""ASGI middleware: the request id on every response and log line, and HTTP metrics.

Pure ASGI rather than BaseHTTPMiddleware, which buffers streaming responses and breaks the
propagation of client disconnects that cancellation of an SSE stream relies on.
"""

from __future__ import annotations

import re
import time
import uuid

from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway_common.logging import request_id_var

REQUESTS = Counter("gateway_http_requests_total", "HTTP requests by route and status.", ["route", "status"])
LATENCY = Histogram(
    "gateway_http_request_duration_seconds",
    "Time to the response's first byte, by route.",
    ["route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)

# A client's id is echoed back and logged: keep it to something safe to log and to put in a header.
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


class RequestContextMiddleware:
    """Sets ``x-request-id`` (the client's when it is safe, else a new one) and records metrics."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = ""
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                candidate = value.decode("latin-1")
                if _SAFE_ID.match(candidate):
                    request_id = candidate
                break
        request_id = request_id or f"req_{uuid.uuid4().hex}"
        scope.setdefault("state", {})["request_id"] = request_id
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        route = _route_label(scope["path"])

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                message["headers"] = headers
                REQUESTS.labels(route, str(message["status"])).inc()
                LATENCY.labels(route).observe(time.perf_counter() - started)
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id_var.reset(token)


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
