"""OpenTelemetry tracing across the services, switched on by the standard OTel variables.

``OTEL_TRACES_EXPORTER=otlp`` (or an ``OTEL_EXPORTER_OTLP_ENDPOINT``) exports spans to a collector
over OTLP/gRPC; ``OTEL_TRACES_EXPORTER=console`` prints them, for local debugging. Without either,
nothing is installed and no interceptor sits on the hot path. When on, every gRPC server and
channel gets OpenTelemetry's interceptors (the trace context travels in gRPC metadata), the edge
gets the FastAPI instrumentation (it continues a client's ``traceparent``), and the providers'
upstream calls get the httpx instrumentation (the upstream sees the trace too).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SimpleSpanProcessor


def _exporter_name(env: Mapping[str, str]) -> str | None:
    name = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if name in ("otlp", "console"):
        return name
    if not name and env.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        return "otlp"
    return None


def configure_tracing(service: str, env: Mapping[str, str] | None = None) -> bool:
    """Install a tracer provider for this process when the environment asks for tracing."""
    env = os.environ if env is None else env
    exporter = _exporter_name(env)
    if exporter is None:
        return False
    resource = Resource.create({"service.name": env.get("OTEL_SERVICE_NAME", f"llm-gateway-{service}")})
    provider = TracerProvider(resource=resource)
    if exporter == "console":
        provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
    else:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    HTTPXClientInstrumentor().instrument()
    return True


def enabled() -> bool:
    """Whether this process records spans (a real tracer provider is installed)."""
    return isinstance(trace.get_tracer_provider(), TracerProvider)


def server_interceptors() -> list[Any]:
    """OpenTelemetry's server interceptor when tracing is on; none otherwise."""
    if not enabled():
        return []
    from opentelemetry.instrumentation.grpc import aio_server_interceptor

    return [aio_server_interceptor()]  # type: ignore[no-untyped-call]


def client_interceptors() -> list[Any]:
    """OpenTelemetry's client interceptors when tracing is on; none otherwise."""
    if not enabled():
        return []
    from opentelemetry.instrumentation.grpc import aio_client_interceptors

    return list(aio_client_interceptors())  # type: ignore[no-untyped-call]


def instrument_app(app: Any) -> None:
    """Trace the edge's HTTP requests (continuing a client's traceparent) when tracing is on."""
    if enabled():
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

        FastAPIInstrumentor.instrument_app(app, excluded_urls="health,ready,metrics")
