"""What the usage durability tests need: the suite as processes they can kill and restart, a
PostgreSQL they can restart, bounded load through the edge, and the ledger read straight from the
database, so that what clients were served can be compared with what was recorded."""

from __future__ import annotations

import asyncio
import os
import pwd
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx

from bench.fake_upstream import FakeUpstream
from suite.supervisor import Suite
from tests.servers import _PG_DIRS, _find, free_port, wait_until

CONFIG = """
providers:
  fake:
    type: openai_compatible
    base_url: {upstream}
    api_key_env: FAKE_UPSTREAM_KEY
  slowmock:
    type: mock
    latency_ms: 300
  held:
    type: openai_compatible
    base_url: {held}
    api_key_env: FAKE_UPSTREAM_KEY
models:
  held:
    deployments:
      - provider: held
        model: plain
        input_usd_per_million: 1.0
        output_usd_per_million: 2.0
  slow:
    deployments:
      - provider: slowmock
        model: demo
        input_usd_per_million: 1.0
        output_usd_per_million: 2.0
  upstream:
    deployments:
      - provider: fake
        model: plain
        input_usd_per_million: 1.0
        output_usd_per_million: 2.0
router:
  max_attempts: 1
  attempt_timeout_s: 10
limits:
  requests_per_minute: 100000
{limits}metering:
  flush_interval_s: 0.1
"""

_MODULES = {
    "router": "services.router",
    "metering": "services.metering",
    "ratelimit": "services.ratelimit",
    "edge": "edge",
}


@dataclass(frozen=True)
class LedgerRow:
    """One usage event as the ledger holds it."""

    event_id: str
    request_id: str
    outcome: str
    error_code: str
    time: float
    """When the request was received, as a Unix time."""


@dataclass
class UsageSuite:
    """The suite's processes, a key, and where its ledger is."""

    suite: Suite
    key: str
    metering_url: str

    def kill(self, name: str, sig: signal.Signals = signal.SIGKILL) -> None:
        """Send ``sig`` to a process of the suite; after SIGKILL, wait until it is gone."""
        process = self.suite.processes[name]
        process.send_signal(sig)
        if sig == signal.SIGKILL:
            process.wait(10)

    def restart(self, name: str) -> None:
        """Start a process of the suite again (after it was killed) and wait until it serves."""
        self.spawn(name)
        self.wait_ready(name)

    def spawn(self, name: str) -> None:
        """Start a process of the suite again (after it was killed), without waiting for it."""
        process = self.suite.processes[name]
        if process.poll() is None:
            process.kill()
            process.wait(10)
        self.suite._spawn(name, _MODULES[name])

    def wait_ready(self, name: str) -> None:
        """Wait until a process of the suite serves (health SERVING, or the edge's /health)."""
        ready = self.suite._edge_ready if name == "edge" else self.suite._serving(name)
        self.suite._wait(name, ready, 60)

    def listens(self, name: str) -> bool:
        """Whether a service's port accepts connections (its gRPC server is up, ready or not)."""
        try:
            with socket.create_connection((self.suite.host, self.suite.replica_ports[name]), timeout=0.5):
                return True
        except OSError:
            return False

    async def ledger(self, prefix: str) -> list[LedgerRow]:
        """The ledger's events whose client request id starts with ``prefix``."""
        query = (
            "SELECT event_id, request_id, outcome, error_code, time FROM usage_events WHERE request_id LIKE '{}%'"
        ).format(prefix.replace("'", "''"))
        if self.metering_url.startswith("sqlite"):
            path = self.metering_url.split("///", 1)[1]
            rows = await asyncio.to_thread(_sqlite_rows, path, query)
            return [LedgerRow(e, r, o, c, _sqlite_time(t)) for e, r, o, c, t in rows]
        connection = await asyncpg.connect(self.metering_url)
        try:
            records = await connection.fetch(query)
        finally:
            await connection.close()
        return [LedgerRow(r[0], r[1], r[2], r[3], r[4].timestamp()) for r in records]

    async def wait_for_ledger(
        self, prefix: str, expected: int, timeout_s: float = 60.0, settle_s: float = 0.0
    ) -> list[LedgerRow]:
        """The ledger's rows for ``prefix`` once there are at least ``expected`` and their number has
        not changed for ``settle_s`` (or whatever is there at the timeout)."""
        deadline = time.monotonic() + timeout_s
        last, since = -1, time.monotonic()
        while True:
            try:
                rows = await self.ledger(prefix)
            except (OSError, sqlite3.Error, asyncpg.PostgresError):
                rows = []  # the database is restarting
            now = time.monotonic()
            if len(rows) != last:
                last, since = len(rows), now
            if (len(rows) >= expected and now - since >= settle_s) or now > deadline:
                return rows
            await asyncio.sleep(0.2)


def _sqlite_rows(path: str, query: str) -> list[tuple[str, str, str, str, str]]:
    connection = sqlite3.connect(path, timeout=10)
    try:
        return connection.execute(query).fetchall()
    finally:
        connection.close()


def _sqlite_time(value: str) -> float:
    from datetime import UTC, datetime

    parsed = datetime.fromisoformat(value)
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()


