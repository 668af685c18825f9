"""The aiohttp upstream client against real loopback servers: each failure lands where the error
table says, streams break and time out as they should, and the pool, the credential header, the
cookie jar and redirects behave as the httpx client before it did."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from gateway.auth.v1 import credentials_pb2
from gateway_common.config import HttpProviderConfig
from gateway_common.errors import GatewayError
from gateway_common.tls import write_local_ca
from services.providers.client import UpstreamClient
from services.providers.http import build_client, iter_sse, open_stream, send
from services.providers.tenant_credentials import TenantCredential, current_credential
from tests.providers.replay import Recording, ReplayServer, Reply, load

STREAM = "openai/chat.stream.text.include_usage.sse"
JSON = (("content-type", "application/json"),)


def _client(base_url: str, **config: Any) -> UpstreamClient:
    settings = HttpProviderConfig.model_validate({"type": "openai_compatible", **config})
    return build_client(settings, base_url, {"Authorization": "Bearer sk-own-key-1234"})


@pytest.fixture
async def client(replay: ReplayServer) -> AsyncIterator[UpstreamClient]:
    upstream = _client(replay.url + "/v1", read_timeout_s=0.3, connect_timeout_s=0.3)
    yield upstream
    await upstream.aclose()


async def _fails(call: Any) -> GatewayError:
    with pytest.raises(GatewayError) as raised:
        await call
    return raised.value


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_a_refused_connection_is_unavailable_and_retryable() -> None:
    upstream = _client(f"http://127.0.0.1:{_closed_port()}/v1")
    try:
        error = await _fails(send(upstream, "GET", "models", provider="up", total_timeout_s=5))
        assert (error.code, error.reason, error.retryable) == (grpc.StatusCode.UNAVAILABLE, "UPSTREAM_ERROR", True)
        assert error.message.startswith("cannot reach up:")
        with pytest.raises(GatewayError) as raised:
            async with open_stream(upstream, "POST", "chat/completions", provider="up", json={}):
                pass
        assert (raised.value.code, raised.value.reason) == (grpc.StatusCode.UNAVAILABLE, "UPSTREAM_ERROR")
    finally:
        await upstream.aclose()


async def test_an_upstream_that_never_answers_is_a_read_timeout(replay: ReplayServer, client: UpstreamClient) -> None:
    replay.reply(Reply(load(STREAM), silent=True))
    error = await _fails(send(client, "POST", "chat/completions", provider="up", total_timeout_s=30, json={}))
    assert (error.code, error.reason, error.retryable) == (grpc.StatusCode.DEADLINE_EXCEEDED, "UPSTREAM_TIMEOUT", True)


async def test_the_whole_call_is_bounded_by_the_total_timeout(replay: ReplayServer) -> None:
    replay.reply(Reply(load(STREAM), silent=True))
    upstream = _client(replay.url + "/v1", read_timeout_s=30)
    try:
        error = await _fails(send(upstream, "POST", "chat/completions", provider="up", total_timeout_s=0.2, json={}))
        assert (error.code, error.reason) == (grpc.StatusCode.DEADLINE_EXCEEDED, "UPSTREAM_TIMEOUT")
        assert "did not answer within 0.2s" in error.message
    finally:
        await upstream.aclose()


async def test_waiting_for_a_pooled_connection_is_a_connect_timeout(replay: ReplayServer) -> None:
    replay.reply(Reply(load(STREAM), silent=True))
    upstream = _client(replay.url + "/v1", max_connections=1, connect_timeout_s=0.2, read_timeout_s=30)
    try:
        hung = asyncio.create_task(send(upstream, "POST", "chat/completions", provider="up", total_timeout_s=30))
        while not replay.requests:
            await asyncio.sleep(0.01)
        error = await _fails(send(upstream, "GET", "models", provider="up", total_timeout_s=30))
        assert (error.code, error.reason, error.retryable) == (grpc.StatusCode.UNAVAILABLE, "UPSTREAM_TIMEOUT", True)
        assert error.message.startswith("timed out connecting to up")
        hung.cancel()
        await asyncio.gather(hung, return_exceptions=True)
    finally:
        await upstream.aclose()


@pytest.mark.parametrize(("header", "value", "seconds"), [("retry-after", "3", 3.0), ("retry-after-ms", "1500", 1.5)])
async def test_a_429_is_resource_exhausted_with_its_retry_after(
    replay: ReplayServer, client: UpstreamClient, header: str, value: str, seconds: float
) -> None:
    body = b'{"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}}'
    replay.reply(Recording("synthetic/429", 429, (*JSON, (header, value)), body))
    error = await _fails(send(client, "POST", "chat/completions", provider="up", total_timeout_s=5, json={}))
    assert (error.code, error.retryable, error.retry_after_s) == (grpc.StatusCode.RESOURCE_EXHAUSTED, True, seconds)
    assert error.metadata["upstream_status"] == "429" and error.metadata["upstream_code"] == "rate_limit_exceeded"


async def test_an_error_answer_to_a_stream_is_mapped_the_same(replay: ReplayServer, client: UpstreamClient) -> None:
    replay.reply(Recording("synthetic/503", 503, (*JSON, ("retry-after", "2")), b'{"error": {"message": "busy"}}'))
    with pytest.raises(GatewayError) as raised:
        async with open_stream(client, "POST", "chat/completions", provider="up", json={}):
            pass
    error = raised.value
    assert (error.code, error.retryable, error.retry_after_s, error.message) == (
        grpc.StatusCode.UNAVAILABLE,
        True,
        2.0,
        "busy",
    )


async def test_a_redirect_is_not_followed(replay: ReplayServer, client: UpstreamClient) -> None:
    replay.reply(Recording("synthetic/307", 307, (*JSON, ("location", "http://elsewhere.invalid/")), b"{}"))
    error = await _fails(send(client, "GET", "models", provider="up", total_timeout_s=5))
    assert (error.code, error.retryable) == (grpc.StatusCode.UNAVAILABLE, False)
    assert len(replay.requests) == 1


async def _events(client: UpstreamClient, idle_timeout_s: float = 5) -> list[str]:
    async with open_stream(client, "POST", "chat/completions", provider="up", json={"stream": True}) as response:
        return [event.data async for event in iter_sse(response, provider="up", idle_timeout_s=idle_timeout_s)]


async def test_a_stream_cut_mid_body_is_broken(replay: ReplayServer, client: UpstreamClient) -> None:
    replay.reply(Reply(load(STREAM), cut_after=2))
    error = await _fails(_events(client))
    assert (error.code, error.reason, error.retryable) == (grpc.StatusCode.UNAVAILABLE, "UPSTREAM_STREAM_BROKEN", True)


async def test_a_silent_stream_hits_the_idle_timeout(replay: ReplayServer) -> None:
    replay.reply(Reply(load(STREAM), hang_after=2))
    upstream = _client(replay.url + "/v1", read_timeout_s=30)
    try:
        error = await _fails(_events(upstream, idle_timeout_s=0.2))
        assert (error.code, error.reason) == (grpc.StatusCode.DEADLINE_EXCEEDED, "UPSTREAM_TIMEOUT")
        assert "sent nothing for 0.2s" in error.message
    finally:
        await upstream.aclose()


async def test_the_idle_timeout_is_per_event_not_for_the_whole_stream(replay: ReplayServer) -> None:
    # Five events 0.12 s apart: the stream outlasts the 0.3 s idle timeout, no gap reaches it.
    body = b"".join(b'data: {"n": %d}\n\n' % n for n in range(5)) + b"data: [DONE]\n\n"
    sse = (("content-type", "text/event-stream"),)
    replay.reply(Reply(Recording("synthetic/paced", 200, sse, body), delay_s=0.12))
    upstream = _client(replay.url + "/v1", read_timeout_s=30)
    try:
        assert await _events(upstream, idle_timeout_s=0.3) == [*(f'{{"n": {n}}}' for n in range(5)), "[DONE]"]
    finally:
        await upstream.aclose()


async def test_leaving_a_stream_early_closes_the_upstream_connection(
    replay: ReplayServer, client: UpstreamClient
) -> None:
    replay.reply(Reply(load(STREAM), hang_after=2))
    async with open_stream(client, "POST", "chat/completions", provider="up", json={"stream": True}) as response:
        events = iter_sse(response, provider="up", idle_timeout_s=5)
        assert (await anext(events)).data.startswith("{")
        await events.aclose()
    await asyncio.wait_for(replay.disconnected.wait(), 5)


async def test_calls_share_one_pooled_connection_and_send_the_body_as_json(
    replay: ReplayServer, client: UpstreamClient
) -> None:
    replay.reply(load(STREAM), Recording("synthetic/models", 200, JSON, b'{"data": []}'))
    assert (await _events(client))[-1] == "[DONE]"
    response = await send(client, "GET", "models", provider="up", total_timeout_s=5, params={"limit": 5})
    assert response.json() == {"data": []}
    assert replay.connections == 1
    stream, listing = replay.requests
    assert (stream.method, stream.path, stream.body) == ("POST", "/v1/chat/completions", {"stream": True})
    assert stream.header("content-type") == "application/json"
    assert (listing.method, listing.path, listing.query) == ("GET", "/v1/models", {"limit": "5"})


async def test_a_tenant_credential_replaces_the_providers_key(replay: ReplayServer) -> None:
    replay.reply(*[Recording("synthetic/models", 200, JSON, b"{}")] * 2)
    upstream = _client(replay.url + "/v1")
    credential = TenantCredential("cred-1", 0, (), credentials_pb2.CREDENTIAL_KIND_API_KEY, "tenant-secret-5678")
    try:
        token = current_credential.set(credential)
        try:
            await send(upstream, "GET", "models", provider="up", total_timeout_s=5)
        finally:
            current_credential.reset(token)
        await send(upstream, "GET", "models", provider="up", total_timeout_s=5)
    finally:
        await upstream.aclose()
    tenant, own = replay.requests
    assert tenant.header("authorization") == "Bearer tenant-secret-5678"
    assert own.header("authorization") == "Bearer sk-own-key-1234"


async def test_an_upstreams_cookies_are_not_sent_back(replay: ReplayServer, client: UpstreamClient) -> None:
    cookie = (*JSON, ("set-cookie", "__cf_bm=abc; Path=/; HttpOnly"))
    replay.reply(Recording("synthetic/cookie", 200, cookie, b"{}"), Recording("synthetic/models", 200, JSON, b"{}"))
    await send(client, "GET", "models", provider="up", total_timeout_s=5)
    await send(client, "GET", "models", provider="up", total_timeout_s=5)
    assert [request.header("cookie") for request in replay.requests] == [None, None]


async def test_with_tracing_on_the_upstream_sees_the_trace(
    replay: ReplayServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from opentelemetry import context, trace

    monkeypatch.setattr("services.providers.client.tracing.enabled", lambda: True)
    replay.reply(Recording("synthetic/models", 200, JSON, b"{}"))
    trace_id, span_id = 0x0AF7651916CD43DD8448EB211C80319C, 0x00F067AA0BA902B7
    parent = trace.NonRecordingSpan(
        trace.SpanContext(trace_id, span_id, is_remote=True, trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED))
    )
    upstream = _client(replay.url + "/v1")
    token = context.attach(trace.set_span_in_context(parent))
    try:
        await send(upstream, "GET", "models", provider="up", total_timeout_s=5)
    finally:
        context.detach(token)
        await upstream.aclose()
    [sent] = replay.requests
    assert (sent.header("traceparent") or "").startswith(f"00-{trace_id:032x}-")


@pytest.fixture
async def tls_upstream(tmp_path: Path) -> AsyncIterator[tuple[str, Path]]:
    """A loopback HTTPS server (certificate from a throwaway CA) answering every request ``{}``."""
    write_local_ca(tmp_path, ["upstream"])
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tmp_path / "upstream.crt", tmp_path / "upstream.key")

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, ssl.SSLError, asyncio.IncompleteReadError):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}")
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=context)
    port = server.sockets[0].getsockname()[1]
    yield f"https://127.0.0.1:{port}/v1", tmp_path / "ca.crt"
    server.close()
    await server.wait_closed()


async def test_tls_upstreams_are_verified(tls_upstream: tuple[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    url, ca = tls_upstream
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    untrusting = _client(url)
    try:
        error = await _fails(send(untrusting, "GET", "models", provider="up", total_timeout_s=5))
        assert (error.code, error.reason) == (grpc.StatusCode.UNAVAILABLE, "UPSTREAM_ERROR")
        assert "certificate" in error.message.lower()
    finally:
        await untrusting.aclose()
    # SSL_CERT_FILE names the trust store, as it did for httpx.
    monkeypatch.setenv("SSL_CERT_FILE", str(ca))
    trusting = _client(url)
    try:
        response = await send(trusting, "GET", "models", provider="up", total_timeout_s=5)
        assert response.json() == {}
    finally:
        await trusting.aclose()
