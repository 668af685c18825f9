"""The suite's fork server: every process is forked from the one process that imported the
libraries they share, and shares those pages; and what the supervisor is told of a forked process
(its pid, its exit status, its signals, its log) is what ``subprocess.Popen`` would have told it."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from suite import forkserver
from suite.forked import ForkServer
from suite.forkserver import shared_modules
from tests.e2e.conftest import Gateway

pytestmark = pytest.mark.e2e


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1])


def _rollup_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in smaps_rollup of {pid}")


def test_every_process_is_forked_from_the_fork_server_and_shares_its_pages(gateway: Gateway) -> None:
    forks = gateway.suite.forks
    assert forks is not None
    assert set(gateway.suite.processes) == {"auth", "ratelimit", "metering", "providers", "router", "edge"}
    for name, process in gateway.suite.processes.items():
        assert _parent(process.pid) == forks.pid, name
        # Pages written before the fork (the preloaded modules) and still shared show as shared
        # dirty; a process started with its own `python -m` has next to none.
        shared_mb = _rollup_kb(process.pid, "Shared_Dirty") / 1024
        assert shared_mb > 30, f"{name} shares {shared_mb:.1f} MB with the fork server"


def test_the_preload_is_the_libraries_not_the_services_own_code() -> None:
    modules = shared_modules()
    assert {"grpc", "google.protobuf", "uvicorn", "fastapi", "sqlalchemy", "aiohttp", "redis.asyncio"} <= set(modules)
    assert any(name.startswith("gateway_common.") for name in modules)
    assert any(name.startswith("gateway.") and name.endswith("_pb2") for name in modules)
    # A service's own modules (its Prometheus metrics, its tables) load in its process alone.
    assert not [name for name in modules if name.split(".")[0] in ("services", "edge")]


def _probe_env(**extra: str) -> dict[str, str]:
    return {**os.environ, **extra}


def test_a_forked_process_has_its_own_environment_log_and_exit_status(gateway: Gateway, tmp_path: Path) -> None:
    forks = gateway.suite.forks
    assert forks is not None
    token = secrets.token_hex(8)
    log = tmp_path / "probe.log"
    probe = forks.spawn("tests.e2e.fork_probe", _probe_env(PROBE_TOKEN=token, PROBE_EXIT="3"), log, None)
    assert probe.wait(20) == 3
    assert probe.poll() == 3
    assert log.read_text().splitlines() == [f"probe stdout {token}", f"probe stderr {probe.pid}"]
    # The fork server's own environment is not the process's: the token was only in the request.
    assert token not in Path(f"/proc/{forks.pid}/environ").read_bytes().decode(errors="replace")


def test_a_forked_process_is_signalled_and_waited_for_like_a_popen(gateway: Gateway, tmp_path: Path) -> None:
    forks = gateway.suite.forks
    assert forks is not None
    log = tmp_path / "probe.log"
    probe = forks.spawn("tests.e2e.fork_probe", _probe_env(PROBE_SLEEP="1"), log, [0])
    with pytest.raises(subprocess.TimeoutExpired):
        probe.wait(0.3)
    assert probe.poll() is None
    assert os.sched_getaffinity(probe.pid) == {0}
    assert os.getsid(probe.pid) == probe.pid  # its own session, as start_new_session gives
    # `ps` shows what it runs, not the fork server's command line.
    assert b"-m tests.e2e.fork_probe" in Path(f"/proc/{probe.pid}/cmdline").read_bytes()
    assert Path(f"/proc/{probe.pid}/comm").read_text().strip() == Path(sys.executable).name[:15]
    probe.send_signal(signal.SIGKILL)
    assert probe.wait(20) == -signal.SIGKILL
    probe.kill()  # exited: a no-op, never a signal to whatever reuses the pid


def test_the_fork_server_refuses_to_fork_while_a_thread_runs(capfd: pytest.CaptureFixture[str]) -> None:
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    try:
        forkserver._fork({"module": "tests.e2e.fork_probe", "env": {}, "log": os.devnull}, ())
    finally:
        stop.set()
        thread.join()
    reply = json.loads(capfd.readouterr().out)
    assert list(reply) == ["error"] and reply["error"].endswith("threads; forking is unsafe"), reply


def test_a_line_printed_before_the_protocol_starts_is_not_taken_for_it(tmp_path: Path) -> None:
    # What a library printing while it is imported would do: here, before the server even starts.
    (tmp_path / "sitecustomize.py").write_text('print("a library says hello", flush=True)\n')
    path = os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", ""), str(Path.cwd()), str(Path.cwd() / "gen")])
    forks = ForkServer({**os.environ, "PYTHONPATH": path}, tmp_path / "forkserver.log")
    try:
        probe = forks.spawn("tests.e2e.fork_probe", _probe_env(PROBE_EXIT="4"), tmp_path / "probe.log", None)
        assert probe.wait(20) == 4
    finally:
        forks.close()
