"""A loopback HTTP/1.1 server that replays recorded upstream responses and records what it was sent.

Recordings live in ``../shared/fixtures/upstream/`` (never edited). A replay sends the recorded
status, the recorded headers minus the ones that describe the wire rather than the body
(``content-length``, ``content-encoding``, ``transfer-encoding``, hop-by-hop), and the body bytes
exactly: JSON with a content-length, SSE chunked, one event per chunk, so the client sees events
arrive one by one. A reply can also misbehave the way real upstreams do: close the connection in
the middle of the body, go silent after some events, or never answer; :attr:`ReplayServer.disconnected`
says when a client hung up on a reply that was waiting.

It speaks just enough HTTP/1.1 (request line, headers, content-length bodies, keep-alive) for
httpx; it is written on asyncio streams rather than uvicorn so that it can cut a body mid-way.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections import deque
from dataclasses import dataclass, field, replace
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "upstream"

# Headers that describe the recorded wire (or the connection), not the body we replay.
_DROPPED_HEADERS = frozenset(
    {"content-length", "content-encoding", "transfer-encoding", "connection", "keep-alive", "set-cookie"}
)
_EVENT_END = re.compile(rb"\r\n\r\n|\n\n|\r\r")


@dataclass(frozen=True)
class Recording:
    """One recorded response: status, headers (repeatable, wire headers dropped) and body bytes."""

    name: str
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes

    @property
    def is_sse(self) -> bool:
        """Whether the body is an event stream."""
        return any(k.lower() == "content-type" and "text/event-stream" in v for k, v in self.headers)

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.body)

    def with_body(self, body: bytes) -> Recording:
        """The same response with another body (for a derived misbehaving stream)."""
        return replace(self, body=body)


def _status(raw: Any) -> int:
    if isinstance(raw, int):
        return raw
    if isinstance(raw, dict):
        return int(raw["code"])
    return int(str(raw).split()[0])


def load(name: str) -> Recording:
    """The recording ``name`` (``"openai/chat.text.json"``) with its ``.response-headers.json`` if any.

    Without a headers file the status comes from an ``error.<status>.`` file name (else 200) and
    the content type from the extension.
    """
    path = FIXTURES / name
    body = path.read_bytes()
    stem = path.name.rsplit(".", 1)[0]
    headers_file = path.with_name(f"{stem}.response-headers.json")
    headers: list[tuple[str, str]] = []
    match = re.search(r"(?:^|\.)error\.(\d{3})\.", path.name)
    status = int(match.group(1)) if match else 200
    if headers_file.exists():
        recorded = json.loads(headers_file.read_text())
        status = _status(recorded["status"])
        for key, value in recorded["headers"].items():
            for item in value if isinstance(value, list) else [value]:
                if key.lower() not in _DROPPED_HEADERS:
                    headers.append((key, str(item)))
    if not any(k.lower() == "content-type" for k, _ in headers):
        kind = "text/event-stream; charset=utf-8" if path.suffix == ".sse" else "application/json"
        headers.append(("content-type", kind))
    return Recording(name, status, tuple(headers), body)


def request_body(name: str) -> dict[str, Any] | None:
    """The JSON body of the request that produced recording ``name``, when it was kept."""
    path = FIXTURES / name
    request_file = path.with_name(f"{path.name.rsplit('.', 1)[0]}.request.json")
    if not request_file.exists():
        return None
    body = json.loads(request_file.read_text())["body"]
    return body if isinstance(body, dict) else None


@dataclass(frozen=True)
class Reply:
    """How to answer one request.

    ``cut_after``: close the connection after that many body pieces (no end of body).
    ``hang_after``: after that many pieces send nothing more and wait for the client to leave.
    ``silent``: read the request and never answer (not even headers).
    ``delay_s``: pause between pieces.
    """

    recording: Recording
    cut_after: int | None = None
    hang_after: int | None = None
    silent: bool = False
    delay_s: float = 0.0

    def pieces(self) -> list[bytes]:
        """The body in the pieces it is sent in: one per SSE event, else the whole body."""
        body = self.recording.body
        if not self.recording.is_sse:
            return [body] if body else []
        pieces, start = [], 0
        for match in _EVENT_END.finditer(body):
            pieces.append(body[start : match.end()])
            start = match.end()
        if start < len(body):
            pieces.append(body[start:])
        return pieces


@dataclass
class Received:
    """One request the server got."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any

    def header(self, name: str) -> str | None:
        """A header's value (case-insensitive), or None."""
        return self.headers.get(name.lower())


