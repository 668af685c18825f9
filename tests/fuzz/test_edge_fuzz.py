"""Property-based fuzzing of the edge: generated bodies and headers never make a 5xx.

The edge runs in-process against a counting router stub (real gRPC on loopback). For every
generated request: the status is below 500; every 4xx of the OpenAI routes is OpenAI's error
object naming the parameter; every refusal left the router untouched (no quota, no provider);
every 200 reached it exactly once. Bodies are valid-looking requests with hostile values mixed in:
lone surrogates, NUL, NaN and Infinity literals, integers of thousands of digits, nesting far past
the bound, wrong types everywhere. Bounded: a fixed number of examples, derandomized for CI
(``HYPOTHESIS_PROFILE=explore`` runs more, with a random seed).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.edge.openai_schema import errors as schema_errors
from tests.edge.router_stub import CountingRouter, edge_with_router_stub

settings.register_profile(
    "ci",
    max_examples=80,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("explore", parent=settings.get_profile("ci"), max_examples=2000, derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@dataclass(frozen=True)
class Raw:
    """A JSON fragment written as is: literals ``json.dumps`` would never produce."""

    text: str

    def __repr__(self) -> str:
        return f"Raw({self.text[:24]!r}, {len(self.text)} chars)"


def dump(value: Any) -> str:
    """JSON text for ``value``; surrogates are escaped (``\\ud800``), as a hostile client sends them."""
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(k)}:{dump(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(dump(v) for v in value) + "]"
    return json.dumps(value, allow_nan=True)


RAW_LITERALS = st.sampled_from(
    [
        Raw("9" * 5000),
        Raw("-" + "1" * 401),
        Raw("1e400"),
        Raw("-1e400"),
        Raw("NaN"),
        Raw("Infinity"),
        Raw("1e30"),
        Raw(str(2**31)),
        Raw(str(2**64)),
        Raw("[" * 200 + "]" * 200),
        Raw('{"a":' * 60 + "1" + "}" * 60),
        Raw('"\\ud800"'),
        Raw('"x\\udfff"'),
        Raw('"\\u0000"'),
    ]
)
TEXT = st.text(st.characters(codec=None), max_size=12) | st.sampled_from(["\ud800", "a\x00b", "\x1b", "mock:x", ""])
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | TEXT
    | RAW_LITERALS
)
VALUES = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(TEXT, children, max_size=4),
    max_leaves=12,
)
SANE_TEXT = st.text(max_size=12)
MODEL = st.sampled_from(["mock:x", "gpt-4o", ""]) | TEXT


def _maybe(strategy: st.SearchStrategy[Any], sane: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    # Mostly sane values so that requests get deep into the parser, sometimes anything at all.
    return st.one_of(sane, sane, sane, strategy)


MESSAGE = st.fixed_dictionaries(
    {
        "role": st.sampled_from(["user", "system", "developer"]),
        "content": SANE_TEXT
        | st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": SANE_TEXT}), min_size=1, max_size=2),
    },
    optional={"name": SANE_TEXT},
)
TOOL = st.fixed_dictionaries(
    {
        "type": st.just("function"),
        "function": st.fixed_dictionaries(
            {"name": st.just("f")},
            optional={"parameters": st.dictionaries(SANE_TEXT, st.integers() | SANE_TEXT, max_size=3)},
        ),
    }
)
NUMBER = st.floats(min_value=0, max_value=1)
SANE_CHAT = st.fixed_dictionaries(
    {"model": st.just("mock:x"), "messages": st.lists(MESSAGE, min_size=1, max_size=3)},
    optional={
        "temperature": NUMBER,
        "top_p": NUMBER,
        "n": st.integers(min_value=1, max_value=4),
        "stop": SANE_TEXT,
        "max_tokens": st.integers(min_value=1, max_value=2**31 - 1),
        "max_completion_tokens": st.integers(min_value=1, max_value=2**31 - 1),
        "seed": st.integers(min_value=-(2**63), max_value=2**63 - 1),
        "user": SANE_TEXT,
        "tools": st.lists(TOOL, max_size=2),
        "tool_choice": st.sampled_from(["auto", "none", "required"]),
        "stream": st.booleans(),
        "logit_bias": st.dictionaries(st.sampled_from(["1", "2"]), st.integers(min_value=-100, max_value=100)),
        "metadata": st.dictionaries(SANE_TEXT, SANE_TEXT, max_size=2),
    },
)
CHAT_KEYS = [
    "model", "messages", "temperature", "top_p", "n", "stop", "max_tokens", "max_completion_tokens",
    "presence_penalty", "frequency_penalty", "seed", "user", "tools", "tool_choice", "parallel_tool_calls",
    "response_format", "stream", "stream_options", "gateway", "logit_bias", "metadata", "other",
]  # fmt: skip
MESSAGE_KEYS = ["role", "content", "name", "tool_calls", "tool_call_id", "refusal", "other"]
TOOL_KEYS = ["type", "function", "function.name", "function.parameters", "function.strict"]


@st.composite
def hostile(draw: st.DrawFn, sane: st.SearchStrategy[dict[str, Any]], keys: list[str]) -> dict[str, Any]:
    """A sane body with up to two values replaced by anything at all: a parser is fuzzed best one
    bad value at a time, deep inside an otherwise valid request."""
    body = draw(sane)
    for _ in range(draw(st.integers(min_value=0, max_value=2))):
        where = draw(st.sampled_from(["top", "message", "tool"]))
        if where == "top" or not body.get("messages"):
            body[draw(st.sampled_from(keys))] = draw(VALUES)
        elif where == "message":
            message = body["messages"][draw(st.integers(min_value=0, max_value=len(body["messages"]) - 1))]
            message[draw(st.sampled_from(MESSAGE_KEYS))] = draw(VALUES)
        else:
            tool = draw(TOOL)
            key = draw(st.sampled_from(TOOL_KEYS))
            target = tool["function"] if key.startswith("function.") else tool
            target[key.removeprefix("function.")] = draw(VALUES)
            body["tools"] = [tool]
    return body


CHAT_BODY = hostile(SANE_CHAT, CHAT_KEYS)
SANE_EMBEDDING = st.fixed_dictionaries(
    {"model": st.just("mock:x"), "input": SANE_TEXT | st.lists(SANE_TEXT, min_size=1, max_size=4)},
    optional={
        "dimensions": st.integers(min_value=1, max_value=2**31 - 1),
        "encoding_format": st.sampled_from(["float", "base64"]),
        "user": SANE_TEXT,
    },
)
EMBEDDING_BODY = hostile(SANE_EMBEDDING, ["model", "input", "dimensions", "encoding_format", "user", "other"])
NATIVE_CHAT_BODY = st.fixed_dictionaries(
    {
        "model": _maybe(VALUES, st.just("mock:x")),
        "messages": _maybe(
            VALUES,
            st.lists(
                st.fixed_dictionaries({"role": st.just("user"), "content": _maybe(VALUES, SANE_TEXT)}),
                min_size=1,
                max_size=2,
            ),
        ),
    },
    optional={"max_tokens": VALUES, "seed": VALUES, "temperature": VALUES, "metadata": VALUES},
)
NATIVE_EMBED_BODY = st.fixed_dictionaries(
    {
        "embedding": st.fixed_dictionaries(
            {"model": _maybe(VALUES, st.just("mock:x")), "input": _maybe(VALUES, st.lists(SANE_TEXT, max_size=2))},
            optional={"dimensions": VALUES},
        )
    }
)
# Header values as bytes: anything a socket can carry in a header line (no CR or LF), and sizes
# from nothing to far past every bound.
HEADER_VALUE = st.binary(max_size=40).filter(lambda v: b"\r" not in v and b"\n" not in v) | st.sampled_from(
    [b"Bearer gw-k", "Bearer gw-é".encode(), b"a" * 5000, b"b" * 70_000, b"00-" + b"f" * 600]
)
HEADERS = st.just({"authorization": b"Bearer gw-k"}) | st.dictionaries(
    st.sampled_from(["authorization", "traceparent", "tracestate", "x-request-id", "x-other", "content-type"]),
    HEADER_VALUE,
    max_size=4,
)


@pytest.fixture(scope="module")
def edge() -> Iterator[tuple[TestClient, CountingRouter]]:
    with edge_with_router_stub(max_body_bytes=256 * 1024) as pair:
        yield pair


def _send(edge: tuple[TestClient, CountingRouter], path: str, body: str, headers: dict[str, bytes]) -> tuple[Any, int]:
    client, router = edge
    before = sum(router.calls.values())
    response = client.post(path, content=body.encode(), headers={"content-type": "application/json", **headers})
    return response, sum(router.calls.values()) - before


def _check_openai(response: Any, reached: int) -> None:
    event(f"HTTP {response.status_code}")
    assert response.status_code < 500, response.text
    if response.status_code == 200:
        assert reached == 1
        return
    assert reached == 0, f"a refused request ({response.status_code}) reached the router"
    body = response.json()
    assert schema_errors("ErrorResponse", body) == [], body
    if response.status_code in (400, 431):
        assert body["error"]["param"], body


def _check_native(response: Any, reached: int) -> None:
    event(f"HTTP {response.status_code}")
    assert response.status_code < 500, response.text
    if response.status_code == 200:
        assert reached == 1
        return
    assert reached == 0, f"a refused request ({response.status_code}) reached the router"
    # Every refusal, from the transcoder or the header bounds, is OpenAI's error shape.
    assert schema_errors("ErrorResponse", response.json()) == [], response.text


@given(body=CHAT_BODY | VALUES, headers=HEADERS)
def test_chat_completions_never_5xx(
    edge: tuple[TestClient, CountingRouter], body: Any, headers: dict[str, bytes]
) -> None:
    _check_openai(*_send(edge, "/v1/chat/completions", dump(body), headers))


@given(body=EMBEDDING_BODY | VALUES, headers=HEADERS)
def test_embeddings_never_5xx(edge: tuple[TestClient, CountingRouter], body: Any, headers: dict[str, bytes]) -> None:
    _check_openai(*_send(edge, "/v1/embeddings", dump(body), headers))


@given(body=NATIVE_CHAT_BODY | VALUES, headers=HEADERS, path=st.sampled_from(["/v1/chat", "/v1/chat:stream"]))
def test_native_chat_never_5xx(
    edge: tuple[TestClient, CountingRouter], body: Any, headers: dict[str, bytes], path: str
) -> None:
    _check_native(*_send(edge, path, dump(body), headers))


@given(body=NATIVE_EMBED_BODY | VALUES, headers=HEADERS)
def test_native_embed_never_5xx(edge: tuple[TestClient, CountingRouter], body: Any, headers: dict[str, bytes]) -> None:
    _check_native(*_send(edge, "/v1/embed", dump(body), headers))


@given(
    raw=st.binary(max_size=200)
    | st.text(st.characters(codec=None), max_size=50).map(lambda t: t.encode("utf-8", "surrogatepass"))
)
def test_arbitrary_bytes_never_5xx(edge: tuple[TestClient, CountingRouter], raw: bytes) -> None:
    client, router = edge
    for path, check in (
        ("/v1/chat/completions", _check_openai),
        ("/v1/embeddings", _check_openai),
        ("/v1/chat", _check_native),
    ):
        before = sum(router.calls.values())
        response = client.post(path, content=raw, headers={"content-type": "application/json"})
        check(response, sum(router.calls.values()) - before)
