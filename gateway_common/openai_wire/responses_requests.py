"""Responses API requests: OpenAI ``POST /v1/responses`` JSON (and the Unified Model Gateway's forms)
-> the canonical chat request.

The stateful part (``store``, ``previous_response_id``, ``instructions``, ``metadata``) travels in
``ConversationOptions``: the router acts on it, because stored responses belong to the tenant and the
edge never decides. Used by the edge's ``/v1/responses`` routes and by async jobs, so a job's request
is parsed exactly as the synchronous call's.
"""

from __future__ import annotations

from typing import Any

from gateway.chat.v1 import chat_pb2
from gateway_common.errors import invalid_argument
from gateway_common.openai_wire.requests import parse_gateway_options
from gateway_common.openai_wire.responses_render import parse_item_id
from gateway_common.openai_wire.values import (
    TOOL_CHOICE_MODES,
    read_array,
    read_bool,
    read_int,
    read_name,
    read_number,
    read_object,
    read_str,
)

# Fields the canonical request models, or that only shape the answer.
_MODELLED = frozenset(
    {
        "model",
        "input",
        "instructions",
        "tools",
        "tool_choice",
        "text",
        "max_output_tokens",
        "temperature",
        "top_p",
        "metadata",
        "store",
        "previous_response_id",
        "parallel_tool_calls",
        "user",
        "stream",
        "constraints",
        "gateway",
        "client_id",
    }
)
# Fields OpenAI defines that change nothing the gateway does (or only ask for the default): accepted
# so that SDKs which always send them work, and not passed upstream (a chat upstream rejects them).
_ACCEPTED = frozenset({"include", "truncation", "stream_options", "prompt_cache_key", "safety_identifier"})
# Fields that travel upstream as the chat request's own (same name and meaning there).
_PASSED = {"service_tier": "service_tier", "top_logprobs": "top_logprobs"}

_INPUT_ROLES = {
    "user": chat_pb2.ROLE_USER,
    "system": chat_pb2.ROLE_SYSTEM,
    "developer": chat_pb2.ROLE_DEVELOPER,
    "assistant": chat_pb2.ROLE_ASSISTANT,
}
_MAX_METADATA_PAIRS = 16
_MAX_METADATA_KEY = 64
_MAX_METADATA_VALUE = 512


def parse_responses_request(body: Any, *, force_stream: bool = False) -> tuple[chat_pb2.ChatCompletionRequest, bool]:
    """Parse a Responses API body; returns the canonical request and whether it streams.

    ``force_stream`` is the Unified Model Gateway's ``/v1/responses/stream``, which always streams.
    Raises GatewayError(INVALID_ARGUMENT) naming the parameter (``input[2].type``) for anything
    malformed or unknown: unknown item, part or tool types are refused, never dropped.
    """
    if not isinstance(body, dict):
        raise invalid_argument("The request body must be a JSON object.", "body")
    for key in body:
        if key not in _MODELLED and key not in _ACCEPTED and key not in _PASSED:
            raise invalid_argument(f"Unknown parameter: '{key}'.", key)
    request = chat_pb2.ChatCompletionRequest()
    conversation = request.conversation
    get = body.get
    if get("model") is not None:
        request.model = read_name(body["model"], "model")
    if get("instructions") is not None:
        conversation.instructions = read_str(body["instructions"], "instructions")
    if get("previous_response_id") is not None:
        conversation.previous_response_id = read_name(body["previous_response_id"], "previous_response_id")
    # OpenAI stores by default; so does the gateway (the response store keeps it per tenant).
    conversation.store = read_bool(body["store"], "store") if get("store") is not None else True
    if get("metadata") is not None:
        conversation.metadata.update(_read_metadata(body["metadata"]))
    if "input" not in body or body["input"] is None:
        raise invalid_argument("Missing required parameter: 'input'.", "input")
    for message in _parse_input(body["input"]):
        request.messages.append(message)
    if not request.messages and not conversation.previous_response_id:
        raise invalid_argument("Invalid 'input': empty array. Expected at least one item.", "input")
    if get("temperature") is not None:
        request.temperature = read_number(body["temperature"], "temperature", 0, 2)
    if get("top_p") is not None:
        request.top_p = read_number(body["top_p"], "top_p", 0, 1)
    if get("max_output_tokens") is not None:
        request.max_completion_tokens = read_int(body["max_output_tokens"], "max_output_tokens", 1)
    if get("user") is not None:
        request.user = read_str(body["user"], "user")
    if get("parallel_tool_calls") is not None:
        request.parallel_tool_calls = read_bool(body["parallel_tool_calls"], "parallel_tool_calls")
    if get("tools") is not None:
        for i, tool in enumerate(read_array(body["tools"], "tools")):
            request.tools.append(_parse_tool(tool, f"tools[{i}]"))
    if get("tool_choice") is not None:
        request.tool_choice.CopyFrom(_parse_tool_choice(body["tool_choice"]))
    if get("text") is not None:
        _parse_text(body["text"], request)
    if get("gateway") is not None:
        parse_gateway_options(body["gateway"], request.gateway)
    if get("constraints") is not None:
        # The Unified Model Gateway's top-level constraints mean what the gateway extension's do.
        parse_gateway_options({"constraints": body["constraints"]}, request.gateway, "gateway")
    if get("client_id") is not None:
        parse_gateway_options({"client_id": body["client_id"]}, request.gateway, "gateway")
    extra = {upstream: body[key] for key, upstream in _PASSED.items() if get(key) is not None}
    if extra:
        request.extra.update(extra)
    stream = force_stream or (read_bool(body["stream"], "stream") if get("stream") is not None else False)
    if stream:
        request.stream_options.include_usage = True
    return request, stream


