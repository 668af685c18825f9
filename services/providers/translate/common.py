"""Pieces every non-OpenAI translator shares: refusing what an upstream cannot honour, data URLs,
tool-call arguments, and reading upstream JSON defensively.

Pure functions: no I/O. The errors a malformed upstream answer raises come from
``services.providers.http``, which holds the one upstream error table.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc

from gateway.chat.v1 import chat_pb2
from gateway_common.errors import FieldViolation, GatewayError, Reason, invalid_argument
from gateway_common.openai_wire import allowed_tool_name, from_struct
from services.providers.http import bad_response as malformed_response
from services.providers.http import stream_broken as broken_stream

__all__ = ["broken_stream", "malformed_response"]  # re-exported: one error table, in http.py

Json = dict[str, Any]

_DATA_URL = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)(?P<params>(?:;[^;,]*)*?);base64,(?P<data>.*)$", re.DOTALL)


def unsupported(upstream: str, field_path: str, why: str) -> GatewayError:
    """INVALID_ARGUMENT (reason UNSUPPORTED_FIELD): the upstream cannot honour ``field_path`` and
    dropping it would change what the answer means."""
    message = f"'{field_path}' is not supported by the {upstream} API: {why}."
    return GatewayError(
        grpc.StatusCode.INVALID_ARGUMENT,
        Reason.UNSUPPORTED_FIELD,
        message,
        {"param": field_path, "retryable": "false"},
        field_violations=[FieldViolation(field_path, message)],
    )


_CUSTOM_TOOLS = "custom (free-form input) tools exist only in the OpenAI API"


def function_tools(request: chat_pb2.ChatCompletionRequest, upstream: str) -> list[chat_pb2.Tool]:
    """The function tools to declare upstream, for upstreams that know function tools only.

    Custom tools (and a tool choice naming one) are refused: turning free-form input into a JSON
    schema would change what the model is asked. A tool choice of type ``allowed_tools`` is applied
    by declaring only the allowed tools, which is exactly its meaning; its mode is translated with
    the rest of the tool choice.
    """
    for i, tool in enumerate(request.tools):
        if tool.type == "custom":
            raise unsupported(upstream, f"tools[{i}]", _CUSTOM_TOOLS)
    kind = request.tool_choice.WhichOneof("choice")
    if kind == "custom_name":
        raise unsupported(upstream, "tool_choice", _CUSTOM_TOOLS)
    if kind != "allowed_tools":
        return list(request.tools)
    declared = {tool.function.name for tool in request.tools}
    allowed: set[str] = set()
    for i, entry in enumerate(request.tool_choice.allowed_tools.tools):
        path = f"tool_choice.allowed_tools.tools[{i}]"
        tool_kind, name = allowed_tool_name(from_struct(entry), path)
        if tool_kind == "custom":
            raise unsupported(upstream, path, _CUSTOM_TOOLS)
        if name not in declared:
            raise invalid_argument(f"Invalid '{path}': no tool named '{name}' is declared in 'tools'.", path)
        allowed.add(name)
    if not allowed:
        raise invalid_argument(
            "Invalid 'tool_choice.allowed_tools.tools': empty array. Expected at least one tool.",
            "tool_choice.allowed_tools.tools",
        )
    return [tool for tool in request.tools if tool.function.name in allowed]


def refuse_custom_tool_calls(message: chat_pb2.Message, path: str, upstream: str) -> None:
    """UNSUPPORTED_FIELD for a custom tool call in history: the upstream has no such call to replay."""
    for j, call in enumerate(message.tool_calls):
        if call.type == "custom":
            raise unsupported(upstream, f"{path}.tool_calls[{j}]", _CUSTOM_TOOLS)


def parse_data_url(url: str) -> tuple[str, str] | None:
    """``(mime type, base64 data)`` of a base64 ``data:`` URL, or None for any other URL."""
    match = _DATA_URL.match(url)
    if match is None:
        return None
    return match.group("mime").lower(), match.group("data")


def arguments_object(text: str, path: str) -> Json:
    """The JSON object a tool call's ``arguments`` hold (empty text is ``{}``)."""
    if not text.strip():
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        raise invalid_argument(f"Invalid '{path}': the arguments are not valid JSON.", path) from None
    if not isinstance(value, dict):
        raise invalid_argument(f"Invalid '{path}': the arguments must be a JSON object.", path)
    return value


def dump_json(value: Any) -> str:
    """Compact JSON text, non-ASCII kept as is (how OpenAI writes tool-call arguments)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def loads_object(data: str, provider: str, what: str) -> Json:
    """A stream event's JSON object; anything else is a broken stream."""
    try:
        value = json.loads(data)
    except ValueError:
        raise broken_stream(provider, f"{provider} sent a malformed {what} (invalid JSON)") from None
    if not isinstance(value, dict):
        raise broken_stream(provider, f"{provider} sent a malformed {what} (not a JSON object)")
    return value


def obj(value: Any) -> Json:
    """``value`` when it is a JSON object, else an empty one (upstream JSON is read defensively)."""
    return value if isinstance(value, dict) else {}


def int_of(value: Any) -> int:
    """A token count from upstream JSON; anything that is not a non-negative integer counts as 0."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0
    return max(0, int(value))


def text_content(message: chat_pb2.Message, path: str, upstream: str) -> str:
    """The text of a message that may only hold text (system and developer messages)."""
    if message.HasField("text"):
        return message.text
    pieces = []
    for j, part in enumerate(message.parts):
        if part.WhichOneof("part") != "text":
            raise unsupported(upstream, f"{path}.content[{j}]", "only text is accepted in this message")
        pieces.append(part.text)
    return "\n".join(pieces)


def _is_set(value: Any) -> bool:
    # A refused field sent with its "off" value (logprobs: false, logit_bias: {}) asks for nothing.
    return value not in (None, False, 0, "", [], {})


@dataclass(frozen=True)
class ExtraPolicy:
    """What a translator does with the request fields the canonical message does not model.

    ``ignore``: OpenAI-only fields whose absence upstream cannot change the answer (dropped).
    ``refuse``: field -> why the upstream cannot honour it; refused (UNSUPPORTED_FIELD) when set.
    Everything else is forwarded unchanged, so a client can use the upstream's own parameters and an
    upstream that does not know a field says so itself.
    """

    upstream: str
    ignore: frozenset[str] = frozenset()
    refuse: Mapping[str, str] = field(default_factory=dict)

    def apply(self, extra: Json) -> Json:
        """The fields to forward; raises UNSUPPORTED_FIELD for the first refused one that is set."""
        forwarded: Json = {}
        for key, value in extra.items():
            if key in self.refuse:
                if _is_set(value):
                    raise unsupported(self.upstream, key, self.refuse[key])
            elif key not in self.ignore:
                forwarded[key] = value
        return forwarded
