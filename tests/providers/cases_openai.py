"""Conformance cases for the OpenAI protocol: OpenAI, Azure OpenAI and OpenAI-compatible servers.

Expectations are read from the recordings themselves (:func:`recorded` decodes the JSON body or
the SSE events independently of the adapter) and adjusted only where the gateway deliberately
differs from the raw upstream: usage it counts itself (``ESTIMATED``) and Ollama's tool-call
finish reason.
"""

from __future__ import annotations

import base64
import json
import struct
from collections import defaultdict
from dataclasses import replace
from typing import Any

from tests.providers.conformance import (
    ESTIMATED,
    KEY,
    Case,
    Choice,
    Error,
    Expect,
    Sent,
    ToolCall,
    Usage,
)
from tests.providers.replay import FIXTURES, request_body


def _usage(data: Any) -> Usage | None:
    if not isinstance(data, dict):
        return None
    details = data.get("completion_tokens_details") or {}
    prompt_details = data.get("prompt_tokens_details") or {}
    return Usage(
        data["prompt_tokens"],
        data["completion_tokens"],
        data["total_tokens"],
        reasoning_tokens=details.get("reasoning_tokens"),
        cached_tokens=prompt_details.get("cached_tokens"),
    )


def recorded(name: str) -> Expect:
    """What an OpenAI-format recording says: choices, tool calls, finish reasons, usage, model.

    A stream without a usage chunk expects the gateway's estimate.
    """
    raw = (FIXTURES / name).read_text()
    if name.endswith(".json"):
        data = json.loads(raw)
        choices = []
        for choice in data["choices"]:
            message = choice["message"]
            calls = tuple(
                ToolCall(c["function"]["name"], c["function"]["arguments"], c["id"])
                for c in message.get("tool_calls") or []
            )
            choices.append(Choice(message.get("content"), message.get("refusal"), calls, choice["finish_reason"]))
        return Expect(tuple(choices), _usage(data.get("usage")), data["model"])
    texts: dict[int, str] = defaultdict(str)
    refusals: dict[int, str] = defaultdict(str)
    calls: dict[int, dict[int, list[str]]] = defaultdict(dict)
    finish: dict[int, str] = {}
    usage: Usage | None = None
    model = ""
    for line in raw.splitlines():
        if not line.startswith("data:") or line[5:].strip() == "[DONE]":
            continue
        chunk = json.loads(line[5:])
        model = chunk.get("model") or model
        usage = _usage(chunk.get("usage")) or usage
        for choice in chunk["choices"]:
            index = choice["index"]
            delta = choice["delta"]
            texts[index] += delta.get("content") or ""
            refusals[index] += delta.get("refusal") or ""
            for position, call in enumerate(delta.get("tool_calls") or []):
                slot = calls[index].setdefault(call.get("index", position), ["", "", ""])
                slot[0] = call.get("id") or slot[0]
                slot[1] += call.get("function", {}).get("name") or ""
                slot[2] += call.get("function", {}).get("arguments") or ""
            if choice.get("finish_reason"):
                finish[index] = choice["finish_reason"]
    return Expect(
        tuple(
            Choice(
                texts[i] or None,
                refusals[i] or None,
                tuple(ToolCall(name, args, call_id) for call_id, name, args in calls[i].values()),
                finish[i],
            )
            for i in sorted(finish)
        ),
        usage or ESTIMATED,
        model,
    )


def recorded_error(name: str, code: str, retryable: bool, status: int, **fields: Any) -> Expect:
    """An error recording: the upstream's message, code and type must reach the client."""
    error = json.loads((FIXTURES / name).read_text())["error"]
    upstream_code = error.get("code")
    return Expect(
        error=Error(
            code,
            retryable,
            upstream_status=status,
            upstream_code=str(upstream_code) if upstream_code is not None else error.get("type"),
            upstream_type=error.get("type"),
            **{"message": error["message"], **fields},
        )
    )


def recorded_vectors(name: str) -> tuple[tuple[float, ...], ...]:
    """The embeddings of a recording, decoding base64 float32 the way OpenAI encodes them."""
    vectors = []
    for item in json.loads((FIXTURES / name).read_text())["data"]:
        vector = item["embedding"]
        if isinstance(vector, str):
            raw = base64.b64decode(vector)
            vector = struct.unpack(f"<{len(raw) // 4}f", raw)
        vectors.append(tuple(vector))
    return tuple(vectors)


