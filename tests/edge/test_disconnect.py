"""edge.disconnect: the router call raced against the client's http.disconnect."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from starlette.requests import Request

from edge.disconnect import ClientDisconnected, unless_disconnected
from tests.edge.router_stub import edge_with_router_stub


class FakeCall:
    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> bool:
        self.cancelled = True
        return True


def _request(leaves: asyncio.Event) -> Request:
    messages = [{"type": "http.request", "body": b"", "more_body": False}]

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop()
        await leaves.wait()
        return {"type": "http.disconnect"}

    return Request({"type": "http", "method": "GET", "path": "/", "headers": []}, receive)


async def test_a_client_that_leaves_first_cancels_the_call() -> None:
    leaves, call, ended = asyncio.Event(), FakeCall(), asyncio.Event()

    async def router_call() -> str:
        try:
            await asyncio.Event().wait()
        finally:
            ended.set()
        return "never"

    racing = asyncio.create_task(unless_disconnected(_request(leaves), call, router_call()))
    await asyncio.sleep(0.05)
    assert not racing.done()
    leaves.set()
    with pytest.raises(ClientDisconnected):
        await asyncio.wait_for(racing, 2)
    assert call.cancelled and ended.is_set()


async def test_an_answer_that_comes_first_is_returned_and_the_call_left_alone() -> None:
    call = FakeCall()

    async def router_call() -> str:
        await asyncio.sleep(0.01)
        return "answer"

    assert await unless_disconnected(_request(asyncio.Event()), call, router_call()) == "answer"
    assert not call.cancelled


async def test_a_failed_call_raises_its_error() -> None:
    async def router_call() -> str:
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        await unless_disconnected(_request(asyncio.Event()), FakeCall(), router_call())


async def test_a_cancelled_handler_cancels_the_call() -> None:
    call = FakeCall()
    racing = asyncio.create_task(unless_disconnected(_request(asyncio.Event()), call, asyncio.Event().wait()))
    await asyncio.sleep(0.05)
    racing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await racing
    assert call.cancelled


def test_a_client_that_leaves_while_uploading_is_no_bug(caplog: pytest.LogCaptureFixture) -> None:
    """A body cut short by the client's disconnect is not an "unhandled error" 500: nothing answers it,
    nothing reaches the router."""
    with edge_with_router_stub() as (client, router):
        app = client.app
        sent: list[dict[str, Any]] = []
        incoming = iter(
            [
                {"type": "http.request", "body": b'{"model": "mock:x", "messa', "more_body": True},
                {"type": "http.disconnect"},
            ]
        )

        async def receive() -> dict[str, Any]:
            return next(incoming)

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/v1/chat/completions",
            "raw_path": b"/v1/chat/completions",
            "query_string": b"",
            "root_path": "",
            "headers": [(b"content-type", b"application/json"), (b"authorization", b"Bearer gw-k")],
            "client": ("127.0.0.1", 5000),
            "server": ("127.0.0.1", 8080),
            "state": {},
        }
        with caplog.at_level(logging.ERROR):
            client.portal.call(app, scope, receive, send)  # type: ignore[union-attr,arg-type]
        assert sent == [], "nobody is there to answer"
        assert not [r for r in caplog.records if "unhandled" in r.getMessage()]
        assert sum(router.calls.values()) == 0
