"""The official SDKs and LangChain, with default settings, through the edge of the real suite.

One suite with no config file: the mock provider, plus OpenAI and Gemini pointed at a loopback
server replaying their recorded answers, so that what reaches an OpenAI-style upstream can be
checked too. The clients are the official ``openai`` SDKs (Python here, Node in
``sdk_conformance.test.mjs`` under ``node --test``), LangChain's ``ChatOpenAI`` and
``OpenAIEmbeddings`` (whose default sends token arrays, tokenized with tiktoken).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import secrets
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import pytest_asyncio

from suite.supervisor import Suite, free_port
from tests.edge.openai_schema import errors as spec_errors
from tests.providers.replay import ReplayServer, load

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
NODE_TEST = Path(__file__).with_name("sdk_conformance.test.mjs")
HELLO = [{"role": "user", "content": "Hello there, gateway!"}]
WEATHER = {
    "type": "function",
    "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}},
}
CODE_EXEC = {"type": "custom", "custom": {"name": "code_exec", "description": "Runs Python code."}}
# tiktoken downloads its vocabularies at first use, which this machine cannot; the npm package
# js-tiktoken ships the same cl100k_base ranks, and tiktoken takes them from its cache directory
# (it checks the file's SHA-256 against the published one, so only the genuine vocabulary loads).
CL100K_URL = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"
CL100K_JS = ROOT / "node_modules" / "js-tiktoken" / "dist" / "ranks" / "cl100k_base.js"


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def upstream() -> AsyncIterator[ReplayServer]:
    server = ReplayServer()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture(scope="module")
def edge(upstream: ReplayServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """The suite with OpenAI and Gemini replayed; yields the edge URL and a gateway key."""
    key = f"gw-{secrets.token_urlsafe(32)}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "OPENAI_", "GEMINI_"))}
    env.update(
        {
            "GATEWAY_TENANT_KEYS": f"acme:{key}",
            "GATEWAY_RATE_LIMIT_RPM": "10000",
            "OPENAI_API_KEY": "sk-upstream-openai",
            "OPENAI_BASE_URL": f"{upstream.url}/v1",
            "GEMINI_API_KEY": "gemini-upstream",
            "GEMINI_BASE_URL": upstream.url,
        }
    )
    data: Path = tmp_path_factory.mktemp("sdk-conformance")
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


@pytest.fixture(scope="module")
def tiktoken_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A tiktoken cache holding cl100k_base, built from js-tiktoken's ranks (see CL100K_JS)."""
    assert CL100K_JS.exists(), f"{CL100K_JS} is missing: run `make install` (npm install) first"
    text = CL100K_JS.read_text(encoding="utf-8")
    ranks = json.loads(text[text.index("{") : text.rindex("}") + 1])["bpe_ranks"]
    lines = []
    for row in ranks.split("\n"):
        if row:
            _, offset, *tokens = row.split(" ")
            lines.extend(f"{token} {int(offset) + i}\n" for i, token in enumerate(tokens))
    folder = tmp_path_factory.mktemp("tiktoken")
    (folder / hashlib.sha1(CL100K_URL.encode()).hexdigest()).write_text("".join(lines), encoding="utf-8")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TIKTOKEN_CACHE_DIR", str(folder))
        yield


# -- the official Python SDK ------------------------------------------------------------------


async def test_python_sdk_chat_stream_and_tools(client: openai.AsyncOpenAI) -> None:
    raw = await client.chat.completions.with_raw_response.create(model="mock:sdk", messages=HELLO)
    assert spec_errors("CreateChatCompletionResponse", json.loads(raw.text)) == []
    completion = raw.parse()
    assert completion.choices[0].message.content and completion.choices[0].finish_reason == "stop"

    stream = await client.chat.completions.create(
        model="mock:sdk", messages=HELLO, stream=True, stream_options={"include_usage": True}
    )
    text, usage = "", None
    async for chunk in stream:
        assert spec_errors("CreateChatCompletionStreamResponse", chunk.model_dump(exclude_unset=True)) == []
        text += "".join(choice.delta.content or "" for choice in chunk.choices)
        usage = chunk.usage or usage
    assert text == completion.choices[0].message.content
    assert usage is not None and usage.completion_tokens > 0

    called = await client.chat.completions.create(model="mock:tools", messages=HELLO, tools=[WEATHER])  # type: ignore[list-item]
    assert called.choices[0].finish_reason == "tool_calls"
    call = called.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert call.function.name == "get_weather"  # type: ignore[union-attr]


async def test_python_sdk_embeddings_from_texts_and_token_arrays(client: openai.AsyncOpenAI) -> None:
    texts = await client.embeddings.create(model="mock:embed", input=["a", "b"])
    for raw_input in ([1234, 5678], [[1234, 5678], [9]]):
        # The spec types vectors as float arrays only; the SDK's default asks for base64 (also checked).
        raw = await client.embeddings.with_raw_response.create(
            model="mock:embed", input=raw_input, encoding_format="float"
        )
        assert spec_errors("CreateEmbeddingResponse", json.loads(raw.text)) == []
        assert (await client.embeddings.create(model="mock:embed", input=raw_input)).data == raw.parse().data
        tokens = raw.parse()
        assert len(tokens.data) == (1 if isinstance(raw_input[0], int) else 2)
        assert tokens.data[0].embedding and tokens.data[0].embedding != texts.data[0].embedding
        assert tokens.usage.prompt_tokens == sum(len(t) if isinstance(t, list) else 1 for t in raw_input)


