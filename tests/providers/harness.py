"""The providers service in-process on loopback, and a real gRPC channel to it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import grpc

from gateway.chat.v1 import chat_pb2
from gateway.providers.v1 import providers_pb2, providers_pb2_grpc
from gateway_common.config import GatewayConfig
from services.providers.server import build


@asynccontextmanager
async def provider_service(
    providers: Mapping[str, Mapping[str, Any]], env: Mapping[str, str] | None = None
) -> AsyncIterator[providers_pb2_grpc.ProviderServiceStub]:
    """A started providers service with these ``providers:`` entries and environment; yields a stub."""
    config = GatewayConfig.model_validate({"providers": dict(providers)})
    app = build(config, listen="127.0.0.1:0", env=dict(env or {}))
    port = await app.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield providers_pb2_grpc.ProviderServiceStub(channel)
    finally:
        await channel.close()
        await app.stop(0)


def chunks_in(item: providers_pb2.StreamChatResponse) -> list[chat_pb2.ChatCompletionChunk]:
    """Every chunk a StreamChat message carries: its ``chunk``, then the ``more_chunks`` that were ready with it."""
    return [item.chunk, *item.more_chunks]
