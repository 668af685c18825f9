"""The prompt token ceiling never falls below what a real upstream counted.

Each recorded request under ../shared/fixtures/upstream/ is read into the canonical request the
gateway would have built for it, and its ceiling compared with the ``prompt_tokens`` (or
``input_tokens``, ``promptTokenCount``) the upstream reported for that very request.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format

from gateway.chat.v1 import chat_pb2
from gateway_common.openai_wire.embeddings import parse_embedding_request
from gateway_common.openai_wire.requests import parse_chat_request
from gateway_common.tokens import (
    completion_token_ceiling,
    embedding_token_ceiling,
    prompt_token_ceiling,
    text_ceiling,
)

UPSTREAM = Path(__file__).parents[2].parent / "shared/fixtures/upstream"
_REPORTED = re.compile(r'"(?:prompt_tokens|input_tokens|promptTokenCount)"\s*:\s*(\d+)')


def _text(role: int, text: str) -> chat_pb2.Message:
    return chat_pb2.Message(role=role, text=text)  # type: ignore[arg-type]


def _tool(name: str, description: str | None, parameters: Any) -> chat_pb2.Tool:
    tool = chat_pb2.Tool(type="function")
    tool.function.name = name
    if description:
        tool.function.description = description
    json_format.ParseDict(parameters or {}, tool.function.parameters)
    return tool


def _from_anthropic(body: dict[str, Any]) -> chat_pb2.ChatCompletionRequest:
    """What the gateway's OpenAI edge would have received for this Anthropic request."""
    request = chat_pb2.ChatCompletionRequest(model=body["model"])
    system = body.get("system")
    if system:
        text = system if isinstance(system, str) else "".join(block.get("text", "") for block in system)
        request.messages.append(_text(chat_pb2.ROLE_SYSTEM, text))
    for message in body["messages"]:
        role = chat_pb2.ROLE_USER if message["role"] == "user" else chat_pb2.ROLE_ASSISTANT
        content = message["content"]
        if isinstance(content, str):
            request.messages.append(_text(role, content))
            continue
        canonical = chat_pb2.Message(role=role)  # type: ignore[arg-type]
        for block in content:
            if block["type"] == "text":
                canonical.parts.add(text=block["text"])
            elif block["type"] == "tool_use":
                call = canonical.tool_calls.add(id=block["id"], type="function")
                call.function.name = block["name"]
                call.function.arguments = json.dumps(block["input"])
            elif block["type"] == "tool_result":
                result = block["content"]
                text = result if isinstance(result, str) else "".join(b.get("text", "") for b in result)
                request.messages.append(
                    chat_pb2.Message(role=chat_pb2.ROLE_TOOL, text=text, tool_call_id=block["tool_use_id"])
                )
        if canonical.parts or canonical.tool_calls:
            request.messages.append(canonical)
    for tool in body.get("tools", []):
        request.tools.append(_tool(tool["name"], tool.get("description"), tool.get("input_schema")))
    return request


def _from_gemini(body: dict[str, Any]) -> chat_pb2.ChatCompletionRequest:
    """What the gateway's OpenAI edge would have received for this Gemini request."""
    request = chat_pb2.ChatCompletionRequest(model="gemini")
    system = body.get("systemInstruction")
    if system:
        request.messages.append(_text(chat_pb2.ROLE_SYSTEM, "".join(p.get("text", "") for p in system["parts"])))
    for content in body["contents"]:
        role = chat_pb2.ROLE_ASSISTANT if content.get("role") == "model" else chat_pb2.ROLE_USER
        message = chat_pb2.Message(role=role)  # type: ignore[arg-type]
        for part in content["parts"]:
            call = part.get("function_call") or part.get("functionCall")
            answer = part.get("function_response") or part.get("functionResponse")
            if "text" in part:
                message.parts.add(text=part["text"])
            elif call:
                tool_call = message.tool_calls.add(id=call.get("id", "c"), type="function")
                tool_call.function.name = call["name"]
                tool_call.function.arguments = json.dumps(call.get("args", {}))
            elif answer:
                request.messages.append(
                    chat_pb2.Message(role=chat_pb2.ROLE_TOOL, text=json.dumps(answer["response"]), tool_call_id="c")
                )
        if message.parts or message.tool_calls:
            request.messages.append(message)
    for tools in body.get("tools", []):
        for declaration in tools.get("functionDeclarations", []):
            request.tools.append(
                _tool(declaration["name"], declaration.get("description"), declaration.get("parameters"))
            )
    return request


