"""Issue 7's smaller breaks, against the real processes: a PostgreSQL outage is a 503 that heals by
itself, and a service that cannot be reached is named in plain words, its address kept in the log.

The module runs its own suite on its own PostgreSQL cluster, because it stops that cluster and one
of the services; the test that stops the rate limit service runs last.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import pytest

from gateway.metering.v1 import metering_pb2, metering_pb2_grpc
from gateway_common.errors import GatewayError, Reason
from suite.supervisor import Suite, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

_PG_DIRS = ("/usr/lib/postgresql/15/bin", "/usr/local/bin")
CONFIG = "limits:\n  requests_per_minute: 10000\nauth:\n  cache_ttl_s: 1\n"
CHAT = {"model": "mock:demo", "messages": [{"role": "user", "content": "hi"}]}


def _binary(name: str) -> str:
    found = shutil.which(name) or next((str(Path(d) / name) for d in _PG_DIRS if (Path(d) / name).exists()), None)
    if found is None:
        pytest.skip(f"{name} is not installed")
    return found


def _poll(check: Callable[[], bool], what: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not true after {timeout_s}s")
        time.sleep(0.1)


class StoppablePostgres:
    """A throwaway PostgreSQL cluster on a free loopback port that a test can stop and start again."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.data = folder / "data"
        self.port = free_port()
        self._pg_ctl = _binary("pg_ctl")
        self._prefix: list[str] = []
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            user = pwd.getpwnam("postgres")
            os.chown(folder, user.pw_uid, user.pw_gid)
            self._prefix = ["runuser", "-u", "postgres", "--"]
        subprocess.run(
            [*self._prefix, _binary("initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync"],
            check=True,
            capture_output=True,
        )

    @property
    def url(self) -> str:
        """Its ``postgresql://`` URL."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        """Start and wait until it accepts connections (``pg_ctl -w``)."""
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.folder} -c fsync=off"
        subprocess.run(
            [
                *self._prefix,
                self._pg_ctl,
                "-D",
                str(self.data),
                "-o",
                options,
                "-l",
                str(self.folder / "log"),
                "-w",
                "start",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )

    def stop(self) -> None:
        """Stop it, ending every open connection (what a database restart or crash does to clients)."""
        subprocess.run(
            [*self._prefix, self._pg_ctl, "-D", str(self.data), "-m", "fast", "-w", "stop"],
            check=False,
            capture_output=True,
            timeout=60,
        )


@dataclass
class Rig:
    """The suite on its own PostgreSQL, and keys that have not been used yet."""

    suite: Suite
    postgres: StoppablePostgres
    keys: list[str]

    def chat(self, key: str) -> httpx.Response:
        """POST a chat completion to the edge."""
        return httpx.post(
            f"{self.suite.edge_url}/v1/chat/completions",
            json=CHAT,
            headers={"authorization": f"Bearer {key}"},
            timeout=30,
        )

    def query_usage(self) -> metering_pb2.QueryUsageResponse | GatewayError:
        """QueryUsage straight to the metering service: its answer, or the error it raised."""
        target = f"127.0.0.1:{self.suite.ports['metering']}"
        credentials = self.suite.credentials("router")
        assert credentials is not None, "the suite mints service certificates"
        with grpc.secure_channel(target, credentials) as channel:
            stub = metering_pb2_grpc.MeteringServiceStub(channel)
            try:
                return stub.QueryUsage(metering_pb2.QueryUsageRequest(tenant_id="acme"), timeout=10)
            except grpc.RpcError as exc:
                return GatewayError.from_rpc_error(exc)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    # Not under pytest's tmp folder: as root, the cluster runs as ``postgres``, who cannot enter it.
    folder = Path(tempfile.mkdtemp(prefix="gw-pg-outage-"))
    postgres = StoppablePostgres(folder)
    postgres.start()
    data = tmp_path_factory.mktemp("suite")
    (data / "gateway.yaml").write_text(CONFIG)
    keys = [f"gw-{secrets.token_urlsafe(32)}" for _ in range(3)]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "OPENAI_", "REDIS_", "DATABASE_"))}
    env.update(
        {
            "DATABASE_URL": postgres.url,
            "GATEWAY_CONFIG": str(data / "gateway.yaml"),
            "GATEWAY_TENANT_KEYS": ",".join(f"acme:{key}" for key in keys),
        }
    )
    ports = {name: free_port() for name in ("router", "auth", "ratelimit", "providers", "metering", "edge")}
    suite = Suite(data_dir=data, ports=ports, env=env)
    try:
        suite.start()
        yield Rig(suite, postgres, keys)
    finally:
        suite.stop()
        postgres.stop()
        shutil.rmtree(folder, ignore_errors=True)


def _no_internal_address(text: str, rig: Rig) -> None:
    assert "ipv4" not in text and "127.0.0.1" not in text and "localhost" not in text, text
    for port in (*rig.suite.ports.values(), rig.postgres.port):
        assert str(port) not in text, text


def test_a_postgres_outage_is_a_503_that_recovers_by_itself(rig: Rig) -> None:
    warm, fresh, _ = rig.keys
    assert rig.chat(warm).status_code == 200
    assert not isinstance(rig.query_usage(), GatewayError)

    rig.postgres.stop()
    try:
        # A key no router has cached yet: the router must ask auth, and auth its database.
        refused = rig.chat(fresh)
        assert refused.status_code == 503, refused.text
        assert int(refused.headers["retry-after"]) >= 1
        error = refused.json()["error"]
        assert (error["type"], error["code"]) == ("server_error", "service_unavailable")
        assert "auth database is unavailable" in error["message"]
        _no_internal_address(refused.text, rig)
        usage = rig.query_usage()
        assert isinstance(usage, GatewayError)
        assert (usage.code, usage.reason) == (grpc.StatusCode.UNAVAILABLE, Reason.DEPENDENCY_UNAVAILABLE)
        assert usage.retry_after_s is not None and usage.retry_after_s >= 1
        assert "metering database is unavailable" in usage.message
        _no_internal_address(usage.message, rig)
    finally:
        rig.postgres.start()

    # No service is restarted: the pools replace their dead connections on their own.
    _poll(lambda: rig.chat(fresh).status_code == 200, "chat after the database came back", 20)
    _poll(lambda: not isinstance(rig.query_usage(), GatewayError), "QueryUsage after the database came back", 20)
    assert rig.suite.dead() == []


def test_an_unreachable_service_is_named_and_its_address_only_logged(rig: Rig) -> None:
    key = rig.keys[2]
    assert rig.chat(key).status_code == 200
    ratelimit = rig.suite.processes["ratelimit"]
    ratelimit.terminate()
    ratelimit.wait(timeout=20)

    refused = rig.chat(key)
    assert refused.status_code == 503, refused.text
    assert int(refused.headers["retry-after"]) >= 1
    error = refused.json()["error"]
    assert error["message"] == "The rate limit service is unavailable; retry later."
    assert error["code"] == "service_unavailable"
    _no_internal_address(refused.text, rig)
    # The detail an operator needs is in the router's log, not in the answer.
    router_log = rig.suite.log_dir / "router.log"
    _poll(
        lambda: "call to the rate limit service failed: UNAVAILABLE" in router_log.read_text(errors="replace"),
        "the transport detail in the router log",
        10,
    )
