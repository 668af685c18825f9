"""The conformance suite's case structure, and how a result is reassembled and checked.

Every adapter passes the same suite (``test_conformance.py``): each :class:`Case` names a
recording under ``../shared/fixtures/upstream/``, the request to send, and the canonical result
the recording must produce. Cases live in ``tests/providers/cases_<upstream>.py`` modules, each
exposing ``CASES: list[Case]``; the suite collects every such module by itself.

How a case runs: the replay server answers with the recording(s); the providers service is built
in-process with ONE provider named :data:`PROVIDER` of ``provider_type``, its ``base_url`` the
replay server's URL plus ``base_path``, its key :data:`KEY` in the variable :data:`KEY_ENV`
(plus ``config``); the request goes through a real gRPC channel; streamed chunks are reassembled
(:func:`from_chunks`) and compared with ``expect`` (:func:`check`); ``sent`` is checked against
the request the replay server received.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from gateway.chat.v1 import chat_pb2
from gateway_common.errors import GatewayError
from gateway_common.openai_wire import FINISH_REASON_NAMES, from_struct

PROVIDER = "up"
"""The provider name every case's service configures."""
KEY_ENV = "CONFORMANCE_API_KEY"
"""The variable holding the key (the default ``api_key_env`` of every case)."""
KEY = "conformance-key-0123"
"""The key the adapter must send."""

ESTIMATED: Literal["estimated"] = "estimated"
"""Expect usage counted by the gateway (``usage.estimated``) because the upstream sent none."""


@dataclass(frozen=True)
class ToolCall:
    """A tool call: its function name and the full arguments text (compared exactly and as JSON)."""

    name: str
    arguments: str
    id: str | None = None


@dataclass(frozen=True)
class Choice:
    """One expected choice; ``text``/``refusal`` None means empty."""

    text: str | None = None
    refusal: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    finish_reason: str = "stop"
    logprobs: bool = False
    """Whether log probabilities come through (streamed: their tokens spell the text)."""


@dataclass(frozen=True)
class Usage:
    """Expected upstream-reported usage (``estimated`` must be false)."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int | None = None
    """Defaults to the sum."""
    reasoning_tokens: int | None = None
    cached_tokens: int | None = None


@dataclass(frozen=True)
class Error:
    """An expected failure: the gRPC code name and the ErrorInfo the router acts on."""

    code: str
    retryable: bool
    reason: str = "UPSTREAM_ERROR"
    upstream_status: int | None = None
    upstream_code: str | None = None
    upstream_type: str | None = None
    retry_after_s: float | None = None
    """None: no RetryInfo at all."""
    message: str | None = None
    """The exact status message (the upstream's own), when given."""
    message_contains: tuple[str, ...] = ()
    message_excludes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Expect:
    """The canonical result a recording must produce; unset fields are not checked."""

    choices: tuple[Choice, ...] = ()
    usage: Usage | Literal["estimated"] | None = None
    model: str | None = None
    extra: tuple[str, ...] = ()
    """Top-level fields that must pass through in ``extra`` (completion, or any chunk)."""
    vectors: tuple[tuple[float, ...], ...] | None = None
    """Embeddings, compared as float32."""
    models: tuple[str, ...] | None = None
    """Upstream model ids the list must hold, in order (the suite adds the ``"up:"`` prefix)."""
    error: Error | None = None


@dataclass(frozen=True)
class Sent:
    """What the adapter must have sent upstream (the last request the replay server received)."""

    path: str
    method: str = "POST"
    query: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)
    """Exact values, names case-insensitive."""
    absent_headers: tuple[str, ...] = ()
    body: Mapping[str, Any] = field(default_factory=dict)
    """Top-level body fields that must equal these."""
    absent_body: tuple[str, ...] = ()


@dataclass(frozen=True)
class Case:
    """One recording, one call, one expected canonical result."""

    id: str
    provider_type: str
    """``HttpProviderConfig.type``: openai, azure, openai_compatible, anthropic, gemini."""
    fixture: str | tuple[str, ...]
    """Recording(s) under fixtures/upstream/, served in order."""
    call: Literal["chat", "stream", "embed", "models"]
    expect: Expect
    request: Mapping[str, Any] | None = None
    """The client's request as OpenAI JSON (chat or embeddings); default: a one-line user message."""
    model: str | None = None
    """The upstream model (the Target); default: ``request["model"]``, else "test-model"."""
    base_path: str = ""
    config: Mapping[str, Any] = field(default_factory=dict)
    """More HttpProviderConfig fields (``api_key_env: None`` for a keyless server)."""
    sent: Sent | None = None

    @property
    def fixtures(self) -> tuple[str, ...]:
        """The recordings as a tuple."""
        return (self.fixture,) if isinstance(self.fixture, str) else self.fixture


