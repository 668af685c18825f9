"""The client's address, as the router needs it for anonymous callers limited per address.

The socket peer is the client unless it is one of the configured trusted proxies; only then is
``X-Forwarded-For`` read, right to left, skipping the trusted hops, so the address is the last one
a trusted proxy saw. A client cannot choose its own rate-limit bucket by sending the header.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache

from starlette.requests import Request

CLIENT_IP_KEY = "x-gateway-client-ip"
"""gRPC metadata carrying the client's address to the router."""

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@lru_cache(maxsize=8)
def trusted_networks(proxies: tuple[str, ...]) -> tuple[Network, ...]:
    """The configured proxies (addresses or CIDR networks) as networks."""
    return tuple(ipaddress.ip_network(proxy, strict=False) for proxy in proxies)


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        return None


def _trusted(address: ipaddress.IPv4Address | ipaddress.IPv6Address | None, networks: tuple[Network, ...]) -> bool:
    return address is not None and any(address in network for network in networks)


def client_ip(request: Request, proxies: tuple[str, ...]) -> str:
    """The client's address: the peer's, or from ``X-Forwarded-For`` when the peer is trusted."""
    peer = request.client.host if request.client is not None else ""
    networks = trusted_networks(proxies)
    if not networks or not _trusted(_address(peer), networks):
        return peer
    hops = [hop.strip() for value in request.headers.getlist("x-forwarded-for") for hop in value.split(",")]
    for hop in reversed(hops):
        address = _address(hop)
        if address is None:
            # Garbage from beyond the trusted proxies: the last trusted hop is all we know.
            break
        if not _trusted(address, networks):
            return str(address)
        peer = str(address)
    return peer
