"""Chat completions and stream chunks, both directions."""

from __future__ import annotations

from typing import Any

from gateway.chat.v1 import chat_pb2
from gateway_common.openai_wire.requests import tool_call_to_openai
from gateway_common.openai_wire.values import (
    FINISH_REASON_NAMES,
    FINISH_REASONS,
    ROLE_NAMES,
    ROLES,
    Json,
    from_struct,
    keep_extra,
    upstream_shape_error,
)

# ---------------------------------------------------------------------------------------------
# Chat response and chunks: canonical -> OpenAI JSON (edge)
# ---------------------------------------------------------------------------------------------


def usage_to_openai(usage: chat_pb2.Usage) -> Json:
    """Usage in OpenAI's shape, with the detail objects when the provider gave them."""
    out: Json = {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }
    if usage.HasField("prompt_tokens_details"):
        out["prompt_tokens_details"] = _present_fields(usage.prompt_tokens_details)
    if usage.HasField("completion_tokens_details"):
        out["completion_tokens_details"] = _present_fields(usage.completion_tokens_details)
    return out


def _present_fields(message: Any) -> Json:
    return {field.name: value for field, value in message.ListFields()}


def completion_to_openai(completion: chat_pb2.ChatCompletion) -> Json:
    """A canonical completion as OpenAI's ``chat.completion`` object."""
    choices = []
    for choice in completion.choices:
        message = choice.message
        out_message: Json = {
            "role": "assistant",
            "content": message.text if message.HasField("text") else None,
            "refusal": message.refusal if message.HasField("refusal") else None,
        }
        if message.tool_calls:
            out_message["tool_calls"] = [tool_call_to_openai(c) for c in message.tool_calls]
        if message.HasField("extra"):
            out_message.update(from_struct(message.extra))
        out_choice: Json = {
            "index": choice.index,
            "message": out_message,
            "logprobs": from_struct(choice.logprobs) if choice.HasField("logprobs") else None,
            "finish_reason": FINISH_REASON_NAMES.get(choice.finish_reason, "stop"),
        }
        if choice.HasField("extra"):
            for key, value in from_struct(choice.extra).items():
                out_choice.setdefault(key, value)
        choices.append(out_choice)
    out: Json = {
        "id": completion.id,
        "object": "chat.completion",
        "created": completion.created,
        "model": completion.model,
        "choices": choices,
        "usage": usage_to_openai(completion.usage),
    }
    if completion.service_tier:
        out["service_tier"] = completion.service_tier
    if completion.system_fingerprint:
        # OpenAI sometimes sends null here, but its schema types the field as a string: omit it.
        out["system_fingerprint"] = completion.system_fingerprint
    if completion.HasField("extra"):
        for key, value in from_struct(completion.extra).items():
            out.setdefault(key, value)
    return out


def chunk_to_openai(chunk: chat_pb2.ChatCompletionChunk, include_usage: bool) -> Json:
    """A canonical chunk as OpenAI's ``chat.completion.chunk`` object.

    With ``include_usage`` every chunk carries ``usage`` (null until the last), as OpenAI sends it.
    """
    choices = []
    for choice in chunk.choices:
        delta: Json = {}
        d = choice.delta
        if d.role:
            delta["role"] = ROLE_NAMES.get(d.role, "assistant")
        if d.HasField("content"):
            delta["content"] = d.content
        if d.HasField("refusal"):
            delta["refusal"] = d.refusal
        if d.tool_calls:
            delta["tool_calls"] = [_tool_call_delta_to_openai(t) for t in d.tool_calls]
        if d.HasField("extra"):
            delta.update(from_struct(d.extra))
        out_choice: Json = {"index": choice.index, "delta": delta}
        if choice.HasField("logprobs"):
            out_choice["logprobs"] = from_struct(choice.logprobs)
        out_choice["finish_reason"] = FINISH_REASON_NAMES.get(choice.finish_reason)
        if choice.HasField("extra"):
            for key, value in from_struct(choice.extra).items():
                out_choice.setdefault(key, value)
        choices.append(out_choice)
    out: Json = {
        "id": chunk.id,
        "object": "chat.completion.chunk",
        "created": chunk.created,
        "model": chunk.model,
    }
    if chunk.service_tier:
        out["service_tier"] = chunk.service_tier
    if chunk.system_fingerprint:
        out["system_fingerprint"] = chunk.system_fingerprint
    out["choices"] = choices
    if chunk.HasField("usage"):
        out["usage"] = usage_to_openai(chunk.usage)
    elif include_usage:
        out["usage"] = None
    if chunk.HasField("extra"):
        for key, value in from_struct(chunk.extra).items():
            out.setdefault(key, value)
    return out