@contextmanager
def usage_suite(
    data: Path, metering_url: str | None = None, limits: str = "", held_upstream: str | None = None
) -> Iterator[UsageSuite]:
    """The suite on free ports in ``data``, its ledger on SQLite or at ``metering_url``; ``limits``
    adds YAML lines (indented by two spaces) to the default limits. The model ``held`` is served
    by ``held_upstream`` (an OpenAI base URL the test controls), else by the fake upstream."""
    data.mkdir(parents=True, exist_ok=True)
    upstream = FakeUpstream(free_port())
    upstream.start()
    config = data / "gateway.yaml"
    config.write_text(CONFIG.format(upstream=upstream.base_url, held=held_upstream or upstream.base_url, limits=limits))
    key = f"gw-{secrets.token_urlsafe(32)}"
    url = metering_url or f"sqlite+aiosqlite:///{data / 'metering.db'}"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "OPENAI_"))},
        "GATEWAY_CONFIG": str(config),
        "GATEWAY_TENANT_KEYS": f"acme:{key}",
        "GATEWAY_ADMIN_KEY": f"gw-{secrets.token_urlsafe(32)}",
        "GATEWAY_METERING_DATABASE_URL": url,
        "FAKE_UPSTREAM_KEY": "upstream-secret",
    }
    ports = {name: free_port() for name in ("router", "auth", "ratelimit", "providers", "metering", "edge")}
    suite = Suite(data_dir=data, ports=ports, env=env)
    suite.start()
    try:
        yield UsageSuite(suite, key, url)
    finally:
        suite.stop()
        upstream.stop()


@dataclass(frozen=True)
class LoadResult:
    """What the clients saw: request id -> HTTP status (0 when the connection failed)."""

    statuses: dict[str, int]

    @property
    def served(self) -> set[str]:
        """Request ids answered 200."""
        return {request_id for request_id, status in self.statuses.items() if status == 200}


async def send_load(
    base_url: str,
    key: str,
    request_ids: list[str],
    *,
    model: str = "upstream",
    concurrency: int = 10,
    on_done: asyncio.Event | None = None,
    done_after: int = 0,
) -> LoadResult:
    """One chat completion per request id, ``concurrency`` at a time; ``on_done`` is set after
    ``done_after`` answers (so a test can inject a fault in the middle)."""
    statuses: dict[str, int] = {}
    gate = asyncio.Semaphore(concurrency)
    body = {"model": model, "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 16}
    async with httpx.AsyncClient(base_url=base_url, timeout=30.0) as client:

        async def one(request_id: str) -> None:
            async with gate:
                try:
                    response = await client.post(
                        "/v1/chat/completions",
                        json=body,
                        headers={"authorization": f"Bearer {key}", "x-request-id": request_id},
                    )
                    statuses[request_id] = response.status_code
                except httpx.HTTPError:
                    statuses[request_id] = 0
                if on_done is not None and len(statuses) >= done_after:
                    on_done.set()

        await asyncio.gather(*(one(request_id) for request_id in request_ids))
    return LoadResult(statuses)


def duplicates(rows: list[LedgerRow]) -> int:
    """Ledger rows beyond the first for any one client request (every test request id is unique)."""
    return sum(count - 1 for count in Counter(row.request_id for row in rows).values())


@dataclass
class RestartablePostgres:
    """A PostgreSQL cluster of one test's own, which it may restart."""

    folder: Path
    port: int
    prefix: list[str]
    pg_ctl: str

    @property
    def url(self) -> str:
        """A URL for the ``postgres`` database."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _ctl(self, *args: str) -> None:
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.folder} -c fsync=off"
        subprocess.run(
            [
                *self.prefix,
                self.pg_ctl,
                "-D",
                str(self.folder / "data"),
                "-o",
                options,
                "-l",
                str(self.folder / "log"),
                "-w",
                *args,
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    def restart(self, down_s: float = 0.0) -> None:
        """Stop the server (``-m fast``: every connection is cut), keep it down ``down_s`` seconds
        (the outage being simulated), start it again on the same port and wait until it accepts."""
        self._ctl("-m", "fast", "stop")
        time.sleep(down_s)
        self._ctl("start")
        wait_until(self.accepts, "postgres after restart")

    def accepts(self) -> bool:
        """Whether the server accepts TCP connections."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            return False


@contextmanager
def restartable_postgres() -> Iterator[RestartablePostgres]:
    """A fresh cluster on a free port (run as ``postgres`` when we are root), removed afterwards."""
    initdb, pg_ctl = _find("initdb", *_PG_DIRS), _find("pg_ctl", *_PG_DIRS)
    folder = Path(tempfile.mkdtemp(prefix="gw-pg-usage-"))
    prefix: list[str] = []
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        os.chown(folder, user.pw_uid, user.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]
    subprocess.run(
        [*prefix, initdb, "-D", str(folder / "data"), "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8"],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    server = RestartablePostgres(folder, free_port(), prefix, pg_ctl)
    server._ctl("start")
    try:
        wait_until(server.accepts, "postgres")
        yield server
    finally:
        subprocess.run(
            [*prefix, pg_ctl, "-D", str(folder / "data"), "-m", "immediate", "stop"],
            check=False,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        shutil.rmtree(folder, ignore_errors=True)
