"""CORS for browser clients, only for the origins the deployment names (``edge.cors_origins``).

Starlette's CORSMiddleware answers preflights and decorates responses; it is wrapped so that a
request from an origin that is not allowed (or with no Origin) passes through untouched. Starlette
alone adds ``Access-Control-Expose-Headers`` to every response that carries an Origin and answers a
refused preflight with its own plain-text 400 that still lists the allowed methods; here a refused
origin gets the edge's ordinary answer (405 in OpenAI's shape for ``OPTIONS``) and no CORS header.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

# The response headers a browser client may read. Access-Control-Expose-Headers takes no patterns,
# so every x-ratelimit-* and x-gateway-* header the gateway sends is named.
EXPOSED_HEADERS: tuple[str, ...] = (
    "x-request-id",
    "retry-after",
    "x-ratelimit-limit-requests",
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-requests",
    "x-ratelimit-reset-tokens",
    "x-ratelimit-remaining",
    "x-ratelimit-reset-ms",
    "x-cost-usd",
    "x-response-time",
    "x-gateway-provider",
    "x-gateway-max-tokens-capped",
)

ALLOWED_METHODS: tuple[str, ...] = ("GET", "POST", "PUT", "PATCH", "DELETE")

# How long a browser may cache a preflight answer, in seconds.
PREFLIGHT_MAX_AGE_S = 600


class AllowedOriginsCORS:
    """CORS headers and preflight answers for ``origins`` ("*" allows any); nothing for the rest."""

    def __init__(self, app: ASGIApp, origins: Sequence[str]) -> None:
        self.app = app
        # Requested headers are mirrored: the SDKs send their own (x-stainless-*, openai-*), and
        # Authorization must be named explicitly, which a literal "*" would not do. Credentials
        # (cookies) are never allowed: the key travels in Authorization.
        self.cors = CORSMiddleware(
            app,
            allow_origins=list(origins),
            allow_methods=list(ALLOWED_METHODS),
            allow_headers=["*"],
            expose_headers=list(EXPOSED_HEADERS),
            max_age=PREFLIGHT_MAX_AGE_S,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            origin = Headers(scope=scope).get("origin")
            if origin is not None and self.cors.is_allowed_origin(origin):
                await self.cors(scope, receive, send)
                return
        await self.app(scope, receive, send)
