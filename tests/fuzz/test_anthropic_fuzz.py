"""Property-based fuzzing of the Anthropic façade: generated bodies and headers never make a 5xx.

As ``test_edge_fuzz.py`` does for the OpenAI routes: valid-looking Messages requests with hostile
values mixed in (the same value pool), against a stand-in router. Every refusal is Anthropic's
error shape (or, for a header the edge refuses before any route runs, the edge's shared one) and
left the router untouched; every 200 reached it exactly once.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import event, given
from hypothesis import strategies as st

from tests.edge import anthropic_schema
from tests.edge.anthropic_router_stub import AnthropicRouter, anthropic_edge
from tests.fuzz.test_edge_fuzz import SANE_TEXT, VALUES, dump

PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="

BLOCK = st.one_of(
    st.fixed_dictionaries(
        {"type": st.just("text"), "text": SANE_TEXT}, optional={"cache_control": st.just({"type": "ephemeral"})}
    ),
    st.just({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}),
    st.fixed_dictionaries({"type": st.just("tool_result"), "tool_use_id": st.just("t1"), "content": SANE_TEXT}),
)
MESSAGE = st.fixed_dictionaries(
    {"role": st.just("user"), "content": SANE_TEXT | st.lists(BLOCK, min_size=1, max_size=3)}
) | st.just({"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {"a": 1}}]})
TOOL = st.just({"name": "f", "input_schema": {"type": "object"}})
SANE_MESSAGES = st.fixed_dictionaries(
    {
        "model": st.just("mock:x"),
        "max_tokens": st.integers(min_value=1, max_value=2**31 - 1),
        "messages": st.lists(MESSAGE, min_size=1, max_size=3),
    },
    optional={
        "system": SANE_TEXT | st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": SANE_TEXT}), max_size=2),
        "temperature": st.floats(min_value=0, max_value=1),
        "top_p": st.floats(min_value=0, max_value=1),
        "top_k": st.integers(min_value=0, max_value=500),
        "stop_sequences": st.lists(SANE_TEXT, max_size=2),
        "metadata": st.fixed_dictionaries({"user_id": SANE_TEXT}),
        "tools": st.lists(TOOL, max_size=1),
        "tool_choice": st.sampled_from([{"type": "auto"}, {"type": "any"}, {"type": "none"}]),
        "stream": st.booleans(),
    },
)
TOP_KEYS = [
    "model", "max_tokens", "messages", "system", "temperature", "top_p", "top_k", "stop_sequences",
    "metadata", "tools", "tool_choice", "stream", "thinking",
]  # fmt: skip
MESSAGE_KEYS = ["role", "content"]
BLOCK_KEYS = ["type", "text", "source", "tool_use_id", "content", "is_error", "id", "name", "input"]


@st.composite
def hostile(draw: st.DrawFn) -> dict[str, Any]:
    """A sane Messages body with up to two values replaced by anything at all."""
    body = draw(SANE_MESSAGES)
    for _ in range(draw(st.integers(min_value=0, max_value=2))):
        where = draw(st.sampled_from(["top", "message", "block"]))
        messages = body["messages"]
        # An earlier replacement may have made `messages` (or a message) anything at all: then
        # only the top level is left to replace.
        if where == "top" or not isinstance(messages, list) or not messages:
            body[draw(st.sampled_from(TOP_KEYS))] = draw(VALUES)
            continue
        message = messages[draw(st.integers(min_value=0, max_value=len(messages) - 1))]
        if not isinstance(message, dict):
            body[draw(st.sampled_from(TOP_KEYS))] = draw(VALUES)
        elif where == "message" or not isinstance(message.get("content"), list):
            message[draw(st.sampled_from(MESSAGE_KEYS))] = draw(VALUES)
        else:
            block = dict(draw(BLOCK))
            block[draw(st.sampled_from(BLOCK_KEYS))] = draw(VALUES)
            message["content"] = [block]
    return body


HEADER_VALUE = st.binary(max_size=40).filter(lambda v: b"\r" not in v and b"\n" not in v) | st.sampled_from(
    [b"gw-k", "gw-é".encode(), b"a" * 5000, b"\x00", b"b" * 70_000]
)
HEADERS = st.just({"x-api-key": b"gw-k"}) | st.dictionaries(
    st.sampled_from(["x-api-key", "authorization", "anthropic-version", "anthropic-beta", "x-request-id"]),
    HEADER_VALUE,
    max_size=3,
)


@pytest.fixture(scope="module")
def edge() -> Iterator[tuple[TestClient, AnthropicRouter]]:
    with anthropic_edge(max_body_bytes=256 * 1024) as pair:
        yield pair


@given(body=hostile() | VALUES, headers=HEADERS, path=st.sampled_from(["/v1/messages", "/v1/messages/count_tokens"]))
def test_messages_never_5xx(
    edge: tuple[TestClient, AnthropicRouter], body: Any, headers: dict[str, bytes], path: str
) -> None:
    client, router = edge
    before = sum(router.calls.values())
    response = client.post(path, content=dump(body).encode(), headers={"content-type": "application/json", **headers})
    reached = sum(router.calls.values()) - before
    event(f"HTTP {response.status_code}")
    assert response.status_code < 500, response.text
    if response.status_code == 200:
        assert reached == 1
        if response.headers["content-type"].startswith("text/event-stream"):
            for name, data in anthropic_schema.parse_sse(response.content):
                assert anthropic_schema.stream_event_errors(name, data) == []
        return
    assert reached == 0, f"a refused request ({response.status_code}) reached the router"
    payload = response.json()
    if response.status_code in (400, 413) and "type" in payload:
        assert anthropic_schema.errors("ErrorResponse", payload) == [], payload
    else:
        # Refused by the header bounds before any route ran: the edge's one shape for that.
        assert response.status_code in (400, 431) and payload["error"]["param"], payload