def recorded_embedding_usage(name: str) -> Usage:
    """The usage of an embeddings recording."""
    usage = json.loads((FIXTURES / name).read_text())["usage"]
    return Usage(usage["prompt_tokens"], 0, usage["total_tokens"])


def _request(name: str, **changes: Any) -> dict[str, Any]:
    body = request_body(name)
    assert body is not None, name
    return {**body, **changes}


BEARER = {"authorization": f"Bearer {KEY}"}
HELLO = {"model": "gpt-4o-2024-08-06", "messages": [{"role": "user", "content": "What's the weather like in SF?"}]}
TOOLS = [
    {"type": "function", "function": {"name": "GetWeatherArgs", "parameters": {"type": "object"}}},
    {"type": "function", "function": {"name": "get_stock_price", "parameters": {"type": "object"}}},
]

_OPENAI: list[Case] = [
    # --- chat, not streamed ---
    Case(
        "chat-text",
        "openai",
        "openai/chat.text.json",
        "chat",
        recorded("openai/chat.text.json"),
        request=_request("openai/chat.text.json"),
        base_path="/v1",
        sent=Sent(
            "/v1/chat/completions",
            headers=BEARER,
            absent_headers=("api-key",),
            body={
                "model": "gpt-3.5-turbo",
                "messages": [{"role": "user", "content": "Tell me a joke about opentelemetry"}],
            },
            absent_body=("stream", "stream_options"),
        ),
    ),
    Case(
        "chat-text-2024",
        "openai",
        "openai/chat.text.sdk-snapshot.json",
        "chat",
        recorded("openai/chat.text.sdk-snapshot.json"),
        request=HELLO,
        base_path="/v1",
    ),
    Case(
        "chat-tool-calls-parallel",
        "openai",
        "openai/chat.tool_calls.parallel.json",
        "chat",
        recorded("openai/chat.tool_calls.parallel.json"),
        request=_request("openai/chat.tool_calls.parallel.json"),
        base_path="/v1",
        sent=Sent("/v1/chat/completions", body={"tools": _request("openai/chat.tool_calls.parallel.json")["tools"]}),
    ),
    Case(
        "chat-tool-calls-multiple",
        "openai",
        "openai/chat.tool_calls.multiple.sdk-snapshot.json",
        "chat",
        recorded("openai/chat.tool_calls.multiple.sdk-snapshot.json"),
        request={**HELLO, "tools": TOOLS, "parallel_tool_calls": True},
        base_path="/v1",
        sent=Sent("/v1/chat/completions", body={"parallel_tool_calls": True}),
    ),
    Case(
        "chat-refusal",
        "openai",
        "openai/chat.refusal.sdk-snapshot.json",
        "chat",
        recorded("openai/chat.refusal.sdk-snapshot.json"),
        request=HELLO,
        base_path="/v1",
    ),
    Case(
        "chat-length",
        "openai",
        "openai/chat.finish_length.sdk-snapshot.json",
        "chat",
        recorded("openai/chat.finish_length.sdk-snapshot.json"),
        request={**HELLO, "max_tokens": 1},
        base_path="/v1",
        sent=Sent("/v1/chat/completions", body={"max_tokens": 1}),
    ),
    Case(
        "chat-n3",
        "openai",
        "openai/chat.n3.sdk-snapshot.json",
        "chat",
        recorded("openai/chat.n3.sdk-snapshot.json"),
        request={**HELLO, "n": 3, "response_format": {"type": "json_object"}, "seed": 7},
        base_path="/v1",
        sent=Sent("/v1/chat/completions", body={"n": 3, "response_format": {"type": "json_object"}, "seed": 7}),
    ),
    # --- chat, streamed ---
    Case(
        "stream-text",
        "openai",
        "openai/chat.stream.text.include_usage.sse",
        "stream",
        recorded("openai/chat.stream.text.include_usage.sse"),
        request=HELLO,
        base_path="/v1",
        sent=Sent(
            "/v1/chat/completions",
            headers=BEARER,
            body={"model": "gpt-4o-2024-08-06", "stream": True, "stream_options": {"include_usage": True}},
        ),
    ),
    Case(
        "stream-tool-call",
        "openai",
        "openai/chat.stream.tool_call.include_usage.sse",
        "stream",
        recorded("openai/chat.stream.tool_call.include_usage.sse"),
        request={**HELLO, "tools": TOOLS[:1]},
        base_path="/v1",
    ),
    Case(
        "stream-tool-calls-parallel",
        "openai",
        "openai/chat.stream.tool_calls.parallel.include_usage.sse",
        "stream",
        recorded("openai/chat.stream.tool_calls.parallel.include_usage.sse"),
        request={**HELLO, "tools": TOOLS},
        base_path="/v1",
    ),
    Case(
        "stream-refusal",
        "openai",
        "openai/chat.stream.refusal.include_usage.sse",
        "stream",
        recorded("openai/chat.stream.refusal.include_usage.sse"),
        request=HELLO,
        base_path="/v1",
    ),
    Case(
        "stream-logprobs",
        "openai",
        "openai/chat.stream.logprobs.include_usage.sse",
        "stream",
        replace(
            recorded("openai/chat.stream.logprobs.include_usage.sse"),
            choices=(replace(recorded("openai/chat.stream.logprobs.include_usage.sse").choices[0], logprobs=True),),
        ),
        request={**HELLO, "logprobs": True, "top_logprobs": 2},
        base_path="/v1",
        sent=Sent("/v1/chat/completions", body={"logprobs": True, "top_logprobs": 2}),
    ),
    Case(
        "stream-n3",
        "openai",
        "openai/chat.stream.n3.include_usage.sse",
        "stream",
        recorded("openai/chat.stream.n3.include_usage.sse"),
        request={**HELLO, "n": 3},
        base_path="/v1",
    ),
    Case(
        "stream-length",
        "openai",
        "openai/chat.stream.finish_length.include_usage.sse",
        "stream",
        recorded("openai/chat.stream.finish_length.include_usage.sse"),
        request={**HELLO, "max_tokens": 1},
        base_path="/v1",
    ),
    Case(
        "stream-reasoning-only",
        "openai",
        "openai/chat.stream.reasoning_only.length.include_usage.2025.sse",
        "stream",
        recorded("openai/chat.stream.reasoning_only.length.include_usage.2025.sse"),
        request=_request("openai/chat.stream.reasoning_only.length.include_usage.2025.sse"),
        base_path="/v1",
        sent=Sent(
            "/v1/chat/completions",
            body={
                "model": "gpt-5-nano",
                "max_completion_tokens": 100,
                "temperature": 1,
                "messages": [{"role": "developer", "content": "Hello, I'm a developer!"}],
            },
        ),
    ),
    Case(
        "stream-text-no-usage",
        "openai",
        "openai/chat.stream.text.no-usage.2025.sse",
        "stream",
        recorded("openai/chat.stream.text.no-usage.2025.sse"),
        request=_request("openai/chat.stream.text.no-usage.2025.sse"),
        base_path="/v1",
    ),
    Case(
        "stream-tool-call-no-usage",
        "openai",
        "openai/chat.stream.tool_call.no-usage.2024.sse",
        "stream",
        recorded("openai/chat.stream.tool_call.no-usage.2024.sse"),
        request=_request("openai/chat.stream.tool_call.no-usage.2024.sse"),
        base_path="/v1",
    ),
    # --- embeddings and models ---
    Case(
        "embed-float",
        "openai",
        "openai/embeddings.float.json",
        "embed",
        Expect(
            usage=recorded_embedding_usage("openai/embeddings.float.json"),
            model="text-embedding-3-small",
            vectors=recorded_vectors("openai/embeddings.float.json"),
        ),
        request=_request("openai/embeddings.float.json"),
        base_path="/v1",
        sent=Sent(
            "/v1/embeddings",
            headers=BEARER,
            body={
                "model": "text-embedding-3-small",
                "input": ["This is a test for embeddings"],
                "encoding_format": "float",
            },
        ),
    ),
    Case(
        "embed-base64-answer",
        "openai",
        "openai/embeddings.base64.json",
        "embed",
        Expect(
            usage=recorded_embedding_usage("openai/embeddings.base64.json"),
            vectors=recorded_vectors("openai/embeddings.base64.json"),
        ),
        request=_request("openai/embeddings.base64.json"),
        base_path="/v1",
    ),
    Case(
        "models",
        "openai",
        "openai/models.list.json",
        "models",
        Expect(models=tuple(m["id"] for m in json.loads((FIXTURES / "openai/models.list.json").read_text())["data"])),
        base_path="/v1",
        sent=Sent("/v1/models", method="GET", headers=BEARER),
    ),
    # --- errors ---
    Case(
        "error-400-missing-parameter",
        "openai",
        "openai/error.400.missing_required_parameter.json",
        "chat",
        recorded_error("openai/error.400.missing_required_parameter.json", "INVALID_ARGUMENT", False, 400),
        base_path="/v1",
    ),
    Case(
        "error-400-unsupported-parameter",
        "openai",
        "openai/error.400.unsupported_parameter.json",
        "stream",
        recorded_error("openai/error.400.unsupported_parameter.json", "INVALID_ARGUMENT", False, 400),
        request={**HELLO, "max_tokens": 5},
        base_path="/v1",
    ),
    Case(
        "error-400-embeddings",
        "openai",
        "openai/error.400.embeddings_bad_options.dotnet.json",
        "embed",
        recorded_error("openai/error.400.embeddings_bad_options.dotnet.json", "INVALID_ARGUMENT", False, 400),
        base_path="/v1",
    ),
    Case(
        "error-401",
        "openai",
        "openai/error.401.invalid_api_key.json",
        "chat",
        replace(
            recorded_error("openai/error.401.invalid_api_key.json", "UNAUTHENTICATED", False, 401),
            error=Error(
                "UNAUTHENTICATED",
                False,
                upstream_status=401,
                upstream_code="invalid_api_key",
                upstream_type="invalid_request_error",
                message_contains=("Incorrect API key provided",),
                message_excludes=("sk-",),
            ),
        ),
        base_path="/v1",
    ),
    Case(
        "error-401-stream",
        "openai",
        "openai/error.401.invalid_api_key.dotnet.json",
        "stream",
        Expect(
            error=Error(
                "UNAUTHENTICATED",
                False,
                upstream_status=401,
                upstream_code="invalid_api_key",
                message_contains=("Incorrect API key provided",),
                message_excludes=("not-a-re", "ized"),
            )
        ),
        base_path="/v1",
    ),
    Case(
        "error-404",
        "openai",
        "openai/error.404.model_not_found.json",
        "chat",
        recorded_error("openai/error.404.model_not_found.json", "NOT_FOUND", False, 404),
        request=_request("openai/error.404.model_not_found.json"),
        base_path="/v1",
    ),
    Case(
        "error-404-stream",
        "openai",
        "openai/error.404.model_not_found.json",
        "stream",
        recorded_error("openai/error.404.model_not_found.json", "NOT_FOUND", False, 404),
        base_path="/v1",
    ),
    Case(
        "error-404-embeddings",
        "openai",
        "openai/embeddings.error.404.model_not_found.json",
        "embed",
        recorded_error("openai/embeddings.error.404.model_not_found.json", "NOT_FOUND", False, 404),
        request={"model": "nonexistent", "input": "x"},
        base_path="/v1",
    ),
]

