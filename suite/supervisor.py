"""Runs the whole suite as local processes: five gRPC services and the edge.

`make up` uses it on embedded defaults; the end-to-end tests and the benchmark use it with their
own ports and data folder. Services start in dependency order and each is awaited by polling
its health (gRPC health for services, ``/health`` for the edge), never by sleeping blindly.

Processes are forked from the suite's fork server (``suite/forkserver.py``), which imports the
libraries they all use once, so that the six processes share those pages rather than each holding
its own copy (``fork_server=False``: each its own ``python -m``, as before). A process still
imports its own service's code itself, after the fork.

Service identity: every start mints a throwaway CA and one certificate per process (and one for
the ``gateway`` CLI, identity ``cli``) into ``<data_dir>/tls`` and points the processes at it with
``GATEWAY_TLS_DIR``, so internal gRPC is mutual TLS. A caller's own ``GATEWAY_TLS_DIR`` /
``GATEWAY_TLS_CA`` is used as given, and ``GATEWAY_INTERNAL_TLS=off`` runs plaintext.

Replicas: ``Suite(..., replicas={"router": 2, "providers": 2, "ratelimit": 2})`` runs each of those
services as that many processes (``router-1``, ``router-2``, …), each on its own port with its own
log and, for routers, its own usage spool and job queue; every process dials the service at the
list of all its replicas (``GATEWAY_ROUTER_ADDR=127.0.0.1:5001,127.0.0.1:5002``) and balances
over them. State the replicas must share has to live outside them: ratelimit replicas need
``REDIS_URL``, auth and metering replicas ``DATABASE_URL``. One replica (the default) is exactly
the single process named after its service.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from gateway_common.config import TlsConfig
from gateway_common.grpc_client import open_channel
from gateway_common.healthcheck import check
from gateway_common.tls import client_credentials, load_ca_only, write_local_ca
from suite.forked import ForkServer, ForkServerError, Process

SERVICES = ("auth", "ratelimit", "metering", "providers", "router")
DEFAULT_PORTS = {
    "router": 50051,
    "auth": 50052,
    "ratelimit": 50053,
    "providers": 50054,
    "metering": 50055,
    "edge": 8080,
}
IDENTITIES = (*SERVICES, "edge", "cli")
"""The processes (and the CLI) that get a certificate of the suite's CA."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class SuiteError(RuntimeError):
    """A process of the suite failed to start or died."""


