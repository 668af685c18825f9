"""The OpenAI wire format <-> the canonical protobuf messages, in both directions.

The edge parses client requests with it and writes responses and stream chunks; the OpenAI-style
provider adapters write upstream requests with it and parse upstream responses. Keeping both
directions in one module is what makes a round trip lossless: every field the gateway does not
model travels in an ``extra`` Struct and comes back out where it went in.

Parsing is hand-written rather than a pydantic model because errors must name the exact OpenAI
parameter path (``messages[2].content[0].image_url``) and the result goes straight into protobuf.
"""

from __future__ import annotations

import base64
import math
import struct
from collections.abc import Mapping, Sequence
from typing import Any

import grpc
from google.protobuf import struct_pb2

from gateway.chat.v1 import chat_pb2
from gateway_common.errors import GatewayError, Reason, invalid_argument

Json = dict[str, Any]

ROLE_NAMES: dict[int, str] = {
    chat_pb2.ROLE_SYSTEM: "system",
    chat_pb2.ROLE_DEVELOPER: "developer",
    chat_pb2.ROLE_USER: "user",
    chat_pb2.ROLE_ASSISTANT: "assistant",
    chat_pb2.ROLE_TOOL: "tool",
}
ROLES: dict[str, int] = {name: value for value, name in ROLE_NAMES.items()}

FINISH_REASON_NAMES: dict[int, str] = {
    chat_pb2.FINISH_REASON_STOP: "stop",
    chat_pb2.FINISH_REASON_LENGTH: "length",
    chat_pb2.FINISH_REASON_TOOL_CALLS: "tool_calls",
    chat_pb2.FINISH_REASON_CONTENT_FILTER: "content_filter",
    chat_pb2.FINISH_REASON_FUNCTION_CALL: "function_call",
}
FINISH_REASONS: dict[str, int] = {name: value for value, name in FINISH_REASON_NAMES.items()}

TOOL_CHOICE_MODES: dict[str, int] = {
    "none": chat_pb2.TOOL_CHOICE_MODE_NONE,
    "auto": chat_pb2.TOOL_CHOICE_MODE_AUTO,
    "required": chat_pb2.TOOL_CHOICE_MODE_REQUIRED,
}
TOOL_CHOICE_MODE_NAMES: dict[int, str] = {v: k for k, v in TOOL_CHOICE_MODES.items()}

# Request fields the canonical message models; everything else goes to `extra` as sent.
_REQUEST_FIELDS = frozenset(
    {
        "model",
        "messages",
        "temperature",
        "top_p",
        "n",
        "stop",
        "max_tokens",
        "max_completion_tokens",
        "presence_penalty",
        "frequency_penalty",
        "seed",
        "user",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "response_format",
        "stream",
        "stream_options",
        "gateway",
    }
)
_MESSAGE_FIELDS = frozenset({"role", "content", "name", "tool_calls", "tool_call_id", "refusal"})


# ---------------------------------------------------------------------------------------------
# Struct helpers
# ---------------------------------------------------------------------------------------------


def to_struct(value: Mapping[str, Any]) -> struct_pb2.Struct:
    """A Struct holding ``value`` (JSON-compatible)."""
    result = struct_pb2.Struct()
    result.update(value)
    return result


