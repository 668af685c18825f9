"""Hostile input against the real processes: refused with a 400 naming the parameter, no quota used,
nothing in the ledger, and the client's keep-alive connection still usable afterwards."""

from __future__ import annotations

import asyncio
import json
import time

import grpc
import httpx
import pytest

from gateway.chat.v1 import chat_pb2
from gateway.metering.v1 import metering_pb2, metering_pb2_grpc
from gateway.router.v1 import router_pb2, router_pb2_grpc
from gateway_common.errors import GatewayError
from tests.e2e.conftest import Gateway
from tests.edge.test_keepalive import Connection

pytestmark = pytest.mark.e2e

NUL_MODEL = "mock:a\u0000b"


def _key_with_a_daily_quota(gateway: Gateway, name: str) -> tuple[str, str]:
    """(secret, key_id) of a new acme key allowed 100 requests a day."""
    created = httpx.post(
        f"{gateway.url}/admin/v1/keys",
        headers={"Authorization": f"Bearer {gateway.admin_key}"},
        json={
            "tenant_id": "acme",
            "name": name,
            "limits": {"quotas": [{"unit": "UNIT_REQUESTS", "window": "WINDOW_DAY", "limit": 100}]},
        },
        timeout=10,
    )
    assert created.status_code == 200, created.text
    body = created.json()
    return body["secret"], body["key"]["key_id"]


async def _ledger_requests(gateway: Gateway, key_id: str, at_least: int, timeout_s: float = 10.0) -> int:
    """The ledger's request count for ``key_id`` once it reaches ``at_least`` (metering is batched)."""
    deadline = time.monotonic() + timeout_s
    async with gateway.suite.channel("metering", "cli") as channel:
        metering = metering_pb2_grpc.MeteringServiceStub(channel)
        while True:
            answer = await metering.QueryUsage(metering_pb2.QueryUsageRequest(key_id=key_id), timeout=5)
            count = answer.rows[0].requests if answer.rows else 0
            if count >= at_least or time.monotonic() > deadline:
                return count
            await asyncio.sleep(0.05)


async def test_a_nul_in_the_model_is_refused_everywhere_before_any_quota(gateway: Gateway) -> None:
    secret, key_id = _key_with_a_daily_quota(gateway, "nul-model")
    headers = {"Authorization": f"Bearer {secret}"}
    messages = [{"role": "user", "content": "hi"}]
    async with httpx.AsyncClient(base_url=gateway.url, headers=headers, timeout=10) as http:
        for path, body in [
            ("/v1/chat/completions", {"model": NUL_MODEL, "messages": messages}),
            ("/v1/chat/completions", {"model": NUL_MODEL, "messages": messages, "stream": True}),
            ("/v1/embeddings", {"model": NUL_MODEL, "input": "hi"}),
        ]:
            response = await http.post(path, json=body)
            assert response.status_code == 400, response.text
            assert response.json()["error"]["param"] == "model"
        # The native API transcodes without judging; the router refuses it.
        native = await http.post("/v1/chat", json={"model": NUL_MODEL, "messages": [{"role": "user", "content": "hi"}]})
        assert native.status_code == 400, native.text
        assert "model" in native.text

    # Internal services reach the router over gRPC, past the edge: it refuses the same.
    metadata = (("authorization", f"Bearer {secret}"),)
    async with gateway.suite.channel("router", None) as channel:
        router = router_pb2_grpc.RouterServiceStub(channel)
        completion = chat_pb2.ChatCompletionRequest(
            model=NUL_MODEL, messages=[chat_pb2.Message(role=chat_pb2.ROLE_USER, text="hi")]
        )
        calls = [
            router.Chat(router_pb2.ChatRequest(completion=completion), metadata=metadata, timeout=10),
            router.Embed(
                router_pb2.EmbedRequest(embedding=chat_pb2.EmbeddingRequest(model="mock:\x01", input=["hi"])),
                metadata=metadata,
                timeout=10,
            ),
        ]
        for call in calls:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await call
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert GatewayError.from_rpc_error(info.value).metadata["param"] == "model"
        with pytest.raises(grpc.aio.AioRpcError) as streamed:
            async for _ in router.StreamChat(
                router_pb2.StreamChatRequest(completion=completion), metadata=metadata, timeout=10
            ):
                pass
        assert streamed.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    # None of the seven refusals reserved quota or reached the ledger: one good request is the first.
    async with httpx.AsyncClient(base_url=gateway.url, headers=headers, timeout=10) as http:
        good = await http.post("/v1/chat/completions", json={"model": "mock:demo", "messages": messages})
    assert good.status_code == 200, good.text
    assert good.headers["x-ratelimit-remaining-requests"] == "99"
    assert await _ledger_requests(gateway, key_id, at_least=1) == 1


def test_the_real_edge_keeps_the_connection_after_errors(gateway: Gateway) -> None:
    good = json.dumps({"model": "mock:demo", "messages": [{"role": "user", "content": "hi"}]}).encode()
    auth = ("authorization", f"Bearer {gateway.key}".encode())
    bad_requests: list[tuple[str, str, bytes, list[tuple[str, bytes]]]] = [
        ("POST", "/v1/nope", good, [auth]),
        ("GET", "/v1/chat/completions", b"", [auth]),
        ("POST", "/v1/chat/completions", good.replace(b"mock:demo", b"mock:a\\u0000b"), [auth]),
        ("POST", "/v1/chat/completions", good.replace(b'"hi"', b'"\\ud800"'), [auth]),
        ("POST", "/v1/chat/completions", b"x" * 100_000, [auth]),
        (
            "POST",
            "/v1/chat/completions",
            b'{"model": "mock:demo", "messages": ' + b"[" * 5000 + b"]" * 5000 + b"}",
            [auth],
        ),
        ("POST", "/v1/chat/completions", good, [("authorization", b"Bearer " + b"k" * (1 << 20))]),
        ("POST", "/v1/chat/completions", good, [("authorization", "Bearer gw-é".encode())]),
    ]
    connection = Connection(gateway.suite.ports["edge"])
    try:
        for method, target, body, headers in bad_requests:
            status, _, answer = connection.request(method, target, body, headers)
            assert 400 <= status < 500, (target, status, answer)
            assert "error" in json.loads(answer), answer
            assert connection.reusable(), (target, status)
            status, _, answer = connection.request("POST", "/v1/chat/completions", good, [auth])
            assert status == 200, answer
            assert connection.reusable()
    finally:
        connection.close()
