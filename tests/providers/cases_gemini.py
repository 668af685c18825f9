"""Conformance cases of the Gemini adapter: every recording under fixtures/upstream/gemini/.

Where the recording kept its request, the case sends the OpenAI equivalent and checks the
contents, system instruction and generation config the adapter sent against the recorded ones
(tools differ on purpose: the gateway sends plain JSON Schema as ``parametersJsonSchema``).
Expected values are the recordings' own; a stream's usage is its LAST ``usageMetadata``.
"""

from __future__ import annotations

from typing import Any

from tests.providers.conformance import KEY, Case, Choice, Error, Expect, Sent, ToolCall, Usage
from tests.providers.replay import load, request_body

HEADERS = {"x-goog-api-key": KEY}


def _recorded(name: str) -> dict[str, Any]:
    body = request_body(name)
    assert body is not None, name
    return body


def _system_and_user(sent: dict[str, Any]) -> list[dict[str, Any]]:
    messages = []
    if "systemInstruction" in sent:
        messages.append({"role": "system", "content": sent["systemInstruction"]["parts"][0]["text"]})
    messages.append({"role": "user", "content": sent["contents"][0]["parts"][0]["text"]})
    return messages


def _sent(path: str, sent: dict[str, Any], *, stream: bool, config: bool = True) -> Sent:
    body: dict[str, Any] = {"contents": sent["contents"]}
    if "systemInstruction" in sent:
        body["systemInstruction"] = {"parts": sent["systemInstruction"]["parts"]}
    if config and sent.get("generationConfig"):
        body["generationConfig"] = sent["generationConfig"]
    return Sent(
        path=path,
        query={"alt": "sse"} if stream else {},
        headers=HEADERS,
        absent_headers=("authorization",),
        body=body,
        absent_body=() if sent.get("generationConfig") else ("generationConfig",),
    )


_TEXT = _recorded("gemini/generateContent.text.json")
_CALL = _recorded("gemini/generateContent.functionCall.json")
_STREAM_TEXT = _recorded("gemini/streamGenerateContent.alt-sse.text.sse")
_STREAM_CALL = _recorded("gemini/streamGenerateContent.alt-sse.functionCall.sse")
_ARRAY = _recorded("gemini/streamGenerateContent.json-array.functionCall.json")

_SUM_NUMBERS = {
    "type": "function",
    "function": {
        "name": "sum_numbers",
        "description": "Add two numbers together and return the result",
        "parameters": {
            "type": "object",
            "properties": {
                "a": {"type": "number", "description": "The first number to add"},
                "b": {"type": "number", "description": "The second number to add"},
            },
            "required": ["a", "b"],
        },
    },
}


def _function(name: str, description: str, argument: str) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {
                "type": "object",
                "properties": {argument: {"type": "string"}},
                "required": [argument],
            },
        },
    }