async def test_token_arrays_reach_openai_and_gemini_refuses_them(
    client: openai.AsyncOpenAI, upstream: ReplayServer
) -> None:
    upstream.reply(load("openai/embeddings.float.json"))
    await client.embeddings.create(model="openai:text-embedding-3-small", input=[[1234, 5678]])
    assert upstream.requests[-1].body["input"] == [[1234, 5678]]
    with pytest.raises(openai.BadRequestError) as refused:
        await client.embeddings.create(model="gemini:text-embedding-004", input=[1234, 5678])
    assert refused.value.param == "input"
    assert "Gemini" in refused.value.message
    assert len(upstream.requests) == 1


async def test_function_role_custom_tools_and_allowed_tools_reach_openai(
    client: openai.AsyncOpenAI, upstream: ReplayServer
) -> None:
    messages: list[Any] = [
        {"role": "user", "content": "Weather in Paris, then compute 6*7."},
        {"role": "assistant", "content": None, "function_call": {"name": "get_weather", "arguments": "{}"}},
        {"role": "function", "name": "get_weather", "content": '{"temperature": 21}'},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "call_1", "type": "custom", "custom": {"name": "code_exec", "input": "print(6*7)"}}],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "42"},
    ]
    choice = {
        "type": "allowed_tools",
        "allowed_tools": {"mode": "auto", "tools": [{"type": "custom", "custom": {"name": "code_exec"}}]},
    }
    upstream.reply(load("openai/chat.text.json"))
    completion = await client.chat.completions.create(
        model="openai:gpt-4o",
        messages=messages,
        tools=[WEATHER, CODE_EXEC],
        tool_choice=choice,  # type: ignore[arg-type]
    )
    assert completion.choices[0].message.content
    sent = upstream.requests[-1].body
    assert sent["messages"] == messages
    assert sent["tools"] == [WEATHER, CODE_EXEC] and sent["tool_choice"] == choice


async def test_custom_tools_to_gemini_are_refused_naming_the_tool(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        await client.chat.completions.create(
            model="gemini:gemini-2.0-flash",
            messages=HELLO,
            tools=[WEATHER, CODE_EXEC],  # type: ignore[list-item]
        )
    assert refused.value.param == "tools[1]"


# -- the official Node SDK --------------------------------------------------------------------


async def test_node_sdk(edge: tuple[str, str]) -> None:
    node = shutil.which("node")
    assert node is not None, "node is not installed"
    assert (ROOT / "node_modules" / "openai").exists(), "the openai npm package is missing: run `npm install`"
    url, key = edge
    # Asynchronously, so the event loop (and the replay server on it) keeps running meanwhile.
    process = await asyncio.create_subprocess_exec(
        node,
        "--test",
        str(NODE_TEST),
        cwd=ROOT,
        env={**os.environ, "GATEWAY_EDGE_URL": url, "GATEWAY_TEST_KEY": key},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), 90)
    report = output.decode(errors="replace")
    assert process.returncode == 0, report
    assert "# fail 0" in report and "# pass 5" in report, report


# -- LangChain ----------------------------------------------------------------------------------


@pytest_asyncio.fixture(loop_scope="session")
async def http() -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for LangChain's SDK clients, closed after the test.

    LangChain never closes the client it makes itself, so its sockets would be reclaimed by the
    garbage collector later, as ResourceWarnings in some other test. Handing it one changes nothing
    in what it sends.
    """
    async with httpx.AsyncClient() as client:
        yield client


async def test_langchain_chat_invoke_stream_and_tools(edge: tuple[str, str], http: httpx.AsyncClient) -> None:
    from langchain_openai import ChatOpenAI

    url, key = edge
    common: dict[str, Any] = {"base_url": f"{url}/v1", "api_key": key, "max_retries": 0, "http_async_client": http}
    llm = ChatOpenAI(model="mock:langchain", **common)
    answer = await llm.ainvoke("Hello from LangChain")
    assert "LangChain" in str(answer.content)
    pieces = [str(chunk.content) async for chunk in llm.astream("Hello from LangChain")]
    assert "".join(pieces) == answer.content

    def get_weather(city: str) -> str:
        """The weather in a city."""
        return "sunny"

    tools = ChatOpenAI(model="mock:tools", **common).bind_tools([get_weather])
    called = await tools.ainvoke("Weather in Paris?")
    assert [call["name"] for call in called.tool_calls] == ["get_weather"]  # type: ignore[attr-defined]


async def test_langchain_embeddings_with_default_settings_send_token_arrays(
    edge: tuple[str, str], upstream: ReplayServer, tiktoken_cache: None, http: httpx.AsyncClient
) -> None:
    from langchain_openai import OpenAIEmbeddings

    url, key = edge
    common: dict[str, Any] = {"base_url": f"{url}/v1", "api_key": key, "max_retries": 0, "http_async_client": http}
    embeddings = OpenAIEmbeddings(model="mock:embed", **common)
    vectors = await embeddings.aembed_documents(["hello world", "a second document"])
    assert len(vectors) == 2 and all(vectors) and vectors[0] != vectors[1]
    assert await embeddings.aembed_query("hello world") == vectors[0]

    upstream.reset()
    upstream.reply(load("openai/embeddings.float.json"))
    await OpenAIEmbeddings(model="openai:text-embedding-3-small", **common).aembed_query("hello world")
    sent = upstream.requests[-1].body["input"]
    # The default: LangChain tokenizes with tiktoken and sends token ids, not the text.
    assert sent == [[15339, 1917]], sent


async def test_the_plain_http_wire_of_a_token_array_request(edge: tuple[str, str], http: httpx.AsyncClient) -> None:
    url, key = edge
    response = await http.post(
        f"{url}/v1/embeddings",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": "mock:embed", "input": [[1, 2], [3]]},
    )
    assert response.status_code == 200, response.text
    assert spec_errors("CreateEmbeddingResponse", response.json()) == []