def _cases() -> list[tuple[str, int, int]]:
    cases: list[tuple[str, int, int]] = []
    for recorded in sorted(UPSTREAM.glob("*/*.request.json")):
        base = str(recorded).removesuffix(".request.json")
        response = next((Path(base + s) for s in (".json", ".sse") if Path(base + s).exists()), None)
        found = _REPORTED.findall(response.read_text(encoding="utf-8")) if response else []
        if not found:
            continue  # an error, a model list, or an upstream that reports no usage
        reported = max(int(value) for value in found)
        body = json.loads(recorded.read_text(encoding="utf-8"))["body"]
        provider = recorded.parent.name
        if provider == "anthropic":
            ceiling = prompt_token_ceiling(_from_anthropic(body))
        elif provider == "gemini":
            ceiling = prompt_token_ceiling(_from_gemini(body))
        elif "input" in body:
            ceiling = embedding_token_ceiling(parse_embedding_request(body)[0])
        elif "messages" in body:
            ceiling = prompt_token_ceiling(parse_chat_request(body)[0])
        else:
            # A legacy completions prompt (a string or a list of them) read as one user message.
            prompt = body.pop("prompt")
            body["messages"] = [{"role": "user", "content": "".join(prompt) if isinstance(prompt, list) else prompt}]
            ceiling = prompt_token_ceiling(parse_chat_request(body)[0])
        cases.append((f"{provider}/{recorded.name}", reported, ceiling))
    return cases


CASES = _cases()


def test_the_recordings_cover_every_provider_family() -> None:
    providers = {name.split("/")[0] for name, _, _ in CASES}
    assert {"openai", "azure-openai", "anthropic", "gemini", "openai-compatible"} <= providers
    assert len(CASES) >= 15


@pytest.mark.parametrize(("name", "reported", "ceiling"), CASES, ids=[c[0] for c in CASES])
def test_the_ceiling_is_never_below_the_upstreams_count(name: str, reported: int, ceiling: int) -> None:
    assert ceiling >= reported, f"{name}: the upstream counted {reported} prompt tokens, the ceiling is {ceiling}"


def test_text_counts_one_token_per_utf8_byte() -> None:
    assert text_ceiling("") == 0
    assert text_ceiling("hello") == 5
    assert text_ceiling("日本語") == 9  # 3 bytes each: a byte-level BPE may give each byte a token
    assert text_ceiling("\ud800") == 3  # a lone surrogate never raises


def test_images_and_tools_add_their_worst_case() -> None:
    plain = chat_pb2.ChatCompletionRequest(messages=[_text(chat_pb2.ROLE_USER, "look")])
    with_image = chat_pb2.ChatCompletionRequest()
    message = with_image.messages.add(role=chat_pb2.ROLE_USER)
    message.parts.add(text="look")
    message.parts.add().image_url.url = "https://example.com/cat.png"
    assert prompt_token_ceiling(with_image) >= prompt_token_ceiling(plain) + 1105  # OpenAI's 2048x768 high detail
    with_tools = chat_pb2.ChatCompletionRequest(messages=[_text(chat_pb2.ROLE_USER, "look")])
    with_tools.tools.append(_tool("f", None, {}))
    assert prompt_token_ceiling(with_tools) >= prompt_token_ceiling(plain) + 346  # Anthropic's tool prompt


def test_a_streamed_chunk_counts_at_least_one_token_per_choice() -> None:
    chunk = chat_pb2.ChatCompletionChunk()
    chunk.choices.add(index=0).delta.content = "héllo"
    chunk.choices.add(index=1)
    assert completion_token_ceiling(chunk) == 6 + 1
