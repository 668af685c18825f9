"""Chat requests: OpenAI JSON -> canonical (the edge) and canonical -> OpenAI JSON (adapters)."""

from __future__ import annotations

from typing import Any

from gateway.chat.v1 import chat_pb2
from gateway_common.errors import invalid_argument
from gateway_common.openai_wire.bounds import INT64_MAX, INT64_MIN
from gateway_common.openai_wire.values import (
    ROLE_NAMES,
    ROLES,
    TOOL_CHOICE_MODE_NAMES,
    TOOL_CHOICE_MODES,
    Json,
    from_struct,
    read_array,
    read_bool,
    read_int,
    read_name,
    read_number,
    read_object,
    read_str,
)

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
        "client_id",
    }
)

# A client id becomes part of a rate-limit descriptor and a ledger key id; longer ones are refused.
MAX_CLIENT_ID_CHARS = 128
_MESSAGE_FIELDS = frozenset({"role", "content", "name", "tool_calls", "tool_call_id", "refusal"})


# ---------------------------------------------------------------------------------------------
# Chat request: OpenAI JSON -> canonical (edge)
# ---------------------------------------------------------------------------------------------


def parse_chat_request(body: Any) -> tuple[chat_pb2.ChatCompletionRequest, bool]:
    """Parse an OpenAI chat completion request body; returns the request and whether it streams.

    Raises GatewayError(INVALID_ARGUMENT) naming the parameter for anything malformed. ``body`` is
    expected from ``loads_bounded``, which has already refused what protobuf could not carry
    (depth, non-finite numbers, lone surrogates); the typed readers here bound each field's range.
    """
    if not isinstance(body, dict):
        raise invalid_argument("The request body must be a JSON object.", "body")
    request = chat_pb2.ChatCompletionRequest()
    get = body.get
    if get("model") is not None:
        request.model = read_name(body["model"], "model")
    if "messages" not in body or body["messages"] is None:
        raise invalid_argument("Missing required parameter: 'messages'.", "messages")
    messages = read_array(body["messages"], "messages")
    if not messages:
        raise invalid_argument("Invalid 'messages': empty array. Expected an array with minimum length 1.", "messages")
    for i, message in enumerate(messages):
        request.messages.append(_parse_message(message, f"messages[{i}]"))
    if get("temperature") is not None:
        request.temperature = read_number(body["temperature"], "temperature", 0, 2)
    if get("top_p") is not None:
        request.top_p = read_number(body["top_p"], "top_p", 0, 1)
    if get("n") is not None:
        request.n = read_int(body["n"], "n", 1, 128)
    if get("stop") is not None:
        stop = body["stop"]
        if isinstance(stop, str):
            request.stop.append(stop)
        else:
            for i, item in enumerate(read_array(stop, "stop")):
                request.stop.append(read_str(item, f"stop[{i}]"))
    if get("max_tokens") is not None:
        request.max_tokens = read_int(body["max_tokens"], "max_tokens", 1)
    if get("max_completion_tokens") is not None:
        request.max_completion_tokens = read_int(body["max_completion_tokens"], "max_completion_tokens", 1)
    if get("presence_penalty") is not None:
        request.presence_penalty = read_number(body["presence_penalty"], "presence_penalty", -2, 2)
    if get("frequency_penalty") is not None:
        request.frequency_penalty = read_number(body["frequency_penalty"], "frequency_penalty", -2, 2)
    if get("seed") is not None:
        request.seed = read_int(body["seed"], "seed", INT64_MIN, INT64_MAX)
    if get("user") is not None:
        request.user = read_str(body["user"], "user")
    if get("tools") is not None:
        for i, tool in enumerate(read_array(body["tools"], "tools")):
            request.tools.append(_parse_tool(tool, f"tools[{i}]"))
    if get("tool_choice") is not None:
        request.tool_choice.CopyFrom(_parse_tool_choice(body["tool_choice"]))
    if get("parallel_tool_calls") is not None:
        request.parallel_tool_calls = read_bool(body["parallel_tool_calls"], "parallel_tool_calls")
    if get("response_format") is not None:
        request.response_format.CopyFrom(_parse_response_format(body["response_format"]))
    stream = read_bool(body["stream"], "stream") if get("stream") is not None else False
    if get("stream_options") is not None:
        options = read_object(body["stream_options"], "stream_options")
        if options.get("include_usage") is not None:
            request.stream_options.include_usage = read_bool(options["include_usage"], "stream_options.include_usage")
    if get("gateway") is not None:
        parse_gateway_options(body["gateway"], request.gateway)
    # Governed LLM Gateway's clients send their id at the top level; it means gateway.client_id.
    if get("client_id") is not None:
        request.gateway.client_id = _read_client_id(body["client_id"], "client_id")
    extra = {k: v for k, v in body.items() if k not in _REQUEST_FIELDS}
    if extra:
        request.extra.update(extra)
    return request, stream


