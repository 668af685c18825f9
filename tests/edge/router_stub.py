"""A counting stand-in for the router, served over real gRPC on loopback, for in-process edge tests.

It answers every RPC successfully and counts what reached it: a request the edge rejects must
leave every count at zero, which is how the tests prove it used no quota and reached no provider.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager
from typing import Any

import grpc
from fastapi.testclient import TestClient
from google.protobuf import struct_pb2

from edge.app import create_app
from gateway.chat.v1 import chat_pb2
from gateway.metering.v1 import metering_pb2
from gateway.router.v1 import router_pb2, router_pb2_grpc
from gateway_common.config import GatewayConfig


class CountingRouter(router_pb2_grpc.RouterServiceServicer):
    """Counts calls per RPC and the metadata each carried; answers with canned messages."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.metadata: list[dict[str, str]] = []
        self.usage_requests: list[router_pb2.GetUsageRequest] = []
        # Set when a StreamChat for the model "hang" (one chunk, then silence) has been cancelled.
        self.hung_stream_cancelled = threading.Event()

    def _seen(self, name: str, context: Any) -> None:
        self.calls[name] += 1
        self.metadata.append({k: v for k, v in context.invocation_metadata() if isinstance(v, str)})

    def Chat(self, request: router_pb2.ChatRequest, context: Any) -> router_pb2.ChatResponse:
        self._seen("Chat", context)
        if request.HasField("unified"):
            return router_pb2.ChatResponse(
                unified=router_pb2.UnifiedChatResponse(
                    id="c1",
                    model=request.unified.model,
                    provider="stub",
                    created=1795645428,
                    finish_reason="stop",
                    usage=router_pb2.UnifiedUsage(prompt_tokens=3, completion_tokens=1, total_tokens=4),
                    message=router_pb2.UnifiedMessage(role="assistant", content=struct_pb2.Value(string_value="ok")),
                )
            )
        completion = chat_pb2.ChatCompletion(id="c1", model=request.completion.model, provider="stub")
        completion.choices.add(index=0, message=chat_pb2.Message(role=chat_pb2.ROLE_ASSISTANT, text="ok"))
        return router_pb2.ChatResponse(completion=completion)

    def StreamChat(
        self, request: router_pb2.StreamChatRequest, context: Any
    ) -> Iterator[router_pb2.StreamChatResponse]:
        self._seen("StreamChat", context)
        if request.HasField("unified"):
            first = router_pb2.UnifiedChatChunk(id="c1", model=request.unified.model, provider="stub")
            first.delta.content = "ok"
            yield router_pb2.StreamChatResponse(unified=first)
            if request.unified.model == "break":
                context.abort(grpc.StatusCode.UNAVAILABLE, "the upstream stream broke")
            last = router_pb2.UnifiedChatChunk(id="c1", model=request.unified.model, provider="stub")
            last.delta.SetInParent()
            last.finish_reason = "stop"
            yield router_pb2.StreamChatResponse(unified=last)
            return
        if request.completion.model == "batched" and request.batch_chunks:
            # Chunks that were ready together, in one message, as the router sends them when asked.
            words = ["one ", "two ", "three"]
            parts = [chat_pb2.ChatCompletionChunk(id="c1", model="batched", provider="stub") for _ in words]
            for part, word in zip(parts, words, strict=True):
                part.choices.add(index=0, delta=chat_pb2.Delta(role=chat_pb2.ROLE_ASSISTANT, content=word))
            yield router_pb2.StreamChatResponse(chunk=parts[0], more_chunks=parts[1:])
            return
        chunk = chat_pb2.ChatCompletionChunk(id="c1", model=request.completion.model, provider="stub")
        chunk.choices.add(index=0, delta=chat_pb2.Delta(role=chat_pb2.ROLE_ASSISTANT, content="ok"))
        yield router_pb2.StreamChatResponse(chunk=chunk)
        if request.completion.model == "hang":
            # An upstream gone silent after its first chunk: only the caller's cancellation ends it.
            ended = threading.Event()
            context.add_callback(ended.set)
            ended.wait(30)
            if not context.is_active():
                self.hung_stream_cancelled.set()

    def Embed(self, request: router_pb2.EmbedRequest, context: Any) -> router_pb2.EmbedResponse:
        self._seen("Embed", context)
        embedding = chat_pb2.EmbeddingResponse(model=request.embedding.model, provider="stub")
        for i in range(len(request.embedding.input)):
            embedding.data.add(index=i, vector=[0.5])
        return router_pb2.EmbedResponse(embedding=embedding)

    def ListModels(self, request: router_pb2.ListModelsRequest, context: Any) -> router_pb2.ListModelsResponse:
        self._seen("ListModels", context)
        return router_pb2.ListModelsResponse(models=[chat_pb2.Model(id="mock:x", owned_by="mock")])

    def GetUsage(self, request: router_pb2.GetUsageRequest, context: Any) -> router_pb2.GetUsageResponse:
        self._seen("GetUsage", context)
        self.usage_requests.append(request)
        if request.tenant_id == "empty":
            return router_pb2.GetUsageResponse()
        row = metering_pb2.UsageRow(requests=2, prompt_tokens=30, completion_tokens=12, cost_micro_usd=3_000_000_000)
        return router_pb2.GetUsageResponse(rows=[row])


@contextmanager
def router_stub() -> Iterator[tuple[str, CountingRouter]]:
    """A CountingRouter on a free loopback port; yields its address and the servicer."""
    servicer = CountingRouter()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    router_pb2_grpc.add_RouterServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}", servicer
    finally:
        server.stop(grace=None)


@contextmanager
def edge_with_router_stub(max_body_bytes: int = 64 * 1024) -> Iterator[tuple[TestClient, CountingRouter]]:
    """The edge app in-process, its router a CountingRouter; yields a test client and the servicer."""
    with router_stub() as (address, servicer):
        config = GatewayConfig.model_validate(
            {"edge": {"max_body_bytes": max_body_bytes}, "services": {"router": {"address": address}}}
        )
        with TestClient(create_app(config), raise_server_exceptions=False) as client:
            yield client, servicer
