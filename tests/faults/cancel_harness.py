"""What the cancellation fault tests need: an upstream that never answers and records every
connection it holds, the suite configured around it, and a look into the ledger.

The black hole reads each request, then (for a stream) sends the response headers and nothing
more, or (otherwise) nothing at all, and notes when the gateway closes the connection: that moment
is the proof that a cancellation travelled edge -> router -> providers -> upstream HTTP.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from gateway_common.healthcheck import check
from suite.supervisor import Suite, free_port

_STREAM_HEADERS = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
    b"transfer-encoding: chunked\r\n\r\n"
)


@dataclass
class HeldConnection:
    """One connection the black hole accepted."""

    opened_at: float
    path: str = ""
    model: str = ""
    stream: bool = False
    closed_at: float | None = None
    """When the gateway closed it (time.monotonic()); None while it is open."""


@dataclass
class BlackHole:
    """An HTTP upstream on loopback that reads requests and never answers them (threads, no event loop)."""

    connections: list[HeldConnection] = field(default_factory=list)
    port: int = 0
    _listener: socket.socket | None = None
    _stopped: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        """The OpenAI-style base URL."""
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> None:
        """Listen on a free port and accept in a thread."""
        listener = socket.create_server(("127.0.0.1", 0))
        listener.settimeout(0.1)
        self._listener, self.port = listener, listener.getsockname()[1]
        self._spawn(self._accept)

    def stop(self) -> None:
        """Close every connection and the listener, and wait for the threads."""
        self._stopped.set()
        for thread in self._threads:
            thread.join(timeout=5)
        if self._listener is not None:
            self._listener.close()

    def for_model(self, model: str) -> list[HeldConnection]:
        """The connections that carried a request for upstream model ``model``."""
        return [c for c in list(self.connections) if c.model == model]

    def _spawn(self, target: Callable[..., None], *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        assert self._listener is not None
        while not self._stopped.is_set():
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                continue
            held = HeldConnection(time.monotonic())
            self.connections.append(held)
            self._spawn(self._hold, sock, held)

    def _hold(self, sock: socket.socket, held: HeldConnection) -> None:
        sock.settimeout(0.05)
        buffer = b""
        answered = False
        try:
            while not self._stopped.is_set():
                try:
                    data = sock.recv(65536)
                except TimeoutError:
                    continue
                if not data:
                    held.closed_at = time.monotonic()
                    return
                buffer += data
                if not answered and self._parse(buffer, held):
                    answered = True
                    if held.stream:
                        sock.sendall(_STREAM_HEADERS)
        except OSError:
            held.closed_at = time.monotonic()
        finally:
            sock.close()

    @staticmethod
    def _parse(buffer: bytes, held: HeldConnection) -> bool:
        """Fill ``held`` from the request once it is complete; False while more is to come."""
        head, sep, body = buffer.partition(b"\r\n\r\n")
        if not sep:
            return False
        lines = head.decode("latin-1").split("\r\n")
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip())
        if len(body) < length:
            return False
        held.path = lines[0].split(" ")[1]
        payload = json.loads(body[:length] or b"{}")
        held.model, held.stream = str(payload.get("model", "")), bool(payload.get("stream"))
        return True


def until(condition: Callable[[], object], timeout_s: float, what: str) -> float:
    """Poll ``condition`` until it is truthy; returns when (time.monotonic()). Fails after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        if condition():
            return time.monotonic()
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s:g}s")
        time.sleep(0.02)


CONFIG = """
providers:
  hole:
    type: openai_compatible
    base_url: {hole}
    api_key_env: HOLE_KEY
models:
  hole-chat:
    deployments: [{{provider: hole, model: chat-json}}]
  hole-stream:
    deployments: [{{provider: hole, model: chat-sse}}]
  hole-embed:
    deployments: [{{provider: hole, model: embed}}]
  hole-native:
    deployments: [{{provider: hole, model: native-json}}]
  hole-native-stream:
    deployments: [{{provider: hole, model: native-stream}}]
limits:
  requests_per_minute: 10000
  max_concurrent_requests: 1
ratelimit:
  lease_s: {lease_s}
metering:
  flush_interval_s: 0.1
"""
"""Router retries and timeouts stay at their defaults (3 attempts x 120 s): what a client that left
used to keep running."""


@dataclass
class CancelSuite:
    """The suite in front of the black hole, one tenant (and key) per test case."""

    suite: Suite
    hole: BlackHole
    keys: dict[str, str]
    lease_s: float

    @property
    def url(self) -> str:
        """The edge base URL."""
        return self.suite.edge_url

    def ledger(self, tenant: str) -> list[tuple[str, bool, float]]:
        """(outcome, streamed, latency ms) of every ledger row of ``tenant``."""
        path = self.suite.data_dir / "metering.db"
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as db:
            rows = db.execute(
                "SELECT outcome, streamed, latency_ms FROM usage_events WHERE tenant_id = ?", (tenant,)
            ).fetchall()
        return [(str(o), bool(s), float(lat or 0.0)) for o, s, lat in rows]

    @contextmanager
    def second_router(self) -> Iterator[str]:
        """Another router process on the same services (as a second replica would be); yields its
        address, stops it afterwards."""
        port = free_port()
        address = f"127.0.0.1:{port}"
        env = {
            **self.suite.process_env(),
            "GATEWAY_ROUTER_LISTEN": address,
            "GATEWAY_ROUTER_ADDR": address,
            # Every router owns its usage spool; two cannot share one file.
            "GATEWAY_METERING_SPOOL_PATH": str(self.suite.data_dir / "router-2-usage-spool.db"),
        }
        log = (self.suite.log_dir / "router-2.log").open("ab")
        process = subprocess.Popen([sys.executable, "-m", "services.router"], env=env, stdout=log, stderr=log)
        log.close()
        try:
            credentials = self.suite.credentials("cli")
            until(
                lambda: process.poll() is not None or check(address, 0.5, credentials),
                60,
                "the second router serving",
            )
            assert process.poll() is None, f"the second router exited with {process.returncode}"
            yield address
        finally:
            process.terminate()
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


# The suite runs on its embedded defaults (memory counters, SQLite ledger), whatever the caller's shell says.
_NOT_INHERITED = ("GATEWAY_", "OPENAI_", "REDIS_URL", "DATABASE_URL")

TENANTS = ("chatjson", "chatsse", "embed", "native", "nativestream", "mockjson", "mocksse", "killed")


def start(data: Path, lease_s: float) -> Iterator[CancelSuite]:
    """Start the black hole and the suite; stop both at the end."""
    hole = BlackHole()
    hole.start()
    config = data / "gateway.yaml"
    config.write_text(CONFIG.format(hole=hole.base_url, lease_s=lease_s))
    keys = {tenant: f"gw-{tenant}-{os.urandom(12).hex()}" for tenant in TENANTS}
    ports = {name: free_port() for name in ("router", "auth", "ratelimit", "providers", "metering", "edge")}
    env = {
        **{
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("GATEWAY_", "OPENAI_", "REDIS_URL", "DATABASE_URL"))
        },
        "GATEWAY_CONFIG": str(config),
        "GATEWAY_TENANT_KEYS": ",".join(f"{tenant}:{key}" for tenant, key in keys.items()),
        "HOLE_KEY": "hole-secret",
    }
    suite = Suite(data_dir=data, ports=ports, env=env)
    try:
        suite.start()
        yield CancelSuite(suite, hole, keys, lease_s)
    finally:
        suite.stop()
        hole.stop()