# ---------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------


@dataclass
class ChoiceResult:
    """One reassembled choice."""

    text: str = ""
    refusal: str = ""
    tool_calls: dict[int, list[str]] = field(default_factory=dict)
    """index -> [id, name, arguments]."""
    finish_reason: str | None = None
    logprobs: bool = False
    logprob_text: str = ""


@dataclass
class Result:
    """A canonical answer, from a completion or reassembled from chunks."""

    choices: dict[int, ChoiceResult]
    usage: chat_pb2.Usage | None
    model: str
    extra: dict[str, Any]


def _finish(value: int) -> str | None:
    return FINISH_REASON_NAMES.get(value)


def from_completion(completion: chat_pb2.ChatCompletion, provider: str = PROVIDER) -> Result:
    """A non-streamed completion as a Result (checking what every completion must satisfy)."""
    assert completion.provider == provider, completion.provider
    choices: dict[int, ChoiceResult] = {}
    for choice in completion.choices:
        message = choice.message
        assert message.role == chat_pb2.ROLE_ASSISTANT
        result = ChoiceResult(text=message.text, refusal=message.refusal, finish_reason=_finish(choice.finish_reason))
        for i, call in enumerate(message.tool_calls):
            result.tool_calls[i] = [call.id, call.function.name, call.function.arguments]
        result.logprobs = choice.HasField("logprobs")
        choices[choice.index] = result
    usage = completion.usage if completion.HasField("usage") else None
    return Result(choices, usage, completion.model, from_struct(completion.extra))


def from_chunks(chunks: Sequence[chat_pb2.ChatCompletionChunk], provider: str = PROVIDER) -> Result:
    """Streamed chunks reassembled, checking the stream's shape on the way.

    Every chunk names the provider and carries the same non-empty id; each choice's first delta,
    and only that one, carries the assistant role; a choice gets at most one finish reason;
    exactly one chunk carries usage, and it is the last.
    """
    assert chunks, "the stream produced no chunk"
    choices: dict[int, ChoiceResult] = {}
    usage: chat_pb2.Usage | None = None
    model = ""
    extra: dict[str, Any] = {}
    for position, chunk in enumerate(chunks):
        assert chunk.provider == provider, chunk.provider
        assert chunk.id and chunk.id == chunks[0].id, f"chunk {position} has id {chunk.id!r}"
        assert usage is None, f"chunk {position} follows the usage chunk"
        model = chunk.model or model
        extra.update(from_struct(chunk.extra))
        for choice in chunk.choices:
            if choice.index not in choices:
                assert choice.delta.role == chat_pb2.ROLE_ASSISTANT, f"choice {choice.index} starts without a role"
                choices[choice.index] = ChoiceResult()
            else:
                assert not choice.delta.role, f"choice {choice.index} repeats its role"
            result = choices[choice.index]
            delta = choice.delta
            result.text += delta.content
            result.refusal += delta.refusal
            for call in delta.tool_calls:
                slot = result.tool_calls.setdefault(call.index, ["", "", ""])
                if call.HasField("id"):
                    assert not slot[0], f"tool call {call.index} got a second id"
                    slot[0] = call.id
                slot[1] += call.name
                slot[2] += call.arguments
            if choice.finish_reason:
                assert result.finish_reason is None, f"choice {choice.index} finished twice"
                result.finish_reason = _finish(choice.finish_reason)
            if choice.HasField("logprobs"):
                result.logprobs = True
                for entry in from_struct(choice.logprobs).get("content") or []:
                    result.logprob_text += entry.get("token", "")
        if chunk.HasField("usage"):
            usage = chunk.usage
    assert usage is not None, "no chunk carried usage"
    return Result(choices, usage, model, extra)


def _f32(value: float) -> float:
    return float(struct.unpack("<f", struct.pack("<f", value))[0])


