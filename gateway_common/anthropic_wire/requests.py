"""Anthropic Messages JSON (``POST /v1/messages``, ``/v1/messages/count_tokens``) -> the canonical request.

Strict like the OpenAI parser: every rejection is INVALID_ARGUMENT naming the field path
(``messages[1].content[0].source.data``), so the edge can word it as Anthropic's
``invalid_request_error``. The body comes from ``loads_bounded``, which already refused what
protobuf could not carry; the typed readers bound every range.

Mapping (Anthropic -> canonical):

- ``system`` (a string or text blocks) -> one leading system message;
- ``messages[].content`` string -> message text; blocks: ``text`` -> text part, ``image`` (base64 or
  url source) -> image part (base64 as a data URL), ``tool_use`` -> an assistant tool call (``input``
  as JSON arguments), ``tool_result`` -> a tool message (``tool_call_id``), placed before the rest of
  its user turn as Anthropic orders them; an ``is_error`` result is marked in its text (no canonical
  field carries it, and a prefix reaches every provider alike);
- ``tools`` -> function tools (``input_schema`` -> parameters); ``tool_choice`` auto/any/tool/none ->
  auto/required/function/none, ``disable_parallel_tool_use`` -> ``parallel_tool_calls = false``;
- ``stop_sequences`` -> stop, ``metadata.user_id`` -> user, ``top_k`` and unknown top-level fields
  (``thinking``, ``service_tier``, …) -> ``extra``, forwarded as sent;
- ``cache_control`` on any block or tool is accepted and dropped: prompt caching is an upstream
  optimisation, not part of the answer; so are ``thinking``/``redacted_thinking`` blocks of past
  assistant turns (the model's own reasoning, which Anthropic also ignores in past turns).
"""

from __future__ import annotations

import json
from typing import Any

from gateway.chat.v1 import chat_pb2
from gateway_common.errors import invalid_argument
from gateway_common.openai_wire import (
    read_array,
    read_bool,
    read_int,
    read_name,
    read_number,
    read_object,
    read_str,
    to_struct,
)

TOOL_ERROR_PREFIX = "[tool error] "
"""Prefix of the text of a tool result the client marked ``is_error``."""

_THINKING_BLOCKS = frozenset({"thinking", "redacted_thinking"})

_IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})

# Fields modelled here; anything else at the top level travels in `extra`.
_REQUEST_FIELDS = frozenset(
    {
        "model",
        "max_tokens",
        "messages",
        "system",
        "tools",
        "tool_choice",
        "stop_sequences",
        "temperature",
        "top_p",
        "top_k",
        "metadata",
        "stream",
    }
)
# Count-tokens takes no sampling or output options: they cannot change the prompt's size.
_COUNT_FIELDS = frozenset({"model", "messages", "system", "tools", "tool_choice"})


def parse_messages_request(body: Any) -> tuple[chat_pb2.ChatCompletionRequest, bool]:
    """Parse an Anthropic ``POST /v1/messages`` body; returns the canonical request and whether it streams."""
    body = _body(body)
    request = _conversation(body)
    get = body.get
    if get("max_tokens") is None:
        raise invalid_argument("max_tokens: Field required", "max_tokens")
    request.max_tokens = read_int(body["max_tokens"], "max_tokens", 1)
    if get("stop_sequences") is not None:
        for i, item in enumerate(read_array(body["stop_sequences"], "stop_sequences")):
            request.stop.append(read_str(item, f"stop_sequences[{i}]"))
    if get("temperature") is not None:
        request.temperature = read_number(body["temperature"], "temperature", 0, 1)
    if get("top_p") is not None:
        request.top_p = read_number(body["top_p"], "top_p", 0, 1)
    extra: dict[str, Any] = {k: v for k, v in body.items() if k not in _REQUEST_FIELDS and v is not None}
    if get("top_k") is not None:
        extra["top_k"] = read_int(body["top_k"], "top_k", 0)
    if get("metadata") is not None:
        metadata = read_object(body["metadata"], "metadata")
        for key in metadata:
            if key != "user_id":
                raise invalid_argument(f"metadata.{key}: Extra inputs are not permitted", f"metadata.{key}")
        if metadata.get("user_id") is not None:
            request.user = read_str(metadata["user_id"], "metadata.user_id")
    if extra:
        request.extra.update(extra)
    stream = read_bool(body["stream"], "stream") if get("stream") is not None else False
    return request, stream


def parse_count_tokens_request(body: Any) -> chat_pb2.ChatCompletionRequest:
    """Parse an Anthropic ``POST /v1/messages/count_tokens`` body into the canonical request it measures."""
    body = _body(body)
    for key in body:
        if key not in _COUNT_FIELDS:
            raise invalid_argument(f"{key}: Extra inputs are not permitted", key)
    return _conversation(body)