def _read_client_id(value: Any, path: str) -> str:
    client_id = read_name(value, path)
    if not client_id or len(client_id) > MAX_CLIENT_ID_CHARS:
        raise invalid_argument(f"Invalid '{path}': must be 1 to {MAX_CLIENT_ID_CHARS} characters.", path)
    return client_id


_STRATEGIES = {
    "ordered": chat_pb2.ROUTING_STRATEGY_ORDERED,
    "weighted": chat_pb2.ROUTING_STRATEGY_WEIGHTED,
    "cost": chat_pb2.ROUTING_STRATEGY_COST,
    "latency": chat_pb2.ROUTING_STRATEGY_LATENCY,
    "reliability": chat_pb2.ROUTING_STRATEGY_RELIABILITY,
    "least-busy": chat_pb2.ROUTING_STRATEGY_LEAST_BUSY,
}
# A per-request cap beyond this is no cap; read_number needs both bounds to word its error.
_MAX_COST_USD = 1_000_000.0
# Provider config names are short identifiers; a request naming hundreds is not a real request.
_MAX_ALLOW_PROVIDERS = 64


def _only_keys(raw: dict[str, Any], allowed: frozenset[str], path: str) -> None:
    for key in raw:
        if key not in allowed:
            raise invalid_argument(f"Unknown parameter: '{path}.{key}'.", f"{path}.{key}")


def parse_gateway_options(raw: Any, options: chat_pb2.GatewayOptions, path: str = "gateway") -> None:
    """The gateway extension: ``max_cost_usd`` and ``constraints`` (the Unified Model Gateway's
    ``{"routing": {"strategy", "allow_providers"}, "budget": {"max_cost_usd"}}``).

    ``constraints.budget.max_cost_usd`` is ``max_cost_usd`` by another name; given both, the lower
    one holds.
    """
    gateway = read_object(raw, path)
    _only_keys(gateway, frozenset({"max_cost_usd", "constraints", "client_id"}), path)
    if gateway.get("client_id") is not None:
        options.client_id = _read_client_id(gateway["client_id"], f"{path}.client_id")
    caps: list[float] = []
    if gateway.get("max_cost_usd") is not None:
        caps.append(read_number(gateway["max_cost_usd"], f"{path}.max_cost_usd", 0, _MAX_COST_USD))
    if gateway.get("constraints") is not None:
        where = f"{path}.constraints"
        constraints = read_object(gateway["constraints"], where)
        _only_keys(constraints, frozenset({"routing", "budget"}), where)
        if constraints.get("routing") is not None:
            parse_routing(constraints["routing"], options, f"{where}.routing")
        if constraints.get("budget") is not None:
            budget = read_object(constraints["budget"], f"{where}.budget")
            _only_keys(budget, frozenset({"max_cost_usd"}), f"{where}.budget")
            if budget.get("max_cost_usd") is not None:
                caps.append(read_number(budget["max_cost_usd"], f"{where}.budget.max_cost_usd", 0, _MAX_COST_USD))
    if caps:
        options.max_cost_usd = min(caps)


