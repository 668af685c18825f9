"""A stand-in router for the edge's Anthropic façade: CountingRouter plus CountTokens, tool calls
and errors injected by model name, served over real gRPC on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager
from typing import Any

import grpc
from fastapi.testclient import TestClient

from edge.app import create_app
from gateway.chat.v1 import chat_pb2
from gateway.router.v1 import router_pb2, router_pb2_grpc
from gateway_common.config import GatewayConfig
from gateway_common.errors import GatewayError, Reason
from tests.edge.router_stub import CountingRouter

# The router's answer to a model of this name: the error the stand-in raises.
ERRORS = {
    "unauthenticated": GatewayError(grpc.StatusCode.UNAUTHENTICATED, Reason.INVALID_API_KEY, "Invalid API key."),
    "forbidden": GatewayError(grpc.StatusCode.PERMISSION_DENIED, Reason.MODEL_NOT_ALLOWED, "Model not allowed."),
    "unknown": GatewayError(grpc.StatusCode.NOT_FOUND, Reason.MODEL_NOT_FOUND, "The model `unknown` does not exist."),
    "limited": GatewayError(
        grpc.StatusCode.RESOURCE_EXHAUSTED, Reason.RATE_LIMITED, "Rate limit reached.", retry_after_s=7
    ),
    "exhausted": GatewayError(
        grpc.StatusCode.UNAVAILABLE, Reason.ALL_CANDIDATES_FAILED, "Every candidate failed.", {"attempts": "a: 503"}
    ),
    "deadline": GatewayError(grpc.StatusCode.DEADLINE_EXCEEDED, Reason.UPSTREAM_TIMEOUT, "Timed out."),
    "bug": GatewayError(grpc.StatusCode.INTERNAL, Reason.INTERNAL, "Internal error."),
}


class AnthropicRouter(CountingRouter):
    """CountingRouter plus CountTokens, tool calls and injected errors by model name."""

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[chat_pb2.ChatCompletionRequest] = []

    def _maybe_fail(self, model: str, context: Any) -> None:
        if model in ERRORS:
            context.abort_with_status(ERRORS[model].to_grpc_status())

    def Chat(self, request: router_pb2.ChatRequest, context: Any) -> router_pb2.ChatResponse:
        self.requests.append(request.completion)
        self._maybe_fail(request.completion.model, context)
        response = super().Chat(request, context)
        response.completion.usage.prompt_tokens, response.completion.usage.completion_tokens = 5, 1
        response.completion.choices[0].finish_reason = chat_pb2.FINISH_REASON_STOP
        return response

    def StreamChat(
        self, request: router_pb2.StreamChatRequest, context: Any
    ) -> Iterator[router_pb2.StreamChatResponse]:
        self._seen("StreamChat", context)
        self.requests.append(request.completion)
        model = request.completion.model
        self._maybe_fail(model, context)
        base = chat_pb2.ChatCompletionChunk(id="c1", model=model, provider="stub")

        def chunk(delta: chat_pb2.Delta, finish: int = 0) -> router_pb2.StreamChatResponse:
            out = chat_pb2.ChatCompletionChunk()
            out.CopyFrom(base)
            out.choices.add(index=0, delta=delta, finish_reason=finish)  # type: ignore[arg-type]
            return router_pb2.StreamChatResponse(chunk=out)

        yield chunk(chat_pb2.Delta(role=chat_pb2.ROLE_ASSISTANT, content="o"))
        if model == "break":
            context.abort_with_status(
                GatewayError(
                    grpc.StatusCode.UNAVAILABLE, Reason.UPSTREAM_STREAM_BROKEN, "The stream broke."
                ).to_grpc_status()
            )
        yield chunk(chat_pb2.Delta(content="k"))
        if request.completion.tools:
            opening = chat_pb2.ToolCallDelta(index=0, id="call_1", name=request.completion.tools[0].function.name)
            yield chunk(chat_pb2.Delta(tool_calls=[opening]))
            yield chunk(chat_pb2.Delta(tool_calls=[chat_pb2.ToolCallDelta(index=0, arguments="{}")]))
        yield chunk(chat_pb2.Delta(), chat_pb2.FINISH_REASON_TOOL_CALLS if request.completion.tools else 1)
        usage = chat_pb2.ChatCompletionChunk()
        usage.CopyFrom(base)
        usage.usage.prompt_tokens, usage.usage.completion_tokens = 5, 2
        yield router_pb2.StreamChatResponse(chunk=usage)

    def CountTokens(self, request: router_pb2.CountTokensRequest, context: Any) -> router_pb2.CountTokensResponse:
        self._seen("CountTokens", context)
        self._maybe_fail(request.completion.model, context)
        return router_pb2.CountTokensResponse(input_tokens=42, method=router_pb2.TOKEN_COUNT_METHOD_CEILING)


@contextmanager
def anthropic_edge(max_body_bytes: int = 64 * 1024) -> Iterator[tuple[TestClient, AnthropicRouter]]:
    servicer = AnthropicRouter()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    router_pb2_grpc.add_RouterServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        config = GatewayConfig.model_validate(
            {"edge": {"max_body_bytes": max_body_bytes}, "services": {"router": {"address": f"127.0.0.1:{port}"}}}
        )
        with TestClient(create_app(config), raise_server_exceptions=False) as client:
            yield client, servicer
    finally:
        server.stop(grace=None)
