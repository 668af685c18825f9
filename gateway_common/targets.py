"""Service addresses as gRPC targets: one replica, a list of replicas, or a name that resolves to them.

The forms a ``GATEWAY_<NAME>_ADDR`` (``services.<name>.address``) accepts:

- ``host:port`` — one replica (or a DNS name; gRPC resolves it and balances over every address);
- ``127.0.0.1:5001,127.0.0.1:5002`` — several replicas by IP literal (processes on one host, each
  on its own port), turned into gRPC's native ``ipv4:`` (or ``ipv6:``) target;
- ``ipv4:…`` / ``ipv6:…`` — the same, written the way gRPC spells it;
- ``dns:///router.ns.svc:50051`` and any other gRPC target URI (``unix:``, ``xds:``) as given;
  on Kubernetes a headless Service's name resolves to every ready pod.

A list of names (``a:1,b:2``) is refused: gRPC has no target for it, and ``dns:///`` of one name
that resolves to every replica is what a deployment has instead.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

_SCHEMES = ("ipv4:", "ipv6:")


@dataclass(frozen=True)
class GrpcTarget:
    """What a channel dials: the gRPC target string, and the authority its TLS handshake checks."""

    target: str
    authority: str | None = None
    """The name the server certificate must carry, when the target itself names none (a list of
    addresses has no single host gRPC could check); None lets gRPC derive it from the target."""


def _split_host_port(address: str) -> tuple[str, str]:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"{address!r} is not host:port")
    return host, port


def _ip_version(host: str) -> int | None:
    try:
        return ipaddress.ip_address(host.removeprefix("[").removesuffix("]")).version
    except ValueError:
        return None


def _address_list(addresses: list[str], scheme: str | None) -> GrpcTarget:
    versions: set[int | None] = set()
    hosts = []
    for address in addresses:
        host, _ = _split_host_port(address)
        versions.add(_ip_version(host))
        hosts.append(host)
    if None in versions:
        raise ValueError(
            f"{','.join(addresses)!r}: several replicas must be IP literals (host:port,host:port); "
            "for names use one dns:///NAME:PORT that resolves to every replica"
        )
    if len(versions) > 1:
        raise ValueError(f"{','.join(addresses)!r} mixes IPv4 and IPv6 addresses")
    version = versions.pop()
    wanted = f"ipv{version}:"
    if scheme is not None and scheme != wanted:
        raise ValueError(f"{scheme}{','.join(addresses)!r} lists IPv{version} addresses")
    # Every replica's certificate names the host it is dialled on (loopback processes: 127.0.0.1),
    # so the first host stands for all of them in the TLS check.
    return GrpcTarget(f"{wanted}{','.join(addresses)}", hosts[0].removeprefix("[").removesuffix("]"))


def parse_target(address: str) -> GrpcTarget:
    """The gRPC target of a service address in any accepted form (see the module doc).

    Raises ValueError, naming the address and what is wrong, for an address gRPC cannot dial.
    """
    address = address.strip()
    if not address:
        raise ValueError("the address is empty")
    scheme = next((s for s in _SCHEMES if address.startswith(s)), None)
    if scheme is not None:
        return _address_list([a.strip() for a in address[len(scheme) :].split(",")], scheme)
    if "://" in address or address.startswith(("unix:", "dns:")):
        return GrpcTarget(address)
    if "," not in address:
        # One address goes to gRPC as given (a bare name gets gRPC's default port).
        return GrpcTarget(address)
    return _address_list([a.strip() for a in address.split(",")], None)