def check(case: Case, result: Result | chat_pb2.EmbeddingResponse | list[chat_pb2.Model]) -> None:
    """Compare a result with ``case.expect``."""
    expect = case.expect
    if isinstance(result, chat_pb2.EmbeddingResponse):
        assert result.provider == PROVIDER
        if expect.vectors is not None:
            got = [[*item.vector] for item in sorted(result.data, key=lambda d: d.index)]
            assert [len(v) for v in got] == [len(v) for v in expect.vectors]
            for vector, wanted in zip(got, expect.vectors, strict=True):
                assert vector == [_f32(x) for x in wanted]
        _check_usage(expect.usage, result.usage)
        if expect.model is not None:
            assert result.model == expect.model
        return
    if isinstance(result, list):
        assert expect.models is not None
        assert [m.id for m in result] == [f"{PROVIDER}:{m}" for m in expect.models]
        assert all(m.provider == PROVIDER for m in result)
        return
    assert sorted(result.choices) == list(range(len(expect.choices))), sorted(result.choices)
    for index, wanted in enumerate(expect.choices):
        got = result.choices[index]
        assert got.text == (wanted.text or ""), (index, got.text)
        assert got.refusal == (wanted.refusal or ""), (index, got.refusal)
        assert got.finish_reason == wanted.finish_reason, (index, got.finish_reason)
        calls = [got.tool_calls[i] for i in sorted(got.tool_calls)]
        assert sorted(got.tool_calls) == list(range(len(calls))), "tool call indexes are not 0..n-1"
        assert [c[1] for c in calls] == [c.name for c in wanted.tool_calls]
        for (call_id, _, arguments), wanted_call in zip(calls, wanted.tool_calls, strict=True):
            assert call_id, "a tool call without an id"
            if wanted_call.id is not None:
                assert call_id == wanted_call.id
            assert arguments == wanted_call.arguments
        if wanted.logprobs:
            assert got.logprobs
            if got.logprob_text:
                assert got.logprob_text == got.text
    _check_usage(expect.usage, result.usage)
    if expect.model is not None:
        assert result.model == expect.model
    for key in expect.extra:
        assert key in result.extra, f"extra field {key!r} was dropped"


def _check_usage(expect: Usage | Literal["estimated"] | None, usage: chat_pb2.Usage | None) -> None:
    if expect is None:
        return
    assert usage is not None, "no usage"
    if expect == ESTIMATED:
        assert usage.estimated, "usage should be the gateway's estimate"
        assert usage.prompt_tokens > 0
        assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
        return
    assert isinstance(expect, Usage)
    assert not usage.estimated
    assert (usage.prompt_tokens, usage.completion_tokens) == (expect.prompt_tokens, expect.completion_tokens)
    total = expect.prompt_tokens + expect.completion_tokens if expect.total_tokens is None else expect.total_tokens
    assert usage.total_tokens == total
    if expect.reasoning_tokens is not None:
        assert usage.completion_tokens_details.reasoning_tokens == expect.reasoning_tokens
    if expect.cached_tokens is not None:
        assert usage.prompt_tokens_details.cached_tokens == expect.cached_tokens


def check_error(expect: Error, error: GatewayError) -> None:
    """Compare a failure with the expected one."""
    metadata = error.metadata
    assert error.code.name == expect.code, (error.code.name, error.message)
    assert str(error.reason) == expect.reason, error.reason
    assert metadata.get("retryable") == ("true" if expect.retryable else "false"), metadata
    assert metadata.get("provider") == PROVIDER, metadata
    if expect.upstream_status is not None:
        assert metadata.get("upstream_status") == str(expect.upstream_status), metadata
    if expect.upstream_code is not None:
        assert metadata.get("upstream_code") == expect.upstream_code, metadata
    if expect.upstream_type is not None:
        assert metadata.get("upstream_type") == expect.upstream_type, metadata
    if expect.retry_after_s is None:
        assert error.retry_after_s is None, error.retry_after_s
    else:
        assert error.retry_after_s is not None and math.isclose(error.retry_after_s, expect.retry_after_s)
    if expect.message is not None:
        assert error.message == expect.message, error.message
    for part in expect.message_contains:
        assert part in error.message, error.message
    for part in expect.message_excludes:
        assert part not in error.message, error.message
    assert KEY not in error.message


def check_sent(
    sent: Sent, method: str, path: str, query: Mapping[str, str], headers: Mapping[str, str], body: Any
) -> None:
    """Compare the request the upstream received with ``sent``."""
    assert (method, path) == (sent.method, sent.path)
    for key, value in sent.query.items():
        assert query.get(key) == value, query
    for key, value in sent.headers.items():
        assert headers.get(key.lower()) == value, (key, headers.get(key.lower()))
    for key in sent.absent_headers:
        assert key.lower() not in headers, key
    for key, value in sent.body.items():
        assert isinstance(body, dict) and body.get(key) == value, (
            key,
            body.get(key) if isinstance(body, dict) else body,
        )
    for key in sent.absent_body:
        assert isinstance(body, dict) and key not in body, key