def parse_routing(raw: Any, options: chat_pb2.GatewayOptions, path: str) -> None:
    """``{"strategy": <name>, "allow_providers": [<provider>, ...]}`` into ``options``."""
    routing = read_object(raw, path)
    _only_keys(routing, frozenset({"strategy", "allow_providers"}), path)
    if routing.get("strategy") is not None:
        name = read_str(routing["strategy"], f"{path}.strategy")
        if name not in _STRATEGIES:
            raise invalid_argument(
                f"Invalid value for '{path}.strategy': {name!r}; expected one of {', '.join(_STRATEGIES)}.",
                f"{path}.strategy",
            )
        options.strategy = _STRATEGIES[name]
    if routing.get("allow_providers") is not None:
        providers = read_array(routing["allow_providers"], f"{path}.allow_providers")
        if not providers or len(providers) > _MAX_ALLOW_PROVIDERS:
            raise invalid_argument(
                f"'{path}.allow_providers' must name between 1 and {_MAX_ALLOW_PROVIDERS} providers.",
                f"{path}.allow_providers",
            )
        for i, provider in enumerate(providers):
            options.allow_providers.append(read_name(provider, f"{path}.allow_providers[{i}]"))


def _parse_message(raw: Any, path: str) -> chat_pb2.Message:
    data = read_object(raw, path)
    message = chat_pb2.Message()
    if "role" not in data:
        raise invalid_argument(f"Missing required parameter: '{path}.role'.", f"{path}.role")
    role_name = read_str(data["role"], f"{path}.role")
    if role_name not in ROLES:
        raise invalid_argument(
            f"Invalid value: '{role_name}'. Supported values are: 'system', 'developer', 'user', "
            "'assistant', 'tool' and 'function'.",
            f"{path}.role",
        )
    message.role = ROLES[role_name]  # type: ignore[assignment]
    content = data.get("content")
    if content is None:
        # The spec lets a function result be null (the function returned nothing).
        if role_name not in ("assistant", "function"):
            raise invalid_argument(f"Missing required parameter: '{path}.content'.", f"{path}.content")
    elif isinstance(content, str):
        message.text = content
    else:
        parts = read_array(content, f"{path}.content")
        for j, part in enumerate(parts):
            message.parts.append(_parse_part(part, f"{path}.content[{j}]"))
    if data.get("name") is not None:
        message.name = read_str(data["name"], f"{path}.name")
    if data.get("refusal") is not None:
        message.refusal = read_str(data["refusal"], f"{path}.refusal")
    if data.get("tool_calls") is not None:
        if role_name != "assistant":
            raise invalid_argument(f"'{path}.tool_calls' is only allowed on assistant messages.", f"{path}.tool_calls")
        for j, call in enumerate(read_array(data["tool_calls"], f"{path}.tool_calls")):
            message.tool_calls.append(_parse_tool_call(call, f"{path}.tool_calls[{j}]"))
    if role_name == "tool":
        if data.get("tool_call_id") is None:
            raise invalid_argument(f"Missing required parameter: '{path}.tool_call_id'.", f"{path}.tool_call_id")
        message.tool_call_id = read_str(data["tool_call_id"], f"{path}.tool_call_id")
    if role_name == "function" and not message.name:
        raise invalid_argument(f"Missing required parameter: '{path}.name'.", f"{path}.name")
    extra = {k: v for k, v in data.items() if k not in _MESSAGE_FIELDS}
    if extra:
        message.extra.update(extra)
    return message


def _parse_part(raw: Any, path: str) -> chat_pb2.ContentPart:
    data = read_object(raw, path)
    kind = data.get("type")
    if kind is None:
        raise invalid_argument(f"Missing required parameter: '{path}.type'.", f"{path}.type")
    kind = read_str(kind, f"{path}.type")
    part = chat_pb2.ContentPart()
    if kind == "text":
        part.text = read_str(data.get("text"), f"{path}.text")
    elif kind == "image_url":
        image = read_object(data.get("image_url"), f"{path}.image_url")
        part.image_url.url = read_str(image.get("url"), f"{path}.image_url.url")
        if image.get("detail") is not None:
            part.image_url.detail = read_str(image["detail"], f"{path}.image_url.detail")
    elif kind == "input_audio":
        audio = read_object(data.get("input_audio"), f"{path}.input_audio")
        part.input_audio.data = read_str(audio.get("data"), f"{path}.input_audio.data")
        part.input_audio.format = read_str(audio.get("format"), f"{path}.input_audio.format")
    else:
        part.other.update(data)
    return part


