"""The Node SDK against the real suite, with node's own test runner.

The suite is the e2e session's (``tests/e2e/conftest.py``: the mock provider and a fake upstream
behind the ``fake`` provider). The Node tests get its URL and keys by environment, and the fake
upstream's counters from a small JSON endpoint served here: they run in another process, and see
through it that a stream was still going when its first chunk arrived, and that abandoning a stream
closed the upstream request.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from bench.fake_upstream import UpstreamStats
from tests.e2e.conftest import Gateway, gateway  # noqa: F401  (the session's suite, as the e2e tests get it)
from tests.sdk.node.conftest import ROOT, node

pytestmark = pytest.mark.e2e


def _stats_handler(stats: UpstreamStats) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            counters = {k: v for k, v in dataclasses.asdict(stats).items() if isinstance(v, int)}
            body = json.dumps(counters).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            """Quiet: one line a poll would drown the test's output."""

    return Handler


@pytest.fixture
def stats_url(gateway: Gateway) -> Iterator[str]:  # noqa: F811
    """A loopback URL answering the fake upstream's counters as JSON."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _stats_handler(gateway.upstream.stats))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.mark.timeout(240)
async def test_node_sdk(gateway: Gateway, built_sdk: Path, stats_url: str) -> None:  # noqa: F811
    # Routes from other branches: once their edge module is in the checkout, their tests must run.
    expected = [name for name in ("jobs", "responses") if (ROOT / "edge" / f"{name}_api.py").exists()]
    files = sorted(str(path) for path in (built_sdk / "test").glob("*.test.mjs"))
    env = {
        **os.environ,
        "GATEWAY_EDGE_URL": gateway.url,
        "GATEWAY_TEST_KEY": gateway.key,
        "GATEWAY_ADMIN_KEY": gateway.admin_key,
        "GATEWAY_UPSTREAM_STATS_URL": stats_url,
        "GATEWAY_EXPECT_ROUTES": ",".join(expected),
    }
    # Two files at once: the 429 test waits up to a minute for its window, the others run meanwhile.
    process = await asyncio.create_subprocess_exec(
        node(),
        "--test",
        "--test-concurrency=2",
        "--test-reporter=tap",
        *files,
        cwd=built_sdk,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), 200)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    report = output.decode(errors="replace")
    print(report)  # shown with -s or -rP: which tests ran, and which were skipped and why
    assert process.returncode == 0, report
    assert "# fail 0" in report, report
    assert "# pass 0" not in report, report
