"""Name tables, Struct conversion, typed readers that name the OpenAI parameter, shared error shapes."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import grpc
from google.protobuf import struct_pb2

from gateway.chat.v1 import chat_pb2
from gateway_common.errors import GatewayError, Reason, invalid_argument
from gateway_common.openai_wire.bounds import INT32_MAX, INT32_MIN

Json = dict[str, Any]

ROLE_NAMES: dict[int, str] = {
    chat_pb2.ROLE_SYSTEM: "system",
    chat_pb2.ROLE_DEVELOPER: "developer",
    chat_pb2.ROLE_USER: "user",
    chat_pb2.ROLE_ASSISTANT: "assistant",
    chat_pb2.ROLE_TOOL: "tool",
    chat_pb2.ROLE_FUNCTION: "function",
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


def read_str(value: Any, path: str) -> str:
    return str(_expect(value, str, "a string", path))


# C0 controls and DEL: no model or deployment name has them, and PostgreSQL refuses NUL in text,
# so a name carrying one would travel to the usage ledger and be refused there.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def read_name(value: Any, path: str) -> str:
    """A string that names something (a model): no control characters."""
    text = read_str(value, path)
    found = _CONTROL.search(text)
    if found:
        raise invalid_argument(
            f"Invalid value for '{path}': it contains the control character U+{ord(found.group()):04X}.", path
        )
    return text


def read_number(value: Any, path: str, low: float | None = None, high: float | None = None) -> float:
    number = float(_expect(value, (int, float), "a number", path))
    if not math.isfinite(number):
        raise invalid_argument(f"Invalid value for '{path}': must be a finite number.", path)
    if low is not None and number < low:
        bound = f"between {low:g} and {high:g}" if high is not None else f"at least {low:g}"
        raise invalid_argument(f"Invalid value for '{path}': {number:g} is not {bound}.", path)
    if high is not None and number > high:
        bound = f"between {low:g} and {high:g}" if low is not None else f"at most {high:g}"
        raise invalid_argument(f"Invalid value for '{path}': {number:g} is not {bound}.", path)
    return number


def read_int(value: Any, path: str, low: int = INT32_MIN, high: int = INT32_MAX) -> int:
    """An integer within ``low``..``high``; the default range is protobuf's int32, the common field type."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    number = int(_expect(value, int, "an integer", path))
    if number < low:
        raise invalid_argument(f"Invalid value for '{path}': must be at least {low}.", path)
    if number > high:
        raise invalid_argument(f"Invalid value for '{path}': must be at most {high}.", path)
    return number


def read_bool(value: Any, path: str) -> bool:
    return bool(_expect(value, bool, "a boolean", path))


def read_object(value: Any, path: str) -> dict[str, Any]:
    return dict(_expect(value, dict, "an object", path))


def read_array(value: Any, path: str) -> list[Any]:
    return list(_expect(value, list, "an array", path))


def keep_extra(target: struct_pb2.Struct, raw: Mapping[str, Any], modelled: frozenset[str]) -> None:
    extra = {k: v for k, v in raw.items() if k not in modelled and v is not None}
    if extra:
        target.update(extra)


def upstream_shape_error(message: str) -> GatewayError:
    return GatewayError(grpc.StatusCode.UNAVAILABLE, Reason.UPSTREAM_STREAM_BROKEN, message, {"retryable": "true"})