def _parse_tool_call(raw: Any, path: str) -> chat_pb2.ToolCall:
    data = read_object(raw, path)
    kind = read_str(data.get("type") or "function", f"{path}.type")
    if kind not in ("function", "custom"):
        raise invalid_argument(
            f"Invalid value: '{kind}'. Supported values are: 'function' and 'custom'.", f"{path}.type"
        )
    call = chat_pb2.ToolCall(id=read_str(data.get("id"), f"{path}.id"), type=kind)
    if kind == "custom":
        custom = read_object(data.get("custom"), f"{path}.custom")
        call.custom.name = read_str(custom.get("name"), f"{path}.custom.name")
        call.custom.input = read_str(custom.get("input"), f"{path}.custom.input")
        return call
    function = read_object(data.get("function"), f"{path}.function")
    call.function.name = read_str(function.get("name"), f"{path}.function.name")
    call.function.arguments = read_str(function.get("arguments", ""), f"{path}.function.arguments")
    return call


def _parse_tool(raw: Any, path: str) -> chat_pb2.Tool:
    data = read_object(raw, path)
    kind = read_str(data.get("type", "function"), f"{path}.type")
    if kind == "custom":
        return _parse_custom_tool(data, path)
    if kind != "function":
        raise invalid_argument(
            f"Invalid value: '{kind}'. Supported values are: 'function' and 'custom'.", f"{path}.type"
        )
    function = read_object(data.get("function"), f"{path}.function")
    tool = chat_pb2.Tool(type=kind)
    tool.function.name = read_str(function.get("name"), f"{path}.function.name")
    if not tool.function.name:
        raise invalid_argument(f"'{path}.function.name' must not be empty.", f"{path}.function.name")
    if function.get("description") is not None:
        tool.function.description = read_str(function["description"], f"{path}.function.description")
    if function.get("parameters") is not None:
        tool.function.parameters.update(read_object(function["parameters"], f"{path}.function.parameters"))
    if function.get("strict") is not None:
        tool.function.strict = read_bool(function["strict"], f"{path}.function.strict")
    return tool


