"""The gRPC transport: the router's public ``RouterService`` and ``JobService`` with the vendored stubs.

Needs the ``grpc`` extra (``pip install 'llm-gateway-sdk[grpc]'``). The key travels as
``authorization: Bearer <key>`` metadata and the request id as ``x-request-id``; the router is
TLS without a client certificate, so callers pass channel credentials (the gateway's CA) or
``insecure=True`` for a plaintext router. Requests are built from the same proto JSON the HTTP
transport sends (or, for the Responses API and jobs, the canonical request the edge would make
of it: ``_wire_requests``), and answers rendered back to the JSON the edge answers
(``_wire_render``), so both transports decode into the same types.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any, Generic, TypeVar

import grpc
import grpc.aio
from google.protobuf import descriptor_pool, json_format, message, message_factory
from google.rpc import error_details_pb2, status_pb2

# Imported for their side effect: registering the messages the calls name in the default pool.
from llm_gateway._calls import Call, Rpc, StreamEvents
from llm_gateway._gen.gateway.jobs.v1 import jobs_pb2 as _jobs_pb2  # noqa: F401
from llm_gateway._gen.gateway.router.v1 import router_pb2 as _router_pb2  # noqa: F401
from llm_gateway._streams import AsyncStream, Stream
from llm_gateway._wire_requests import invalid
from llm_gateway.errors import APIError, from_grpc

T = TypeVar("T")

_DETAILS_KEY = "grpc-status-details-bin"


def _message_class(name: str) -> type[message.Message]:
    return message_factory.GetMessageClass(descriptor_pool.Default().FindMessageTypeByName(name))


def _to_json(msg: message.Message) -> dict[str, Any]:
    rendered: dict[str, Any] = json_format.MessageToDict(
        msg, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    return rendered


def _request(rpc: Rpc) -> tuple[message.Message, type[message.Message]]:
    try:
        request = json_format.ParseDict(rpc.body, _message_class(rpc.request_type)())
    except json_format.ParseError as exc:
        # A value of the wrong type for its proto field: the edge's 400, before any call.
        raise invalid(str(exc), "body") from None
    return request, _message_class(rpc.response_type)


def _error(code: grpc.StatusCode, details: str | None, trailers: Any, request_id: str) -> APIError:
    reason: str | None = None
    metadata: dict[str, str] = {}
    retry_after: float | None = None
    field: str | None = None
    for key, value in trailers or ():
        if key != _DETAILS_KEY or not isinstance(value, bytes):
            continue
        status = status_pb2.Status.FromString(value)
        details = status.message or details
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                reason, metadata = info.reason, dict(info.metadata)
            elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                retry = error_details_pb2.RetryInfo()
                detail.Unpack(retry)
                retry_after = retry.retry_delay.seconds + retry.retry_delay.nanos / 1e9
            elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                field = bad.field_violations[0].field if bad.field_violations else None
    return from_grpc(
        code.name,
        details or code.name,
        reason=reason,
        metadata=metadata,
        retry_after=retry_after,
        field=field,
        request_id=request_id,
    )


def _rpc_error(exc: grpc.RpcError, request_id: str) -> APIError:
    call: Any = exc
    return _error(call.code(), call.details(), call.trailing_metadata(), request_id)


def _metadata(api_key: str | None, request_id: str) -> tuple[tuple[str, str], ...]:
    pairs = [("x-request-id", request_id)]
    if api_key:
        pairs.append(("authorization", f"Bearer {api_key}"))
    return tuple(pairs)


def _rpc(call: Call[Any]) -> Rpc:
    if call.rpc is None:
        raise ValueError(f"{call.method} {call.path} has no gRPC form")
    return call.rpc if isinstance(call.rpc, Rpc) else call.rpc()


class _Items(Generic[T]):
    """A stream's results from its messages: one per message, or what its renderer makes of them."""

    def __init__(self, call: Call[T], rpc: Rpc, request_id: str) -> None:
        self._call = call
        self._rpc = rpc
        self._request_id = request_id
        self._events: StreamEvents | None = rpc.events() if rpc.events is not None else None

    def _decode(self, items: list[dict[str, Any]]) -> list[T]:
        return [self._call.decode(item, self._request_id) for item in items]

    def start(self, first: message.Message | None) -> list[T]:
        """What comes before the first message's own items."""
        if self._events is None:
            return []
        return self._decode(self._events.start(self._rpc.pick(_to_json(first)) if first is not None else None))

    def feed(self, item: message.Message) -> list[T]:
        """One message's items."""
        picked = self._rpc.pick(_to_json(item))
        return self._decode([picked] if self._events is None else self._events.feed(picked))

    def finish(self) -> list[T]:
        """What ends a stream that ran to its end."""
        return [] if self._events is None else self._decode(self._events.finish())

    def fail(self, error: APIError) -> list[T]:
        """A rendered stream ends in-band, as the edge ends its SSE after the headers; others raise."""
        if self._events is None:
            raise error from None
        return self._decode(self._events.fail(error))