_AZURE_REQUEST = {"messages": [{"role": "user", "content": "Say hello"}]}
_AZURE_PATH = "/openai/deployments/gpt-4o-mini/chat/completions"
_AZURE_VERSION = {"api_version": "2024-12-01-preview"}

_AZURE: list[Case] = [
    Case(
        "chat-text",
        "azure",
        "azure-openai/chat.text.json",
        "chat",
        replace(recorded("azure-openai/chat.text.json"), extra=("prompt_filter_results",)),
        request=_AZURE_REQUEST,
        model="gpt-4o-mini",
        config=_AZURE_VERSION,
        sent=Sent(
            _AZURE_PATH,
            query={"api-version": "2024-12-01-preview"},
            headers={"api-key": KEY},
            absent_headers=("authorization",),
            body={"messages": _AZURE_REQUEST["messages"]},
            absent_body=("model", "stream"),
        ),
    ),
    Case(
        "stream-text",
        "azure",
        "azure-openai/chat.stream.text.sse",
        "stream",
        replace(recorded("azure-openai/chat.stream.text.sse"), extra=("prompt_filter_results",)),
        request=_AZURE_REQUEST,
        model="gpt-4o-mini",
        sent=Sent(
            _AZURE_PATH,
            query={"api-version": "2024-10-21"},
            headers={"api-key": KEY},
            body={"stream": True, "stream_options": {"include_usage": True}},
            absent_body=("model",),
        ),
    ),
    Case(
        "stream-long",
        "azure",
        "azure-openai/chat.stream.include_usage.sse",
        "stream",
        replace(recorded("azure-openai/chat.stream.include_usage.sse"), extra=("prompt_filter_results",)),
        request=_request("azure-openai/chat.stream.include_usage.sse"),
        model="gpt-4o-mini",
        config=_AZURE_VERSION,
        sent=Sent(_AZURE_PATH, body={"stop": ["\nObservation:"]}),
    ),
    Case(
        "embed-float",
        "azure",
        "openai/embeddings.float.json",
        "embed",
        Expect(
            usage=recorded_embedding_usage("openai/embeddings.float.json"),
            vectors=recorded_vectors("openai/embeddings.float.json"),
        ),
        model="my-embeddings",
        sent=Sent("/openai/deployments/my-embeddings/embeddings", headers={"api-key": KEY}, absent_body=("model",)),
    ),
]

