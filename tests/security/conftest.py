"""A suite of real processes on mutual TLS (the CA ``Suite`` mints at start), and a CA it does not trust."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from gateway_common.tls import write_local_ca
from suite.supervisor import Suite
from tests.servers import free_port


@dataclass
class Secured:
    """The running suite, its tenant keys, and a folder of certificates from a foreign CA."""

    suite: Suite
    key: str
    admin_key: str
    foreign: Path

    def channel(self, service: str, identity: str | None) -> grpc.aio.Channel:
        """A channel to ``service`` showing ``identity``'s certificate of the suite's CA (None: none)."""
        return self.suite.channel(service, identity)

    def foreign_channel(self, service: str, identity: str) -> grpc.aio.Channel:
        """A channel that trusts the suite's CA but shows a certificate of another CA, same identity."""
        credentials = grpc.ssl_channel_credentials(
            root_certificates=(self.suite.tls_dir / "ca.crt").read_bytes(),
            private_key=(self.foreign / f"{identity}.key").read_bytes(),
            certificate_chain=(self.foreign / f"{identity}.crt").read_bytes(),
        )
        return grpc.aio.secure_channel(f"127.0.0.1:{self.suite.ports[service]}", credentials)

    def plaintext(self, service: str) -> grpc.aio.Channel:
        """A channel with no TLS at all."""
        return grpc.aio.insecure_channel(f"127.0.0.1:{self.suite.ports[service]}")


@pytest.fixture(scope="session")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    """The suite on free ports with tenants acme (``key``) and beta, and an admin key."""
    data = tmp_path_factory.mktemp("secured")
    foreign = data / "foreign-ca"
    write_local_ca(foreign, ("router", "cli", "edge"))
    key, beta_key, admin_key = (f"gw-{secrets.token_urlsafe(32)}" for _ in range(3))
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "OPENAI_"))},
        "GATEWAY_TENANT_KEYS": f"acme:{key},beta:{beta_key}",
        "GATEWAY_ADMIN_KEY": admin_key,
        "GATEWAY_RATE_LIMIT_RPM": "10000",
    }
    ports = {name: free_port() for name in ("router", "auth", "ratelimit", "providers", "metering", "edge")}
    suite = Suite(data_dir=data / "suite", ports=ports, env=env)
    suite.start()
    try:
        yield Secured(suite, key, admin_key, foreign)
    finally:
        suite.stop()
