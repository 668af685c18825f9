"""A fast fake OpenAI-compatible upstream on loopback, for the benchmark and the end-to-end tests.

It answers ``/v1/chat/completions`` (JSON and SSE), ``/v1/embeddings`` and ``/v1/models`` with
fixed content, and counts what happens: requests, streams finished, and streams whose client went
away before the end (how the tests see that a cancellation reached the upstream).

A stream's shape comes from the model name, so it works the same directly and through the gateway
(which forwards the model, not the client's headers). Dash-separated segments of the name:
- ``e<N>``: the stream has N SSE data events in all (role chunk, N-4 content chunks, finish chunk,
  usage chunk, ``[DONE]``; at least 4);
- ``p<MS>``: one event every MS milliseconds after the first (the first event leaves at once);
e.g. ``bench-e23-p20``. ``slow-<n>`` streams n content chunks 50 ms apart (the cancellation tests);
any other name streams the server's default chunk count at its default pace.
"""

from __future__ import annotations

import asyncio
import functools
import json
import re
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route


@dataclass
class UpstreamStats:
    """What the fake upstream saw."""

    requests: int = 0
    streams_started: int = 0
    streams_finished: int = 0
    streams_disconnected: int = 0
    last_body: dict[str, object] = field(default_factory=dict)
    last_authorization: str = ""
    """The Authorization header of the last chat request (to see which key reached the upstream)."""


_EVENTS = re.compile(r"(?:^|-)e(\d+)(?=-|$)")
_PACE = re.compile(r"(?:^|-)p(\d+)(?=-|$)")
_FRAMING_EVENTS = 4
"""Events of every stream besides its content chunks: role, finish, usage, ``[DONE]``."""


@dataclass(frozen=True)
class StreamShape:
    """How many content chunks a stream carries and the pause before each event after the first."""

    content_chunks: int
    pace_s: float

    @property
    def events(self) -> int:
        """SSE data events in all, ``[DONE]`` included."""
        return self.content_chunks + _FRAMING_EVENTS


def stream_shape(model: str, default_chunks: int, default_pace_s: float) -> StreamShape:
    """The shape a model name asks for (see the module docstring)."""
    if model.startswith("slow-") and model.removeprefix("slow-").isdigit():
        return StreamShape(int(model.removeprefix("slow-")), 0.05)
    events, pace = _EVENTS.search(model), _PACE.search(model)
    chunks = max(0, int(events.group(1)) - _FRAMING_EVENTS) if events else default_chunks
    return StreamShape(chunks, int(pace.group(1)) / 1000 if pace else default_pace_s)


@functools.lru_cache(maxsize=64)
def _completion(model: str) -> bytes:
    return json.dumps(
        {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": 1700000000,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "Hello from the fake upstream.", "refusal": None},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 9, "completion_tokens": 6, "total_tokens": 15},
        }
    ).encode()


@functools.lru_cache(maxsize=64)
def _stream_events(model: str, content_chunks: int) -> tuple[bytes, ...]:
    # Built once per shape: the upstream shares the machine with what it measures, so it stays cheap.
    return (
        _chunk(model, {"role": "assistant", "content": ""}),
        *(_chunk(model, {"content": f"tok{i} "}) for i in range(content_chunks)),
        _chunk(model, {}, finish="stop"),
        _chunk(model, {}, usage=True),
        b"data: [DONE]\n\n",
    )


def _chunk(model: str, delta: dict[str, object], finish: str | None = None, usage: bool = False) -> bytes:
    body: dict[str, object] = {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": model,
        "choices": [] if usage else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }
    if usage:
        body["usage"] = {"prompt_tokens": 9, "completion_tokens": 6, "total_tokens": 15}
    return b"data: " + json.dumps(body).encode() + b"\n\n"


def create_app(stats: UpstreamStats, chunks: int = 8, chunk_delay_s: float = 0.0) -> Starlette:
    """The fake upstream; ``chunks`` content chunks ``chunk_delay_s`` apart unless the model says otherwise."""

    async def chat(request: Request) -> Response:
        body = json.loads(await request.body())
        stats.requests += 1
        stats.last_body = body
        stats.last_authorization = request.headers.get("authorization", "")
        model = str(body.get("model", "fake"))
        if not body.get("stream"):
            return Response(_completion(model), media_type="application/json")
        shape = stream_shape(model, chunks, chunk_delay_s)
        frames = _stream_events(model, shape.content_chunks)

        async def events() -> AsyncIterator[bytes]:
            stats.streams_started += 1
            finished = False
            try:
                if not shape.pace_s:
                    for frame in frames:
                        yield frame
                else:
                    yield frames[0]
                    # Paced against a deadline, not sleep after sleep, so slow wake-ups do not add up.
                    due = time.monotonic()
                    for frame in frames[1:]:
                        due += shape.pace_s
                        await asyncio.sleep(max(0.0, due - time.monotonic()))
                        yield frame
                finished = True
                stats.streams_finished += 1
            finally:
                if not finished:
                    stats.streams_disconnected += 1

        return StreamingResponse(events(), media_type="text/event-stream")

    async def embeddings(request: Request) -> Response:
        body = json.loads(await request.body())
        stats.requests += 1
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        return JSONResponse(
            {
                "object": "list",
                "data": [{"object": "embedding", "index": i, "embedding": [0.1, 0.2, 0.3]} for i in range(len(inputs))],
                "model": body.get("model", "fake"),
                "usage": {"prompt_tokens": 4 * len(inputs), "total_tokens": 4 * len(inputs)},
            }
        )

    async def models(request: Request) -> Response:
        return JSONResponse(
            {"object": "list", "data": [{"id": "fake", "object": "model", "created": 0, "owned_by": "fake"}]}
        )

    return Starlette(
        routes=[
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/v1/embeddings", embeddings, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
        ]
    )


class FakeUpstream:
    """The fake upstream served by uvicorn in a background thread (usable from sync code)."""

    def __init__(self, port: int, chunks: int = 8, chunk_delay_s: float = 0.0) -> None:
        self.port = port
        self.stats = UpstreamStats()
        config = uvicorn.Config(
            create_app(self.stats, chunks, chunk_delay_s),
            host="127.0.0.1",
            port=port,
            log_level="warning",
            access_log=False,
            lifespan="off",
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    @property
    def base_url(self) -> str:
        """The OpenAI-style base URL (ends in /v1)."""
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, timeout_s: float = 10.0) -> None:
        """Start serving and wait until it accepts connections."""
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("fake upstream did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        """Stop serving."""
        self._server.should_exit = True
        self._thread.join(timeout=10)


def main() -> None:
    """``python -m bench.fake_upstream PORT [CHUNKS]``: serve in this process until killed (uvloop and
    httptools when installed, as uvicorn picks them)."""
    import sys

    port = int(sys.argv[1])
    chunks = int(sys.argv[2]) if len(sys.argv) > 2 else 8
    uvicorn.run(
        create_app(UpstreamStats(), chunks),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="off",
    )


if __name__ == "__main__":
    main()
