"""One conformance suite for every adapter, driven by the recorded upstream traffic.

Cases come from every ``tests/providers/cases_*.py`` module (``CASES``); see
:mod:`tests.providers.conformance` for what a case says and how it runs.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

import tests.providers
from edge.errors import error_body
from gateway.chat.v1 import chat_pb2
from gateway.providers.v1 import providers_pb2
from gateway_common import openai_wire
from gateway_common.errors import GatewayError
from gateway_common.openai_wire import parse_chat_request, parse_embedding_request
from tests.edge.openai_schema import errors as schema_errors
from tests.providers.conformance import (
    KEY,
    KEY_ENV,
    PROVIDER,
    Case,
    check,
    check_error,
    check_sent,
    from_chunks,
    from_completion,
)
from tests.providers.harness import chunks_in, provider_service
from tests.providers.replay import ReplayServer, load

_DEFAULT_CHAT = {"messages": [{"role": "user", "content": "Hello"}]}
_DEFAULT_EMBED = {"input": ["Hello"]}


def _cases() -> Iterator[Any]:
    for module_info in sorted(pkgutil.iter_modules(tests.providers.__path__), key=lambda m: m.name):
        if module_info.name.startswith("cases_"):
            module = importlib.import_module(f"tests.providers.{module_info.name}")
            for case in module.CASES:
                yield pytest.param(case, id=f"{module_info.name[6:]}-{case.id}")


CASES = list(_cases())


def test_case_ids_are_unique() -> None:
    ids = [param.id for param in CASES]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("case", CASES)
async def test_conformance(case: Case, replay: ReplayServer) -> None:
    replay.reply(*(load(name) for name in case.fixtures))
    entry: dict[str, Any] = {
        "type": case.provider_type,
        "base_url": replay.url + case.base_path,
        "api_key_env": KEY_ENV,
        "list_models": case.call == "models",
        **case.config,
    }
    if entry["api_key_env"] is None:
        del entry["api_key_env"]
    body = dict(case.request or (_DEFAULT_EMBED if case.call == "embed" else _DEFAULT_CHAT))
    model = case.model or body.get("model") or "test-model"
    target = providers_pb2.Target(provider=PROVIDER, model=model)
    edge_output: list[tuple[str, Any]] = []
    async with provider_service({PROVIDER: entry}, {KEY_ENV: KEY}) as stub:
        try:
            result: Any
            if case.call == "chat":
                request, _ = parse_chat_request(body)
                response = await stub.Chat(providers_pb2.ChatRequest(target=target, completion=request))
                result = from_completion(response.completion)
                edge_output = [("CreateChatCompletionResponse", openai_wire.completion_to_openai(response.completion))]
            elif case.call == "stream":
                request, _ = parse_chat_request(body)
                chunks: list[chat_pb2.ChatCompletionChunk] = []
                async for item in stub.StreamChat(providers_pb2.StreamChatRequest(target=target, completion=request)):
                    chunks.extend(chunks_in(item))
                result = from_chunks(chunks)
                edge_output = [
                    ("CreateChatCompletionStreamResponse", openai_wire.chunk_to_openai(chunk, include_usage))
                    for chunk in chunks
                    for include_usage in (True, False)
                ]
            elif case.call == "embed":
                embedding, _ = parse_embedding_request(body)
                embedded = await stub.Embed(providers_pb2.EmbedRequest(target=target, embedding=embedding))
                result = embedded.embedding
                # The spec describes float vectors only; the base64 form (a string, as the recorded
                # embeddings.base64.json shows the real API sends it) is not in the schema.
                edge_output = [("CreateEmbeddingResponse", openai_wire.embedding_response_to_openai(result, "float"))]
            else:
                listed = await stub.ListModels(providers_pb2.ListModelsRequest(provider=PROVIDER))
                result = list(listed.models)
                edge_output = [
                    ("ListModelsResponse", {"object": "list", "data": [openai_wire.model_to_openai(m) for m in result]})
                ]
        except grpc.aio.AioRpcError as exc:
            if case.expect.error is None:
                raise
            error = GatewayError.from_rpc_error(exc)
            check_error(case.expect.error, error)
            edge_output = [("ErrorResponse", error_body(error))]
        else:
            assert case.expect.error is None, "the call should have failed"
            check(case, result)
    # What the edge writes for this answer (the JSON body, or every SSE chunk) is valid against the
    # official OpenAI schema.
    assert edge_output
    for component, document in edge_output:
        assert schema_errors(component, document) == [], (component, document)
    assert len(replay.requests) == len(case.fixtures), [r.path for r in replay.requests]
    if case.sent is not None:
        last = replay.requests[-1]
        check_sent(case.sent, last.method, last.path, last.query, last.headers, last.body)