@dataclass
class Suite:
    """The six processes, their ports and their shared data folder."""

    data_dir: Path
    ports: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_PORTS))
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    host: str = "127.0.0.1"
    processes: dict[str, Process] = field(default_factory=dict)
    replicas: Mapping[str, int] = field(default_factory=dict)
    """Processes per service (default 1); ``ports[service]`` is the first replica's port, the
    others get ``ports["<service>-<n>"]`` or a free port."""
    metrics: bool = False
    """Give every gRPC service process a Prometheus endpoint (``metrics_url(name)``)."""
    cpus: Mapping[str, Collection[int]] = field(default_factory=dict)
    """CPU affinity by process name (``router-2``: {1}), set before the process runs its first line."""
    process_overrides: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    """Environment by process name, over everything else (``router-3`` dialling other replicas)."""
    fork_server: bool = sys.platform == "linux"
    """Fork every process from one that has imported the libraries they share (``suite/forkserver.py``),
    so that they share those pages; False starts each with its own ``python -m``. Linux only: on
    macOS, forking after some system libraries are loaded is unsafe."""
    replica_ports: dict[str, int] = field(init=False, default_factory=dict)
    """The gRPC port of every service process, by process name (``router`` or ``router-1``, …)."""
    metrics_ports: dict[str, int] = field(init=False, default_factory=dict)
    """The Prometheus port of every service process, by process name, when ``metrics`` is on."""
    forks: ForkServer | None = field(init=False, default=None)
    """The fork server while the suite runs on one."""

    def __post_init__(self) -> None:
        for service, count in self.replicas.items():
            if service not in SERVICES or count < 1:
                raise ValueError(f"replicas: {service!r}: {count} (services: {', '.join(SERVICES)}; at least 1)")
        for service in SERVICES:
            names = self.names(service)
            for index, name in enumerate(names):
                first = index == 0
                self.replica_ports[name] = self.ports[service] if first else self.ports.get(name) or free_port()
                if self.metrics:
                    self.metrics_ports[name] = free_port()

    def names(self, service: str) -> list[str]:
        """The process names of ``service``: itself alone, or ``<service>-1`` … ``<service>-<n>``."""
        count = self.replicas.get(service, 1)
        return [service] if count == 1 else [f"{service}-{n}" for n in range(1, count + 1)]

    def address(self, service: str) -> str:
        """What dependents dial: ``host:port``, or the comma-separated list of every replica."""
        return ",".join(f"{self.host}:{self.replica_ports[name]}" for name in self.names(service))

    def metrics_url(self, name: str) -> str:
        """The Prometheus endpoint of service process ``name`` (needs ``metrics=True``)."""
        return f"http://{self.host}:{self.metrics_ports[name]}/metrics"

    @property
    def edge_url(self) -> str:
        """The edge's base URL."""
        return f"http://{self.host}:{self.ports['edge']}"

    @property
    def tls_dir(self) -> Path:
        """Where the suite's CA and certificates are minted (``ca.crt``, ``<name>.crt``, ``<name>.key``)."""
        return self.data_dir / "tls"

    def _tls_config(self) -> TlsConfig:
        env = self.process_env()
        return TlsConfig(
            internal="off" if env.get("GATEWAY_INTERNAL_TLS") == "off" else "on",
            dir=env.get("GATEWAY_TLS_DIR") or None,
            ca_file=env.get("GATEWAY_TLS_CA") or None,
        )

    def _mints_tls(self) -> bool:
        return not any(self.env.get(name) for name in ("GATEWAY_TLS_DIR", "GATEWAY_TLS_CA")) and (
            self.env.get("GATEWAY_INTERNAL_TLS") != "off"
        )

    def credentials(self, identity: str | None = "cli") -> grpc.ChannelCredentials | None:
        """Channel credentials with ``identity``'s certificate (None: verify the server, show none),
        or None when the suite runs plaintext."""
        tls = self._tls_config()
        if tls.internal == "off":
            return None
        if identity is None:
            ca = load_ca_only(tls)
            return None if ca is None else grpc.ssl_channel_credentials(root_certificates=ca)
        return client_credentials(tls, identity)

    def channel(self, service: str, identity: str | None = "cli") -> grpc.aio.Channel:
        """A channel to ``service`` as ``identity`` would open it (close it after use), with the
        services' own channel settings: round-robin over replicas, reconnects within a second, and
        subchannels of its own (never an older channel's backoff from a dead suite on this port)."""
        return open_channel(self.address(service), credentials=self.credentials(identity))

    @property
    def log_dir(self) -> Path:
        """Where each process writes its JSON log."""
        return self.data_dir / "logs"

    def process_env(self) -> dict[str, str]:
        """The environment every process gets: addresses, data files, then the caller's own settings."""
        env = {"GATEWAY_DEMO_KEY_FILE": str(self.data_dir / "demo-key")}
        if "DATABASE_URL" not in self.env:
            env["GATEWAY_METERING_DATABASE_URL"] = f"sqlite+aiosqlite:///{self.data_dir / 'metering.db'}"
            env["GATEWAY_AUTH_DATABASE_URL"] = f"sqlite+aiosqlite:///{self.data_dir / 'auth.db'}"
        if self._mints_tls():
            env["GATEWAY_TLS_DIR"] = str(self.tls_dir)
        # The router's usage spool lives with the rest of the suite's data, so a restarted router
        # ships what its predecessor left.
        env["GATEWAY_METERING_SPOOL_PATH"] = str(self.data_dir / "router-usage-spool.db")
        # auth's generated key-encryption key stays with the suite's data, not in the caller's cwd.
        env["GATEWAY_AUTH_CREDENTIALS_KEK_FILE"] = str(self.data_dir / "credentials.kek")
        # Likewise the router's async-job queue (embedded default): a restarted router resumes its jobs.
        env["GATEWAY_JOBS_PATH"] = str(self.data_dir / "router-jobs.db")
        env.update(self.env)
        for name in SERVICES:
            env[f"GATEWAY_{name.upper()}_LISTEN"] = f"{self.host}:{self.ports[name]}"
            env[f"GATEWAY_{name.upper()}_ADDR"] = self.address(name)
        env["GATEWAY_EDGE_HOST"] = self.host
        env["GATEWAY_EDGE_PORT"] = str(self.ports["edge"])
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env

    def _replica_env(self, service: str, name: str) -> dict[str, str]:
        """``process_env`` for process ``name`` of ``service``: its own listen port and metrics port,
        and, for one router of several, its own spool and job queue (each is locked by one process)."""
        env = self.process_env()
        env[f"GATEWAY_{service.upper()}_LISTEN"] = f"{self.host}:{self.replica_ports[name]}"
        if name in self.metrics_ports:
            env[f"GATEWAY_{service.upper()}_METRICS_PORT"] = str(self.metrics_ports[name])
        if service == "router" and name != service:
            env["GATEWAY_METERING_SPOOL_PATH"] = str(self.data_dir / f"{name}-usage-spool.db")
            env["GATEWAY_JOBS_PATH"] = str(self.data_dir / f"{name}-jobs.db")
        env.update(self.process_overrides.get(name, {}))
        return env

    def _spawn(self, name: str, module: str, env: Mapping[str, str] | None = None) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        if self.fork_server:
            try:
                if self.forks is None or self.forks.gone:
                    self.forks = ForkServer(self.process_env(), self.log_dir / "forkserver.log")
                self.processes[name] = self.forks.spawn(
                    module,
                    env if env is not None else self.process_env(),
                    self.log_dir / f"{name}.log",
                    self.cpus.get(name),
                )
            except ForkServerError as exc:
                raise SuiteError(str(exc)) from None
            return
        log = (self.log_dir / f"{name}.log").open("ab")
        command = [sys.executable, "-m", module]
        if name in self.cpus:
            # taskset sets the affinity and execs Python, so every thread it ever starts inherits it.
            command = ["taskset", "--cpu-list", ",".join(str(cpu) for cpu in sorted(self.cpus[name])), *command]
        self.processes[name] = subprocess.Popen(
            command,
            env=dict(env) if env is not None else self.process_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches the supervisor, which stops the children in order
        )
        log.close()

    def _wait(self, name: str, ready: Callable[[], bool], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        process = self.processes[name]
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise SuiteError(f"{name} exited with status {process.returncode}:\n{self.tail(name)}")
            if ready():
                return
            time.sleep(0.05)
        raise SuiteError(f"{name} not ready after {timeout_s:.0f}s:\n{self.tail(name)}")

    def tail(self, name: str, lines: int = 20) -> str:
        """The last lines of a process's log."""
        path = self.log_dir / f"{name}.log"
        if not path.exists():
            return "(no log)"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def _serving(self, name: str) -> Callable[[], bool]:
        target = f"{self.host}:{self.replica_ports[name]}"
        credentials = self.credentials()
        return lambda: check(target, 0.5, credentials)

    def _edge_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.edge_url}/health", timeout=1) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def start(self, timeout_s: float = 60.0) -> None:
        """Start every process in dependency order and wait until each is ready."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # A fresh CA per start, but never under processes still running on the previous one.
        if self._mints_tls() and not any(p.poll() is None for p in self.processes.values()):
            write_local_ca(self.tls_dir, IDENTITIES)
        try:
            # Every process of a stage starts at once, then each is awaited: replicas start in parallel.
            for stage in ([s for s in SERVICES if s != "router"], ["router"]):
                for service in stage:
                    for name in self.names(service):
                        self._spawn(name, f"services.{service}", self._replica_env(service, name))
                for service in stage:
                    for name in self.names(service):
                        self._wait(name, self._serving(name), timeout_s)
            self._spawn("edge", "edge", {**self.process_env(), **self.process_overrides.get("edge", {})})
            self._wait("edge", self._edge_ready, timeout_s)
        except BaseException:
            self.stop()
            raise

    def dead(self) -> list[str]:
        """Processes that have exited."""
        return [name for name, p in self.processes.items() if p.poll() is not None]

    def stop(self, grace_s: float = 15.0) -> None:
        """SIGTERM every process, the edge first, then the routers, then the rest (the replicas of a
        service together); SIGKILL what has not exited after ``grace_s``."""
        services = ["router", *[s for s in SERVICES if s != "router"]]
        for names in (["edge"], *(self.names(service) for service in services)):
            self.stop_processes(names, grace_s)
        self.processes.clear()
        if self.forks is not None:
            self.forks.close()
            self.forks = None

    def stop_processes(self, names: Collection[str], grace_s: float = 15.0) -> None:
        """SIGTERM the processes ``names`` at once (``["router-2"]``: one replica), SIGKILL those that
        have not exited after ``grace_s``. The others keep running, and their channels drop the
        stopped addresses from their round-robin."""
        running = [p for p in (self.processes.get(name) for name in names) if p is not None and p.poll() is None]
        for process in running:
            process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for process in running:
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