def _read_metadata(raw: Any) -> dict[str, str]:
    data = read_object(raw, "metadata")
    if len(data) > _MAX_METADATA_PAIRS:
        raise invalid_argument(f"'metadata' may hold at most {_MAX_METADATA_PAIRS} pairs.", "metadata")
    out: dict[str, str] = {}
    for key, value in data.items():
        if len(key) > _MAX_METADATA_KEY:
            raise invalid_argument(f"'metadata' keys are at most {_MAX_METADATA_KEY} characters.", f"metadata.{key}")
        text = read_str(value, f"metadata.{key}")
        if len(text) > _MAX_METADATA_VALUE:
            raise invalid_argument(
                f"'metadata' values are at most {_MAX_METADATA_VALUE} characters.", f"metadata.{key}"
            )
        out[key] = text
    return out


def _parse_input(raw: Any) -> list[chat_pb2.Message]:
    if isinstance(raw, str):
        return [chat_pb2.Message(role=chat_pb2.ROLE_USER, text=raw)]
    if isinstance(raw, dict):
        return _parse_unified_input(raw)
    items = read_array(raw, "input")
    messages: list[chat_pb2.Message] = []
    for i, item in enumerate(items):
        _append_item(messages, item, f"input[{i}]")
    return messages


def _parse_unified_input(data: dict[str, Any]) -> list[chat_pb2.Message]:
    """The Unified Model Gateway's ``{"prompt": "…"}`` or ``{"messages": [{"role", "content"}]}``."""
    keys = set(data)
    if keys == {"prompt"}:
        return [chat_pb2.Message(role=chat_pb2.ROLE_USER, text=read_str(data["prompt"], "input.prompt"))]
    if keys == {"messages"}:
        messages: list[chat_pb2.Message] = []
        for i, item in enumerate(read_array(data["messages"], "input.messages")):
            path = f"input.messages[{i}]"
            item = read_object(item, path)
            if "type" not in item:
                item = {**item, "type": "message"}
            _append_item(messages, item, path)
        return messages
    raise invalid_argument('Invalid \'input\': an object must be {"prompt": "…"} or {"messages": […]}.', "input")


def _append_item(messages: list[chat_pb2.Message], raw: Any, path: str) -> None:
    data = read_object(raw, path)
    kind = read_str(data.get("type", "message"), f"{path}.type")
    if kind == "message":
        messages.append(_parse_message_item(data, path))
    elif kind == "function_call":
        call = chat_pb2.ToolCall(id=read_name(data.get("call_id"), f"{path}.call_id"), type="function")
        call.function.name = read_name(data.get("name"), f"{path}.name")
        call.function.arguments = read_str(data.get("arguments", ""), f"{path}.arguments")
        previous = messages[-1] if messages else None
        # Consecutive calls are one assistant turn with several tool calls, as chat upstreams expect.
        if previous is not None and previous.role == chat_pb2.ROLE_ASSISTANT and previous.tool_calls:
            previous.tool_calls.append(call)
        else:
            messages.append(chat_pb2.Message(role=chat_pb2.ROLE_ASSISTANT, tool_calls=[call]))
    elif kind == "function_call_output":
        output = data.get("output")
        message = chat_pb2.Message(
            role=chat_pb2.ROLE_TOOL, tool_call_id=read_name(data.get("call_id"), f"{path}.call_id")
        )
        if isinstance(output, str):
            message.text = output
        else:
            for j, part in enumerate(read_array(output, f"{path}.output")):
                message.parts.append(_parse_part(part, f"{path}.output[{j}]"))
        messages.append(message)
    elif kind == "item_reference":
        # An item of a stored response (the Vercel AI SDK sends its own earlier tool calls so):
        # the router, which holds the tenant's responses, puts the item itself in its place.
        item_id = read_name(data.get("id"), f"{path}.id")
        if parse_item_id(item_id) is None:
            raise invalid_argument(f"Item with id '{item_id}' not found.", f"{path}.id")
        messages.append(chat_pb2.Message(role=chat_pb2.ROLE_ASSISTANT, item_reference=item_id))
    else:
        raise invalid_argument(
            f"Invalid value: '{kind}'. Supported values are: 'message', 'function_call' and 'function_call_output'.",
            f"{path}.type",
        )


