"""The Node SDK's TypeScript types cover every field the native API's proto messages have.

The descriptors of every RPC with a ``google.api.http`` annotation (the routes the edge transcodes)
are walked from the request and response messages as the routes expose them (``body`` and
``response_body`` pick a field), through every message-typed field; each message reached must have
an interface tagged ``@proto <full name>`` in ``sdks/node/src/types.ts`` with all of its fields, and
each enum a type tagged ``@proto-enum <full name>`` with all of its values. The SDK's methods take
and return those interfaces, so tsc (run by test_node_sdk.py and test_packaging.py) holds the
methods to them. A proto field added without its TypeScript field fails here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from google.api import annotations_pb2
from google.protobuf import descriptor

from edge.transcoding import TRANSCODED_SERVICES

ROOT = Path(__file__).resolve().parents[3]
TYPES_TS = ROOT / "sdks" / "node" / "src" / "types.ts"
GEN = ROOT / "gen"

_TAGGED = re.compile(
    r"/\*\*(?:(?!\*/).)*?@proto(?P<enum>-enum)?\s+(?P<proto>[\w.]+)(?:(?!\*/).)*?\*/\s*"
    r"export\s+(?P<kind>interface|type)\s+(?P<name>\w+)",
    re.S,
)
_FIELD = re.compile(r"^  (\w+)\??:", re.M)
_LITERAL = re.compile(r'"([^"]*)"')


@dataclass
class TsTypes:
    """What ``types.ts`` declares, by proto full name."""

    messages: dict[str, set[str]] = field(default_factory=dict)
    enums: dict[str, set[str]] = field(default_factory=dict)


def _braced(text: str) -> str:
    """What is inside the first ``{ … }`` of ``text`` (nested braces included)."""
    start = text.index("{") + 1
    depth = 1
    for index in range(start, len(text)):
        depth += {"{": 1, "}": -1}.get(text[index], 0)
        if depth == 0:
            return text[start:index]
    raise ValueError("unbalanced braces in types.ts")


def parse_types(source: str) -> TsTypes:
    """The tagged interfaces' top-level field names and the tagged enum types' string literals."""
    found = TsTypes()
    for match in _TAGGED.finditer(source):
        rest = source[match.end() :]
        if match["enum"]:
            found.enums[match["proto"]] = set(_LITERAL.findall(rest[: rest.index(";")]))
        elif match["kind"] == "type":
            # `type X = Record<string, never>`: a message without fields.
            found.messages[match["proto"]] = set()
        else:
            found.messages[match["proto"]] = set(_FIELD.findall(_braced(rest)))
    return found


def _annotated_methods() -> list[descriptor.MethodDescriptor]:
    """Every RPC of the generated contracts that the edge exposes as an HTTP route."""
    # The edge's own list: a contract's annotations alone do not make a transcoded route.
    return [
        method
        for _, service in TRANSCODED_SERVICES
        for method in service.methods
        if method.GetOptions().HasExtension(annotations_pb2.http)
    ]


def _exposed(method: descriptor.MethodDescriptor) -> list[descriptor.Descriptor]:
    rule = method.GetOptions().Extensions[annotations_pb2.http]
    request: descriptor.Descriptor | None = method.input_type
    response: descriptor.Descriptor | None = method.output_type
    if rule.body and rule.body != "*":
        request = method.input_type.fields_by_name[rule.body].message_type
    if rule.response_body:
        response = method.output_type.fields_by_name[rule.response_body].message_type
    # A body or response_body field is a message (buf and protoc check the annotation).
    assert request is not None and response is not None, method.full_name
    return [request, response]


def reachable() -> tuple[dict[str, descriptor.Descriptor], dict[str, descriptor.EnumDescriptor]]:
    """The messages and enums the native routes take and answer, by full name."""
    messages: dict[str, descriptor.Descriptor] = {}
    enums: dict[str, descriptor.EnumDescriptor] = {}
    todo = [m for method in _annotated_methods() for m in _exposed(method)]
    while todo:
        message = todo.pop()
        if message.full_name in messages or message.full_name.startswith("google.protobuf."):
            continue
        messages[message.full_name] = message
        for f in message.fields:
            if f.message_type is not None:
                todo.append(f.message_type)
            if f.enum_type is not None:
                enums[f.enum_type.full_name] = f.enum_type
    return messages, enums


def missing(ts: TsTypes) -> list[str]:
    """What the proto messages and enums have that ``ts`` lacks, one line each."""
    messages, enums = reachable()
    problems = []
    for name, message in sorted(messages.items()):
        if name not in ts.messages:
            problems.append(f"{name}: no interface tagged @proto {name}")
            continue
        absent = {f.name for f in message.fields} - ts.messages[name]
        if absent:
            problems.append(f"{name}: lacks {sorted(absent)}")
    for name, enum in sorted(enums.items()):
        if name not in ts.enums:
            problems.append(f"{name}: no type tagged @proto-enum {name}")
            continue
        absent = {v.name for v in enum.values} - ts.enums[name]
        if absent:
            problems.append(f"{name}: lacks values {sorted(absent)}")
    return problems


def test_the_walk_reaches_the_native_api() -> None:
    messages, enums = reachable()
    for name in (
        "gateway.router.v1.UnifiedChatRequest",
        "gateway.router.v1.UnifiedChatChunk",
        "gateway.chat.v1.EmbeddingResponse",
        "gateway.metering.v1.UsageRow",
        "gateway.auth.v1.CreateKeyRequest",
        "gateway.auth.v1.Credential",
        "gateway.quota.v1.Quota",
    ):
        assert name in messages, name
    assert "gateway.metering.v1.GroupBy" in enums
    # The wrappers the routes unwrap (body: "unified") are not what clients send.
    assert "gateway.router.v1.ChatRequest" not in messages


def test_every_proto_field_is_in_the_typescript_types() -> None:
    problems = missing(parse_types(TYPES_TS.read_text(encoding="utf-8")))
    assert not problems, "\n".join(problems)


def test_every_tag_names_a_real_message_or_enum() -> None:
    """A renamed or removed message leaves no stale tag behind."""
    ts = parse_types(TYPES_TS.read_text(encoding="utf-8"))
    messages, enums = reachable()
    assert set(ts.messages) <= set(messages), sorted(set(ts.messages) - set(messages))
    assert set(ts.enums) <= set(enums), sorted(set(ts.enums) - set(enums))


@pytest.mark.parametrize(
    ("source", "problem"),
    [
        (
            "/**\n * @proto gateway.router.v1.UnifiedUsage\n */\nexport interface U {\n"
            "  prompt_tokens: number;\n  completion_tokens: number;\n  nested?: { total_tokens: number };\n}\n",
            "gateway.router.v1.UnifiedUsage: lacks ['total_tokens']",
        ),
        (
            "/** @proto-enum gateway.metering.v1.GroupBy */\n"
            'export type G = "GROUP_BY_UNSPECIFIED" | "GROUP_BY_KEY";\n',
            "gateway.metering.v1.GroupBy: lacks values "
            "['GROUP_BY_CREDENTIAL', 'GROUP_BY_MODEL', 'GROUP_BY_PROVIDER', 'GROUP_BY_TENANT']",
        ),
    ],
    ids=["field", "enum value"],
)
def test_a_missing_field_would_fail(source: str, problem: str) -> None:
    """The check bites: a type without one of its message's fields (or values) is reported."""
    assert problem in missing(parse_types(source))
