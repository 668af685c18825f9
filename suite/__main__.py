"""``python -m suite up``: run the whole gateway locally on embedded defaults until Ctrl-C.

``python -m suite down`` stops a suite started by ``up`` in another terminal.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

from suite.supervisor import Suite, SuiteError

_DATA = Path(os.environ.get("GATEWAY_DATA_DIR", ".gateway"))
_PID = _DATA / "up.pid"


def _banner(suite: Suite) -> str:
    keys = os.environ.get("GATEWAY_TENANT_KEYS")
    key_file = suite.data_dir / "demo-key"
    if keys:
        key_line = "API keys:  from GATEWAY_TENANT_KEYS"
        key = "<your key>"
    else:
        key = key_file.read_text().strip() if key_file.exists() else "<see .gateway/demo-key>"
        key_line = f"Demo key:  {key}"
    return (
        "\nLLM Gateway is up.\n"
        f"  Edge:      {suite.edge_url}  (OpenAI-compatible: {suite.edge_url}/v1)\n"
        f"  Router:    127.0.0.1:{suite.ports['router']} (gRPC over TLS; CA: {suite.tls_dir}/ca.crt)\n"
        f"  {key_line}\n"
        f"  Logs:      {suite.log_dir}/\n\n"
        f"  curl {suite.edge_url}/v1/chat/completions \\\n"
        f"    -H 'Authorization: Bearer {key}' -H 'Content-Type: application/json' \\\n"
        """    -d '{"model": "mock:demo", "messages": [{"role": "user", "content": "Hello!"}]}'\n\n"""
        "Ctrl-C (or `make down`) stops everything.\n"
    )


def up() -> int:
    """Start the suite and supervise it until a signal or a crash."""
    suite = Suite(data_dir=_DATA)
    stopping = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    print("Starting auth, ratelimit, metering, providers, router and edge…", flush=True)
    try:
        suite.start()
    except SuiteError as exc:
        print(f"failed to start: {exc}", file=sys.stderr)
        return 1
    _PID.write_text(str(os.getpid()))
    print(_banner(suite), flush=True)
    try:
        while not stopping:
            dead = suite.dead()
            if dead:
                for name in dead:
                    print(f"{name} exited unexpectedly:\n{suite.tail(name)}", file=sys.stderr)
                return 1
            time.sleep(0.5)
    finally:
        print("Stopping…", flush=True)
        suite.stop()
        _PID.unlink(missing_ok=True)
    print("Stopped.")
    return 0


def down() -> int:
    """Signal a running ``up`` to stop, and wait for it."""
    if not _PID.exists():
        print("nothing to stop (no .gateway/up.pid)")
        return 0
    pid = int(_PID.read_text())
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        _PID.unlink(missing_ok=True)
        print("not running (stale pid file removed)")
        return 0
    for _ in range(400):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            print("stopped")
            return 0
        time.sleep(0.05)
    print(f"process {pid} did not stop within 20s", file=sys.stderr)
    return 1


if __name__ == "__main__":
    command = sys.argv[1] if len(sys.argv) > 1 else "up"
    raise SystemExit({"up": up, "down": down}.get(command, lambda: 2)())