def _parse_message_item(data: dict[str, Any], path: str) -> chat_pb2.Message:
    role_name = read_str(data.get("role"), f"{path}.role")
    if role_name not in _INPUT_ROLES:
        raise invalid_argument(
            f"Invalid value: '{role_name}'. Supported values are: 'user', 'system', 'developer' and 'assistant'.",
            f"{path}.role",
        )
    message = chat_pb2.Message(role=_INPUT_ROLES[role_name])
    content = data.get("content")
    if isinstance(content, str):
        message.text = content
    else:
        parts = read_array(content, f"{path}.content")
        for j, part in enumerate(parts):
            message.parts.append(_parse_part(part, f"{path}.content[{j}]"))
    return message


def _parse_part(raw: Any, path: str) -> chat_pb2.ContentPart:
    data = read_object(raw, path)
    kind = read_str(data.get("type"), f"{path}.type")
    if kind in ("input_text", "output_text", "text"):
        return chat_pb2.ContentPart(text=read_str(data.get("text"), f"{path}.text"))
    if kind == "refusal":
        return chat_pb2.ContentPart(text=read_str(data.get("refusal"), f"{path}.refusal"))
    if kind == "input_image":
        if data.get("image_url") is None:
            raise invalid_argument(
                f"Missing required parameter: '{path}.image_url' (file ids are not supported).", f"{path}.image_url"
            )
        part = chat_pb2.ContentPart()
        part.image_url.url = read_str(data["image_url"], f"{path}.image_url")
        if data.get("detail") is not None:
            part.image_url.detail = read_str(data["detail"], f"{path}.detail")
        return part
    raise invalid_argument(
        f"Invalid value: '{kind}'. Supported values are: 'input_text', 'output_text' and 'input_image'.",
        f"{path}.type",
    )


def _parse_tool(raw: Any, path: str) -> chat_pb2.Tool:
    data = read_object(raw, path)
    kind = read_str(data.get("type"), f"{path}.type")
    if kind != "function":
        raise invalid_argument(f"Invalid value: '{kind}'. Supported values are: 'function'.", f"{path}.type")
    tool = chat_pb2.Tool(type="function")
    tool.function.name = read_name(data.get("name"), f"{path}.name")
    if not tool.function.name:
        raise invalid_argument(f"'{path}.name' must not be empty.", f"{path}.name")
    if data.get("description") is not None:
        tool.function.description = read_str(data["description"], f"{path}.description")
    if data.get("parameters") is not None:
        tool.function.parameters.update(read_object(data["parameters"], f"{path}.parameters"))
    if data.get("strict") is not None:
        tool.function.strict = read_bool(data["strict"], f"{path}.strict")
    return tool


def _parse_tool_choice(raw: Any) -> chat_pb2.ToolChoice:
    if isinstance(raw, str):
        if raw not in TOOL_CHOICE_MODES:
            raise invalid_argument(
                f"Invalid value: '{raw}'. Supported values are: 'none', 'auto' and 'required'.", "tool_choice"
            )
        return chat_pb2.ToolChoice(mode=TOOL_CHOICE_MODES[raw])  # type: ignore[arg-type]
    data = read_object(raw, "tool_choice")
    kind = read_str(data.get("type"), "tool_choice.type")
    if kind != "function":
        raise invalid_argument(f"Invalid value: '{kind}'. Supported values are: 'function'.", "tool_choice.type")
    return chat_pb2.ToolChoice(function_name=read_name(data.get("name"), "tool_choice.name"))


def _parse_text(raw: Any, request: chat_pb2.ChatCompletionRequest) -> None:
    text = read_object(raw, "text")
    for key in text:
        if key not in ("format", "verbosity"):
            raise invalid_argument(f"Unknown parameter: 'text.{key}'.", f"text.{key}")
    if text.get("format") is None:
        return
    fmt = read_object(text["format"], "text.format")
    kind = read_str(fmt.get("type"), "text.format.type")
    if kind not in ("text", "json_object", "json_schema"):
        raise invalid_argument(
            f"Invalid value: '{kind}'. Supported values are: 'text', 'json_object' and 'json_schema'.",
            "text.format.type",
        )
    request.response_format.type = kind
    if kind == "json_schema":
        schema: dict[str, Any] = {
            "name": read_name(fmt.get("name"), "text.format.name"),
            "schema": read_object(fmt.get("schema"), "text.format.schema"),
        }
        if fmt.get("strict") is not None:
            schema["strict"] = read_bool(fmt["strict"], "text.format.strict")
        if fmt.get("description") is not None:
            schema["description"] = read_str(fmt["description"], "text.format.description")
        request.response_format.json_schema.update(schema)
