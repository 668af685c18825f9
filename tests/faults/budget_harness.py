"""What the budget fault tests run against: a hostile upstream, a Redis that can be restarted empty,
the real suite configured with a spend budget and a token limit, and the ledger and counters to read.

The upstream is what made budgets leak: it counts every UTF-8 byte of the prompt as a token (several
times the usual four-characters-a-token estimate, and exactly the ceiling a byte-level tokenizer can
reach), answers unary calls with a fixed 800 tokens whatever max_tokens says, and streams without end
when asked for a stream, ignoring max_tokens.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import socket
import sqlite3
import subprocess
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import uvicorn
from redis import Redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from suite.supervisor import Suite
from tests.servers import free_port, wait_until

UNARY_COMPLETION_TOKENS = 800
"""What the upstream reports for every unary answer, with or without max_tokens."""

STREAM_CHUNKS = 5_000
"""How many deltas a stream runs to if nobody stops it (max_tokens is ignored)."""

INPUT_MICRO_USD, OUTPUT_MICRO_USD = 10, 30
"""The `priced` model's price per token ($10 and $30 per million)."""

CHEAP_OUTPUT_MICRO_USD = 1
"""The `cheap` model's price per output token ($1 per million): its streams meet the token limit first."""

BUDGET_USD_PER_DAY = 1.00
TOKENS_PER_DAY = 120_000

CONFIG = """
providers:
  hostile:
    type: openai_compatible
    base_url: {upstream}
    api_key_env: HOSTILE_UPSTREAM_KEY
models:
  priced:
    deployments:
      - provider: hostile
        model: m
        input_usd_per_million: {input}
        output_usd_per_million: {output}
  cheap:
    deployments:
      - provider: hostile
        model: m
        output_usd_per_million: {cheap}
router:
  max_attempts: 1
  attempt_timeout_s: 20
limits:
  requests_per_minute: 100000
  tokens_per_minute: 10000000
  tokens_per_day: {tokens}
  budget_usd_per_day: {budget}
ratelimit:
  rebuild_grace_s: 1.5
metering:
  flush_interval_s: 0.1
"""


@dataclass
class UpstreamStats:
    """What the hostile upstream saw."""

    requests: int = 0
    max_tokens_seen: list[int | None] = field(default_factory=list)


def _prompt_bytes(body: dict[str, object]) -> int:
    total = 0
    for message in body.get("messages", []):  # type: ignore[attr-defined]
        content = message.get("content")
        if isinstance(content, str):
            total += len(content.encode())
    return total


