"""The official SDK through the edge to every adapter, each upstream replayed from its recordings.

The suite runs with no config file at all: only the providers' own environment variables
(``OPENAI_API_KEY`` + ``OPENAI_BASE_URL``, ``AZURE_OPENAI_API_KEY`` + ``AZURE_OPENAI_ENDPOINT``,
``ANTHROPIC_API_KEY`` + ``ANTHROPIC_BASE_URL``, ``GEMINI_API_KEY`` + ``GEMINI_BASE_URL``), pointed
at a loopback server that replays what the real APIs answered.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import pytest_asyncio

from suite.supervisor import Suite, free_port
from tests.providers.replay import ReplayServer, load

pytestmark = pytest.mark.e2e

HELLO = [{"role": "user", "content": "Hello"}]
WEATHER_TOOL = {
    "type": "function",
    "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}},
}


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def upstream() -> AsyncIterator[ReplayServer]:
    server = ReplayServer()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture(scope="module")
def edge(upstream: ReplayServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """The suite with provider variables only; yields the edge URL and a gateway key."""
    key = f"gw-{secrets.token_urlsafe(32)}"
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("GATEWAY_", "OPENAI_", "AZURE_", "ANTHROPIC_", "GEMINI_"))
    }
    env.update(
        {
            "GATEWAY_TENANT_KEYS": f"acme:{key}",
            "OPENAI_API_KEY": "sk-upstream-openai",
            "OPENAI_BASE_URL": f"{upstream.url}/v1",
            "AZURE_OPENAI_API_KEY": "azure-upstream",
            "AZURE_OPENAI_ENDPOINT": upstream.url,
            "ANTHROPIC_API_KEY": "sk-ant-upstream",
            "ANTHROPIC_BASE_URL": upstream.url,
            "GEMINI_API_KEY": "gemini-upstream",
            "GEMINI_BASE_URL": upstream.url,
        }
    )
    data: Path = tmp_path_factory.mktemp("env-only")
    ports = {name: free_port() for name in ("router", "auth", "ratelimit", "providers", "metering", "edge")}
    suite = Suite(data_dir=data, ports=ports, env=env)
    suite.start()
    try:
        yield suite.edge_url, key
    finally:
        suite.stop()


@pytest_asyncio.fixture(loop_scope="session")
async def client(edge: tuple[str, str], upstream: ReplayServer) -> AsyncIterator[openai.AsyncOpenAI]:
    upstream.reset()
    url, key = edge
    async with openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0) as sdk:
        yield sdk


def _recorded(name: str) -> Any:
    return load(name).json()


async def _stream(client: openai.AsyncOpenAI, **kwargs: Any) -> tuple[str, dict[int, list[str]], list[Any]]:
    """Text, tool calls reassembled from deltas (index -> [id, name, arguments]) and every chunk."""
    stream = await client.chat.completions.create(stream=True, stream_options={"include_usage": True}, **kwargs)
    text, calls, chunks = "", {}, []
    async for chunk in stream:
        chunks.append(chunk)
        for choice in chunk.choices:
            text += choice.delta.content or ""
            for call in choice.delta.tool_calls or []:
                entry = calls.setdefault(call.index, ["", "", ""])
                if call.id:
                    entry[0] = call.id
                if call.function and call.function.name:
                    entry[1] += call.function.name
                if call.function and call.function.arguments:
                    entry[2] += call.function.arguments
    return text, calls, chunks


# -- OpenAI -----------------------------------------------------------------------------------


async def test_openai_plain_and_parallel_tools(client: openai.AsyncOpenAI, upstream: ReplayServer) -> None:
    upstream.reply(load("openai/chat.text.json"), load("openai/chat.tool_calls.parallel.json"))
    reply = await client.chat.completions.create(model="openai:gpt-3.5-turbo", messages=HELLO)
    recorded = _recorded("openai/chat.text.json")
    assert reply.choices[0].message.content == recorded["choices"][0]["message"]["content"]
    assert reply.usage is not None and reply.usage.total_tokens == recorded["usage"]["total_tokens"]
    assert upstream.requests[0].header("authorization") == "Bearer sk-upstream-openai"
    assert upstream.requests[0].body["model"] == "gpt-3.5-turbo"

    tools = await client.chat.completions.create(model="openai:gpt-4o", messages=HELLO, tools=[WEATHER_TOOL])
    recorded_calls = _recorded("openai/chat.tool_calls.parallel.json")["choices"][0]["message"]["tool_calls"]
    calls = tools.choices[0].message.tool_calls or []
    assert [(c.id, c.function.name, json.loads(c.function.arguments)) for c in calls] == [
        (c["id"], c["function"]["name"], json.loads(c["function"]["arguments"])) for c in recorded_calls
    ]
    assert tools.choices[0].finish_reason == "tool_calls"


async def test_openai_streams_text_and_parallel_tool_calls(client: openai.AsyncOpenAI, upstream: ReplayServer) -> None:
    upstream.reply(
        load("openai/chat.stream.text.include_usage.sse"),
        load("openai/chat.stream.tool_calls.parallel.include_usage.sse"),
    )
    text, _, chunks = await _stream(client, model="openai:gpt-4o", messages=HELLO)
    assert text == "".join(_sse_contents("openai/chat.stream.text.include_usage.sse"))
    assert (
        chunks[-1].usage is not None
        and chunks[-1].usage.total_tokens == _sse_usage("openai/chat.stream.text.include_usage.sse")["total_tokens"]
    )

    _, calls, chunks = await _stream(client, model="openai:gpt-4o", messages=HELLO, tools=[WEATHER_TOOL])
    assert len(calls) == 2
    for _, name, arguments in calls.values():
        assert name and json.loads(arguments)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["tool_calls"]


async def test_openai_embeddings(client: openai.AsyncOpenAI, upstream: ReplayServer) -> None:
    upstream.reply(load("openai/embeddings.float.json"))
    result = await client.embeddings.create(
        model="openai:text-embedding-3-small", input=["hello"], encoding_format="float"
    )
    recorded = _recorded("openai/embeddings.float.json")
    assert len(result.data[0].embedding) == len(recorded["data"][0]["embedding"])
    assert result.data[0].embedding[0] == pytest.approx(recorded["data"][0]["embedding"][0], rel=1e-6)
    assert result.usage.prompt_tokens == recorded["usage"]["prompt_tokens"]


async def test_openai_errors_raise_the_sdk_exceptions(client: openai.AsyncOpenAI, upstream: ReplayServer) -> None:
    upstream.reply(
        load("openai/error.401.invalid_api_key.json"),
        load("openai/error.404.model_not_found.json"),
        load("openai/error.400.missing_required_parameter.json"),
    )
    with pytest.raises(openai.AuthenticationError) as auth:
        await client.chat.completions.create(model="openai:gpt-4o", messages=HELLO)
    assert auth.value.code == "invalid_api_key"
    with pytest.raises(openai.NotFoundError) as missing:
        await client.chat.completions.create(model="openai:this-model-does-not-exist", messages=HELLO)
    assert missing.value.code == "model_not_found"
    assert "does not exist" in missing.value.message
    with pytest.raises(openai.BadRequestError) as bad:
        await client.chat.completions.create(model="openai:gpt-4o", messages=HELLO)
    assert bad.value.code == "missing_required_parameter"
    assert len(upstream.requests) == 3  # none of these is retried


# -- Azure OpenAI -----------------------------------------------------------------------------


async def test_azure_plain_and_stream(client: openai.AsyncOpenAI, upstream: ReplayServer) -> None:
    upstream.reply(load("azure-openai/chat.text.json"), load("azure-openai/chat.stream.text.sse"))
    reply = await client.chat.completions.create(model="azure:gpt-4o-mini", messages=HELLO)
    assert (
        reply.choices[0].message.content == _recorded("azure-openai/chat.text.json")["choices"][0]["message"]["content"]
    )
    first = upstream.requests[0]
    assert first.path == "/openai/deployments/gpt-4o-mini/chat/completions"
    assert first.header("api-key") == "azure-upstream" and "api-version" in first.query
    text, _, chunks = await _stream(client, model="azure:gpt-4o-mini", messages=HELLO)
    assert text == "".join(_sse_contents("azure-openai/chat.stream.text.sse"))
    assert chunks[-1].usage is not None


# -- Anthropic --------------------------------------------------------------------------------


async def test_anthropic_plain_stream_and_tools(client: openai.AsyncOpenAI, upstream: ReplayServer) -> None:
    upstream.reply(
        load("anthropic/messages.text.json"),
        load("anthropic/messages.stream.text.sse"),
        load("anthropic/messages.stream.tool_use.sse"),
    )
    reply = await client.chat.completions.create(model="anthropic:claude-haiku-4-5", messages=HELLO, max_tokens=100)
    recorded = _recorded("anthropic/messages.text.json")
    assert reply.choices[0].message.content == "".join(b["text"] for b in recorded["content"] if b["type"] == "text")
    assert reply.usage is not None and reply.usage.completion_tokens == recorded["usage"]["output_tokens"]
    sent = upstream.requests[0]
    assert (sent.path, sent.header("x-api-key"), sent.body["max_tokens"]) == ("/v1/messages", "sk-ant-upstream", 100)

    text, _, chunks = await _stream(client, model="anthropic:claude-haiku-4-5", messages=HELLO)
    assert text and chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0

    _, calls, chunks = await _stream(client, model="anthropic:claude-haiku-4-5", messages=HELLO, tools=[WEATHER_TOOL])
    assert calls and all(
        call_id and name and json.loads(arguments) is not None for call_id, name, arguments in calls.values()
    )
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["tool_calls"]


async def test_anthropic_errors_raise_the_sdk_exceptions(client: openai.AsyncOpenAI, upstream: ReplayServer) -> None:
    # A 429 is retried (three attempts by default) before it reaches the client.
    upstream.reply(
        load("anthropic/error.404.not_found_error.json"), *[load("anthropic/error.429.rate_limit_error.json")] * 3
    )
    with pytest.raises(openai.NotFoundError):
        await client.chat.completions.create(model="anthropic:claude-nope", messages=HELLO)
    with pytest.raises(openai.RateLimitError) as limited:
        await client.chat.completions.create(model="anthropic:claude-haiku-4-5", messages=HELLO)
    assert limited.value.code == "rate_limit_error"
    assert len(upstream.requests) == 4


# -- Gemini -----------------------------------------------------------------------------------


async def test_gemini_plain_stream_and_function_calls(client: openai.AsyncOpenAI, upstream: ReplayServer) -> None:
    upstream.reply(
        load("gemini/generateContent.text.json"),
        load("gemini/streamGenerateContent.alt-sse.text.sse"),
        load("gemini/generateContent.functionCall.json"),
    )
    reply = await client.chat.completions.create(model="gemini:gemini-2.0-flash", messages=HELLO)
    recorded = _recorded("gemini/generateContent.text.json")
    assert reply.choices[0].message.content == "".join(
        p.get("text", "") for p in recorded["candidates"][0]["content"]["parts"]
    )
    assert reply.usage is not None and reply.usage.prompt_tokens == recorded["usageMetadata"]["promptTokenCount"]
    sent = upstream.requests[0]
    assert sent.path.endswith("/models/gemini-2.0-flash:generateContent")
    assert sent.header("x-goog-api-key") == "gemini-upstream"

    text, _, chunks = await _stream(client, model="gemini:gemini-2.0-flash", messages=HELLO)
    assert text and chunks[-1].usage is not None
    assert upstream.requests[1].query.get("alt") == "sse"

    tools = await client.chat.completions.create(model="gemini:gemini-2.0-flash", messages=HELLO, tools=[WEATHER_TOOL])
    assert tools.choices[0].finish_reason == "tool_calls"
    assert tools.choices[0].message.tool_calls and tools.choices[0].message.tool_calls[0].function.name


async def test_gemini_not_found(client: openai.AsyncOpenAI, upstream: ReplayServer) -> None:
    upstream.reply(load("gemini/error.404.not_found.json"))
    with pytest.raises(openai.NotFoundError):
        await client.chat.completions.create(model="gemini:gemini-nope", messages=HELLO)


# -- Keys -------------------------------------------------------------------------------------


async def test_every_provider_is_known_without_a_config_file(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        await client.chat.completions.create(model="unknown-provider:model", messages=HELLO)


def _sse_events(name: str) -> list[Any]:
    body = load(name).body.decode()
    return [json.loads(line[6:]) for line in body.splitlines() if line.startswith("data: {")]


def _sse_contents(name: str) -> list[str]:
    return [c["choices"][0]["delta"].get("content") or "" for c in _sse_events(name) if c.get("choices")]


def _sse_usage(name: str) -> Any:
    return next(c["usage"] for c in _sse_events(name) if c.get("usage"))
