"""No input makes a 5xx: hostile bodies and headers are 4xx in OpenAI's shape, naming the parameter,
and never reach the router (so they use no quota and reach no provider)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from gateway.providers.v1 import providers_pb2
from gateway.router.v1 import router_pb2
from gateway_common import openai_wire
from gateway_common.logging import request_id_var
from gateway_common.openai_wire import MAX_DEPTH
from tests.edge.openai_schema import errors as schema_errors
from tests.edge.router_stub import CountingRouter, edge_with_router_stub

GOOD: dict[str, Any] = {"model": "mock:x", "messages": [{"role": "user", "content": "hi"}]}
GOOD_JSON = json.dumps(GOOD)
JSON_HEADERS = {"content-type": "application/json", "authorization": "Bearer gw-k"}


@pytest.fixture
def edge() -> Iterator[tuple[TestClient, CountingRouter]]:
    with edge_with_router_stub(max_body_bytes=1 << 20) as pair:
        yield pair


def _nested(levels: int, leaf: str = "1") -> str:
    return '{"a":' * levels + leaf + "}" * levels


def _with(field: str, raw_json: str) -> bytes:
    """GOOD with ``"field": <raw_json>`` added, written by hand so any literal can be sent."""
    return (GOOD_JSON[:-1] + f', "{field}": {raw_json}' + "}").encode()


def _assert_refused(response: Any, status: int, param: str | None, router: CountingRouter) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert schema_errors("ErrorResponse", body) == [], body
    assert body["error"]["param"] == param, body
    assert body["error"]["type"] == "invalid_request_error"
    assert sum(router.calls.values()) == 0, router.calls


CHAT_CASES = [
    ("deep_nesting", b'{"model":"m","messages":' + b"[" * 100_000 + b"]" * 100_000 + b"}", "body"),
    ("int_over_4300_digits", _with("seed", "9" * 5000), "seed"),
    ("lone_surrogate_content", GOOD_JSON.replace('"hi"', '"\\ud800"').encode(), "messages[0].content"),
    ("lone_surrogate_model", GOOD_JSON.replace('"mock:x"', '"mock:\\udc00"').encode(), "model"),
    ("lone_surrogate_key", _with("x", '{"\\ud800": 1}'), "x.\\ud800"),
    ("max_tokens_2_31", _with("max_tokens", str(2**31)), "max_tokens"),
    ("max_tokens_1e30", _with("max_tokens", "1e30"), "max_tokens"),
    ("max_completion_tokens_2_31", _with("max_completion_tokens", str(2**31)), "max_completion_tokens"),
    ("max_completion_tokens_1e30", _with("max_completion_tokens", "1e30"), "max_completion_tokens"),
    ("seed_2_64", _with("seed", str(2**64)), "seed"),
    ("passthrough_401_digits", _with("logit_bias", '{"1": ' + "9" * 401 + "}"), "logit_bias.1"),
    ("passthrough_100_levels", _with("metadata", _nested(100)), "metadata" + ".a" * (MAX_DEPTH - 1)),
    ("passthrough_nan", _with("top_logprobs", "NaN"), "top_logprobs"),
    ("passthrough_infinity", _with("x", "[1, -Infinity]"), "x[1]"),
    (
        "tool_parameters_401_digits",
        _with("tools", '[{"type": "function", "function": {"name": "f", "parameters": {"n": ' + "1" * 401 + "}}}]"),
        "tools[0].function.parameters.n",
    ),
    (
        "tool_parameters_100_levels",
        _with("tools", '[{"type": "function", "function": {"name": "f", "parameters": ' + _nested(100) + "}}]"),
        "tools[0].function.parameters" + ".a" * (MAX_DEPTH - 4),
    ),
    ("nul_in_model", json.dumps({**GOOD, "model": "mock:a\u0000b"}).encode(), "model"),
    ("control_char_in_model", json.dumps({**GOOD, "model": "mock:a\u001bb"}).encode(), "model"),
]


@pytest.mark.parametrize(("body", "param"), [case[1:] for case in CHAT_CASES], ids=[case[0] for case in CHAT_CASES])
@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
def test_hostile_chat_bodies_are_400s_that_reach_no_router(
    edge: tuple[TestClient, CountingRouter], body: bytes, param: str, stream: bool
) -> None:
    client, router = edge
    if stream:
        body = body[:-1] + b', "stream": true}'
    response = client.post("/v1/chat/completions", content=body, headers=JSON_HEADERS)
    _assert_refused(response, 400, param, router)


EMBEDDING_CASES = [
    ("lone_surrogate_input", b'{"model": "m", "input": "\\ud800"}', "input"),
    ("lone_surrogate_input_item", b'{"model": "m", "input": ["ok", "a\\udfffb"]}', "input[1]"),
    ("dimensions_2_31", json.dumps({"model": "m", "input": "x", "dimensions": 2**31}).encode(), "dimensions"),
    ("nul_in_model", json.dumps({"model": "m\u0000", "input": "x"}).encode(), "model"),
    ("lone_surrogate_model", b'{"model": "\\ud800", "input": "x"}', "model"),
]


@pytest.mark.parametrize(
    ("body", "param"), [case[1:] for case in EMBEDDING_CASES], ids=[case[0] for case in EMBEDDING_CASES]
)
def test_hostile_embedding_bodies_are_400s_that_reach_no_router(
    edge: tuple[TestClient, CountingRouter], body: bytes, param: str
) -> None:
    client, router = edge
    response = client.post("/v1/embeddings", content=body, headers=JSON_HEADERS)
    _assert_refused(response, 400, param, router)


_NATIVE = b'{"model": "m", "messages": [{"role": "user", "content": "x"}]%s}'


@pytest.mark.parametrize(
    "body",
    [
        _NATIVE % b', "max_tokens": ' + b"9" * 5000,
        _NATIVE % b', "metadata": {"a": ' + b"9" * 401 + b"}",
        _NATIVE % b', "metadata": ' + _nested(100).encode(),
        _NATIVE % b', "temperature": NaN',
        _NATIVE % b', "max_tokens": 2147483648',
        (_NATIVE % b"").replace(b'"m"', b'"\\ud800"'),
    ],
    # A NUL model name is valid JSON and protobuf: the router refuses it (see tests/e2e/test_hostile_input.py).
    ids=["huge_int", "extra_401_digits", "deep", "nan", "int32_overflow", "surrogate"],
)
def test_hostile_native_bodies_are_400s_that_reach_no_router(
    edge: tuple[TestClient, CountingRouter], body: bytes
) -> None:
    client, router = edge
    response = client.post("/v1/chat", content=body, headers=JSON_HEADERS)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["type"] == "invalid_request_error"  # OpenAI's error shape
    assert sum(router.calls.values()) == 0
    # The positive control: the same body without the bad value does reach the router.
    assert client.post("/v1/chat", content=_NATIVE % b"", headers=JSON_HEADERS).status_code == 200
    assert router.calls["Chat"] == 1


def _deep_value(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = {"a": value}
    return value


def test_the_deepest_body_accepted_survives_every_hop(edge: tuple[TestClient, CountingRouter]) -> None:
    """Bodies at MAX_DEPTH, in every place a Struct carries client JSON, pass the edge and protobuf's
    own depth limit at the router and at the providers, so the bound is not merely lower than needed."""
    client, router = edge
    body = {
        **GOOD,
        "metadata": _deep_value(MAX_DEPTH - 1),
        "messages": [
            {"role": "user", "content": [{"type": "x", "x": _deep_value(MAX_DEPTH - 5)}], "extra": _deep_value(28)}
        ],
        "tools": [{"type": "function", "function": {"name": "f", "parameters": _deep_value(MAX_DEPTH - 4)}}],
        "response_format": {"type": "json_schema", "json_schema": _deep_value(MAX_DEPTH - 2)},
    }
    response = client.post("/v1/chat/completions", json=body, headers=JSON_HEADERS)
    assert response.status_code == 200, response.text
    assert router.calls["Chat"] == 1
    request, _ = openai_wire.parse_chat_request(body)
    forwarded = providers_pb2.ChatRequest(completion=request).SerializeToString()
    assert providers_pb2.ChatRequest.FromString(forwarded).completion == request
    assert router_pb2.ChatRequest.FromString(router_pb2.ChatRequest(completion=request).SerializeToString())
    # One level deeper is refused by the edge, before protobuf would refuse it.
    body["metadata"] = _deep_value(MAX_DEPTH)
    response = client.post("/v1/chat/completions", json=body, headers=JSON_HEADERS)
    assert response.status_code == 400 and response.json()["error"]["param"].startswith("metadata.a")
    assert router.calls["Chat"] == 1


def test_a_good_request_reaches_the_router_with_its_headers(edge: tuple[TestClient, CountingRouter]) -> None:
    # The positive control for every refusal above: the same client and stub do reach the router.
    client, router = edge
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    response = client.post(
        "/v1/chat/completions", json=GOOD, headers={"authorization": "Bearer gw-k", "traceparent": traceparent}
    )
    assert response.status_code == 200, response.text
    assert router.calls["Chat"] == 1
    assert router.metadata[0]["authorization"] == "Bearer gw-k"
    assert router.metadata[0]["traceparent"] == traceparent


@pytest.mark.parametrize(
    ("headers", "status", "param"),
    [
        ({"authorization": "Bearer gw-\u00e9".encode()}, 400, "authorization"),
        ({"authorization": b"Bearer gw-\x01k"}, 400, "authorization"),
        ({"traceparent": "00-\u00e9".encode()}, 400, "traceparent"),
        ({"tracestate": b"a=\xff"}, 400, "tracestate"),
        ({"authorization": "Bearer " + "a" * (1 << 20)}, 431, "authorization"),
        ({"traceparent": "0" * 4096}, 431, "traceparent"),
        ({f"x-filler-{i}": "v" * 1000 for i in range(20)}, 431, "headers"),
    ],
    ids=[
        "auth_non_ascii",
        "auth_control",
        "traceparent_non_ascii",
        "tracestate_latin1",
        "auth_1mb",
        "traceparent_4k",
        "many_headers",
    ],
)
@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/embeddings", "/v1/chat", "/v1/models"])
def test_headers_grpc_cannot_carry_are_refused_up_front(
    edge: tuple[TestClient, CountingRouter], headers: dict[str, Any], status: int, param: str, path: str
) -> None:
    client, router = edge
    body = GOOD if path != "/v1/embeddings" else {"model": "m", "input": "x"}
    if path == "/v1/models":
        response = client.get(path, headers=headers)
    else:
        response = client.post(path, json=body, headers=headers)
    _assert_refused(response, status, param, router)
    assert response.headers["x-request-id"].startswith("req_")


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("GET", "/v1/nope", 404), ("POST", "/v2/chat/completions", 404), ("GET", "/v1/chat/completions", 405)],
)
def test_unknown_routes_and_wrong_methods_answer_in_openai_shape(
    edge: tuple[TestClient, CountingRouter], method: str, path: str, status: int
) -> None:
    client, router = edge
    response = client.request(method, path)
    assert response.status_code == status
    body = response.json()
    assert "detail" not in body
    assert schema_errors("ErrorResponse", body) == [], body
    assert path in body["error"]["message"]
    if status == 405:
        assert response.headers["allow"] == "POST"
    assert sum(router.calls.values()) == 0


def test_fastapi_validation_errors_are_400s_in_openai_shape(edge: tuple[TestClient, CountingRouter]) -> None:
    # No route of the edge declares typed parameters today; one that did must not leak a 422 `detail`.
    client, _ = edge

    async def typed(limit: int) -> dict[str, int]:
        return {"limit": limit}

    client.app.add_api_route("/v1/typed", typed)  # type: ignore[attr-defined]
    response = client.get("/v1/typed", params={"limit": "many"})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "limit"
    assert schema_errors("ErrorResponse", response.json()) == []


class _RequestIds(logging.Handler):
    """Records the request id in force when each record is emitted (what the JSON log filter stamps)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.seen.append((record.getMessage(), request_id_var.get()))


def test_a_500_logs_its_request_id(edge: tuple[TestClient, CountingRouter], monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(body: object) -> None:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(openai_wire, "parse_chat_request", boom)
    client, _ = edge
    handler = _RequestIds()
    logging.getLogger().addHandler(handler)
    try:
        response = client.post("/v1/chat/completions", json=GOOD, headers={"x-request-id": "bug-report-2"})
    finally:
        logging.getLogger().removeHandler(handler)
    assert response.status_code == 500
    assert response.headers["x-request-id"] == "bug-report-2"
    assert schema_errors("ErrorResponse", response.json()) == []
    assert "secret internals" not in response.text
    assert ("unhandled error", "bug-report-2") in handler.seen, handler.seen
