"""TLS material for internal gRPC: loading it, turning it into gRPC credentials, and minting a local CA.

A deployment provides one CA and one certificate per process; the process's service identity is the
certificate's URI SAN (``spiffe://llm-gateway/<name>``, see :mod:`gateway_common.identity`). Material
comes from :class:`~gateway_common.config.TlsConfig`: a folder holding ``ca.crt``, ``<name>.crt``
and ``<name>.key`` (``GATEWAY_TLS_DIR``), or explicit files (``GATEWAY_TLS_CA/CERT/KEY``), which win.

``make up`` (suite/supervisor.py) and compose's one-shot ``certs`` service mint a throwaway CA with
:func:`write_local_ca`; ``python -m gateway_common.tls DIR NAME…`` does the same from a shell.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway_common.config import ConfigError, TlsConfig
from gateway_common.identity import spiffe_id

CA_CERT = "ca.crt"
"""The CA certificate's file name inside a TLS folder (its key, ``ca.key``, is kept beside it)."""

# Names every generated certificate answers to besides its service's own: processes of `make up`
# dial 127.0.0.1, and the compose healthcheck dials its own container on loopback.
_LOOPBACK_DNS = ("localhost",)
_LOOPBACK_IPS = ("127.0.0.1", "::1")


@dataclass(frozen=True)
class TlsMaterial:
    """One process's PEM material: the CA it trusts, its certificate chain and private key."""

    ca: bytes
    cert: bytes
    key: bytes
    source: str
    """Where the material was read from, for log lines and errors."""


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"tls: cannot read the {what} {path}: {exc.strerror}") from None


def load_material(tls: TlsConfig, name: str) -> TlsMaterial | None:
    """The material of process ``name``, or None when the configuration names none.

    Explicit files (``ca_file``, ``cert_file``, ``key_file``) win over the folder's
    ``ca.crt``/``<name>.crt``/``<name>.key``. A named file that cannot be read is a ConfigError.
    """
    folder = Path(tls.dir) if tls.dir else None
    ca = Path(tls.ca_file) if tls.ca_file else (folder / CA_CERT if folder else None)
    cert = Path(tls.cert_file) if tls.cert_file else (folder / f"{name}.crt" if folder else None)
    key = Path(tls.key_file) if tls.key_file else (folder / f"{name}.key" if folder else None)
    if ca is None and cert is None:
        return None
    if ca is None or cert is None or key is None:
        raise ConfigError("tls: a CA file needs a certificate and key (GATEWAY_TLS_CERT, GATEWAY_TLS_KEY) or a folder")
    return TlsMaterial(
        ca=_read(ca, "CA certificate"),
        cert=_read(cert, f"certificate of {name}"),
        key=_read(key, f"private key of {name}"),
        source=str(folder) if folder and not tls.cert_file else str(cert),
    )


def load_ca_only(tls: TlsConfig) -> bytes | None:
    """The CA certificate alone, for a client that verifies a server but shows no certificate."""
    if tls.ca_file:
        return _read(Path(tls.ca_file), "CA certificate")
    if tls.dir:
        return _read(Path(tls.dir) / CA_CERT, "CA certificate")
    return None


def server_credentials(material: TlsMaterial, *, require_client_cert: bool) -> grpc.ServerCredentials:
    """Server credentials; with ``require_client_cert`` the handshake demands a certificate the CA signed.

    gRPC Python offers only "do not request a client certificate" or "require and verify one"
    (``require_client_auth=False`` never asks the peer, so no identity would reach the server), so
    internal services require one and the interceptor then checks *which* identity it names.
    """
    return grpc.ssl_server_credentials(
        [(material.key, material.cert)],
        root_certificates=material.ca,
        require_client_auth=require_client_cert,
    )


def channel_credentials(material: TlsMaterial) -> grpc.ChannelCredentials:
    """Client credentials: verify the server against the CA and show this process's certificate."""
    return grpc.ssl_channel_credentials(
        root_certificates=material.ca, private_key=material.key, certificate_chain=material.cert
    )


def client_credentials(tls: TlsConfig, name: str) -> grpc.ChannelCredentials | None:
    """Credentials for process ``name``'s channels, or None (plaintext) when TLS is off or unconfigured.

    Plaintext is what in-process tests use; a service process never gets that far without material
    or an explicit ``GATEWAY_INTERNAL_TLS=off`` (see ``grpc_server.main``).
    """
    if tls.internal == "off":
        return None
    material = load_material(tls, name)
    return None if material is None else channel_credentials(material)


# ---------------------------------------------------------------------------------------------
# A throwaway local CA


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


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m gateway_common.tls DIR NAME…``: mint a local CA and certificates for NAME… into DIR.

    With ``--per-service``, each name gets its own subfolder ``DIR/NAME`` holding ``ca.crt`` and
    only its own certificate and key, so a container can mount just its own material.
    """
    parser = argparse.ArgumentParser(prog="python -m gateway_common.tls", description=main.__doc__)
    parser.add_argument("directory", type=Path)
    parser.add_argument("names", nargs="+")
    parser.add_argument("--per-service", action="store_true", help="one subfolder per name")
    parser.add_argument("--if-missing", action="store_true", help="keep the existing CA if DIR has one")
    parser.add_argument("--host", action="append", default=[], help="an extra DNS name or IP for every cert")
    args = parser.parse_args(argv)
    directory: Path = args.directory
    if args.if_missing and (directory / CA_CERT).exists():
        print(f"{directory / CA_CERT} exists; keeping it")
        return 0
    write_local_ca(directory, args.names, hosts=args.host)
    if args.per_service:
        ca = (directory / CA_CERT).read_bytes()
        for name in args.names:
            own = directory / name
            own.mkdir(exist_ok=True)
            (own / CA_CERT).write_bytes(ca)
            (directory / f"{name}.crt").replace(own / f"{name}.crt")
            (directory / f"{name}.key").replace(own / f"{name}.key")
    print(f"wrote a local CA and certificates for {', '.join(args.names)} into {directory}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