class GrpcTransport:
    """Blocking calls over one ``grpc.Channel``."""

    def __init__(
        self,
        target: str,
        api_key: str | None,
        credentials: grpc.ChannelCredentials | None,
        options: list[tuple[str, Any]],
    ) -> None:
        self._api_key = api_key
        if credentials is None:
            self._channel = grpc.insecure_channel(target, options=options)
        else:
            self._channel = grpc.secure_channel(target, credentials, options=options)

    def request(self, call: Call[T], timeout: float | None, request_id: str) -> T:
        """Run a unary RPC."""
        rpc = _rpc(call)
        request, response_class = _request(rpc)
        method = self._channel.unary_unary(
            rpc.method,
            request_serializer=type(request).SerializeToString,
            response_deserializer=response_class.FromString,
        )
        try:
            response = method(request, metadata=_metadata(self._api_key, request_id), timeout=timeout)
        except grpc.RpcError as exc:
            raise _rpc_error(exc, request_id) from None
        return call.decode(rpc.pick(_to_json(response)), request_id)

    def stream(self, call: Call[T], timeout: float | None, request_id: str) -> Stream[T]:
        """Start a server-streaming RPC and wait for its first message (or its error)."""
        rpc = _rpc(call)
        request, response_class = _request(rpc)
        method = self._channel.unary_stream(
            rpc.method,
            request_serializer=type(request).SerializeToString,
            response_deserializer=response_class.FromString,
        )
        responses: Any = method(request, metadata=_metadata(self._api_key, request_id), timeout=timeout)
        try:
            first = next(responses, None)
        except grpc.RpcError as exc:
            raise _rpc_error(exc, request_id) from None

        rendered = _Items(call, rpc, request_id)

        def items() -> Iterator[T]:
            try:
                yield from rendered.start(first)
                if first is not None:
                    yield from rendered.feed(first)
                for item in responses:
                    yield from rendered.feed(item)
                yield from rendered.finish()
            except grpc.RpcError as exc:
                yield from rendered.fail(_rpc_error(exc, request_id))
            finally:
                responses.cancel()

        return Stream(items(), responses.cancel, request_id)

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()


class AsyncGrpcTransport:
    """Async calls over one ``grpc.aio.Channel`` (opened on first use, inside the caller's loop)."""

    def __init__(
        self,
        target: str,
        api_key: str | None,
        credentials: grpc.ChannelCredentials | None,
        options: list[tuple[str, Any]],
    ) -> None:
        self._target = target
        self._api_key = api_key
        self._credentials = credentials
        self._options = options
        self._channel: grpc.aio.Channel | None = None

    def _open(self) -> grpc.aio.Channel:
        if self._channel is None:
            if self._credentials is None:
                self._channel = grpc.aio.insecure_channel(self._target, options=self._options)
            else:
                self._channel = grpc.aio.secure_channel(self._target, self._credentials, options=self._options)
        return self._channel

    async def request(self, call: Call[T], timeout: float | None, request_id: str) -> T:
        """Run a unary RPC."""
        rpc = _rpc(call)
        request, response_class = _request(rpc)
        method = self._open().unary_unary(
            rpc.method,
            request_serializer=type(request).SerializeToString,
            response_deserializer=response_class.FromString,
        )
        try:
            response = await method(request, metadata=_metadata(self._api_key, request_id), timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            raise _error(exc.code(), exc.details(), exc.trailing_metadata(), request_id) from None
        return call.decode(rpc.pick(_to_json(response)), request_id)

    async def stream(self, call: Call[T], timeout: float | None, request_id: str) -> AsyncStream[T]:
        """Start a server-streaming RPC and wait for its first message (or its error)."""
        rpc = _rpc(call)
        request, response_class = _request(rpc)
        method = self._open().unary_stream(
            rpc.method,
            request_serializer=type(request).SerializeToString,
            response_deserializer=response_class.FromString,
        )
        responses: Any = method(request, metadata=_metadata(self._api_key, request_id), timeout=timeout)
        source = aiter(responses)
        try:
            first = await anext(source, None)
        except grpc.aio.AioRpcError as exc:
            raise _error(exc.code(), exc.details(), exc.trailing_metadata(), request_id) from None

        rendered = _Items(call, rpc, request_id)

        async def items() -> AsyncIterator[T]:
            try:
                for event in rendered.start(first):
                    yield event
                if first is not None:
                    for event in rendered.feed(first):
                        yield event
                async for item in source:
                    for event in rendered.feed(item):
                        yield event
                for event in rendered.finish():
                    yield event
            except grpc.aio.AioRpcError as exc:
                for event in rendered.fail(_error(exc.code(), exc.details(), exc.trailing_metadata(), request_id)):
                    yield event
            finally:
                responses.cancel()

        async def aclose() -> None:
            responses.cancel()

        return AsyncStream(items(), aclose, request_id, cancel=responses.cancel)

    async def aclose(self) -> None:
        """Close the channel."""
        if self._channel is not None:
            await self._channel.close(None)
            self._channel = None