def _body(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise invalid_argument("The request body must be a JSON object.", "body")
    return body


def _conversation(body: dict[str, Any]) -> chat_pb2.ChatCompletionRequest:
    """Model, system, messages, tools and tool choice: what both routes share."""
    request = chat_pb2.ChatCompletionRequest()
    if body.get("model") is None:
        raise invalid_argument("model: Field required", "model")
    request.model = read_name(body["model"], "model")
    if not request.model:
        raise invalid_argument("model: String should have at least 1 character", "model")
    if body.get("system") is not None:
        request.messages.append(_system(body["system"]))
    if body.get("messages") is None:
        raise invalid_argument("messages: Field required", "messages")
    messages = read_array(body["messages"], "messages")
    if not messages:
        raise invalid_argument("messages: at least one message is required", "messages")
    for i, message in enumerate(messages):
        request.messages.extend(_message(message, f"messages[{i}]"))
    if body.get("tools") is not None:
        names: set[str] = set()
        for i, tool in enumerate(read_array(body["tools"], "tools")):
            parsed = _tool(tool, f"tools[{i}]")
            if parsed.function.name in names:
                raise invalid_argument(
                    f"tools[{i}].name: Tool names must be unique ('{parsed.function.name}').", f"tools[{i}].name"
                )
            names.add(parsed.function.name)
            request.tools.append(parsed)
    if body.get("tool_choice") is not None:
        _tool_choice(body["tool_choice"], request)
    return request


def _system(value: Any) -> chat_pb2.Message:
    message = chat_pb2.Message(role=chat_pb2.ROLE_SYSTEM)
    if isinstance(value, str):
        message.text = value
        return message
    for i, block in enumerate(read_array(value, "system")):
        path = f"system[{i}]"
        block = read_object(block, path)
        kind = _block_type(block, path)
        if kind != "text":
            raise invalid_argument(f"{path}.type: Input should be 'text'", f"{path}.type")
        message.parts.add(text=_required_str(block, "text", path))
    return message


def _message(value: Any, path: str) -> list[chat_pb2.Message]:
    data = read_object(value, path)
    role_name = data.get("role")
    if role_name is None:
        raise invalid_argument(f"{path}.role: Field required", f"{path}.role")
    if role_name not in ("user", "assistant"):
        raise invalid_argument(f"{path}.role: Input should be 'user' or 'assistant'", f"{path}.role")
    role = chat_pb2.ROLE_USER if role_name == "user" else chat_pb2.ROLE_ASSISTANT
    if "content" not in data or data["content"] is None:
        raise invalid_argument(f"{path}.content: Field required", f"{path}.content")
    content = data["content"]
    if isinstance(content, str):
        return [chat_pb2.Message(role=role, text=content)]
    blocks = read_array(content, f"{path}.content")
    if not blocks:
        raise invalid_argument(f"{path}.content: at least one content block is required", f"{path}.content")
    message = chat_pb2.Message(role=role)
    results: list[chat_pb2.Message] = []
    for j, block_value in enumerate(blocks):
        block_path = f"{path}.content[{j}]"
        block = read_object(block_value, block_path)
        kind = _block_type(block, block_path)
        if kind == "text":
            message.parts.add(text=_required_str(block, "text", block_path))
        elif kind == "image":
            message.parts.add(image_url=_image(block, block_path))
        elif kind == "tool_use" and role == chat_pb2.ROLE_ASSISTANT:
            message.tool_calls.append(_tool_use(block, block_path))
        elif kind == "tool_result" and role == chat_pb2.ROLE_USER:
            results.append(_tool_result(block, block_path))
        elif kind in _THINKING_BLOCKS and role == chat_pb2.ROLE_ASSISTANT:
            # A model's earlier reasoning, sent back by clients with extended thinking on (Claude
            # Code): no canonical field carries it, and Anthropic itself ignores it in past turns.
            continue
        elif kind in ("tool_use", "tool_result"):
            raise invalid_argument(
                f"{block_path}.type: a '{kind}' block is not allowed in a '{role_name}' message", f"{block_path}.type"
            )
        else:
            raise invalid_argument(
                f"{block_path}.type: Input should be 'text', 'image', 'tool_use' or 'tool_result'", f"{block_path}.type"
            )
    # Tool results answer the previous assistant turn, so they come first, as Anthropic requires.
    return results + ([message] if message.parts or message.tool_calls or not results else [])


def _block_type(block: dict[str, Any], path: str) -> str:
    if block.get("type") is None:
        raise invalid_argument(f"{path}.type: Field required", f"{path}.type")
    return read_str(block["type"], f"{path}.type")


def _required_str(block: dict[str, Any], key: str, path: str) -> str:
    if block.get(key) is None:
        raise invalid_argument(f"{path}.{key}: Field required", f"{path}.{key}")
    return read_str(block[key], f"{path}.{key}")


def _image(block: dict[str, Any], path: str) -> chat_pb2.ImageUrl:
    if block.get("source") is None:
        raise invalid_argument(f"{path}.source: Field required", f"{path}.source")
    source = read_object(block["source"], f"{path}.source")
    kind = _block_type(source, f"{path}.source")
    if kind == "base64":
        media_type = _required_str(source, "media_type", f"{path}.source")
        if media_type not in _IMAGE_TYPES:
            raise invalid_argument(
                f"{path}.source.media_type: Input should be 'image/jpeg', 'image/png', 'image/gif' or 'image/webp'",
                f"{path}.source.media_type",
            )
        data = _required_str(source, "data", f"{path}.source")
        if not data:
            raise invalid_argument(f"{path}.source.data: the image data is empty", f"{path}.source.data")
        return chat_pb2.ImageUrl(url=f"data:{media_type};base64,{data}")
    if kind == "url":
        url = _required_str(source, "url", f"{path}.source")
        if not url.startswith(("https://", "http://")):
            raise invalid_argument(f"{path}.source.url: must be an http(s) URL", f"{path}.source.url")
        return chat_pb2.ImageUrl(url=url)
    raise invalid_argument(f"{path}.source.type: Input should be 'base64' or 'url'", f"{path}.source.type")


def _tool_use(block: dict[str, Any], path: str) -> chat_pb2.ToolCall:
    ident = _required_str(block, "id", path)
    name = _required_str(block, "name", path)
    if "input" not in block or block["input"] is None:
        raise invalid_argument(f"{path}.input: Field required", f"{path}.input")
    arguments = read_object(block["input"], f"{path}.input")
    return chat_pb2.ToolCall(
        id=ident,
        type="function",
        function=chat_pb2.FunctionCall(name=name, arguments=json.dumps(arguments, ensure_ascii=False)),
    )


def _tool_result(block: dict[str, Any], path: str) -> chat_pb2.Message:
    message = chat_pb2.Message(role=chat_pb2.ROLE_TOOL, tool_call_id=_required_str(block, "tool_use_id", path))
    is_error = read_bool(block["is_error"], f"{path}.is_error") if block.get("is_error") is not None else False
    prefix = TOOL_ERROR_PREFIX if is_error else ""
    content = block.get("content")
    if content is None or isinstance(content, str):
        message.text = prefix + (content or "")
        return message
    if prefix:
        message.parts.add(text=prefix.rstrip())
    for k, item in enumerate(read_array(content, f"{path}.content")):
        item_path = f"{path}.content[{k}]"
        item = read_object(item, item_path)
        kind = _block_type(item, item_path)
        if kind == "text":
            message.parts.add(text=_required_str(item, "text", item_path))
        elif kind == "image":
            message.parts.add(image_url=_image(item, item_path))
        else:
            raise invalid_argument(f"{item_path}.type: Input should be 'text' or 'image'", f"{item_path}.type")
    if not message.parts:
        message.text = ""
    return message


def _tool(value: Any, path: str) -> chat_pb2.Tool:
    data = read_object(value, path)
    kind = data.get("type")
    if kind is not None and kind != "custom":
        # Anthropic's server tools (bash, text editor, web search) run on Anthropic's side only.
        raise invalid_argument(
            f"{path}.type: only custom tools are supported (got '{read_str(kind, f'{path}.type')}')", f"{path}.type"
        )
    name = _required_str(data, "name", path)
    if not name:
        raise invalid_argument(f"{path}.name: String should have at least 1 character", f"{path}.name")
    if data.get("input_schema") is None:
        raise invalid_argument(f"{path}.input_schema: Field required", f"{path}.input_schema")
    schema = read_object(data["input_schema"], f"{path}.input_schema")
    if schema.get("type") != "object":
        raise invalid_argument(f"{path}.input_schema.type: Input should be 'object'", f"{path}.input_schema.type")
    function = chat_pb2.FunctionDefinition(name=name, parameters=to_struct(schema))
    if data.get("description") is not None:
        function.description = read_str(data["description"], f"{path}.description")
    return chat_pb2.Tool(type="function", function=function)


_TOOL_CHOICE_MODES = {
    "auto": chat_pb2.TOOL_CHOICE_MODE_AUTO,
    "any": chat_pb2.TOOL_CHOICE_MODE_REQUIRED,
    "none": chat_pb2.TOOL_CHOICE_MODE_NONE,
}


def _tool_choice(value: Any, request: chat_pb2.ChatCompletionRequest) -> None:
    data = read_object(value, "tool_choice")
    kind = _block_type(data, "tool_choice")
    if kind == "tool":
        name = _required_str(data, "name", "tool_choice")
        if not any(tool.function.name == name for tool in request.tools):
            raise invalid_argument(f"tool_choice.name: no tool named '{name}' is declared in tools", "tool_choice.name")
        request.tool_choice.function_name = name
    elif kind in _TOOL_CHOICE_MODES:
        request.tool_choice.mode = _TOOL_CHOICE_MODES[kind]
    else:
        raise invalid_argument("tool_choice.type: Input should be 'auto', 'any', 'tool' or 'none'", "tool_choice.type")
    if data.get("disable_parallel_tool_use") is not None:
        disable = read_bool(data["disable_parallel_tool_use"], "tool_choice.disable_parallel_tool_use")
        if disable:
            request.parallel_tool_calls = False