def _tool_call_delta_to_openai(delta: chat_pb2.ToolCallDelta) -> Json:
    out: Json = {"index": delta.index}
    if delta.HasField("id"):
        out["id"] = delta.id
    if delta.HasField("type"):
        out["type"] = delta.type
    function: Json = {}
    if delta.HasField("name"):
        function["name"] = delta.name
    if delta.HasField("arguments"):
        function["arguments"] = delta.arguments
    if function:
        out["function"] = function
    return out


# ---------------------------------------------------------------------------------------------
# Chat response and chunks: OpenAI JSON -> canonical (adapters)
# ---------------------------------------------------------------------------------------------

_COMPLETION_FIELDS = frozenset(
    {"id", "object", "created", "model", "choices", "usage", "system_fingerprint", "service_tier"}
)
_RESPONSE_MESSAGE_FIELDS = frozenset({"role", "content", "refusal", "tool_calls", "function_call"})
_DELTA_FIELDS = frozenset({"role", "content", "refusal", "tool_calls", "function_call"})
_CHOICE_FIELDS = frozenset({"index", "message", "finish_reason", "logprobs"})
_CHUNK_CHOICE_FIELDS = frozenset({"index", "delta", "finish_reason", "logprobs"})


def usage_from_openai(data: Any) -> chat_pb2.Usage:
    """Usage from an OpenAI-style ``usage`` object (details kept when present)."""
    usage = chat_pb2.Usage()
    if not isinstance(data, dict):
        return usage
    usage.prompt_tokens = int(data.get("prompt_tokens") or 0)
    usage.completion_tokens = int(data.get("completion_tokens") or 0)
    usage.total_tokens = int(data.get("total_tokens") or usage.prompt_tokens + usage.completion_tokens)
    prompt_details = data.get("prompt_tokens_details")
    if isinstance(prompt_details, dict):
        details = usage.prompt_tokens_details
        details.SetInParent()
        for name in ("cached_tokens", "audio_tokens"):
            if isinstance(prompt_details.get(name), int):
                setattr(details, name, prompt_details[name])
    completion_details = data.get("completion_tokens_details")
    if isinstance(completion_details, dict):
        cdetails = usage.completion_tokens_details
        cdetails.SetInParent()
        for name in (
            "reasoning_tokens",
            "audio_tokens",
            "accepted_prediction_tokens",
            "rejected_prediction_tokens",
        ):
            if isinstance(completion_details.get(name), int):
                setattr(cdetails, name, completion_details[name])
    return usage


def _finish_reason(value: Any) -> int:
    if value is None:
        return chat_pb2.FINISH_REASON_UNSPECIFIED
    return FINISH_REASONS.get(str(value), chat_pb2.FINISH_REASON_STOP)


