"""A fault-injecting OpenAI-compatible upstream on loopback, one behaviour per model name.

Raw asyncio streams rather than an ASGI server, because the faults live below HTTP: a connection
reset (RST, not FIN), a black hole that reads the request and never answers, a chunked stream cut
without its last chunk, a stream that stalls. Each connection serves one request
(``Connection: close``), so what a behaviour does to its connection touches nobody else.

Behaviours (the upstream model name; ``-once`` ones fail their first request, then answer):

==================  ===============================================================================
ok                  the answer, streamed or not; a request that ends with the partial answer (as an
                    assistant prefill, or followed by a continuation instruction) gets only the rest
ratelimited         429 without Retry-After on the first request, then ok
ratelimited-after   429 with ``Retry-After: 1`` on the first request, then ok
ratelimited-long    429 with ``Retry-After: 30`` on every request
error-once          500 on the first request, then ok
unavailable         503 on every request
reset-once          the first connection is reset (RST) after the request is read, then ok
blackhole           reads the request, never answers
slow-<ms>           waits <ms> before the first content (the role chunk comes at once), then ok
cut                 streams the first words, then cuts the chunked body; unary: a cut body
stall               streams the first words, then sends nothing; unary: headers, then nothing
roleonly-stall      streams an empty assistant-role chunk, then nothing
malformed           streams the first words, then a chunk that is not JSON, then the rest
nodone              the whole stream with finish_reason but no usage and no ``[DONE]``
toolong             400 ``context_length_exceeded``
filtered            400 ``content_filter`` (Azure's refusal)
rejects             400 ``unsupported_parameter``
flapping            503 and ok, alternately
toolcut             streams a tool call's name and half its arguments, then cuts
==================  ===============================================================================

A streamed request with ``tools`` gets a tool call instead of text: ``get_weather``,
``{"city": "Paris"}`` in three argument pieces (``toolcut`` sends two, then cuts).

==================  ===============================================================================
==================  ===============================================================================
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

ANSWER = "The quick brown fox jumps over the lazy dog."
WORDS = ["The ", "quick ", "brown ", "fox ", "jumps ", "over ", "the ", "lazy ", "dog."]
BROKEN_AFTER = 3
"""Words a broken stream sends before it breaks: "The quick brown "."""
USAGE = {"prompt_tokens": 11, "completion_tokens": 9, "total_tokens": 20}


@dataclass
class FaultyUpstream:
    """The server, and what it saw: requests per behaviour and every request body."""

    requests: Counter[str] = field(default_factory=Counter)
    bodies: list[dict[str, Any]] = field(default_factory=list)
    _server: asyncio.Server | None = None
    _open: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def base_url(self) -> str:
        """The OpenAI-style base URL (``…/v1``)."""
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/v1"

    async def start(self) -> None:
        """Listen on a free loopback port."""
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)

    async def stop(self) -> None:
        """Stop listening and drop every connection still open (black holes, stalls)."""
        if self._server is not None:
            self._server.close()
        for task in list(self._open):
            task.cancel()
        for task in list(self._open):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def bodies_for(self, model: str) -> list[dict[str, Any]]:
        """The bodies the upstream received for ``model``."""
        return [b for b in self.bodies if b.get("model") == model]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._open.add(task)
        try:
            body = await _read_request(reader)
            if body is None:
                return
            self.bodies.append(body)
            model = str(body.get("model", ""))
            self.requests[model] += 1
            await self._behave(model, self.requests[model], body, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._open.discard(task)
            if not writer.is_closing():
                writer.close()

    async def _behave(self, model: str, seen: int, body: dict[str, Any], writer: asyncio.StreamWriter) -> None:
        stream = bool(body.get("stream"))
        if model == "ratelimited" and seen == 1:
            return await _error(writer, 429, "rate_limit_exceeded", "slow down")
        if model == "ratelimited-after" and seen == 1:
            return await _error(writer, 429, "rate_limit_exceeded", "slow down", {"Retry-After": "1"})
        if model == "ratelimited-long":
            return await _error(writer, 429, "rate_limit_exceeded", "slow down", {"Retry-After": "30"})
        if model == "error-once" and seen == 1:
            return await _error(writer, 500, "server_error", "oops")
        if model == "unavailable" or (model == "flapping" and seen % 2 == 1):
            return await _error(writer, 503, "overloaded", "the model is overloaded")
        if model == "reset-once" and seen == 1:
            return _reset(writer)
        if model == "blackhole":
            await asyncio.Event().wait()
        if model == "toolong":
            return await _error(writer, 400, "context_length_exceeded", "maximum context length is 1000 tokens")
        if model == "filtered":
            return await _error(writer, 400, "content_filter", "the prompt was filtered")
        if model == "rejects":
            return await _error(writer, 400, "unsupported_parameter", "max_tokens is not supported", param="max_tokens")
        if stream and body.get("tools"):
            return await _tool_stream(model, writer)
        words = _remaining_words(body)
        if not stream:
            return await self._unary(model, words, writer)
        await _start(writer, "text/event-stream", chunked=True)
        await _chunk(writer, _event(model, {"role": "assistant", "content": ""}))
        if model == "roleonly-stall":
            await asyncio.Event().wait()
        if model.startswith("slow-"):
            await asyncio.sleep(int(model.removeprefix("slow-")) / 1000)
        broken = model in ("cut", "stall", "malformed")
        for i, word in enumerate(words):
            if broken and i == BROKEN_AFTER:
                if model == "cut":
                    return _reset(writer)
                if model == "stall":
                    await asyncio.Event().wait()
                await _chunk(writer, b'data: {"id": "chatcmpl-x", "choices": [{"delta": {"content": "\n\n')
            await _chunk(writer, _event(model, {"content": word}))
        await _chunk(writer, _event(model, {}, finish="stop"))
        if model != "nodone":
            await _chunk(
                writer,
                _sse(
                    {
                        "id": "chatcmpl-x",
                        "object": "chat.completion.chunk",
                        "model": model,
                        "created": 1,
                        "choices": [],
                        "usage": USAGE,
                    }
                ),
            )
            await _chunk(writer, b"data: [DONE]\n\n")
        await _chunk(writer, b"")

    async def _unary(self, model: str, words: list[str], writer: asyncio.StreamWriter) -> None:
        if model.startswith("slow-"):
            await asyncio.sleep(int(model.removeprefix("slow-")) / 1000)
        payload = json.dumps(
            {
                "id": "chatcmpl-x",
                "object": "chat.completion",
                "created": 1,
                "model": model,
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": "".join(words)}, "finish_reason": "stop"}
                ],
                **({} if model == "nodone" else {"usage": USAGE}),
            }
        ).encode()
        if model in ("cut", "stall", "malformed"):
            # Headers promise the whole body; a part of it comes, then the fault.
            writer.write(_head(200, "application/json", {"Content-Length": str(len(payload))}))
            writer.write(payload[: len(payload) // 2] if model != "malformed" else b"{not json" + b" " * 10)
            await writer.drain()
            if model == "cut":
                return _reset(writer)
            if model == "stall":
                await asyncio.Event().wait()
            return
        writer.write(_head(200, "application/json", {"Content-Length": str(len(payload))}) + payload)
        await writer.drain()


TOOL_ARGUMENTS = ['{"city"', ': "Pa', 'ris"}']


async def _tool_stream(model: str, writer: asyncio.StreamWriter) -> None:
    await _start(writer, "text/event-stream", chunked=True)
    call = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": ""}}
    await _chunk(writer, _event(model, {"role": "assistant", "content": None, "tool_calls": [call]}))
    for i, piece in enumerate(TOOL_ARGUMENTS):
        if model == "toolcut" and i == 2:
            return _reset(writer)
        await _chunk(writer, _event(model, {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}))
    await _chunk(writer, _event(model, {}, finish="tool_calls"))
    await _chunk(
        writer,
        _sse(
            {
                "id": "chatcmpl-x",
                "object": "chat.completion.chunk",
                "model": model,
                "created": 1,
                "choices": [],
                "usage": USAGE,
            }
        ),
    )
    await _chunk(writer, b"data: [DONE]\n\n")
    await _chunk(writer, b"")


def _remaining_words(body: dict[str, Any]) -> list[str]:
    """The answer, or its rest when the request carries the start of it as an assistant message."""
    messages = body.get("messages") or []
    partial = ""
    for message in reversed(messages[-2:]):
        if message.get("role") == "assistant" and isinstance(message.get("content"), str):
            partial = message["content"]
            break
    if partial and ANSWER.startswith(partial):
        rest, words = partial, list(WORDS)
        while words and rest.startswith(words[0]):
            rest = rest[len(words.pop(0)) :]
        return words
    return list(WORDS)


async def _read_request(reader: asyncio.StreamReader) -> dict[str, Any] | None:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.decode("latin-1").split("\r\n")[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    raw = await reader.readexactly(length) if length else b""
    return json.loads(raw) if raw else {}


def _head(status: int, content_type: str, headers: dict[str, str] | None = None) -> bytes:
    lines = [f"HTTP/1.1 {status} X", f"Content-Type: {content_type}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def _start(writer: asyncio.StreamWriter, content_type: str, *, chunked: bool) -> None:
    writer.write(_head(200, content_type, {"Transfer-Encoding": "chunked"} if chunked else None))
    await writer.drain()


async def _chunk(writer: asyncio.StreamWriter, data: bytes) -> None:
    writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
    await writer.drain()


def _sse(data: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(data).encode() + b"\n\n"


def _event(model: str, delta: dict[str, Any], finish: str | None = None) -> bytes:
    return _sse(
        {
            "id": "chatcmpl-x",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
    )


async def _error(
    writer: asyncio.StreamWriter,
    status: int,
    code: str,
    message: str,
    headers: dict[str, str] | None = None,
    param: str | None = None,
) -> None:
    payload = json.dumps({"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}})
    data = payload.encode()
    writer.write(_head(status, "application/json", {"Content-Length": str(len(data)), **(headers or {})}) + data)
    await writer.drain()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST instead of FIN: what a dropped connection looks like to the client."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