def _plain(value: Any) -> Any:
    # Struct stores every number as a double; give integral ones back as ints so that
    # `top_logprobs: 3` does not reach an upstream as `3.0`.
    if isinstance(value, float) and value.is_integer() and math.isfinite(value):
        return int(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def from_struct(value: struct_pb2.Struct) -> Json:
    """The JSON object a Struct holds, integral numbers as ints."""
    return {key: _plain(_value(v)) for key, v in value.fields.items()}


def _value(value: struct_pb2.Value) -> Any:
    kind = value.WhichOneof("kind")
    if kind == "struct_value":
        return {k: _value(v) for k, v in value.struct_value.fields.items()}
    if kind == "list_value":
        return [_value(v) for v in value.list_value.values]
    if kind == "number_value":
        return value.number_value
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return value.bool_value
    return None


# ---------------------------------------------------------------------------------------------
# Typed readers that name the parameter on failure
# ---------------------------------------------------------------------------------------------


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _expect(value: Any, kinds: type | tuple[type, ...], what: str, path: str) -> Any:
    # bool is an int in Python; JSON keeps them apart.
    if isinstance(value, bool) and bool not in (kinds if isinstance(kinds, tuple) else (kinds,)):
        raise invalid_argument(f"Invalid type for '{path}': expected {what}, but got a boolean.", path)
    if not isinstance(value, kinds):
        raise invalid_argument(f"Invalid type for '{path}': expected {what}, but got {_type_name(value)}.", path)
    return value


def _str(value: Any, path: str) -> str:
    return str(_expect(value, str, "a string", path))


def _number(value: Any, path: str, low: float | None = None, high: float | None = None) -> float:
    number = float(_expect(value, (int, float), "a number", path))
    if not math.isfinite(number):
        raise invalid_argument(f"Invalid value for '{path}': must be a finite number.", path)
    if (low is not None and number < low) or (high is not None and number > high):
        raise invalid_argument(f"Invalid value for '{path}': {number:g} is not between {low:g} and {high:g}.", path)
    return number


def _int(value: Any, path: str, low: int | None = None, high: int | None = None) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    number = int(_expect(value, int, "an integer", path))
    if low is not None and number < low:
        raise invalid_argument(f"Invalid value for '{path}': must be at least {low}.", path)
    if high is not None and number > high:
        raise invalid_argument(f"Invalid value for '{path}': must be at most {high}.", path)
    return number


def _bool(value: Any, path: str) -> bool:
    return bool(_expect(value, bool, "a boolean", path))


def _object(value: Any, path: str) -> dict[str, Any]:
    return dict(_expect(value, dict, "an object", path))


def _array(value: Any, path: str) -> list[Any]:
    return list(_expect(value, list, "an array", path))


# ---------------------------------------------------------------------------------------------
# Chat request: OpenAI JSON -> canonical (edge)
# ---------------------------------------------------------------------------------------------


def parse_chat_request(body: Any) -> tuple[chat_pb2.ChatCompletionRequest, bool]:
    """Parse an OpenAI chat completion request body; returns the request and whether it streams.

    Raises GatewayError(INVALID_ARGUMENT) naming the parameter for anything malformed.
    """
    if not isinstance(body, dict):
        raise invalid_argument("The request body must be a JSON object.", "body")
    request = chat_pb2.ChatCompletionRequest()
    get = body.get
    if get("model") is not None:
        request.model = _str(body["model"], "model")
    if "messages" not in body or body["messages"] is None:
        raise invalid_argument("Missing required parameter: 'messages'.", "messages")
    messages = _array(body["messages"], "messages")
    if not messages:
        raise invalid_argument("Invalid 'messages': empty array. Expected an array with minimum length 1.", "messages")
    for i, message in enumerate(messages):
        request.messages.append(_parse_message(message, f"messages[{i}]"))
    if get("temperature") is not None:
        request.temperature = _number(body["temperature"], "temperature", 0, 2)
    if get("top_p") is not None:
        request.top_p = _number(body["top_p"], "top_p", 0, 1)
    if get("n") is not None:
        request.n = _int(body["n"], "n", 1, 128)
    if get("stop") is not None:
        stop = body["stop"]
        if isinstance(stop, str):
            request.stop.append(stop)
        else:
            for i, item in enumerate(_array(stop, "stop")):
                request.stop.append(_str(item, f"stop[{i}]"))
    if get("max_tokens") is not None:
        request.max_tokens = _int(body["max_tokens"], "max_tokens", 1)
    if get("max_completion_tokens") is not None:
        request.max_completion_tokens = _int(body["max_completion_tokens"], "max_completion_tokens", 1)
    if get("presence_penalty") is not None:
        request.presence_penalty = _number(body["presence_penalty"], "presence_penalty", -2, 2)
    if get("frequency_penalty") is not None:
        request.frequency_penalty = _number(body["frequency_penalty"], "frequency_penalty", -2, 2)
    if get("seed") is not None:
        request.seed = _int(body["seed"], "seed")
    if get("user") is not None:
        request.user = _str(body["user"], "user")
    if get("tools") is not None:
        for i, tool in enumerate(_array(body["tools"], "tools")):
            request.tools.append(_parse_tool(tool, f"tools[{i}]"))
    if get("tool_choice") is not None:
        request.tool_choice.CopyFrom(_parse_tool_choice(body["tool_choice"]))
    if get("parallel_tool_calls") is not None:
        request.parallel_tool_calls = _bool(body["parallel_tool_calls"], "parallel_tool_calls")
    if get("response_format") is not None:
        request.response_format.CopyFrom(_parse_response_format(body["response_format"]))
    stream = _bool(body["stream"], "stream") if get("stream") is not None else False
    if get("stream_options") is not None:
        options = _object(body["stream_options"], "stream_options")
        if options.get("include_usage") is not None:
            request.stream_options.include_usage = _bool(options["include_usage"], "stream_options.include_usage")
    if get("gateway") is not None:
        gateway = _object(body["gateway"], "gateway")
        for key in gateway:
            if key != "max_cost_usd":
                raise invalid_argument(f"Unknown parameter: 'gateway.{key}'.", f"gateway.{key}")
        if gateway.get("max_cost_usd") is not None:
            request.gateway.max_cost_usd = _number(gateway["max_cost_usd"], "gateway.max_cost_usd", 0)
    extra = {k: v for k, v in body.items() if k not in _REQUEST_FIELDS}
    if extra:
        request.extra.update(extra)
    return request, stream


def _parse_message(raw: Any, path: str) -> chat_pb2.Message:
    data = _object(raw, path)
    message = chat_pb2.Message()
    if "role" not in data:
        raise invalid_argument(f"Missing required parameter: '{path}.role'.", f"{path}.role")
    role_name = _str(data["role"], f"{path}.role")
    if role_name not in ROLES:
        raise invalid_argument(
            f"Invalid value: '{role_name}'. Supported values are: 'system', 'developer', 'user', "
            "'assistant' and 'tool'.",
            f"{path}.role",
        )
    message.role = ROLES[role_name]  # type: ignore[assignment]
    content = data.get("content")
    if content is None:
        if role_name != "assistant":
            raise invalid_argument(f"Missing required parameter: '{path}.content'.", f"{path}.content")
    elif isinstance(content, str):
        message.text = content
    else:
        parts = _array(content, f"{path}.content")
        for j, part in enumerate(parts):
            message.parts.append(_parse_part(part, f"{path}.content[{j}]"))
    if data.get("name") is not None:
        message.name = _str(data["name"], f"{path}.name")
    if data.get("refusal") is not None:
        message.refusal = _str(data["refusal"], f"{path}.refusal")
    if data.get("tool_calls") is not None:
        if role_name != "assistant":
            raise invalid_argument(f"'{path}.tool_calls' is only allowed on assistant messages.", f"{path}.tool_calls")
        for j, call in enumerate(_array(data["tool_calls"], f"{path}.tool_calls")):
            message.tool_calls.append(_parse_tool_call(call, f"{path}.tool_calls[{j}]"))
    if role_name == "tool":
        if data.get("tool_call_id") is None:
            raise invalid_argument(f"Missing required parameter: '{path}.tool_call_id'.", f"{path}.tool_call_id")
        message.tool_call_id = _str(data["tool_call_id"], f"{path}.tool_call_id")
    extra = {k: v for k, v in data.items() if k not in _MESSAGE_FIELDS}
    if extra:
        message.extra.update(extra)
    return message


def _parse_part(raw: Any, path: str) -> chat_pb2.ContentPart:
    data = _object(raw, path)
    kind = data.get("type")
    if kind is None:
        raise invalid_argument(f"Missing required parameter: '{path}.type'.", f"{path}.type")
    kind = _str(kind, f"{path}.type")
    part = chat_pb2.ContentPart()
    if kind == "text":
        part.text = _str(data.get("text"), f"{path}.text")
    elif kind == "image_url":
        image = _object(data.get("image_url"), f"{path}.image_url")
        part.image_url.url = _str(image.get("url"), f"{path}.image_url.url")
        if image.get("detail") is not None:
            part.image_url.detail = _str(image["detail"], f"{path}.image_url.detail")
    elif kind == "input_audio":
        audio = _object(data.get("input_audio"), f"{path}.input_audio")
        part.input_audio.data = _str(audio.get("data"), f"{path}.input_audio.data")
        part.input_audio.format = _str(audio.get("format"), f"{path}.input_audio.format")
    else:
        part.other.update(data)
    return part


def _parse_tool_call(raw: Any, path: str) -> chat_pb2.ToolCall:
    data = _object(raw, path)
    call = chat_pb2.ToolCall(id=_str(data.get("id"), f"{path}.id"), type=str(data.get("type") or "function"))
    function = _object(data.get("function"), f"{path}.function")
    call.function.name = _str(function.get("name"), f"{path}.function.name")
    call.function.arguments = _str(function.get("arguments", ""), f"{path}.function.arguments")
    return call


def _parse_tool(raw: Any, path: str) -> chat_pb2.Tool:
    data = _object(raw, path)
    kind = _str(data.get("type", "function"), f"{path}.type")
    if kind != "function":
        raise invalid_argument(f"Invalid value: '{kind}'. Supported values are: 'function'.", f"{path}.type")
    function = _object(data.get("function"), f"{path}.function")
    tool = chat_pb2.Tool(type=kind)
    tool.function.name = _str(function.get("name"), f"{path}.function.name")
    if not tool.function.name:
        raise invalid_argument(f"'{path}.function.name' must not be empty.", f"{path}.function.name")
    if function.get("description") is not None:
        tool.function.description = _str(function["description"], f"{path}.function.description")
    if function.get("parameters") is not None:
        tool.function.parameters.update(_object(function["parameters"], f"{path}.function.parameters"))
    if function.get("strict") is not None:
        tool.function.strict = _bool(function["strict"], f"{path}.function.strict")
    return tool


def _parse_tool_choice(raw: Any) -> chat_pb2.ToolChoice:
    choice = chat_pb2.ToolChoice()
    if isinstance(raw, str):
        if raw not in TOOL_CHOICE_MODES:
            raise invalid_argument(
                f"Invalid value: '{raw}'. Supported values are: 'none', 'auto' and 'required'.", "tool_choice"
            )
        choice.mode = TOOL_CHOICE_MODES[raw]  # type: ignore[assignment]
        return choice
    data = _object(raw, "tool_choice")
    function = _object(data.get("function"), "tool_choice.function")
    choice.function_name = _str(function.get("name"), "tool_choice.function.name")
    return choice


def _parse_response_format(raw: Any) -> chat_pb2.ResponseFormat:
    data = _object(raw, "response_format")
    kind = _str(data.get("type"), "response_format.type")
    if kind not in ("text", "json_object", "json_schema"):
        raise invalid_argument(
            f"Invalid value: '{kind}'. Supported values are: 'text', 'json_object' and 'json_schema'.",
            "response_format.type",
        )
    result = chat_pb2.ResponseFormat(type=kind)
    if kind == "json_schema":
        result.json_schema.update(_object(data.get("json_schema"), "response_format.json_schema"))
    return result


# ---------------------------------------------------------------------------------------------
# Chat request: canonical -> OpenAI JSON (adapters)
# ---------------------------------------------------------------------------------------------


def message_to_openai(message: chat_pb2.Message) -> Json:
    """One canonical message as an OpenAI message object."""
    out: Json = {"role": ROLE_NAMES.get(message.role, "user")}
    if message.HasField("text"):
        out["content"] = message.text
    elif message.parts:
        out["content"] = [part_to_openai(p) for p in message.parts]
    else:
        out["content"] = None
    if message.HasField("name"):
        out["name"] = message.name
    if message.tool_calls:
        out["tool_calls"] = [tool_call_to_openai(c) for c in message.tool_calls]
    if message.tool_call_id:
        out["tool_call_id"] = message.tool_call_id
    if message.HasField("refusal"):
        out["refusal"] = message.refusal
    if message.HasField("extra"):
        out.update(from_struct(message.extra))
    return out


def part_to_openai(part: chat_pb2.ContentPart) -> Json:
    """One content part as an OpenAI content part."""
    kind = part.WhichOneof("part")
    if kind == "text":
        return {"type": "text", "text": part.text}
    if kind == "image_url":
        image: Json = {"url": part.image_url.url}
        if part.image_url.detail:
            image["detail"] = part.image_url.detail
        return {"type": "image_url", "image_url": image}
    if kind == "input_audio":
        return {
            "type": "input_audio",
            "input_audio": {"data": part.input_audio.data, "format": part.input_audio.format},
        }
    return from_struct(part.other)


def tool_call_to_openai(call: chat_pb2.ToolCall) -> Json:
    """One tool call as OpenAI's ``{id, type, function: {name, arguments}}``."""
    return {
        "id": call.id,
        "type": call.type or "function",
        "function": {"name": call.function.name, "arguments": call.function.arguments},
    }


def tool_to_openai(tool: chat_pb2.Tool) -> Json:
    """One tool definition in OpenAI's shape."""
    function: Json = {"name": tool.function.name}
    if tool.function.HasField("description"):
        function["description"] = tool.function.description
    if tool.function.HasField("parameters"):
        function["parameters"] = from_struct(tool.function.parameters)
    if tool.function.HasField("strict"):
        function["strict"] = tool.function.strict
    return {"type": tool.type or "function", "function": function}


def tool_choice_to_openai(choice: chat_pb2.ToolChoice) -> str | Json | None:
    """The tool choice in OpenAI's shape, or None when unset."""
    kind = choice.WhichOneof("choice")
    if kind == "mode":
        return TOOL_CHOICE_MODE_NAMES.get(choice.mode)
    if kind == "function_name":
        return {"type": "function", "function": {"name": choice.function_name}}
    return None


def chat_request_to_openai(request: chat_pb2.ChatCompletionRequest, model: str, stream: bool) -> Json:
    """The upstream request body for an OpenAI-style ``/chat/completions``, pass-through fields included."""
    body: Json = {"model": model, "messages": [message_to_openai(m) for m in request.messages]}
    for name in (
        "temperature",
        "top_p",
        "n",
        "max_tokens",
        "max_completion_tokens",
        "presence_penalty",
        "frequency_penalty",
        "seed",
        "parallel_tool_calls",
    ):
        if request.HasField(name):
            body[name] = getattr(request, name)
    if request.stop:
        body["stop"] = list(request.stop)
    if request.user:
        body["user"] = request.user
    if request.tools:
        body["tools"] = [tool_to_openai(t) for t in request.tools]
    choice = tool_choice_to_openai(request.tool_choice)
    if choice is not None:
        body["tool_choice"] = choice
    if request.HasField("response_format"):
        response_format: Json = {"type": request.response_format.type}
        if request.response_format.HasField("json_schema"):
            response_format["json_schema"] = from_struct(request.response_format.json_schema)
        body["response_format"] = response_format
    if request.HasField("extra"):
        for key, value in from_struct(request.extra).items():
            body.setdefault(key, value)
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


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


def _keep_extra(target: struct_pb2.Struct, raw: Mapping[str, Any], modelled: frozenset[str]) -> None:
    extra = {k: v for k, v in raw.items() if k not in modelled and v is not None}
    if extra:
        target.update(extra)


def _upstream_shape(message: str) -> GatewayError:
    return GatewayError(grpc.StatusCode.UNAVAILABLE, Reason.UPSTREAM_STREAM_BROKEN, message, {"retryable": "true"})


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
        raise _upstream_shape("upstream returned a completion without a 'choices' array")
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
            raise _upstream_shape(f"upstream returned a malformed choice at index {i}")
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
            choice.message.tool_calls.add(
                id=str(call.get("id") or ""),
                type=str(call.get("type") or "function"),
                function=chat_pb2.FunctionCall(
                    name=str(function.get("name") or ""), arguments=str(function.get("arguments") or "")
                ),
            )
        extra = {k: v for k, v in message.items() if k not in _RESPONSE_MESSAGE_FIELDS}
        if extra:
            choice.message.extra.update(extra)
        if isinstance(raw.get("logprobs"), dict):
            choice.logprobs.update(raw["logprobs"])
        _keep_extra(choice.extra, raw, _CHOICE_FIELDS)
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
        raise _upstream_shape("upstream sent a malformed stream chunk")
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
            raise _upstream_shape("upstream sent a malformed stream choice")
        choice = chunk.choices.add(
            index=int(raw.get("index", i)), finish_reason=_finish_reason(raw.get("finish_reason"))
        )
        delta = raw.get("delta") or {}
        if not isinstance(delta, dict):
            raise _upstream_shape("upstream sent a malformed stream delta")
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
        _keep_extra(choice.extra, raw, _CHUNK_CHOICE_FIELDS)
    if isinstance(data.get("usage"), dict):
        chunk.usage.CopyFrom(usage_from_openai(data["usage"]))
    extra = {k: v for k, v in data.items() if k not in _COMPLETION_FIELDS and k != "obfuscation"}
    if extra:
        chunk.extra.update(extra)
    return chunk


# ---------------------------------------------------------------------------------------------
# Embeddings and models
# ---------------------------------------------------------------------------------------------

_EMBEDDING_FIELDS = frozenset({"model", "input", "dimensions", "user", "encoding_format"})


def parse_embedding_request(body: Any) -> tuple[chat_pb2.EmbeddingRequest, str]:
    """Parse an OpenAI embeddings request; returns it and the encoding format ("float" or "base64")."""
    if not isinstance(body, dict):
        raise invalid_argument("The request body must be a JSON object.", "body")
    request = chat_pb2.EmbeddingRequest()
    if body.get("model") is not None:
        request.model = _str(body["model"], "model")
    raw = body.get("input")
    if raw is None:
        raise invalid_argument("Missing required parameter: 'input'.", "input")
    if isinstance(raw, str):
        request.input.append(raw)
    else:
        items = _array(raw, "input")
        if not items:
            raise invalid_argument("Invalid 'input': empty array. Expected at least one string.", "input")
        for i, item in enumerate(items):
            if not isinstance(item, str):
                raise invalid_argument(
                    f"Invalid type for 'input[{i}]': expected a string (token arrays are not supported).",
                    f"input[{i}]",
                )
            request.input.append(item)
    if body.get("dimensions") is not None:
        request.dimensions = _int(body["dimensions"], "dimensions", 1)
    if body.get("user") is not None:
        request.user = _str(body["user"], "user")
    encoding = body.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise invalid_argument(
            f"Invalid value: '{encoding}'. Supported values are: 'float' and 'base64'.", "encoding_format"
        )
    extra = {k: v for k, v in body.items() if k not in _EMBEDDING_FIELDS}
    if extra:
        request.extra.update(extra)
    return request, str(encoding)


def embedding_request_to_openai(request: chat_pb2.EmbeddingRequest, model: str) -> Json:
    """The upstream body for an OpenAI-style ``/embeddings`` (always float vectors)."""
    body: Json = {"model": model, "input": list(request.input), "encoding_format": "float"}
    if request.HasField("dimensions"):
        body["dimensions"] = request.dimensions
    if request.user:
        body["user"] = request.user
    if request.HasField("extra"):
        for key, value in from_struct(request.extra).items():
            body.setdefault(key, value)
    return body


def embedding_response_from_openai(data: Any, provider: str) -> chat_pb2.EmbeddingResponse:
    """Canonical embeddings from an OpenAI-style response (float or base64 vectors)."""
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise _upstream_shape("upstream returned embeddings without a 'data' array")
    response = chat_pb2.EmbeddingResponse(model=str(data.get("model") or ""), provider=provider)
    for i, item in enumerate(data["data"]):
        vector = item.get("embedding")
        if isinstance(vector, str):
            raw = base64.b64decode(vector)
            values: Sequence[float] = struct.unpack(f"<{len(raw) // 4}f", raw)
        else:
            values = vector or []
        response.data.add(index=int(item.get("index", i)), vector=values)
    response.usage.CopyFrom(usage_from_openai(data.get("usage")))
    return response


def embedding_response_to_openai(response: chat_pb2.EmbeddingResponse, encoding_format: str) -> Json:
    """Canonical embeddings as OpenAI's list object, vectors as floats or base64 float32."""
    data = []
    for item in response.data:
        vector: Any
        if encoding_format == "base64":
            vector = base64.b64encode(struct.pack(f"<{len(item.vector)}f", *item.vector)).decode()
        else:
            vector = list(item.vector)
        data.append({"object": "embedding", "index": item.index, "embedding": vector})
    return {
        "object": "list",
        "data": data,
        "model": response.model,
        "usage": {"prompt_tokens": response.usage.prompt_tokens, "total_tokens": response.usage.total_tokens},
    }


def model_to_openai(model: chat_pb2.Model) -> Json:
    """A model as OpenAI's ``model`` object."""
    return {"id": model.id, "object": "model", "created": model.created, "owned_by": model.owned_by}
