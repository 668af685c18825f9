"""A lean Server-Sent Events response: frames written straight to ASGI ``send``, one watcher per stream.

Replaces sse-starlette, whose per-stream task group (a ping task, a disconnect listener, an exit
listener) and per-frame anyio cancel scope, lock and encoding cost more than the frame itself. Here
each frame is bytes the route rendered (``data: {json}\\n\\n``, OpenAI's exact framing) and goes out
in one ``send``; the loop does no other work per frame than noting the time.

One watcher task per stream does the two things that cannot wait for the next frame:
- the client's ``http.disconnect``: the relay is cancelled at once, which closes the frame
  generator, whose ``finally`` cancels the router call (cancellation then travels router ->
  providers -> upstream), even while the upstream is silent;
- keep-alive: after ``keepalive_s`` without a frame it writes one ``: ping`` comment (ignored by
  every SSE client), so proxies and clients with idle timeouts keep a slow stream open. Busy
  streams never ping.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping

from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

KEEPALIVE_S = 15.0
"""Seconds of silence after which a ``: ping`` comment is written (sse-starlette's old interval)."""

PING = b": ping\n\n"

# What sse-starlette sent, kept so that proxies (nginx: X-Accel-Buffering) keep not buffering.
_STREAM_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-store"),
    (b"connection", b"keep-alive"),
    (b"x-accel-buffering", b"no"),
)


def data_frame(payload: bytes) -> bytes:
    """One unnamed SSE event: ``data: <payload>`` and the blank line that ends it."""
    return b"data: " + payload + b"\n\n"


def event_frame(kind: str, payload: bytes) -> bytes:
    """One named SSE event (``event: <kind>``), as the Responses API streams them."""
    return b"event: " + kind.encode() + b"\ndata: " + payload + b"\n\n"


class EventStream(Response):
    """An ASGI response relaying ``frames`` (complete SSE frames, as bytes) until they end or the client leaves.

    A ``Response`` so that FastAPI passes it through untouched; none of ``Response.__init__`` is needed.
    """

    def __init__(
        self,
        frames: AsyncIterator[bytes],
        headers: Mapping[str, str] | None = None,
        *,
        keepalive_s: float = KEEPALIVE_S,
    ) -> None:
        self.frames = frames
        self.keepalive_s = keepalive_s
        raw = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in (headers or {}).items()]
        given = {name for name, _ in raw}
        self.raw_headers = raw + [(name, value) for name, value in _STREAM_HEADERS if name not in given]
        self.status_code = 200
        self.background = None
        self._sending = False
        self._last_frame = 0.0
        self._disconnected = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        loop = asyncio.get_running_loop()
        self._last_frame = loop.time()
        relay = asyncio.current_task()
        assert relay is not None
        watcher = loop.create_task(self._watch(receive, send, relay))
        try:
            await self._relay(send, loop)
        except asyncio.CancelledError:
            # Cancelled by the watcher because the client left: nothing more to send, and not an
            # error of this task (uncancel), unless something else cancelled it as well.
            if not self._disconnected or relay.uncancel() > 0:
                raise
        finally:
            watcher.cancel()
            aclose = getattr(self.frames, "aclose", None)
            if aclose is not None:
                await aclose()
        if self.background is not None:
            await self.background()

    async def _relay(self, send: Send, loop: asyncio.AbstractEventLoop) -> None:
        async for frame in self.frames:
            self._sending = True
            await send({"type": "http.response.body", "body": frame, "more_body": True})
            self._sending = False
            self._last_frame = loop.time()
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _watch(self, receive: Receive, send: Send, relay: asyncio.Task[object]) -> None:
        loop = asyncio.get_running_loop()
        while True:
            wait_s = self._last_frame + self.keepalive_s - loop.time()
            if wait_s <= 0:
                if not self._sending:
                    # The relay is waiting for its next frame (not inside a send), so this whole
                    # frame cannot land in the middle of another.
                    await send({"type": "http.response.body", "body": PING, "more_body": True})
                self._last_frame = loop.time()
                continue
            try:
                async with asyncio.timeout(wait_s):
                    message: Message = await receive()
            except TimeoutError:
                continue
            if message["type"] == "http.disconnect":
                self._disconnected = True
                relay.cancel()
                return
