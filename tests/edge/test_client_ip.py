"""The client address the edge passes to the router: the socket peer, X-Forwarded-For only via trusted proxies."""

from __future__ import annotations

from starlette.requests import Request

from edge.client_ip import client_ip


def _request(peer: str, forwarded: str | None = None) -> Request:
    headers = [(b"x-forwarded-for", forwarded.encode())] if forwarded is not None else []
    return Request({"type": "http", "client": (peer, 5000), "headers": headers})


def test_an_untrusted_peer_is_the_client_whatever_it_forwards() -> None:
    assert client_ip(_request("203.0.113.9", "1.2.3.4"), ()) == "203.0.113.9"
    assert client_ip(_request("203.0.113.9", "1.2.3.4"), ("10.0.0.0/8",)) == "203.0.113.9"


def test_a_trusted_proxy_names_the_client_as_the_last_untrusted_hop() -> None:
    trusted = ("10.0.0.0/8", "192.168.1.1")
    # The client spoofs a first hop; the proxies appended the address they really saw.
    request = _request("10.1.1.1", "6.6.6.6, 198.51.100.4, 192.168.1.1")
    assert client_ip(request, trusted) == "198.51.100.4"
    assert client_ip(_request("10.1.1.1"), trusted) == "10.1.1.1"
    assert client_ip(_request("10.1.1.1", "garbage"), trusted) == "10.1.1.1"
