"""The native API: HTTP/JSON routes generated from the ``google.api.http`` annotations of the
router's and the auth service's RPCs, grpc-gateway style.

Request JSON (protobuf JSON mapping; both snake_case and lowerCamelCase field names are accepted)
is parsed into the RPC's request message, path parameters and query parameters fill its fields,
and the response is the response message as JSON with its proto field names. Server-streaming
RPCs answer newline-delimited JSON, one ``{"result": …}`` per message. Errors are the
``google.rpc.Status`` as JSON (``{"code", "message", "details"}``) with the HTTP status from the
same table as the OpenAI routes.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from fastapi import FastAPI, Request
from fastapi.responses import Response, StreamingResponse
from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor, json_format, message, message_factory

from edge.body import BodyTooLarge, read_json
from edge.disconnect import ClientDisconnected, abandoned_response, unless_disconnected
from edge.errors import error_headers, http_status
from edge.openai_api import call_metadata, ratelimit_headers
from edge.state import EdgeState
from gateway.auth.v1 import auth_pb2
from gateway.router.v1 import router_pb2
from gateway_common.errors import GatewayError, invalid_argument

Handler = Callable[[Request], Awaitable[Response]]

_SERVICES = (
    ("router", router_pb2.DESCRIPTOR.services_by_name["RouterService"]),
    ("auth", auth_pb2.DESCRIPTOR.services_by_name["AuthService"]),
)


def _status_json(error: GatewayError) -> bytes:
    status = json_format.MessageToDict(error.to_status_proto(), preserving_proto_field_name=True)
    return json.dumps(status, ensure_ascii=False).encode()


def _error(error: GatewayError, headers: dict[str, str] | None = None) -> Response:
    code = 413 if isinstance(error, BodyTooLarge) else http_status(error)
    return Response(
        _status_json(error),
        status_code=code,
        media_type="application/json",
        headers={**(headers or {}), **error_headers(error)},
    )


def _to_json(msg: message.Message) -> Any:
    return json_format.MessageToDict(msg, preserving_proto_field_name=True)


def _set_scalar(msg: message.Message, name: str, raw: str, where: str) -> None:
    field = msg.DESCRIPTOR.fields_by_name.get(name)
    scalar_message = (
        field is not None
        and field.message_type is not None
        and field.message_type.full_name
        in (
            "google.protobuf.Timestamp",
            "google.protobuf.Duration",
        )
    )
    if field is None or (field.type == descriptor.FieldDescriptor.TYPE_MESSAGE and not scalar_message):
        raise invalid_argument(f"Unknown {where} parameter '{name}'.", name)
    value: Any = raw
    if field.type == descriptor.FieldDescriptor.TYPE_BOOL:
        if raw not in ("true", "false"):
            raise invalid_argument(f"Invalid value for '{name}': expected true or false.", name)
        value = raw == "true"
    try:
        json_format.ParseDict({field.json_name: value}, msg, ignore_unknown_fields=False)
    except json_format.ParseError as exc:
        raise invalid_argument(f"Invalid value for '{name}': {exc}", name) from None


def _route(
    state_of: Callable[[Request], EdgeState], service: str, method: descriptor.MethodDescriptor, rule: http_pb2.HttpRule
) -> Handler:
    request_class = message_factory.GetMessageClass(method.input_type)
    response_class = message_factory.GetMessageClass(method.output_type)
    path = f"/{method.containing_service.full_name}/{method.name}"
    streaming = method.server_streaming

    async def parse(request: Request, state: EdgeState) -> message.Message:
        msg = request_class()
        if rule.body:
            body = await read_json(request, state.config.edge.max_body_bytes)
            if not isinstance(body, dict):
                raise invalid_argument("The request body must be a JSON object.", "body")
            target = msg if rule.body == "*" else getattr(msg, rule.body)
            try:
                json_format.ParseDict(body, target, ignore_unknown_fields=False)
            except (json_format.ParseError, TypeError, ValueError, AttributeError) as exc:
                # json_format raises TypeError/AttributeError, not ParseError, for some values of
                # the wrong JSON type (found by tests/fuzz): every one is the client's mistake.
                raise invalid_argument(f"Invalid request body: {exc}", "body") from None
        for name, value in request.path_params.items():
            _set_scalar(msg, name, value, "path")
        if not rule.body:
            for name, value in request.query_params.items():
                _set_scalar(msg, name, value, "query")
        return msg

    async def handle(request: Request) -> Response:
        state = state_of(request)
        channel = state.channels[service]
        try:
            msg = await parse(request, state)
        except GatewayError as error:
            return _error(error)
        metadata = call_metadata(request)
        if not streaming:
            unary = channel.unary_unary(
                path,
                request_serializer=request_class.SerializeToString,
                response_deserializer=response_class.FromString,
            )
            call = unary(msg, metadata=metadata)
            try:
                response = await unless_disconnected(request, call, call)
            except ClientDisconnected:
                return abandoned_response()
            except grpc.aio.AioRpcError as exc:
                return _error(GatewayError.from_rpc_error(exc), ratelimit_headers(exc.initial_metadata()))
            return Response(
                json.dumps(_to_json(response), ensure_ascii=False).encode(),
                media_type="application/json",
                headers=ratelimit_headers(await call.initial_metadata()),
            )
        stream = channel.unary_stream(
            path, request_serializer=request_class.SerializeToString, response_deserializer=response_class.FromString
        )(msg, metadata=metadata)
        items = aiter(stream)
        try:
            first = await unless_disconnected(request, stream, anext(items))
        except StopAsyncIteration:
            first = None
        except ClientDisconnected:
            return abandoned_response()
        except grpc.aio.AioRpcError as exc:
            return _error(GatewayError.from_rpc_error(exc), ratelimit_headers(exc.initial_metadata()))

        async def lines() -> AsyncIterator[bytes]:
            try:
                if first is not None:
                    yield json.dumps({"result": _to_json(first)}, ensure_ascii=False).encode() + b"\n"
                async for item in items:
                    yield json.dumps({"result": _to_json(item)}, ensure_ascii=False).encode() + b"\n"
            except grpc.aio.AioRpcError as exc:
                yield b'{"error":' + _status_json(GatewayError.from_rpc_error(exc)) + b"}\n"
            finally:
                stream.cancel()

        return StreamingResponse(
            lines(), media_type="application/x-ndjson", headers=ratelimit_headers(await stream.initial_metadata())
        )

    return handle


def add_native_routes(app: FastAPI, state_of: Callable[[Request], EdgeState]) -> list[str]:
    """Register a route per annotated RPC; returns "METHOD path" for each, for the docs and tests."""
    added = []
    for service, service_descriptor in _SERVICES:
        for method in service_descriptor.methods:
            options = method.GetOptions()
            if not options.HasExtension(annotations_pb2.http):
                continue
            rule = options.Extensions[annotations_pb2.http]
            verb = rule.WhichOneof("pattern")
            if verb not in ("get", "put", "post", "delete", "patch"):
                continue
            template = getattr(rule, verb)
            app.add_api_route(
                template, _route(state_of, service, method, rule), methods=[verb.upper()], include_in_schema=False
            )
            added.append(f"{verb.upper()} {template}")
    return added
