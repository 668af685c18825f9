"""Conformance cases of the Anthropic adapter: every recording under fixtures/upstream/anthropic/.

Where the recording kept its request, the case sends the OpenAI equivalent and checks that the
adapter sent what the official SDK sent. Expected values are the recordings' own: text and tool
input as streamed, prompt tokens = input + cache tokens, completion tokens = the last
``message_delta``'s ``output_tokens``.
"""

from __future__ import annotations

import json
from typing import Any

from tests.providers.conformance import KEY, Case, Choice, Error, Expect, Sent, ToolCall, Usage
from tests.providers.replay import load, request_body

HEADERS = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}


def _tools(sent: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "type": "function",
            "function": {"name": t["name"], "description": t["description"], "parameters": t["input_schema"]},
        }
        for t in sent["tools"]
    ]


def _one_turn(recording: str, **extra: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The OpenAI request equivalent to a recorded one-user-turn request, and the recorded body."""
    sent = request_body(recording)
    assert sent is not None, recording
    request: dict[str, Any] = {
        "model": sent["model"],
        "messages": [{"role": "user", "content": sent["messages"][0]["content"]}],
        **extra,
    }
    if "tools" in sent:
        request["tools"] = _tools(sent)
    return request, sent


def _tool_result_conversation() -> tuple[dict[str, Any], dict[str, Any]]:
    sent = request_body("anthropic/messages.stream.text.sse")
    assert sent is not None
    tool_use = sent["messages"][1]["content"][0]
    tool_result = sent["messages"][2]["content"][0]
    request = {
        "model": sent["model"],
        "max_tokens": sent["max_tokens"],
        "messages": [
            {"role": "user", "content": sent["messages"][0]["content"]},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": tool_use["id"],
                        "type": "function",
                        "function": {"name": tool_use["name"], "arguments": json.dumps(tool_use["input"])},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": tool_result["tool_use_id"], "content": tool_result["content"]},
        ],
        "tools": _tools(sent),
    }
    expected = json.loads(json.dumps(sent))
    del expected["messages"][1]["content"][0]["caller"]  # a field of the SDK's beta tool runner
    return request, expected


def _sent(body: dict[str, Any], *, stream: bool) -> Sent:
    fields = {k: v for k, v in body.items() if k != "stream"}
    if stream:
        fields["stream"] = True
    return Sent(
        path="/v1/messages",
        headers=HEADERS,
        absent_headers=("authorization",),
        body=fields,
        absent_body=() if stream else ("stream",),
    )


_TEXT_REQUEST, _TEXT_SENT = _one_turn("anthropic/messages.text.json")  # max_tokens from the config default
_TEXT_2024_REQUEST, _TEXT_2024_SENT = _one_turn("anthropic/messages.text.2024.json", max_tokens=1024)
_TOOL_REQUEST, _TOOL_SENT = _one_turn("anthropic/messages.tool_use.json", max_completion_tokens=4096)
_TEXT_TOOL_REQUEST, _TEXT_TOOL_SENT = _one_turn("anthropic/messages.text_and_tool_use.json")
_STREAM_TOOL_REQUEST, _STREAM_TOOL_SENT = _one_turn("anthropic/messages.stream.tool_use.sse", max_tokens=1024)
_STREAM_2024_REQUEST, _STREAM_2024_SENT = _one_turn(
    "anthropic/messages.stream.text_then_tool_use.2024.sse", max_tokens=1024
)
_STREAM_TEXT_REQUEST, _STREAM_TEXT_SENT = _tool_result_conversation()

_WEATHER_SF = '{"location": "San Francisco, CA", "units": "f"}'

CASES: list[Case] = [
    # --- non-streamed ----------------------------------------------------------------------------
    Case(
        id="text",
        provider_type="anthropic",
        fixture="anthropic/messages.text.json",
        call="chat",
        request=_TEXT_REQUEST,
        expect=Expect(
            choices=(Choice(text="Hello! It's nice to meet you. How are you doing today?"),),
            usage=Usage(prompt_tokens=9, completion_tokens=18, cached_tokens=0),
            model="claude-sonnet-4-20250514",
        ),
        sent=_sent(_TEXT_SENT, stream=False),
    ),
    Case(
        id="text-2024",
        provider_type="anthropic",
        fixture="anthropic/messages.text.2024.json",
        call="chat",
        request=_TEXT_2024_REQUEST,
        expect=Expect(
            choices=(Choice(text=load("anthropic/messages.text.2024.json").json()["content"][0]["text"]),),
            usage=Usage(prompt_tokens=17, completion_tokens=220),
            model="claude-3-opus-20240229",
        ),
        sent=_sent(_TEXT_2024_SENT, stream=False),
    ),
    Case(
        id="tool-use",
        provider_type="anthropic",
        fixture="anthropic/messages.tool_use.json",
        call="chat",
        request=_TOOL_REQUEST,
        expect=Expect(
            choices=(
                Choice(
                    tool_calls=(
                        ToolCall("get_weather", '{"location":"Tokyo, Japan"}', id="toolu_01AoUFM2koNLsFscK6xjnLPo"),
                    ),
                    finish_reason="tool_calls",
                ),
            ),
            usage=Usage(prompt_tokens=620, completion_tokens=55, cached_tokens=0),
        ),
        sent=_sent(_TOOL_SENT, stream=False),
    ),
    Case(
        id="text-and-tool-use",
        provider_type="anthropic",
        fixture="anthropic/messages.text_and_tool_use.json",
        call="chat",
        request=_TEXT_TOOL_REQUEST,
        expect=Expect(
            choices=(
                Choice(
                    text="I'll check the current weather in San Francisco for you.",
                    tool_calls=(
                        ToolCall(
                            "get_weather", '{"location":"San Francisco, CA"}', id="toolu_0133tWTcW1kwL2KtdJQbPahU"
                        ),
                    ),
                    finish_reason="tool_calls",
                ),
            ),
            usage=Usage(prompt_tokens=401, completion_tokens=69, cached_tokens=0),
        ),
        sent=_sent(_TEXT_TOOL_SENT, stream=False),
    ),
    # --- streamed ----------------------------------------------------------------------------
    Case(
        id="stream-text-after-tool-result",
        provider_type="anthropic",
        fixture="anthropic/messages.stream.text.sse",
        call="stream",
        request=_STREAM_TEXT_REQUEST,
        expect=Expect(
            choices=(
                Choice(
                    text="The weather in San Francisco, CA is currently:\n- **Temperature:** 68°F\n"
                    "- **Condition:** Sunny\n\nIt's a nice sunny day!"
                ),
            ),
            usage=Usage(prompt_tokens=770, completion_tokens=38, cached_tokens=0),
            model="claude-haiku-4-5-20251001",
        ),
        sent=_sent(_STREAM_TEXT_SENT, stream=True),
    ),
    Case(
        id="stream-tool-use",
        provider_type="anthropic",
        fixture="anthropic/messages.stream.tool_use.sse",
        call="stream",
        request=_STREAM_TOOL_REQUEST,
        expect=Expect(
            choices=(
                Choice(
                    tool_calls=(ToolCall("get_weather", _WEATHER_SF, id="toolu_018acGYLtfR52q9yDbWaEdQZ"),),
                    finish_reason="tool_calls",
                ),
            ),
            # Prompt from message_start (656), completion from the LAST message_delta (74, not 26).
            usage=Usage(prompt_tokens=656, completion_tokens=74, cached_tokens=0),
        ),
        sent=_sent(_STREAM_TOOL_SENT, stream=True),
    ),
    Case(
        id="stream-text-then-two-tool-uses-2024",
        provider_type="anthropic",
        fixture="anthropic/messages.stream.text_then_tool_use.2024.sse",
        call="stream",
        request=_STREAM_2024_REQUEST,
        expect=Expect(
            choices=(
                Choice(
                    text="Certainly! I can help you with that information. To get the weather and current time in "
                    "San Francisco, I'll need to use two separate functions. Let me fetch that data for you.",
                    tool_calls=(
                        ToolCall(
                            "get_weather",
                            '{"location": "San Francisco, CA", "unit": "celsius"}',
                            id="toolu_014x5X91kx3fvdhpLvwXZWE2",
                        ),
                        ToolCall(
                            "get_time", '{"timezone": "America/Los_Angeles"}', id="toolu_0121kXsENLvoDZ72LCuAnCCz"
                        ),
                    ),
                    finish_reason="tool_calls",
                ),
            ),
            usage=Usage(prompt_tokens=506, completion_tokens=153, cached_tokens=0),
        ),
        sent=_sent(_STREAM_2024_SENT, stream=True),
    ),
    Case(
        id="stream-after-429-retry",
        provider_type="anthropic",
        fixture="anthropic/messages.stream.text.after-429-retry.sse",
        call="stream",
        model="claude-sonnet-4-5",
        expect=Expect(
            choices=(Choice(text="[12345,67890]"),),
            usage=Usage(prompt_tokens=135, completion_tokens=10, cached_tokens=0),
            model="claude-sonnet-4-5-20250929",
        ),
    ),
    Case(
        # The SDK fixture ends right after message_stop's data line, without the closing blank line.
        id="stream-sdk-fixture-no-trailing-newline",
        provider_type="anthropic",
        fixture="anthropic/messages.stream.basic.sdk-fixture.sse",
        call="stream",
        expect=Expect(
            choices=(Choice(text="Hello there!"),),
            usage=Usage(prompt_tokens=11, completion_tokens=6),
            model="claude-3-opus-latest",
        ),
    ),
    Case(
        id="stream-docs-basic",
        provider_type="anthropic",
        fixture="anthropic/docs-examples/stream.basic.sse",
        call="stream",
        expect=Expect(choices=(Choice(text="Hello!"),), usage=Usage(prompt_tokens=25, completion_tokens=15)),
    ),
    Case(
        id="stream-docs-text-then-tool-use",
        provider_type="anthropic",
        fixture="anthropic/docs-examples/stream.tool_use.sse",
        call="stream",
        expect=Expect(
            choices=(
                Choice(
                    text="Okay, let's check the weather for San Francisco, CA:",
                    tool_calls=(
                        ToolCall(
                            "get_weather",
                            '{"location": "San Francisco, CA", "unit": "fahrenheit"}',
                            id="toolu_01T1x1fJ34qAmk2tNTrN7Up6",
                        ),
                    ),
                    finish_reason="tool_calls",
                ),
            ),
            usage=Usage(prompt_tokens=472, completion_tokens=89),
        ),
    ),
    # --- errors ------------------------------------------------------------------------------
    Case(
        id="stream-overloaded-error-event",
        provider_type="anthropic",
        fixture="anthropic/docs-examples/stream.error.overloaded_error.sse",
        call="stream",
        expect=Expect(
            error=Error(
                code="UNAVAILABLE",
                retryable=True,
                upstream_code="overloaded_error",
                upstream_type="overloaded_error",
                message="Overloaded",
            )
        ),
    ),
    Case(
        id="error-400-invalid-request",
        provider_type="anthropic",
        fixture="anthropic/error.400.invalid_request_error.json",
        call="chat",
        expect=Expect(
            error=Error(
                code="INVALID_ARGUMENT",
                retryable=False,
                upstream_status=400,
                upstream_code="invalid_request_error",
                upstream_type="invalid_request_error",
                message="messages.0.content.1: unexpected `tool_use_id` found in `tool_result` blocks: "
                "toolu_01GHndag5wQmbzNihYmV2UBj. Each `tool_result` block must have a corresponding `tool_use` "
                "block in the previous message.",
            )
        ),
    ),
    Case(
        id="error-404-not-found",
        provider_type="anthropic",
        fixture="anthropic/error.404.not_found_error.json",
        call="chat",
        model="claude-sonet-4-5",
        expect=Expect(
            error=Error(
                code="NOT_FOUND",
                retryable=False,
                upstream_status=404,
                upstream_type="not_found_error",
                message="model: claude-sonet-4-5",
            )
        ),
    ),
    Case(
        id="error-429-rate-limit",
        provider_type="anthropic",
        fixture="anthropic/error.429.rate_limit_error.json",
        call="chat",
        expect=Expect(
            error=Error(
                code="RESOURCE_EXHAUSTED",
                retryable=True,
                upstream_status=429,
                upstream_type="rate_limit_error",
                message_contains=("would exceed your organization's rate limit",),
            )
        ),
    ),
    Case(
        # The recorded 429 answered a streaming request, before any event.
        id="stream-error-429-rate-limit",
        provider_type="anthropic",
        fixture="anthropic/error.429.rate_limit_error.json",
        call="stream",
        expect=Expect(
            error=Error(
                code="RESOURCE_EXHAUSTED", retryable=True, upstream_status=429, upstream_type="rate_limit_error"
            )
        ),
    ),
    # --- what Anthropic cannot do: refused before any request ----------------------------------
    Case(
        id="refuses-n-2",
        provider_type="anthropic",
        fixture=(),
        call="chat",
        request={"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "Hi"}], "n": 2},
        expect=Expect(error=Error(code="INVALID_ARGUMENT", retryable=False, reason="UNSUPPORTED_FIELD")),
    ),
    Case(
        id="embeddings-unimplemented",
        provider_type="anthropic",
        fixture=(),
        call="embed",
        expect=Expect(error=Error(code="UNIMPLEMENTED", retryable=False, reason="UNSUPPORTED_FIELD")),
    ),
]
