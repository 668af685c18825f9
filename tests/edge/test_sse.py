"""edge.sse: frames go out as they come, a silent stream gets a keep-alive comment, a busy one none,
and a client that leaves mid-stream cancels the router call even while the upstream is silent."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import uvicorn

from edge.app import create_app
from edge.sse import PING, EventStream, data_frame, event_frame
from gateway_common.config import GatewayConfig
from tests.edge.router_stub import CountingRouter, edge_with_router_stub, router_stub
from tests.servers import free_port, wait_until

SCOPE: dict[str, Any] = {"type": "http", "method": "POST", "path": "/", "headers": []}


class Client:
    """The ASGI side of one connection: records what was sent; ``leave()`` delivers http.disconnect."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.pinged = asyncio.Event()
        self._left = asyncio.Event()

    async def receive(self) -> dict[str, Any]:
        await self._left.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)
        if message.get("body") == PING:
            self.pinged.set()

    def leave(self) -> None:
        self._left.set()

    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.sent if m["type"] == "http.response.body")


def test_frames_are_the_openai_framing() -> None:
    assert data_frame(b'{"a":1}') == b'data: {"a":1}\n\n'
    assert event_frame("response.created", b"{}") == b"event: response.created\ndata: {}\n\n"


async def test_a_silent_stream_gets_a_keepalive_comment_and_then_its_frames() -> None:
    client = Client()

    async def frames() -> AsyncIterator[bytes]:
        yield data_frame(b"1")
        # Silence until the keep-alive went out: the next frame follows it, nothing is lost.
        await asyncio.wait_for(client.pinged.wait(), 10)
        yield data_frame(b"2")

    stream = EventStream(frames(), {"x-a": "b"}, keepalive_s=0.05)
    await asyncio.wait_for(stream(SCOPE, client.receive, client.send), 20)
    start = client.sent[0]
    assert start["status"] == 200
    assert (b"content-type", b"text/event-stream; charset=utf-8") in start["headers"]
    assert (b"x-a", b"b") in start["headers"]
    body = client.body()
    assert body.startswith(b"data: 1\n\n" + PING) and body.endswith(b"data: 2\n\n")
    assert client.sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}


async def test_a_busy_stream_gets_no_keepalive() -> None:
    client = Client()

    async def frames() -> AsyncIterator[bytes]:
        for i in range(20):
            await asyncio.sleep(0.005)
            yield data_frame(str(i).encode())

    await asyncio.wait_for(EventStream(frames(), keepalive_s=5)(SCOPE, client.receive, client.send), 20)
    assert client.body() == b"".join(data_frame(str(i).encode()) for i in range(20))
    assert not client.pinged.is_set()


async def test_a_client_that_leaves_while_the_stream_is_silent_closes_its_frames() -> None:
    client, closed = Client(), asyncio.Event()

    async def frames() -> AsyncIterator[bytes]:
        try:
            yield data_frame(b"1")
            await asyncio.Event().wait()  # the upstream went silent
            yield data_frame(b"never")
        finally:
            closed.set()  # where the routes cancel the router call

    relay = asyncio.create_task(EventStream(frames(), keepalive_s=60)(SCOPE, client.receive, client.send))
    await asyncio.wait_for(_until_sent(client, 2), 10)
    client.leave()
    await asyncio.wait_for(relay, 10)  # ends normally: the client's leaving is not an error
    assert closed.is_set()
    assert b"never" not in client.body()


async def _until_sent(client: Client, count: int) -> None:
    while len(client.sent) < count:
        await asyncio.sleep(0.01)


HI = [{"role": "user", "content": "hi"}]
STREAMS = {
    "chat": ("/v1/chat/completions", {"model": "hang", "stream": True, "messages": HI}),
    "messages": (
        "/v1/messages",
        {"model": "hang", "max_tokens": 5, "stream": True, "messages": HI},
    ),
    "responses": ("/v1/responses", {"model": "hang", "stream": True, "input": "hi"}),
}


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[int, CountingRouter]]:
    """The edge in a real uvicorn on a free port, its router a CountingRouter."""
    with router_stub() as (address, router):
        config = GatewayConfig.model_validate({"services": {"router": {"address": address}}})
        port = free_port()
        server = uvicorn.Server(
            uvicorn.Config(create_app(config), host="127.0.0.1", port=port, log_config=None, access_log=False)
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        try:
            wait_until(lambda: server.started, "uvicorn", timeout_s=20)
            yield port, router
        finally:
            server.should_exit = True
            thread.join(timeout=20)


@pytest.mark.parametrize("route", list(STREAMS))
def test_leaving_mid_stream_cancels_the_router_call(served: tuple[int, CountingRouter], route: str) -> None:
    port, router = served
    router.hung_stream_cancelled.clear()
    path, body = STREAMS[route]
    raw = json.dumps(body).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nhost: edge\r\nauthorization: Bearer gw-k\r\ncontent-type: application/json\r\n"
            f"content-length: {len(raw)}\r\n\r\n".encode()
            + raw
        )
        received = b""
        while b"data: " not in received:
            data = sock.recv(65536)
            assert data, received
            received += data
        assert received.startswith(b"HTTP/1.1 200"), received
    # The stream's first frame is out and the upstream is silent; the client has gone.
    wait_until(router.hung_stream_cancelled.is_set, "the router call cancelled", timeout_s=10)


def test_chunks_the_router_sent_in_one_message_reach_the_client_in_order() -> None:
    # The edge asks for batch_chunks; the stub answers three chunks in one message (more_chunks).
    with edge_with_router_stub() as (client, _):
        response = client.post(
            "/v1/chat/completions",
            json={"model": "batched", "stream": True, "messages": [{"role": "user", "content": "hi"}]},
            headers={"Authorization": "Bearer gw-test"},
        )
    assert response.status_code == 200
    frames = [line[len("data: ") :] for line in response.text.splitlines() if line.startswith("data: ")]
    assert frames[-1] == "[DONE]"
    text = "".join(c["delta"].get("content", "") for f in frames[:-1] for c in json.loads(f)["choices"])
    assert text == "one two three"