def completion_from_openai(data: Any, provider: str) -> chat_pb2.ChatCompletion:
    """A canonical completion from an OpenAI-style ``chat.completion`` body."""
    if not isinstance(data, dict) or not isinstance(data.get("choices"), list):
        raise upstream_shape_error("upstream returned a completion without a 'choices' array")
    completion = chat_pb2.ChatCompletion(
        id=str(data.get("id") or ""),
        created=int(data.get("created") or 0),
        model=str(data.get("model") or ""),
        system_fingerprint=str(data.get("system_fingerprint") or ""),
        service_tier=str(data.get("service_tier") or ""),
        provider=provider,
    )
    for i, raw in enumerate(data["choices"]):
        if not isinstance(raw, dict):
            raise upstream_shape_error(f"upstream returned a malformed choice at index {i}")
        choice = completion.choices.add(
            index=int(raw.get("index", i)), finish_reason=_finish_reason(raw.get("finish_reason"))
        )
        message = raw.get("message") or {}
        choice.message.role = chat_pb2.ROLE_ASSISTANT
        if isinstance(message.get("content"), str):
            choice.message.text = message["content"]
        if isinstance(message.get("refusal"), str):
            choice.message.refusal = message["refusal"]
        for call in message.get("tool_calls") or []:
            function = call.get("function") or {}
            added = choice.message.tool_calls.add(
                id=str(call.get("id") or ""),
                type=str(call.get("type") or "function"),
                function=chat_pb2.FunctionCall(
                    name=str(function.get("name") or ""), arguments=str(function.get("arguments") or "")
                ),
            )
            if added.type == "custom":
                custom = call.get("custom") or {}
                added.ClearField("function")
                added.custom.name = str(custom.get("name") or "")
                added.custom.input = str(custom.get("input") or "")
        extra = {k: v for k, v in message.items() if k not in _RESPONSE_MESSAGE_FIELDS}
        if extra:
            choice.message.extra.update(extra)
        if isinstance(raw.get("logprobs"), dict):
            choice.logprobs.update(raw["logprobs"])
        keep_extra(choice.extra, raw, _CHOICE_FIELDS)
    if data.get("usage") is not None:
        completion.usage.CopyFrom(usage_from_openai(data["usage"]))
    extra = {k: v for k, v in data.items() if k not in _COMPLETION_FIELDS}
    if extra:
        completion.extra.update(extra)
    return completion


def chunk_from_openai(data: Any, provider: str) -> chat_pb2.ChatCompletionChunk:
    """A canonical chunk from an OpenAI-style ``chat.completion.chunk``.

    Tool-call fragments without an ``index`` (Ollama sends whole calls that way) get their position.
    """
    if not isinstance(data, dict) or not isinstance(data.get("choices", []), list):
        raise upstream_shape_error("upstream sent a malformed stream chunk")
    chunk = chat_pb2.ChatCompletionChunk(
        id=str(data.get("id") or ""),
        created=int(data.get("created") or 0),
        model=str(data.get("model") or ""),
        system_fingerprint=str(data.get("system_fingerprint") or ""),
        service_tier=str(data.get("service_tier") or ""),
        provider=provider,
    )
    for i, raw in enumerate(data.get("choices") or []):
        if not isinstance(raw, dict):
            raise upstream_shape_error("upstream sent a malformed stream choice")
        choice = chunk.choices.add(
            index=int(raw.get("index", i)), finish_reason=_finish_reason(raw.get("finish_reason"))
        )
        delta = raw.get("delta") or {}
        if not isinstance(delta, dict):
            raise upstream_shape_error("upstream sent a malformed stream delta")
        if delta.get("role") in ROLES:
            choice.delta.role = ROLES[delta["role"]]  # type: ignore[assignment]
        if isinstance(delta.get("content"), str):
            choice.delta.content = delta["content"]
        if isinstance(delta.get("refusal"), str):
            choice.delta.refusal = delta["refusal"]
        for position, call in enumerate(delta.get("tool_calls") or []):
            fragment = choice.delta.tool_calls.add(index=int(call.get("index", position)))
            if call.get("id") is not None:
                fragment.id = str(call["id"])
            if call.get("type") is not None:
                fragment.type = str(call["type"])
            function = call.get("function") or {}
            if function.get("name") is not None:
                fragment.name = str(function["name"])
            if function.get("arguments") is not None:
                fragment.arguments = str(function["arguments"])
        extra = {k: v for k, v in delta.items() if k not in _DELTA_FIELDS and v is not None}
        if extra:
            choice.delta.extra.update(extra)
        if isinstance(raw.get("logprobs"), dict):
            choice.logprobs.update(raw["logprobs"])
        keep_extra(choice.extra, raw, _CHUNK_CHOICE_FIELDS)
    if isinstance(data.get("usage"), dict):
        chunk.usage.CopyFrom(usage_from_openai(data["usage"]))
    extra = {k: v for k, v in data.items() if k not in _COMPLETION_FIELDS and k != "obfuscation"}
    if extra:
        chunk.extra.update(extra)
    return chunk
