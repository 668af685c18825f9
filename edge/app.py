"""The edge application: the OpenAI façade, the native API, health, readiness and metrics."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import grpc
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from edge import openai_api
from edge.middleware import RequestContextMiddleware
from edge.openai_api import error_response
from edge.state import EdgeState
from edge.transcoding import add_native_routes
from gateway_common import tracing
from gateway_common.config import GatewayConfig
from gateway_common.errors import GatewayError, Reason

log = logging.getLogger(__name__)


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
    add_native_routes(app, _state)

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

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> Response:
        """A bug: the stack goes to the log, the client gets the request id to quote."""
        request_id = getattr(request.state, "request_id", "")
        log.error("unhandled error", exc_info=exc)
        error = GatewayError(
            grpc.StatusCode.INTERNAL,
            Reason.INTERNAL,
            f"internal error; quote request id {request_id} when reporting it",
            {"request_id": request_id},
        )
        return error_response(error, {"x-request-id": request_id})

    app.add_middleware(RequestContextMiddleware)
    tracing.instrument_app(app)
    return app


async def _check(channel: grpc.aio.Channel) -> str:
    try:
        response = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2)
    except grpc.aio.AioRpcError as exc:
        return f"UNREACHABLE ({exc.code().name})"
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))
