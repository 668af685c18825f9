"""OpenAI-shaped request bodies -> the canonical ``gateway.chat.v1.ChatCompletionRequest`` as proto JSON.

Over HTTP the edge parses the Responses API and Chat Completions bodies into the canonical request;
over gRPC there is no edge, so the SDK does the same mapping itself, onto the same proto fields
(``protos/gateway/chat/v1/chat.proto``) the edge fills, and the router then governs, routes and
stores exactly as for an edge call. The result is proto JSON (field names, enum names), which the
gRPC transport turns into the message; nothing here needs protobuf or the gateway's own packages.

The router checks values (ranges, models, limits); this module only refuses what it cannot map,
naming the parameter, as the edge does: a field it does not know is an error, never dropped.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from llm_gateway.errors import BadRequestError

Json = dict[str, Any]

ROLES: dict[str, str] = {
    "system": "ROLE_SYSTEM",
    "developer": "ROLE_DEVELOPER",
    "user": "ROLE_USER",
    "assistant": "ROLE_ASSISTANT",
    "tool": "ROLE_TOOL",
    "function": "ROLE_FUNCTION",
}
_INPUT_ROLES = ("user", "system", "developer", "assistant")
TOOL_CHOICE_MODES = {
    "none": "TOOL_CHOICE_MODE_NONE",
    "auto": "TOOL_CHOICE_MODE_AUTO",
    "required": "TOOL_CHOICE_MODE_REQUIRED",
}
_STRATEGIES = {
    "ordered": "ROUTING_STRATEGY_ORDERED",
    "weighted": "ROUTING_STRATEGY_WEIGHTED",
    "cost": "ROUTING_STRATEGY_COST",
    "latency": "ROUTING_STRATEGY_LATENCY",
    "reliability": "ROUTING_STRATEGY_RELIABILITY",
    "least-busy": "ROUTING_STRATEGY_LEAST_BUSY",
}

# The Responses API's parameters: those the canonical request models, those that change nothing
# the gateway does (accepted, as the edge accepts them), and those passed upstream as sent.
_RESPONSES_MODELLED = frozenset(
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
_RESPONSES_ACCEPTED = frozenset({"include", "truncation", "stream_options", "prompt_cache_key", "safety_identifier"})
_RESPONSES_PASSED = ("service_tier", "top_logprobs")

# Chat Completions parameters the canonical request models; any other goes upstream in `extra`.
_CHAT_MODELLED = frozenset(
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
        "client_id",
    }
)
_MESSAGE_FIELDS = frozenset({"role", "content", "name", "tool_calls", "tool_call_id", "refusal"})
_NUMBERS = ("temperature", "top_p", "presence_penalty", "frequency_penalty")


def invalid(message: str, param: str) -> BadRequestError:
    """The error the edge answers for a body it cannot parse (HTTP 400 there, INVALID_ARGUMENT here)."""
    return BadRequestError(message, grpc_code="INVALID_ARGUMENT", param=param, type="invalid_request_error")


def _object(value: Any, path: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise invalid(f"Invalid type for '{path}': expected an object.", path)
    return value


def _array(value: Any, path: str) -> list[Any]:
    if not isinstance(value, list | tuple):
        raise invalid(f"Invalid type for '{path}': expected an array.", path)
    return list(value)


def _str(value: Any, path: str) -> str:
    if not isinstance(value, str):
        raise invalid(f"Invalid type for '{path}': expected a string.", path)
    return value


def responses_request(body: Mapping[str, Any], *, stream: bool) -> Json:
    """A Responses API body (``model``, ``input``, ``instructions``, ``previous_response_id``…) as
    the canonical request; ``store`` defaults to true, as OpenAI's and the edge's do."""
    for key in body:
        if key not in _RESPONSES_MODELLED and key not in _RESPONSES_ACCEPTED and key not in _RESPONSES_PASSED:
            raise invalid(f"Unknown parameter: '{key}'.", key)
    get = body.get
    request: Json = {}
    conversation: Json = {"store": True if get("store") is None else get("store")}
    if get("model") is not None:
        request["model"] = get("model")
    if get("instructions") is not None:
        conversation["instructions"] = get("instructions")
    if get("previous_response_id") is not None:
        conversation["previous_response_id"] = get("previous_response_id")
    if get("metadata") is not None:
        conversation["metadata"] = dict(_object(get("metadata"), "metadata"))
    if get("input") is None:
        raise invalid("Missing required parameter: 'input'.", "input")
    request["messages"] = _responses_input(get("input"))
    if not request["messages"] and not conversation.get("previous_response_id"):
        raise invalid("Invalid 'input': empty array. Expected at least one item.", "input")
    for name in ("temperature", "top_p", "user", "parallel_tool_calls"):
        if get(name) is not None:
            request[name] = get(name)
    if get("max_output_tokens") is not None:
        request["max_completion_tokens"] = get("max_output_tokens")
    if get("tools") is not None:
        request["tools"] = [_responses_tool(t, f"tools[{i}]") for i, t in enumerate(_array(get("tools"), "tools"))]
    if get("tool_choice") is not None:
        request["tool_choice"] = _responses_tool_choice(get("tool_choice"))
    if get("text") is not None:
        _responses_text(_object(get("text"), "text"), request)
    gateway: Json = {}
    if get("gateway") is not None:
        _gateway_options(get("gateway"), gateway, "gateway")
    if get("constraints") is not None:
        _gateway_options({"constraints": get("constraints")}, gateway, "gateway")
    if get("client_id") is not None:
        gateway["client_id"] = _str(get("client_id"), "client_id")
    if gateway:
        request["gateway"] = gateway
    extra = {key: get(key) for key in _RESPONSES_PASSED if get(key) is not None}
    if extra:
        request["extra"] = extra
    if stream:
        request["stream_options"] = {"include_usage": True}
    request["conversation"] = conversation
    return request


def _responses_input(raw: Any) -> list[Json]:
    if isinstance(raw, str):
        return [{"role": "ROLE_USER", "text": raw}]
    if isinstance(raw, Mapping):
        # The Unified Model Gateway's {"prompt": "…"} or {"messages": [{"role", "content"}]}.
        if set(raw) == {"prompt"}:
            return [{"role": "ROLE_USER", "text": _str(raw["prompt"], "input.prompt")}]
        if set(raw) == {"messages"}:
            messages: list[Json] = []
            for i, item in enumerate(_array(raw["messages"], "input.messages")):
                item = _object(item, f"input.messages[{i}]")
                _append_item(messages, {"type": "message", **item}, f"input.messages[{i}]")
            return messages
        raise invalid('Invalid \'input\': an object must be {"prompt": "…"} or {"messages": […]}.', "input")
    messages = []
    for i, item in enumerate(_array(raw, "input")):
        _append_item(messages, item, f"input[{i}]")
    return messages


def _append_item(messages: list[Json], raw: Any, path: str) -> None:
    data = _object(raw, path)
    kind = data.get("type", "message")
    if kind == "message":
        role = data.get("role")
        if role not in _INPUT_ROLES:
            raise invalid(
                f"Invalid value: '{role}'. Supported values are: 'user', 'system', 'developer' and 'assistant'.",
                f"{path}.role",
            )
        message: Json = {"role": ROLES[role]}
        content = data.get("content")
        if isinstance(content, str):
            message["text"] = content
        else:
            parts = _array(content, f"{path}.content")
            message["parts"] = [_responses_part(p, f"{path}.content[{j}]") for j, p in enumerate(parts)]
        messages.append(message)
    elif kind == "function_call":
        call = {
            "id": _str(data.get("call_id"), f"{path}.call_id"),
            "type": "function",
            "function": {"name": _str(data.get("name"), f"{path}.name"), "arguments": data.get("arguments", "")},
        }
        previous = messages[-1] if messages else None
        # Consecutive calls are one assistant turn with several tool calls, as the edge makes them.
        if previous is not None and previous["role"] == "ROLE_ASSISTANT" and previous.get("tool_calls"):
            previous["tool_calls"].append(call)
        else:
            messages.append({"role": "ROLE_ASSISTANT", "tool_calls": [call]})
    elif kind == "function_call_output":
        output = data.get("output")
        message = {"role": "ROLE_TOOL", "tool_call_id": _str(data.get("call_id"), f"{path}.call_id")}
        if isinstance(output, str):
            message["text"] = output
        else:
            parts = _array(output, f"{path}.output")
            message["parts"] = [_responses_part(p, f"{path}.output[{j}]") for j, p in enumerate(parts)]
        messages.append(message)
    elif kind == "item_reference":
        messages.append({"role": "ROLE_ASSISTANT", "item_reference": _str(data.get("id"), f"{path}.id")})
    else:
        raise invalid(
            f"Invalid value: '{kind}'. Supported values are: 'message', 'function_call' and 'function_call_output'.",
            f"{path}.type",
        )


def _responses_part(raw: Any, path: str) -> Json:
    data = _object(raw, path)
    kind = data.get("type")
    if kind in ("input_text", "output_text", "text"):
        return {"text": _str(data.get("text"), f"{path}.text")}
    if kind == "refusal":
        return {"text": _str(data.get("refusal"), f"{path}.refusal")}
    if kind == "input_image":
        if data.get("image_url") is None:
            raise invalid(f"Missing required parameter: '{path}.image_url'.", f"{path}.image_url")
        image: Json = {"url": _str(data["image_url"], f"{path}.image_url")}
        if data.get("detail") is not None:
            image["detail"] = data["detail"]
        return {"image_url": image}
    raise invalid(
        f"Invalid value: '{kind}'. Supported values are: 'input_text', 'output_text' and 'input_image'.",
        f"{path}.type",
    )


def _responses_tool(raw: Any, path: str) -> Json:
    data = _object(raw, path)
    if data.get("type") != "function":
        raise invalid(f"Invalid value: '{data.get('type')}'. Supported values are: 'function'.", f"{path}.type")
    function: Json = {"name": _str(data.get("name"), f"{path}.name")}
    for name in ("description", "parameters", "strict"):
        if data.get(name) is not None:
            function[name] = data[name]
    return {"type": "function", "function": function}


def _responses_tool_choice(raw: Any) -> Json:
    if isinstance(raw, str):
        if raw not in TOOL_CHOICE_MODES:
            raise invalid(
                f"Invalid value: '{raw}'. Supported values are: 'none', 'auto' and 'required'.", "tool_choice"
            )
        return {"mode": TOOL_CHOICE_MODES[raw]}
    data = _object(raw, "tool_choice")
    if data.get("type") != "function":
        raise invalid(f"Invalid value: '{data.get('type')}'. Supported values are: 'function'.", "tool_choice.type")
    return {"function_name": _str(data.get("name"), "tool_choice.name")}


def _responses_text(text: Mapping[str, Any], request: Json) -> None:
    for key in text:
        if key not in ("format", "verbosity"):
            raise invalid(f"Unknown parameter: 'text.{key}'.", f"text.{key}")
    if text.get("format") is None:
        return
    fmt = _object(text["format"], "text.format")
    kind = fmt.get("type")
    if kind not in ("text", "json_object", "json_schema"):
        raise invalid(
            f"Invalid value: '{kind}'. Supported values are: 'text', 'json_object' and 'json_schema'.",
            "text.format.type",
        )
    response_format: Json = {"type": kind}
    if kind == "json_schema":
        schema = {"name": fmt.get("name"), "schema": fmt.get("schema")}
        schema.update({k: fmt[k] for k in ("strict", "description") if fmt.get(k) is not None})
        response_format["json_schema"] = schema
    request["response_format"] = response_format


def _gateway_options(raw: Any, options: Json, path: str) -> None:
    """The gateway extension (``max_cost_usd``, ``client_id``, ``constraints``), as the edge reads it:
    given a cap both directly and in ``constraints.budget``, the lower one holds."""
    gateway = _object(raw, path)
    _only(gateway, ("max_cost_usd", "constraints", "client_id"), path)
    if gateway.get("client_id") is not None:
        options["client_id"] = _str(gateway["client_id"], f"{path}.client_id")
    caps: list[float] = []
    if gateway.get("max_cost_usd") is not None:
        caps.append(float(gateway["max_cost_usd"]))
    if gateway.get("constraints") is not None:
        where = f"{path}.constraints"
        constraints = _object(gateway["constraints"], where)
        _only(constraints, ("routing", "budget"), where)
        if constraints.get("routing") is not None:
            routing = _object(constraints["routing"], f"{where}.routing")
            _only(routing, ("strategy", "allow_providers"), f"{where}.routing")
            if routing.get("strategy") is not None:
                name = routing["strategy"]
                if name not in _STRATEGIES:
                    raise invalid(
                        f"Invalid value for '{where}.routing.strategy': {name!r}; expected one of "
                        f"{', '.join(_STRATEGIES)}.",
                        f"{where}.routing.strategy",
                    )
                options["strategy"] = _STRATEGIES[name]
            if routing.get("allow_providers") is not None:
                options["allow_providers"] = _array(routing["allow_providers"], f"{where}.routing.allow_providers")
        if constraints.get("budget") is not None:
            budget = _object(constraints["budget"], f"{where}.budget")
            _only(budget, ("max_cost_usd",), f"{where}.budget")
            if budget.get("max_cost_usd") is not None:
                caps.append(float(budget["max_cost_usd"]))
    if caps:
        options["max_cost_usd"] = min(caps)


def _only(data: Mapping[str, Any], allowed: tuple[str, ...], path: str) -> None:
    for key in data:
        if key not in allowed:
            raise invalid(f"Unknown parameter: '{path}.{key}'.", f"{path}.{key}")


def chat_completions_request(body: Mapping[str, Any]) -> Json:
    """A Chat Completions body (``model``, ``messages``, sampling, tools…) as the canonical request;
    parameters the canonical request does not model travel upstream in ``extra``, as the edge sends them."""
    get = body.get
    messages = get("messages")
    if messages is None:
        raise invalid("Missing required parameter: 'messages'.", "messages")
    items = _array(messages, "messages")
    if not items:
        raise invalid("Invalid 'messages': empty array. Expected an array with minimum length 1.", "messages")
    request: Json = {"messages": [_chat_message(m, f"messages[{i}]") for i, m in enumerate(items)]}
    if get("model") is not None:
        request["model"] = get("model")
    for name in (*_NUMBERS, "n", "max_tokens", "max_completion_tokens", "seed", "user", "parallel_tool_calls"):
        if get(name) is not None:
            request[name] = get(name)
    if get("stop") is not None:
        request["stop"] = [get("stop")] if isinstance(get("stop"), str) else _array(get("stop"), "stop")
    if get("tools") is not None:
        request["tools"] = [_chat_tool(t, f"tools[{i}]") for i, t in enumerate(_array(get("tools"), "tools"))]
    if get("tool_choice") is not None:
        request["tool_choice"] = _chat_tool_choice(get("tool_choice"))
    if get("response_format") is not None:
        response_format = _object(get("response_format"), "response_format")
        request["response_format"] = {
            k: response_format[k] for k in ("type", "json_schema") if response_format.get(k) is not None
        }
    if get("stream_options") is not None:
        request["stream_options"] = dict(_object(get("stream_options"), "stream_options"))
    gateway: Json = {}
    if get("gateway") is not None:
        _gateway_options(get("gateway"), gateway, "gateway")
    if get("client_id") is not None:
        gateway["client_id"] = _str(get("client_id"), "client_id")
    if gateway:
        request["gateway"] = gateway
    extra = {k: v for k, v in body.items() if k not in _CHAT_MODELLED}
    if extra:
        request["extra"] = extra
    return request


def _chat_message(raw: Any, path: str) -> Json:
    data = _object(raw, path)
    role = data.get("role")
    if role not in ROLES:
        raise invalid(
            f"Invalid value: '{role}'. Supported values are: 'system', 'developer', 'user', 'assistant', "
            "'tool' and 'function'.",
            f"{path}.role",
        )
    message: Json = {"role": ROLES[role]}
    content = data.get("content")
    if isinstance(content, str):
        message["text"] = content
    elif content is not None:
        message["parts"] = [_chat_part(p, f"{path}.content[{j}]") for j, p in enumerate(_array(content, path))]
    for name in ("name", "refusal", "tool_call_id"):
        if data.get(name) is not None:
            message[name] = data[name]
    if data.get("tool_calls") is not None:
        message["tool_calls"] = [
            _chat_tool_call(c, f"{path}.tool_calls[{j}]")
            for j, c in enumerate(_array(data["tool_calls"], f"{path}.tool_calls"))
        ]
    extra = {k: v for k, v in data.items() if k not in _MESSAGE_FIELDS}
    if extra:
        message["extra"] = extra
    return message


def _chat_part(raw: Any, path: str) -> Json:
    data = _object(raw, path)
    kind = data.get("type")
    if kind == "text":
        return {"text": _str(data.get("text"), f"{path}.text")}
    if kind == "image_url":
        return {"image_url": dict(_object(data.get("image_url"), f"{path}.image_url"))}
    if kind == "input_audio":
        return {"input_audio": dict(_object(data.get("input_audio"), f"{path}.input_audio"))}
    # Other part types travel as sent, as the edge passes them on.
    return {"other": dict(data)}


def _chat_tool_call(raw: Any, path: str) -> Json:
    data = _object(raw, path)
    kind = data.get("type") or "function"
    call: Json = {"id": data.get("id", ""), "type": kind}
    if kind == "custom":
        call["custom"] = dict(_object(data.get("custom"), f"{path}.custom"))
    else:
        function = _object(data.get("function"), f"{path}.function")
        call["function"] = {"name": function.get("name", ""), "arguments": function.get("arguments", "")}
    return call


def _chat_tool(raw: Any, path: str) -> Json:
    data = _object(raw, path)
    kind = data.get("type", "function")
    if kind == "custom":
        return {"type": "custom", "custom": dict(_object(data.get("custom"), f"{path}.custom"))}
    if kind != "function":
        raise invalid(f"Invalid value: '{kind}'. Supported values are: 'function' and 'custom'.", f"{path}.type")
    function = _object(data.get("function"), f"{path}.function")
    return {"type": "function", "function": {k: v for k, v in function.items() if v is not None}}


def _chat_tool_choice(raw: Any) -> Json:
    if isinstance(raw, str):
        if raw not in TOOL_CHOICE_MODES:
            raise invalid(
                f"Invalid value: '{raw}'. Supported values are: 'none', 'auto' and 'required'.", "tool_choice"
            )
        return {"mode": TOOL_CHOICE_MODES[raw]}
    data = _object(raw, "tool_choice")
    kind = data.get("type", "function")
    if kind == "function":
        return {"function_name": _str(_object(data.get("function"), "tool_choice.function").get("name"), "name")}
    if kind == "custom":
        return {"custom_name": _str(_object(data.get("custom"), "tool_choice.custom").get("name"), "name")}
    if kind == "allowed_tools":
        allowed = _object(data.get("allowed_tools"), "tool_choice.allowed_tools")
        mode = allowed.get("mode")
        if mode not in ("auto", "required"):
            raise invalid(
                f"Invalid value: '{mode}'. Supported values are: 'auto' and 'required'.",
                "tool_choice.allowed_tools.mode",
            )
        tools = _array(allowed.get("tools"), "tool_choice.allowed_tools.tools")
        return {"allowed_tools": {"mode": TOOL_CHOICE_MODES[mode], "tools": tools}}
    raise invalid(
        f"Invalid value: '{kind}'. Supported values are: 'function', 'custom' and 'allowed_tools'.", "tool_choice.type"
    )
