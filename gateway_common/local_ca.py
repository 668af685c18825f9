"""A throwaway local CA: one CA and a certificate per process, for ``make up``, compose's ``certs``
service and the tests (``python -m gateway_common.tls`` mints with it).

Kept apart from :mod:`gateway_common.tls`, which every service imports to load its material: only
minting needs cryptography.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway_common.identity import spiffe_id
from gateway_common.tls import CA_CERT

# Names every generated certificate answers to besides its service's own: processes of `make up`
# dial 127.0.0.1, and the compose healthcheck dials its own container on loopback.
_LOOPBACK_DNS = ("localhost",)
_LOOPBACK_IPS = ("127.0.0.1", "::1")


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _write_private(path: Path, data: bytes) -> None:
    # Created 0600 from the start: a key must never be readable by others, not even briefly.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=not ca,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def write_local_ca(directory: Path, names: Iterable[str], *, hosts: Sequence[str] = (), valid_days: int = 30) -> None:
    """Mint a fresh CA and one certificate per name into ``directory`` (replacing what is there).

    Each certificate carries the name's SPIFFE ID (its service identity), the name itself as a DNS
    SAN (compose dials ``auth:50052``), loopback names and ``hosts``; it serves as both server and
    client certificate. The CA key is written too, so more certificates can be issued later.
    """
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    # A minute of slack: another container's clock may be slightly behind this one's.
    not_before, not_after = now - datetime.timedelta(minutes=1), now + datetime.timedelta(days=valid_days)
    ca_key = _new_key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "llm-gateway local CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    for name in names:
        key = _new_key()
        dns = [name, *_LOOPBACK_DNS, *(h for h in hosts if not _is_ip(h))]
        ips = [*_LOOPBACK_IPS, *(h for h in hosts if _is_ip(h))]
        sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(spiffe_id(name))]
        sans += [x509.DNSName(d) for d in dict.fromkeys(dns)]
        sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in dict.fromkeys(ips)]
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(ca=False), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        (directory / f"{name}.crt").write_bytes(_cert_pem(cert))
        _write_private(directory / f"{name}.key", _key_pem(key))
    (directory / CA_CERT).write_bytes(_cert_pem(ca_cert))
    _write_private(directory / "ca.key", _key_pem(ca_key))


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
