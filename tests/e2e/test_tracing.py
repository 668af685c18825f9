"""One trace across the processes: the client's traceparent reaches every service on the path."""

from __future__ import annotations

import os
import re
import secrets
import time
from pathlib import Path

import httpx
import pytest

from suite.supervisor import Suite, free_port

pytestmark = pytest.mark.e2e


def _trace_ids(log: Path) -> set[str]:
    return set(re.findall(r'"trace_id": "0x([0-9a-f]{32})"', log.read_text(errors="replace")))


def test_a_clients_trace_continues_through_every_service(tmp_path: Path) -> None:
    key = f"gw-{secrets.token_urlsafe(32)}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "OTEL_"))}
    env.update({"GATEWAY_TENANT_KEYS": f"acme:{key}", "OTEL_TRACES_EXPORTER": "console"})
    ports = {name: free_port() for name in ("router", "auth", "ratelimit", "providers", "metering", "edge")}
    suite = Suite(data_dir=tmp_path, ports=ports, env=env)
    suite.start()
    trace_id = secrets.token_hex(16)
    try:
        response = httpx.post(
            f"{suite.edge_url}/v1/chat/completions",
            headers={"Authorization": f"Bearer {key}", "traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"},
            json={"model": "mock:demo", "messages": [{"role": "user", "content": "trace me"}]},
        )
        assert response.status_code == 200, response.text
        services = ("edge", "router", "auth", "ratelimit", "providers")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            missing = [s for s in services if trace_id not in _trace_ids(suite.log_dir / f"{s}.log")]
            if not missing:
                break
            time.sleep(0.05)
        assert missing == [], f"no span of trace {trace_id} in {missing}"
    finally:
        suite.stop()