def _parse_custom_tool(data: Json, path: str) -> chat_pb2.Tool:
    custom = read_object(data.get("custom"), f"{path}.custom")
    tool = chat_pb2.Tool(type="custom")
    tool.custom.name = read_str(custom.get("name"), f"{path}.custom.name")
    if not tool.custom.name:
        raise invalid_argument(f"'{path}.custom.name' must not be empty.", f"{path}.custom.name")
    if custom.get("description") is not None:
        tool.custom.description = read_str(custom["description"], f"{path}.custom.description")
    if custom.get("format") is not None:
        format_ = read_object(custom["format"], f"{path}.custom.format")
        kind = read_str(format_.get("type"), f"{path}.custom.format.type")
        if kind not in ("text", "grammar"):
            raise invalid_argument(
                f"Invalid value: '{kind}'. Supported values are: 'text' and 'grammar'.", f"{path}.custom.format.type"
            )
        if kind == "grammar":
            grammar = read_object(format_.get("grammar"), f"{path}.custom.format.grammar")
            read_str(grammar.get("definition"), f"{path}.custom.format.grammar.definition")
            syntax = read_str(grammar.get("syntax"), f"{path}.custom.format.grammar.syntax")
            if syntax not in ("lark", "regex"):
                raise invalid_argument(
                    f"Invalid value: '{syntax}'. Supported values are: 'lark' and 'regex'.",
                    f"{path}.custom.format.grammar.syntax",
                )
        tool.custom.format.update(format_)
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
    data = read_object(raw, "tool_choice")
    kind = read_str(data.get("type", "function"), "tool_choice.type")
    if kind == "function":
        function = read_object(data.get("function"), "tool_choice.function")
        choice.function_name = read_str(function.get("name"), "tool_choice.function.name")
    elif kind == "custom":
        custom = read_object(data.get("custom"), "tool_choice.custom")
        choice.custom_name = read_str(custom.get("name"), "tool_choice.custom.name")
    elif kind == "allowed_tools":
        allowed = read_object(data.get("allowed_tools"), "tool_choice.allowed_tools")
        mode = read_str(allowed.get("mode"), "tool_choice.allowed_tools.mode")
        if mode not in ("auto", "required"):
            raise invalid_argument(
                f"Invalid value: '{mode}'. Supported values are: 'auto' and 'required'.",
                "tool_choice.allowed_tools.mode",
            )
        choice.allowed_tools.mode = TOOL_CHOICE_MODES[mode]  # type: ignore[assignment]
        for i, item in enumerate(read_array(allowed.get("tools"), "tool_choice.allowed_tools.tools")):
            # Validated now so that translations can rely on every entry naming a tool.
            allowed_tool_name(item, f"tool_choice.allowed_tools.tools[{i}]")
            choice.allowed_tools.tools.add().update(item)
    else:
        raise invalid_argument(
            f"Invalid value: '{kind}'. Supported values are: 'function', 'custom' and 'allowed_tools'.",
            "tool_choice.type",
        )
    return choice


def allowed_tool_name(raw: Any, path: str) -> tuple[str, str]:
    """The (type, name) of one ``allowed_tools.tools`` entry; raises INVALID_ARGUMENT naming ``path``."""
    data = read_object(raw, path)
    kind = read_str(data.get("type", "function"), f"{path}.type")
    if kind not in ("function", "custom"):
        raise invalid_argument(
            f"Invalid value: '{kind}'. Supported values are: 'function' and 'custom'.", f"{path}.type"
        )
    inner = read_object(data.get(kind), f"{path}.{kind}")
    return kind, read_str(inner.get("name"), f"{path}.{kind}.name")


def _parse_response_format(raw: Any) -> chat_pb2.ResponseFormat:
    data = read_object(raw, "response_format")
    kind = read_str(data.get("type"), "response_format.type")
    if kind not in ("text", "json_object", "json_schema"):
        raise invalid_argument(
            f"Invalid value: '{kind}'. Supported values are: 'text', 'json_object' and 'json_schema'.",
            "response_format.type",
        )
    result = chat_pb2.ResponseFormat(type=kind)
    if kind == "json_schema":
        result.json_schema.update(read_object(data.get("json_schema"), "response_format.json_schema"))
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
    """One tool call as OpenAI's ``{id, type, function: {name, arguments}}`` (or ``custom: {name, input}``)."""
    if call.type == "custom":
        return {"id": call.id, "type": "custom", "custom": {"name": call.custom.name, "input": call.custom.input}}
    return {
        "id": call.id,
        "type": call.type or "function",
        "function": {"name": call.function.name, "arguments": call.function.arguments},
    }


def tool_to_openai(tool: chat_pb2.Tool) -> Json:
    """One tool definition in OpenAI's shape."""
    if tool.type == "custom":
        custom: Json = {"name": tool.custom.name}
        if tool.custom.HasField("description"):
            custom["description"] = tool.custom.description
        if tool.custom.HasField("format"):
            custom["format"] = from_struct(tool.custom.format)
        return {"type": "custom", "custom": custom}
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
    if kind == "custom_name":
        return {"type": "custom", "custom": {"name": choice.custom_name}}
    if kind == "allowed_tools":
        return {
            "type": "allowed_tools",
            "allowed_tools": {
                "mode": TOOL_CHOICE_MODE_NAMES.get(choice.allowed_tools.mode, "auto"),
                "tools": [from_struct(tool) for tool in choice.allowed_tools.tools],
            },
        }
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
