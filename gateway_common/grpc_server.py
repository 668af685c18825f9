"""The lifecycle every gRPC service shares: caller checks and error statuses, health, reflection, graceful shutdown.

Order of shutdown, on SIGTERM or SIGINT:
1. health goes NOT_SERVING, so load balancers stop sending new calls;
2. ``server.stop(grace)`` refuses new calls and lets in-flight ones (streams included) finish
   within the grace period;
3. the service's own ``on_stop`` drains pending work (settlements, metering) and closes clients.

Service identity: a process started by :func:`main` serves mutual TLS with the material of
``config.tls`` and refuses every call whose client certificate does not name an allowed caller
(:mod:`gateway_common.identity`); without material it refuses to start, unless told
``GATEWAY_INTERNAL_TLS=off``. In-process servers of tests (``ServiceApp.start()`` with no security)
stay plaintext.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import grpc
import uvloop
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio  # type: ignore[attr-defined]
from grpc_reflection.v1alpha import reflection
from prometheus_client import start_http_server

from gateway_common import identity, tracing
from gateway_common.config import ConfigError, GatewayConfig, TlsConfig, load_config
from gateway_common.errors import GatewayError, Reason
from gateway_common.grpc_client import MAX_MESSAGE_BYTES
from gateway_common.logging import configure_logging, request_id_var
from gateway_common.tls import TlsMaterial, load_material, server_credentials

log = logging.getLogger(__name__)

REQUEST_ID_KEY = "x-request-id"


def metadata_value(metadata: Sequence[tuple[str, str | bytes]] | None, key: str) -> str | None:
    """The first value of ``key`` in gRPC metadata, as text."""
    for k, v in metadata or ():
        if k == key:
            return v.decode() if isinstance(v, bytes) else v
    return None


class _Guard:
    """What every call of every service's method goes through, decided once per method at start.

    The caller's identity is checked first (UNAUTHENTICATED when the peer named none,
    PERMISSION_DENIED when it is the wrong one; health and reflection stay open): a refusal is a
    plain status and the service's code never runs for a stranger. Then the request id is set for
    logging and exceptions become statuses: a :class:`GatewayError` its rich status; anything else
    is a bug, logged with its stack, and the caller gets INTERNAL with the request id, never the stack.

    These are handlers wrapped once when the service is added, not interceptors: a grpc.aio
    interceptor runs as its own coroutine on every call and builds a new method handler each time,
    which cost more than the checks themselves. Without a policy (plaintext servers of tests) every
    call passes and no identity is recorded.
    """

    def __init__(self) -> None:
        self.policy: identity.CallerPolicy | None = None

    def wrap(self, method: str, handler: grpc.RpcMethodHandler[Any, Any]) -> grpc.RpcMethodHandler[Any, Any]:
        """``handler`` of ``method`` with the identity check and the error translation around it."""
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(handler.unary_unary, method),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._stream(handler.unary_stream, method),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        # No service of the gateway has client- or bidi-streaming RPCs; refuse rather than pass one
        # through unchecked if one appears.
        return grpc.unary_unary_rpc_method_handler(_refuse_unsupported(method))

    async def _enter(self, method: str, context: grpc.aio.ServicerContext[Any, Any]) -> str:
        policy = self.policy
        if policy is not None:
            await _admit(policy, method, context)
        # A tuple of (key, value) pairs at run time, whatever the stubs say.
        metadata = cast("Sequence[tuple[str, str | bytes]] | None", context.invocation_metadata())
        request_id = metadata_value(metadata, REQUEST_ID_KEY) or uuid.uuid4().hex
        request_id_var.set(request_id)
        return request_id

    def _unary(self, behavior: Any, method: str) -> Any:
        async def guarded(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            request_id = await self._enter(method, context)
            try:
                return await behavior(request, context)
            except Exception as exc:
                await _abort(exc, context, request_id)

        return guarded

    def _stream(self, behavior: Any, method: str) -> Any:
        async def guarded(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
            request_id = await self._enter(method, context)
            try:
                async for item in behavior(request, context):
                    yield item
            except Exception as exc:
                await _abort(exc, context, request_id)

        return guarded


class _GuardedServer:
    """Stands in for the server while a generated ``add_*Servicer_to_server`` registers its
    handlers, and registers them on the real server wrapped by the guard."""

    def __init__(self, server: grpc.aio.Server, guard: _Guard, service: str) -> None:
        self._server = server
        self._guard = guard
        self._service = service

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler[Any, Any]]) -> None:
        """Add ``handlers`` with every method they resolve wrapped by the guard."""
        self._server.add_generic_rpc_handlers((_GuardedHandlers(self._guard, handlers),))

    def add_registered_method_handlers(
        self, service: str, handlers: dict[str, grpc.RpcMethodHandler[Any, Any]]
    ) -> None:
        """Newer generated code registers its methods by name as well; they are added wrapped."""
        self._server.add_registered_method_handlers(  # type: ignore[attr-defined]
            service, {name: self._guard.wrap(f"/{service}/{name}", h) for name, h in handlers.items()}
        )


class _GuardedHandlers(grpc.GenericRpcHandler):  # type: ignore[type-arg]
    """Resolves a method through the service's own handlers the first time it is called, and
    from then on answers with the guarded handler it built then (one dict lookup per call)."""

    def __init__(self, guard: _Guard, handlers: Sequence[grpc.GenericRpcHandler[Any, Any]]) -> None:
        self._guard = guard
        self._handlers = tuple(handlers)
        self._resolved: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler[Any, Any] | None:
        method = handler_call_details.method
        try:
            return self._resolved[method]
        except KeyError:
            pass
        for handler in self._handlers:
            inner = handler.service(handler_call_details)
            if inner is not None:
                # Only methods that exist are remembered: a stranger's made-up names cannot grow it.
                found = self._resolved[method] = self._guard.wrap(method, inner)
                return found
        return None


async def _admit(policy: identity.CallerPolicy, method: str, context: grpc.aio.ServicerContext[Any, Any]) -> None:
    if policy.is_open(method):
        return
    decision = policy.decide(identity.peer_spiffe_id(context), method)
    if decision.error is not None:
        log.warning("refused %s from %s: %s", method, decision.identity or "an unidentified peer", decision.error)
        await context.abort_with_status(decision.error.to_grpc_status())  # type: ignore[attr-defined]
    identity.caller_var.set(decision.identity)


def _refuse_unsupported(method: str) -> Any:
    async def refuse(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{method}: streaming requests are not served")

    return refuse


@dataclass(frozen=True)
class ServerSecurity:
    """How a server binds: TLS with ``material``; with ``verify_callers``, mutual TLS plus the
    caller allowlist (internal services), else TLS for anyone (the router's public port)."""

    material: TlsMaterial
    verify_callers: bool


def server_security(tls: TlsConfig, name: str) -> ServerSecurity | None:
    """The security process ``name`` must serve with, or None when ``tls.internal`` is off.

    Raises ConfigError, naming what to set, when TLS is on but no material is configured.
    """
    if tls.internal == "off":
        return None
    material = load_material(tls, name)
    if material is None:
        raise ConfigError(
            f"no TLS material for {name}'s gRPC port: set GATEWAY_TLS_DIR (a folder with ca.crt, "
            f"{name}.crt and {name}.key; `make up` writes one) or GATEWAY_TLS_CA, GATEWAY_TLS_CERT and "
            "GATEWAY_TLS_KEY; or GATEWAY_INTERNAL_TLS=off to run with no service identity (tests only: "
            "then any process that reaches the port is trusted)"
        )
    return ServerSecurity(material, verify_callers=name not in identity.PUBLIC_SERVICES)


def _internal(request_id: str) -> grpc.Status:
    return GatewayError(
        grpc.StatusCode.INTERNAL,
        Reason.INTERNAL,
        f"internal error; quote request id {request_id} when reporting it",
        {"request_id": request_id},
    ).to_grpc_status()


async def _abort(exc: Exception, context: grpc.aio.ServicerContext[Any, Any], request_id: str) -> None:
    if isinstance(exc, grpc.aio.AbortError):
        raise exc
    if isinstance(exc, GatewayError):
        status = exc.to_grpc_status()
    else:
        log.exception("unhandled error", exc_info=exc)
        status = _internal(request_id)
    await context.abort_with_status(status)  # type: ignore[attr-defined]


@dataclass
class ServiceRegistration:
    """A servicer and how to add it: ``add(servicer, server)`` and its full service name."""

    add: Callable[[Any, grpc.aio.Server], None]
    servicer: Any
    name: str


class GrpcServer:
    """A ``grpc.aio`` server with the standard health service and reflection."""

    def __init__(self, listen: str, registrations: Sequence[ServiceRegistration]) -> None:
        self._listen = listen
        self._registrations = list(registrations)
        self.health = health_aio.HealthServicer()
        self._guard = _Guard()
        self.server = grpc.aio.server(
            # Only tracing's, when it is on: the gateway's own checks wrap each method (_Guard).
            interceptors=tracing.server_interceptors() or None,
            options=[
                ("grpc.so_reuseport", 0),
                # Same ceiling as the clients' (grpc_client.open_channel): batches of usage events
                # and long conversations exceed gRPC's 4 MiB default.
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ],
        )
        for registration in self._registrations:
            guarded = cast("grpc.aio.Server", _GuardedServer(self.server, self._guard, registration.name))
            registration.add(registration.servicer, guarded)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        names = [r.name for r in self._registrations]
        reflection.enable_server_reflection(
            [*names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME],
            self.server,
        )
        self.port = 0

    async def start(self, security: ServerSecurity | None = None) -> int:
        """Bind (plaintext, or TLS per ``security``) and start; health stays NOT_SERVING until
        :meth:`set_serving`. Returns the bound port."""
        if security is None:
            self.port = self.server.add_insecure_port(self._listen)
        else:
            if security.verify_callers:
                self._guard.policy = identity.CallerPolicy()
            credentials = server_credentials(security.material, require_client_cert=security.verify_callers)
            self.port = self.server.add_secure_port(self._listen, credentials)
        if self.port == 0:
            raise OSError(f"cannot bind {self._listen}")
        for name in ("", *(r.name for r in self._registrations)):
            await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.server.start()
        return self.port

    async def set_serving(self) -> None:
        """Report SERVING, once the service's dependencies have answered."""
        for name in ("", *(r.name for r in self._registrations)):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)

    async def stop(self, grace_s: float) -> None:
        """Go NOT_SERVING, then stop, letting in-flight calls finish within ``grace_s``."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace_s)


@dataclass
class ServiceApp:
    """A built service: its server plus the hooks that check dependencies and drain on stop.

    Tests start it in-process on port 0; ``main`` runs it as a process until a signal.
    """

    name: str
    server: GrpcServer
    on_ready: Callable[[], Awaitable[None]] | None = None
    on_stop: Callable[[], Awaitable[None]] | None = None
    grace_s: float = 10.0

    async def start(self, security: ServerSecurity | None = None) -> int:
        """Start serving (plaintext unless ``security``); SERVING once ``on_ready`` returned.
        Returns the bound port."""
        port = await self.server.start(security)
        try:
            if self.on_ready is not None:
                await self.on_ready()
        except BaseException:
            # A dependency did not answer: stop listening before the error ends the process.
            await self.server.server.stop(None)
            raise
        await self.server.set_serving()
        log.info("%s serving on port %d", self.name, port)
        return port

    async def stop(self, grace_s: float | None = None) -> None:
        """NOT_SERVING, stop with grace, then drain (``on_stop``)."""
        log.info("%s shutting down", self.name)
        try:
            await self.server.stop(self.grace_s if grace_s is None else grace_s)
        finally:
            if self.on_stop is not None:
                await self.on_stop()
        log.info("%s stopped", self.name)


def main(
    name: str,
    build: Callable[[GatewayConfig], ServiceApp],
    use_uvloop: Callable[[GatewayConfig], bool] = lambda config: True,
) -> None:
    """Entry point of a service process: load config, log JSON, serve until SIGTERM/SIGINT.

    The loop is uvloop unless ``use_uvloop(config)`` says otherwise (asyncio's own loop then)."""
    try:
        config = load_config()
    except ConfigError as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    try:
        security = server_security(config.tls, name)
    except ConfigError as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    configure_logging(name, config.log_level)
    tracing.configure_tracing(name)
    if security is None:
        log.warning("%s: GATEWAY_INTERNAL_TLS=off: plaintext gRPC, every caller trusted", name)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        app = build(config)
        address = getattr(config.services, name, None)
        if address is not None and address.metrics_port:
            # prometheus_client serves from its own thread: scrapes never touch the event loop.
            start_http_server(address.metrics_port, addr=address.listen.rpartition(":")[0] or "0.0.0.0")
        # A signal must stop the service even while it still waits for its dependencies at start.
        starting = asyncio.create_task(app.start(security))
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await starting
        else:
            stopping.cancel()
            starting.result()  # a failed start ends the process with its error
            await stop.wait()
        await app.stop()

    try:
        # uvloop: measured to cut the CPU of each gRPC call (client and server side) by a fifth or more.
        factory = uvloop.new_event_loop if use_uvloop(config) else None
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(run())
    except ConfigError as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