def _app(stats: UpstreamStats) -> Starlette:
    async def chat(request: Request) -> Response:
        body = json.loads(await request.body())
        stats.requests += 1
        stats.max_tokens_seen.append(body.get("max_completion_tokens") or body.get("max_tokens"))
        prompt = _prompt_bytes(body)
        if not body.get("stream"):
            text = " ".join(["word"] * UNARY_COMPLETION_TOKENS)
            usage = {"prompt_tokens": prompt, "completion_tokens": UNARY_COMPLETION_TOKENS}
            choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
            return JSONResponse(
                {
                    "id": "x",
                    "object": "chat.completion",
                    "created": 0,
                    "model": "m",
                    "choices": [choice],
                    "usage": usage,
                }
            )

        async def events() -> AsyncIterator[bytes]:
            for i in range(STREAM_CHUNKS):
                delta = {"index": 0, "delta": {"content": "word "}, "finish_reason": None}
                chunk = {"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "m", "choices": [delta]}
                yield b"data: " + json.dumps(chunk).encode() + b"\n\n"
                if i % 50 == 0:
                    await asyncio.sleep(0)
            done = {"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "m", "choices": []}
            done["usage"] = {"prompt_tokens": prompt, "completion_tokens": STREAM_CHUNKS}
            yield b"data: " + json.dumps(done).encode() + b"\n\ndata: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])


class HostileUpstream:
    """The upstream served by uvicorn in a background thread."""

    def __init__(self) -> None:
        self.port = free_port()
        self.stats = UpstreamStats()
        config = uvicorn.Config(
            _app(self.stats), host="127.0.0.1", port=self.port, log_level="warning", access_log=False, lifespan="off"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    @property
    def base_url(self) -> str:
        """The OpenAI-style base URL."""
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> None:
        """Serve, and wait until it does."""
        self._thread.start()
        wait_until(lambda: self._server.started, "hostile upstream", 10)

    def stop(self) -> None:
        """Stop serving."""
        self._server.should_exit = True
        self._thread.join(timeout=10)


class RestartableRedis:
    """A redis-server without persistence on a fixed port, which can be killed and restarted empty."""

    def __init__(self) -> None:
        self.port = free_port()
        self._folder = tempfile.mkdtemp(prefix="gw-redis-budget-")
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Its URL."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start it (empty: nothing is saved) and wait until it answers PING."""
        binary = shutil.which("redis-server")
        assert binary, "redis-server is not installed"
        self._process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self._folder,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(self._answers, "redis-server", 15)

    def kill(self) -> None:
        """SIGKILL it: every counter, reservation and the rebuild marker are gone."""
        if self._process is not None:
            self._process.kill()
            self._process.wait(timeout=10)
            self._process = None

    def close(self) -> None:
        """Stop it for good."""
        self.kill()
        shutil.rmtree(self._folder, ignore_errors=True)

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False


@dataclass
class BudgetGateway:
    """The running suite behind its edge, the keys of three tenants, the upstream and Redis."""

    suite: Suite
    upstream: HostileUpstream
    redis: RestartableRedis
    keys: dict[str, str]

    @property
    def url(self) -> str:
        """The edge's base URL."""
        return self.suite.edge_url

    def ledger(self, tenant: str) -> tuple[int, int, int]:
        """(events, tokens, cost in micro-USD) the ledger holds for ``tenant``."""
        with sqlite3.connect(self.suite.data_dir / "metering.db") as db:
            row = db.execute(
                "SELECT count(*), coalesce(sum(prompt_tokens + completion_tokens), 0), "
                "coalesce(sum(cost_micro_usd), 0) FROM usage_events WHERE tenant_id = ?",
                (tenant,),
            ).fetchone()
        return int(row[0]), int(row[1]), int(row[2])

    def counters(self, tenant: str) -> tuple[int, int]:
        """(tokens, cost in micro-USD) the rate limiter's day counters hold for ``tenant``'s key."""
        client = Redis.from_url(self.redis.url)
        try:
            day = int(time.time()) // 86400 * 86400
            values = {}
            for unit in (2, 3):
                pattern = f"gw:rl:c:tenant={tenant}&key=*:{unit}:2:{day}"
                # The key's own counter, not its (key, model) one (which a rebuild also writes).
                keys = [k for k in client.scan_iter(match=pattern) if b"&model=" not in k]
                values[unit] = sum(int(client.get(k) or 0) for k in keys)
            return values[2], values[3]
        finally:
            client.close()


@contextmanager
def budget_gateway(data: Path) -> Iterator[BudgetGateway]:
    """The suite on free ports with Redis, the hostile upstream and tenants spend, stream, restart."""
    upstream = HostileUpstream()
    upstream.start()
    redis = RestartableRedis()
    redis.start()
    config = data / "gateway.yaml"
    config.write_text(
        CONFIG.format(
            upstream=upstream.base_url,
            input=INPUT_MICRO_USD,
            output=OUTPUT_MICRO_USD,
            tokens=TOKENS_PER_DAY,
            budget=BUDGET_USD_PER_DAY,
            cheap=CHEAP_OUTPUT_MICRO_USD,
        )
    )
    keys = {tenant: f"gw-{secrets.token_urlsafe(24)}" for tenant in ("spend", "stream", "restart")}
    ports = {name: free_port() for name in ("router", "auth", "ratelimit", "providers", "metering", "edge")}
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "OPENAI_", "REDIS_", "DATABASE_"))},
        "GATEWAY_CONFIG": str(config),
        "GATEWAY_TENANT_KEYS": ",".join(f"{tenant}:{key}" for tenant, key in keys.items()),
        "HOSTILE_UPSTREAM_KEY": "upstream-secret",
        "REDIS_URL": redis.url,
    }
    suite = Suite(data_dir=data, ports=ports, env=env)
    try:
        suite.start()
        yield BudgetGateway(suite, upstream, redis, keys)
    finally:
        suite.stop()
        redis.close()
        upstream.stop()