_OLLAMA = {"api_key_env": None}

_COMPATIBLE: list[Case] = [
    Case(
        "deepseek-stream",
        "openai_compatible",
        "openai-compatible/deepseek.chat.stream.usage.sse",
        "stream",
        replace(
            recorded("openai-compatible/deepseek.chat.stream.usage.sse"), usage=Usage(12, 89, 101, cached_tokens=0)
        ),
        request=_request("openai-compatible/deepseek.chat.stream.usage.sse"),
        base_path="/beta",
        sent=Sent("/beta/chat/completions", headers=BEARER, body={"model": "deepseek-chat", "stream": True}),
    ),
    Case(
        "ollama-stream-text",
        "openai_compatible",
        "openai-compatible/ollama.chat.stream.text.sse",
        "stream",
        recorded("openai-compatible/ollama.chat.stream.text.sse"),
        request=_request("openai-compatible/ollama.chat.stream.text.sse"),
        base_path="/v1",
        config=_OLLAMA,
        sent=Sent(
            "/v1/chat/completions",
            absent_headers=("authorization", "api-key"),
            body={"model": "llama3.1", "stream_options": {"include_usage": True}},
        ),
    ),
    Case(
        "ollama-stream-tool-call",
        "openai_compatible",
        "openai-compatible/ollama.chat.stream.tool_call.sse",
        "stream",
        # Ollama finishes a tool call with "stop"; the gateway says "tool_calls" like OpenAI.
        replace(
            recorded("openai-compatible/ollama.chat.stream.tool_call.sse"),
            choices=(
                replace(
                    recorded("openai-compatible/ollama.chat.stream.tool_call.sse").choices[0],
                    finish_reason="tool_calls",
                ),
            ),
        ),
        request=_request("openai-compatible/ollama.chat.stream.tool_call.sse"),
        base_path="/v1",
        config=_OLLAMA,
        sent=Sent(
            "/v1/chat/completions",
            body={
                "tool_choice": {"type": "function", "function": {"name": "return_bool"}},
                "parallel_tool_calls": False,
            },
        ),
    ),
    Case(
        "groq-404",
        "openai_compatible",
        "openai-compatible/groq.error.404.model_not_found.json",
        "chat",
        recorded_error("openai-compatible/groq.error.404.model_not_found.json", "NOT_FOUND", False, 404),
        base_path="/openai/v1",
    ),
    Case(
        "openrouter-429",
        "openai_compatible",
        "openai-compatible/openrouter.error.429.upstream_rate_limited.json",
        "chat",
        # Recorded without Retry-After: no RetryInfo is invented.
        recorded_error(
            "openai-compatible/openrouter.error.429.upstream_rate_limited.json", "RESOURCE_EXHAUSTED", True, 429
        ),
        base_path="/api/v1",
    ),
]

CASES: list[Case] = [
    *_OPENAI,
    *(replace(c, id=f"azure-{c.id}") for c in _AZURE),
    *(replace(c, id=f"compatible-{c.id}") for c in _COMPATIBLE),
]
