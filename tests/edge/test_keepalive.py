"""After any error the connection is reusable, or closed after a response that says ``Connection: close``.

The edge runs in a real uvicorn here (both of its HTTP parsers), and the client is a raw socket
speaking HTTP/1.1 through h11, so nothing between the test and the server pools or retries.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import h11
import pytest
import uvicorn

from edge.app import create_app
from gateway_common import openai_wire
from gateway_common.config import GatewayConfig
from tests.edge.router_stub import CountingRouter, router_stub
from tests.servers import free_port, wait_until

LIMIT = 64 * 1024
GOOD = json.dumps({"model": "mock:x", "messages": [{"role": "user", "content": "hi"}]}).encode()


@dataclass
class Served:
    port: int
    router: CountingRouter
    http: str


@pytest.fixture(params=["httptools", "h11"])
def served(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Served]:
    """The edge in uvicorn on a free port; a body whose model is "boom" hits a bug (a 500)."""
    real_parse = openai_wire.parse_chat_request

    def parse_or_boom(body: Any) -> Any:
        if isinstance(body, dict) and body.get("model") == "boom":
            raise RuntimeError("a bug")
        return real_parse(body)

    monkeypatch.setattr(openai_wire, "parse_chat_request", parse_or_boom)
    with router_stub() as (address, router):
        config = GatewayConfig.model_validate(
            {"edge": {"max_body_bytes": LIMIT}, "services": {"router": {"address": address}}}
        )
        port = free_port()
        server = uvicorn.Server(
            uvicorn.Config(
                create_app(config), host="127.0.0.1", port=port, http=request.param, log_config=None, access_log=False
            )
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        try:
            wait_until(lambda: server.started, "uvicorn", timeout_s=20)
            yield Served(port, router, request.param)
        finally:
            server.should_exit = True
            thread.join(timeout=20)


class Connection:
    """One client connection: requests go out through h11, responses are read back the same way."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.http = h11.Connection(h11.CLIENT)

    def request(
        self, method: str, target: str, body: bytes = b"", headers: list[tuple[str, bytes]] | None = None
    ) -> tuple[int, dict[bytes, bytes], bytes]:
        """Send one request (chunked when no content-length is given and there is a body)."""
        all_headers: list[tuple[str, bytes]] = [("host", b"edge"), ("content-type", b"application/json")]
        all_headers += headers or []
        if body and not any(name == "transfer-encoding" for name, _ in all_headers):
            all_headers.append(("content-length", str(len(body)).encode()))
        out = self.http.send(h11.Request(method=method, target=target, headers=all_headers)) or b""
        if body:
            out += self.http.send(h11.Data(data=body)) or b""
        out += self.http.send(h11.EndOfMessage()) or b""
        self.sock.sendall(out)
        status, response_headers, chunks = 0, {}, []
        while True:
            event = self.http.next_event()
            if event is h11.NEED_DATA:
                self.http.receive_data(self.sock.recv(65536))
            elif isinstance(event, h11.Response):
                status, response_headers = event.status_code, dict(event.headers)
            elif isinstance(event, h11.Data):
                chunks.append(event.data)
            elif isinstance(event, h11.EndOfMessage):
                return status, response_headers, b"".join(chunks)

    def reusable(self) -> bool:
        """Whether both sides agreed to go on; False once the server said ``Connection: close``."""
        if self.http.our_state is h11.DONE and self.http.their_state is h11.DONE:
            self.http.start_next_cycle()
            return True
        return False

    def closed_by_server(self) -> bool:
        self.sock.settimeout(5)
        try:
            while self.sock.recv(65536):
                pass
        except ConnectionResetError:
            pass
        return True

    def close(self) -> None:
        self.sock.close()


BAD_REQUESTS: list[tuple[str, str, str, bytes, list[tuple[str, bytes]]]] = [
    ("bug_500", "POST", "/v1/chat/completions", b'{"model": "boom", "messages": []}', []),
    ("declared_too_large_413", "POST", "/v1/chat/completions", b"x" * (LIMIT * 2), []),
    ("chunked_too_large_413", "POST", "/v1/chat/completions", b"x" * (LIMIT * 2), [("transfer-encoding", b"chunked")]),
    ("not_json_400", "POST", "/v1/chat/completions", b"{nope", []),
    ("lone_surrogate_400", "POST", "/v1/chat/completions", GOOD.replace(b'"hi"', b'"\\ud800"'), []),
    ("deep_400", "POST", "/v1/chat/completions", b"[" * 50_000 + b"]" * 50_000, []),
    ("unknown_route_404", "POST", "/v1/nope", GOOD, []),
    ("wrong_method_405", "GET", "/v1/chat/completions", b"", []),
    ("huge_header_431", "POST", "/v1/chat/completions", GOOD, [("authorization", b"Bearer " + b"a" * (1 << 20))]),
    ("non_ascii_header_400", "POST", "/v1/chat/completions", GOOD, [("authorization", "Bearer é".encode())]),
]


@pytest.mark.parametrize(
    ("method", "target", "body", "headers"), [case[1:] for case in BAD_REQUESTS], ids=[case[0] for case in BAD_REQUESTS]
)
def test_the_connection_survives_an_error_or_is_closed_honestly(
    served: Served, method: str, target: str, body: bytes, headers: list[tuple[str, bytes]]
) -> None:
    if served.http == "h11" and sum(len(value) for _, value in headers) > 16 * 1024:
        pytest.skip("uvicorn's h11 parser refuses headers over 16 KiB itself (plain 400, then a reset)")
    for _ in range(3):
        connection = Connection(served.port)
        try:
            status, response_headers, _ = connection.request(method, target, body, headers)
            assert 400 <= status < 600, status
            if connection.reusable():
                good_status, _, good_body = connection.request("POST", "/v1/chat/completions", GOOD)
                assert good_status == 200, good_body
            else:
                assert response_headers.get(b"connection", b"").lower() == b"close", response_headers
                assert connection.closed_by_server()
        finally:
            connection.close()
    assert served.router.calls["Chat"] in (0, 3)


def test_a_bug_keeps_the_connection(served: Served) -> None:
    # Before, uvicorn closed the connection after a 500 without saying so; reuse then got a reset.
    connection = Connection(served.port)
    try:
        for _ in range(5):
            status, _, _ = connection.request("POST", "/v1/chat/completions", b'{"model": "boom", "messages": []}')
            assert status == 500
            assert connection.reusable()
        started = time.monotonic()
        status, _, _ = connection.request("POST", "/v1/chat/completions", GOOD)
        assert status == 200 and time.monotonic() - started < 10
    finally:
        connection.close()
