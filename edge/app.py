"""The edge application: the OpenAI façade, the native API, health, readiness and metrics."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import grpc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from edge import anthropic_api, api_reports, jobs_api, openai_api, responses_api, ui_gemini
from edge.cors import AllowedOriginsCORS
from edge.errors import error_json
from edge.middleware import EdgeMiddleware, Endpoint
from edge.state import EdgeState
from edge.transcoding import add_native_routes
from edge.ui.routes import install as install_ui
from gateway_common import tracing
from gateway_common.config import GatewayConfig
from gateway_common.errors import GatewayError, Reason


def _state(request: Request) -> EdgeState:
    state: EdgeState = request.app.state.edge
    return state


def create_app(config: GatewayConfig) -> FastAPI:
    """The edge ASGI app; its channels open at startup and close at shutdown."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.edge = EdgeState(config)
        try:
            yield
        finally:
            await app.state.edge.close()

    app = FastAPI(title="LLM Gateway", version="0.1.0", lifespan=lifespan, docs_url="/docs", redoc_url=None)
    app.include_router(openai_api.router)
    app.include_router(anthropic_api.router)
    app.include_router(responses_api.router)
    app.include_router(jobs_api.router)
    app.include_router(api_reports.router)
    app.include_router(ui_gemini.router_for(config))
    add_native_routes(app, _state)
    install_ui(app)

    @app.get("/health", include_in_schema=False)
    async def health() -> JSONResponse:
        """Liveness: the edge process answers."""
        return JSONResponse({"status": "ok"})

    @app.get("/ready", include_in_schema=False)
    async def ready(request: Request) -> JSONResponse:
        """Readiness: every downstream service reports SERVING on its gRPC health service."""
        state = _state(request)
        names = list(state.channels)
        results = await asyncio.gather(*(_check(state.channels[name]) for name in names))
        services = dict(zip(names, results, strict=True))
        ok = all(status == "SERVING" for status in services.values())
        return JSONResponse(
            {"status": "ready" if ok else "not_ready", "services": services}, status_code=200 if ok else 503
        )

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        """Prometheus metrics of this process."""
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        """Unknown routes, wrong methods and the like, in OpenAI's error shape."""
        return _plain_error(exc.status_code, _http_error_message(request, exc), None, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        """FastAPI's own parameter validation, as a 400 naming the parameter (not a 422 ``detail`` list)."""
        first: dict[str, Any] = next(iter(exc.errors()), {})
        location = [str(part) for part in first.get("loc", ()) if part not in ("body", "path", "query", "header")]
        param = ".".join(location) or None
        return _plain_error(400, f"Invalid value for '{param}': {first.get('msg', 'invalid')}.", param, None)

    # One layer sets the request id (so every refusal carries it), checks headers, counts, and calls
    # the hot routes directly; with tracing on they take FastAPI's stack, whose routing the
    # instrumentation reads.
    app.add_middleware(EdgeMiddleware, fast_routes={} if tracing.enabled() else _fast_routes())
    tracing.instrument_app(app)
    if config.edge.cors_origins:
        # Outermost: a preflight is answered before limits or routing, and every answer (a 431, a
        # 500) carries the CORS headers a browser needs to let the page read it.
        app.add_middleware(AllowedOriginsCORS, origins=config.edge.cors_origins)
    return app


FAST_ROUTES = (
    "/v1/chat/completions",
    "/v1/chat.completions",
    "/v1/embeddings",
    "/v1/messages",
    "/v1/messages/count_tokens",
    "/v1/responses",
    "/v1/responses/stream",
)
"""The ``POST`` routes ``EdgeMiddleware`` dispatches itself: the API's hot path."""


def _fast_routes() -> dict[str, Endpoint]:
    # From the routers the app includes as they are (no prefix), so the fast path calls exactly the
    # handler FastAPI would route to.
    routes: dict[str, Endpoint] = {}
    for router in (openai_api.router, anthropic_api.router, responses_api.router):
        for route in router.routes:
            if isinstance(route, APIRoute) and route.path in FAST_ROUTES and "POST" in (route.methods or ()):
                if router.dependencies or route.dependencies or route.dependant.dependencies:
                    # The fast path calls the handler alone: a dependency would silently not run.
                    raise RuntimeError(f"the fast route {route.path} has dependencies; take it out of FAST_ROUTES")
                routes[route.path] = route.endpoint
    missing = set(FAST_ROUTES) - set(routes)
    if missing:
        raise RuntimeError(f"fast routes without a handler: {sorted(missing)}")
    return routes


def _http_error_message(request: Request, exc: StarletteHTTPException) -> str:
    if exc.status_code == 404:
        return f"Invalid URL ({request.method} {request.url.path})"
    if exc.status_code == 405:
        return f"Method {request.method} is not allowed for {request.url.path}"
    return str(exc.detail)


def _plain_error(status: int, message: str, param: str | None, headers: Mapping[str, str] | None) -> Response:
    # An HTTP-level refusal has no gRPC status of its own: the body says "invalid request", the
    # status line says which HTTP rule was broken (404, 405, ...).
    error = GatewayError(
        grpc.StatusCode.INVALID_ARGUMENT, Reason.INVALID_REQUEST, message, {"param": param} if param else {}
    )
    return Response(error_json(error), status_code=status, media_type="application/json", headers=headers)


async def _check(channel: grpc.aio.Channel) -> str:
    try:
        response = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2)
    except grpc.aio.AioRpcError as exc:
        return f"UNREACHABLE ({exc.code().name})"
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))