CASES: list[Case] = [
    # --- generateContent -----------------------------------------------------------------------
    Case(
        id="text-with-thoughts",
        provider_type="gemini",
        fixture="gemini/generateContent.text.json",
        call="chat",
        request={"model": "gemini-3-pro-preview", "messages": _system_and_user(_TEXT)},
        expect=Expect(
            choices=(Choice(text="Hello! How can I help you today?"),),
            # Thoughts (204) count as completion tokens, as OpenAI counts reasoning; total as recorded.
            usage=Usage(prompt_tokens=3, completion_tokens=213, total_tokens=216, reasoning_tokens=204),
            model="gemini-3-pro-preview",
        ),
        sent=_sent("/v1beta/models/gemini-3-pro-preview:generateContent", _TEXT, stream=False),
    ),
    Case(
        id="function-call",
        provider_type="gemini",
        fixture="gemini/generateContent.functionCall.json",
        call="chat",
        request={
            "model": "gemini-2.0-flash-001",
            "messages": _system_and_user(_CALL),
            "tools": [_SUM_NUMBERS],
            "stop": _CALL["generationConfig"]["stopSequences"],
        },
        expect=Expect(
            choices=(
                Choice(tool_calls=(ToolCall("sum_numbers", '{"a":10000,"b":20000}'),), finish_reason="tool_calls"),
            ),
            usage=Usage(prompt_tokens=127, completion_tokens=7),
            model="gemini-2.0-flash-001",
        ),
        sent=_sent("/v1beta/models/gemini-2.0-flash-001:generateContent", _CALL, stream=False),
    ),
    # --- streamGenerateContent -----------------------------------------------------------------
    Case(
        id="stream-text",
        provider_type="gemini",
        fixture="gemini/streamGenerateContent.alt-sse.text.sse",
        call="stream",
        request={"model": "gemini-2.0-flash-exp", "messages": _system_and_user(_STREAM_TEXT), "temperature": 0.0},
        expect=Expect(
            choices=(Choice(text="The capital of France is Paris.\n"),),
            # The last event's usageMetadata (13/8/21), not the earlier events' (15/0/15).
            usage=Usage(prompt_tokens=13, completion_tokens=8, total_tokens=21),
            model="gemini-2.0-flash-exp",
        ),
        sent=_sent("/v1beta/models/gemini-2.0-flash-exp:streamGenerateContent", _STREAM_TEXT, stream=True),
    ),
    Case(
        id="stream-function-call",
        provider_type="gemini",
        fixture="gemini/streamGenerateContent.alt-sse.functionCall.sse",
        call="stream",
        request={
            "model": "gemini-2.0-flash",
            "messages": _system_and_user(_STREAM_CALL),
            "tools": [
                _function("get_capital", "Get the capital of a country.", "country"),
                _function("get_temperature", "Get the temperature in a city.", "city"),
            ],
        },
        expect=Expect(
            choices=(
                Choice(tool_calls=(ToolCall("get_capital", '{"country":"France"}'),), finish_reason="tool_calls"),
            ),
            usage=Usage(prompt_tokens=52, completion_tokens=5),
        ),
        sent=_sent("/v1beta/models/gemini-2.0-flash:streamGenerateContent", _STREAM_CALL, stream=True),
    ),
    Case(
        # A server that ignores alt=sse answers with one JSON array of responses.
        id="stream-json-array-after-function-response",
        provider_type="gemini",
        fixture="gemini/streamGenerateContent.json-array.functionCall.json",
        call="stream",
        request={
            "model": "gemini-2.5-flash",
            "messages": [
                {"role": "user", "content": _ARRAY["contents"][0]["parts"][0]["text"]},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_27db36357f594e73b557ec8f70da9e87",
                            "type": "function",
                            "function": {"name": "pelican_name_generator", "arguments": "{}"},
                        }
                    ],
                },
                {
                    "role": "tool",
                    "tool_call_id": "call_27db36357f594e73b557ec8f70da9e87",
                    "content": '{"output": "Charles"}',
                },
            ],
            "tools": [
                {
                    "type": "function",
                    "function": {"name": "pelican_name_generator", "parameters": {"properties": {}, "type": "object"}},
                }
            ],
            "safetySettings": _ARRAY["safetySettings"],
            "generationConfig": _ARRAY["generationConfig"],
        },
        expect=Expect(
            choices=(Choice(tool_calls=(ToolCall("pelican_name_generator", "{}"),), finish_reason="tool_calls"),),
            usage=Usage(prompt_tokens=105, completion_tokens=13),
            model="gemini-2.5-flash",
        ),
        sent=Sent(
            path="/v1beta/models/gemini-2.5-flash:streamGenerateContent",
            query={"alt": "sse"},
            headers=HEADERS,
            body={
                "contents": [
                    _ARRAY["contents"][0],
                    {"role": "model", "parts": [{"functionCall": {"name": "pelican_name_generator", "args": {}}}]},
                    {
                        "role": "user",
                        "parts": [
                            {"functionResponse": {"name": "pelican_name_generator", "response": {"output": "Charles"}}}
                        ],
                    },
                ],
                "safetySettings": _ARRAY["safetySettings"],
                "generationConfig": _ARRAY["generationConfig"],
            },
        ),
    ),
    # --- errors --------------------------------------------------------------------------------
    Case(
        # Status 400 with Content-Type text/event-stream and a plain JSON error body.
        id="stream-error-400-api-key-invalid",
        provider_type="gemini",
        fixture="gemini/error.400.api_key_invalid.on-stream.json",
        call="stream",
        model="gemini-2.0-flash-exp",
        expect=Expect(
            error=Error(
                code="INVALID_ARGUMENT",
                retryable=False,
                upstream_status=400,
                upstream_code="INVALID_ARGUMENT",
                message="API key not valid. Please pass a valid API key.",
            )
        ),
    ),
    Case(
        id="error-404-not-found",
        provider_type="gemini",
        fixture="gemini/error.404.not_found.json",
        call="chat",
        model="gemini-3.6-flahs",
        expect=Expect(
            error=Error(
                code="NOT_FOUND",
                retryable=False,
                upstream_status=404,
                upstream_code="NOT_FOUND",
                message=load("gemini/error.404.not_found.json").json()["error"]["message"],
            )
        ),
    ),
    Case(
        id="error-429-resource-exhausted",
        provider_type="gemini",
        fixture="gemini/error.429.resource_exhausted.json",
        call="chat",
        expect=Expect(
            error=Error(
                code="RESOURCE_EXHAUSTED",
                retryable=True,
                upstream_status=429,
                upstream_code="RESOURCE_EXHAUSTED",
                message_contains=("Resource exhausted",),
            )
        ),
    ),
    Case(
        id="stream-error-429-retry-info",
        provider_type="gemini",
        fixture="gemini/error.429.retry_info.vercel-fixture.json",
        call="stream",
        expect=Expect(error=Error(code="RESOURCE_EXHAUSTED", retryable=True, upstream_status=429, retry_after_s=34.4)),
    ),
    # --- models --------------------------------------------------------------------------------
    Case(
        id="models",
        provider_type="gemini",
        fixture="gemini/models.list.json",
        call="models",
        expect=Expect(
            models=tuple(
                m["name"].removeprefix("models/")
                for m in load("gemini/models.list.json").json()["models"]
                if {"generateContent", "embedContent"} & set(m.get("supportedGenerationMethods", []))
            )
        ),
        sent=Sent(path="/v1beta/models", method="GET", query={"pageSize": "1000"}, headers=HEADERS),
    ),
    # --- refused before any request ------------------------------------------------------------
    Case(
        id="refuses-logit-bias",
        provider_type="gemini",
        fixture=(),
        call="chat",
        request={"model": "gemini-2.0-flash", "messages": [{"role": "user", "content": "Hi"}], "logit_bias": {"1": 2}},
        expect=Expect(error=Error(code="INVALID_ARGUMENT", retryable=False, reason="UNSUPPORTED_FIELD")),
    ),
]