@dataclass
class ReplayServer:
    """The server; :meth:`start` it, queue replies with :meth:`reply`, read :attr:`requests`."""

    requests: list[Received] = field(default_factory=list)
    disconnected: asyncio.Event = field(default_factory=asyncio.Event)
    _replies: deque[Reply] = field(default_factory=deque)
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    port: int = 0
    connections: int = 0
    """Connections accepted so far (a client that reuses its connection opens one)."""

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        """Listen on a free loopback port."""
        self._server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening and end every open connection."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def reset(self) -> None:
        """Forget requests and queued replies."""
        self.requests.clear()
        self._replies.clear()
        self.connections = 0
        self.disconnected = asyncio.Event()

    def reply(self, *replies: Reply | Recording) -> None:
        """Answer the next requests with these, in order."""
        for item in replies:
            self._replies.append(item if isinstance(item, Reply) else Reply(item))

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        if task is not None:
            # Kept so stop() can end connections that wait for a client to hang up.
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        try:
            while True:
                received = await self._read_request(reader)
                if received is None:
                    return
                self.requests.append(received)
                if not await self._respond(reader, writer):
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _read_request(self, reader: asyncio.StreamReader) -> Received | None:
        line = await reader.readline()
        if not line:
            return None
        method, target, _ = line.decode("latin-1").split(" ", 2)
        headers: dict[str, str] = {}
        while True:
            raw = await reader.readline()
            if raw in (b"\r\n", b"\n", b""):
                break
            key, _, value = raw.decode("latin-1").partition(":")
            headers[key.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        data = await reader.readexactly(length) if length else b""
        url = urlsplit(target)
        body: Any = None
        if data:
            try:
                body = json.loads(data)
            except ValueError:
                body = data
        return Received(method, url.path, dict(parse_qsl(url.query)), headers, body)

    async def _wait_for_hang_up(self, reader: asyncio.StreamReader) -> None:
        while await reader.read(4096):
            pass
        self.disconnected.set()

    async def _respond(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Send the next reply; returns whether the connection can serve another request."""
        if self._replies:
            reply = self._replies.popleft()
        else:
            missing = b'{"error": {"message": "replay server: no reply queued", "type": "test_error"}}'
            reply = Reply(Recording("missing", 500, (("content-type", "application/json"),), missing))
        if reply.silent:
            await self._wait_for_hang_up(reader)
            return False
        recording = reply.recording
        chunked = recording.is_sse
        try:
            phrase = HTTPStatus(recording.status).phrase
        except ValueError:
            phrase = "Status"
        head = [f"HTTP/1.1 {recording.status} {phrase}"]
        head += [f"{k}: {v}" for k, v in recording.headers]
        head.append("transfer-encoding: chunked" if chunked else f"content-length: {len(recording.body)}")
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
        await writer.drain()
        for sent, piece in enumerate(reply.pieces()):
            if reply.hang_after == sent:
                await self._wait_for_hang_up(reader)
                return False
            if reply.cut_after == sent:
                return False
            if sent and reply.delay_s:
                await asyncio.sleep(reply.delay_s)
            writer.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n" if chunked else piece)
            await writer.drain()
        if reply.hang_after is not None and reply.hang_after >= len(reply.pieces()):
            await self._wait_for_hang_up(reader)
            return False
        if reply.cut_after is not None:
            return False
        if chunked:
            writer.write(b"0\r\n\r\n")
            await writer.drain()
        return True
