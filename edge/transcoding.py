"""The native API: HTTP/JSON routes generated from the ``google.api.http`` annotations of the
router's and the auth service's RPCs (AuthService and CredentialService), grpc-gateway style.

Request JSON (protobuf JSON mapping; both snake_case and lowerCamelCase field names are accepted)
is parsed into the RPC's request message (or into its ``body`` field), path parameters and query
parameters fill its fields (by proto name or JSON name, so ``?from=`` sets a field declared with
``json_name = "from"``), and the response is the response message (or its ``response_body`` field)
as JSON with its proto field names, every field present and numbers as numbers
(``edge/proto_json.py``). Server-streaming RPCs answer newline-delimited JSON: one message per
line when the rule names a ``response_body``, else one ``{"result": …}`` per message. Errors are
OpenAI's error body (``{"error": {"message", "type", "param", "code"}}``) with the HTTP status,
from the same table as the OpenAI routes (``edge/errors.py``); a stream that fails after its first
line ends with one ``{"error": …}`` line instead.
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
from edge.errors import error_headers, error_json, http_status
from edge.openai_api import PROVIDER_HEADER, call_metadata, ratelimit_headers
from edge.proto_json import to_json
from edge.state import EdgeState
from gateway.auth.v1 import auth_pb2, credentials_pb2
from gateway.router.v1 import router_pb2
from gateway_common.errors import GatewayError, invalid_argument

Handler = Callable[[Request], Awaitable[Response]]

TRANSCODED_SERVICES = (
    ("router", router_pb2.DESCRIPTOR.services_by_name["RouterService"]),
    ("auth", auth_pb2.DESCRIPTOR.services_by_name["AuthService"]),
    ("auth", credentials_pb2.DESCRIPTOR.services_by_name["CredentialService"]),
)
"""The services whose ``google.api.http`` routes the edge serves (grpc-gateway style), by target.
JobService's annotations document its routes, but ``edge/jobs_api.py`` serves them itself (a
job's result renders in the shape of its ingress format, not as protobuf JSON)."""


def _provider_header(body: Any) -> dict[str, str]:
    """``x-gateway-provider`` for a native answer that names its provider, as the OpenAI routes send it."""
    provider = body.get("provider") if isinstance(body, dict) else None
    return {PROVIDER_HEADER: provider} if isinstance(provider, str) and provider else {}


def _error(error: GatewayError, headers: dict[str, str] | None = None) -> Response:
    code = 413 if isinstance(error, BodyTooLarge) else http_status(error)
    return Response(
        error_json(error),
        status_code=code,
        media_type="application/json",
        headers={**(headers or {}), **error_headers(error)},
    )


def _field(msg: message.Message, name: str) -> Any:
    """The field ``name`` names, by proto name or JSON name; None when there is none."""
    fields = msg.DESCRIPTOR.fields_by_name
    return fields.get(name) or next((f for f in fields.values() if f.json_name == name), None)


def _set_scalar(msg: message.Message, name: str, raw: str, where: str) -> None:
    field = _field(msg, name)
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

    def render(response: message.Message) -> Any:
        return to_json(getattr(response, rule.response_body) if rule.response_body else response)

    def line(response: message.Message) -> bytes:
        value = render(response) if rule.response_body else {"result": render(response)}
        return json.dumps(value, ensure_ascii=False).encode() + b"\n"

    async def parse(request: Request, state: EdgeState) -> message.Message:
        msg = request_class()
        if rule.body:
            body = await read_json(request, state.config.edge.max_body_bytes)
            if not isinstance(body, dict):
                raise invalid_argument("The request body must be a JSON object.", "body")
            target = msg if rule.body == "*" else getattr(msg, rule.body)
            if target is not msg:
                # An empty body still selects the body field (it says which form of request this is).
                target.SetInParent()
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
            body = render(response)
            return Response(
                json.dumps(body, ensure_ascii=False).encode(),
                media_type="application/json",
                headers={**ratelimit_headers(await call.initial_metadata()), **_provider_header(body)},
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
                    yield line(first)
                async for item in items:
                    yield line(item)
            except grpc.aio.AioRpcError as exc:
                yield error_json(GatewayError.from_rpc_error(exc)) + b"\n"
            finally:
                stream.cancel()

        headers = ratelimit_headers(await stream.initial_metadata())
        if first is not None:
            headers.update(_provider_header(render(first)))
        return StreamingResponse(lines(), media_type="application/x-ndjson", headers=headers)

    return handle


def add_native_routes(app: FastAPI, state_of: Callable[[Request], EdgeState]) -> list[str]:
    """Register a route per annotated RPC; returns "METHOD path" for each, for the docs and tests."""
    added = []
    for service, service_descriptor in TRANSCODED_SERVICES:
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
