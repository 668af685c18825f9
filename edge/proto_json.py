"""Protobuf messages as the native API's JSON: proto field names, every field present, numbers as numbers.

The proto3 JSON mapping writes 64-bit integers as strings (for JavaScript's 53-bit doubles); the
native API's counters (tokens, requests, micro-USD) are far below 2**53, and clients expect
numbers, so they are written as numbers. Parsing still accepts both (json_format does).
Fields without presence are always written, so an empty list is ``[]`` and a zero is ``0``
rather than a missing key.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor, json_format, message

_INT64_TYPES = {
    descriptor.FieldDescriptor.TYPE_INT64,
    descriptor.FieldDescriptor.TYPE_UINT64,
    descriptor.FieldDescriptor.TYPE_SINT64,
    descriptor.FieldDescriptor.TYPE_FIXED64,
    descriptor.FieldDescriptor.TYPE_SFIXED64,
}


def _is_repeated(field: descriptor.FieldDescriptor) -> bool:
    return bool(field.is_repeated)


def _numbers(kind: descriptor.Descriptor, value: Any) -> Any:
    # Well-known types (Timestamp, Struct, Value, ...) have JSON forms of their own: left as they are.
    if not isinstance(value, dict) or kind.full_name.startswith("google.protobuf."):
        return value
    for field in kind.fields:
        if field.name not in value:
            continue
        item = value[field.name]
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            entry = field.message_type.fields_by_name["value"]
            value[field.name] = {k: _scalar_or_message(entry, v) for k, v in item.items()}
        elif _is_repeated(field):
            value[field.name] = [_scalar_or_message(field, v) for v in item]
        else:
            value[field.name] = _scalar_or_message(field, item)
    return value


def _scalar_or_message(field: descriptor.FieldDescriptor, item: Any) -> Any:
    if field.type in _INT64_TYPES and isinstance(item, str):
        return int(item)
    if field.message_type is not None:
        return _numbers(field.message_type, item)
    return item


def to_json(msg: message.Message) -> Any:
    """``msg`` as a JSON-ready value (a dict for every message but the JSON well-known types)."""
    rendered = json_format.MessageToDict(
        msg, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    kind: descriptor.Descriptor = msg.DESCRIPTOR  # type: ignore[assignment]  # the upb class has no stub of its own
    return _numbers(kind, rendered)
