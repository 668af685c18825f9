"""The pieces of service identity on their own: the allowlist, the minted CA, the TLS settings, and a
service process that refuses to start with no identity."""

from __future__ import annotations

import importlib
import os
import stat
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from cryptography import x509

from gateway_common.config import ConfigError, load_config
from gateway_common.errors import Reason
from gateway_common.identity import ALLOWED_CALLERS, CallerPolicy, spiffe_id
from gateway_common.tls import load_material, write_local_ca

ROOT = Path(__file__).resolve().parents[2]
QUERY = "/gateway.metering.v1.MeteringService/QueryUsage"


_PUBLIC_PACKAGES = ("gateway.router.", "gateway.jobs.")
"""Contracts served on the router's public port, authorized by tenant keys rather than identities."""


def test_the_allowlist_decides_and_caches_per_identity() -> None:
    policy = CallerPolicy()
    router = spiffe_id("router").encode()
    assert policy.decide(router, QUERY).error is None
    assert policy.decide(router, QUERY) is policy.decide(router, QUERY)  # cached, not recomputed
    wrong = policy.decide(spiffe_id("edge").encode(), QUERY).error
    assert wrong is not None and wrong.code == grpc.StatusCode.PERMISSION_DENIED
    assert wrong.reason == Reason.CALLER_NOT_ALLOWED and "cli, ratelimit, router" in wrong.message
    for peer in (None, b"spiffe://elsewhere/router", spiffe_id("router/../cli").encode()):
        missing = policy.decide(peer, QUERY).error
        assert missing is not None and missing.code == grpc.StatusCode.UNAUTHENTICATED
        assert missing.reason == Reason.MISSING_SERVICE_IDENTITY
    unknown = policy.decide(router, "/gateway.metering.v1.MeteringService/NotInTheTable").error
    assert unknown is not None and "allowed callers: no service" in unknown.message
    assert policy.is_open("/grpc.health.v1.Health/Check") and not policy.is_open(QUERY)


def test_every_rpc_of_the_internal_contracts_is_in_the_allowlist() -> None:
    """A new RPC must get a row: without one, every caller would be refused. Every generated
    contract is walked, so a new proto file or service cannot slip past; only the router's own
    services are public (tenant keys, no client identity)."""
    import gateway

    seen = set()
    # Namespace packages (no __init__.py), so pkgutil would not descend: walk the files.
    for root in map(Path, gateway.__path__):
        for path in sorted(root.rglob("*_pb2.py")):
            name = ".".join(("gateway", *path.relative_to(root).with_suffix("").parts))
            module = importlib.import_module(name)
            for service in module.DESCRIPTOR.services_by_name.values():
                if service.full_name.startswith(_PUBLIC_PACKAGES):
                    continue
                seen.add(service.full_name)
                assert service.full_name in ALLOWED_CALLERS, f"{service.full_name} has no row"
                methods = {m.name for m in service.methods}
                assert methods == set(ALLOWED_CALLERS[service.full_name]), service.full_name
    assert seen == set(ALLOWED_CALLERS), "rows for services no contract declares"


def test_minted_certificates_carry_their_service_identity(tmp_path: Path) -> None:
    write_local_ca(tmp_path, ("metering", "cli"), hosts=("gateway.internal", "10.0.0.7"))
    cert = x509.load_pem_x509_certificate((tmp_path / "metering.crt").read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.UniformResourceIdentifier) == ["spiffe://llm-gateway/metering"]
    assert {"metering", "localhost", "gateway.internal"} <= set(names.get_values_for_type(x509.DNSName))
    assert {str(ip) for ip in names.get_values_for_type(x509.IPAddress)} >= {"127.0.0.1", "10.0.0.7"}
    for key in ("metering.key", "cli.key", "ca.key"):
        assert stat.S_IMODE((tmp_path / key).stat().st_mode) == 0o600
    tls = load_config(env={"GATEWAY_TLS_DIR": str(tmp_path)}).tls
    material = load_material(tls, "cli")
    assert material is not None and material.cert == (tmp_path / "cli.crt").read_bytes()


def test_tls_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="cert_file and key_file go together"):
        load_config(env={"GATEWAY_TLS_CERT": "/x.crt"})
    with pytest.raises(ConfigError, match=r"cannot read the CA certificate /nonexistent/ca\.crt"):
        load_material(load_config(env={"GATEWAY_TLS_DIR": "/nonexistent"}).tls, "auth")
    assert load_material(load_config(env={}).tls, "auth") is None


def test_a_service_process_with_no_identity_refuses_to_start(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env["GATEWAY_METERING_DATABASE_URL"] = f"sqlite+aiosqlite:///{tmp_path / 'metering.db'}"
    result = subprocess.run(
        [sys.executable, "-m", "services.metering"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "no TLS material for metering's gRPC port" in result.stderr
    assert "GATEWAY_TLS_DIR" in result.stderr and "GATEWAY_INTERNAL_TLS=off" in result.stderr
