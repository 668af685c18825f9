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
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc

from gateway_common.config import ConfigError, TlsConfig

CA_CERT = "ca.crt"
"""The CA certificate's file name inside a TLS folder (its key, ``ca.key``, is kept beside it)."""


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


def write_local_ca(directory: Path, names: Iterable[str], *, hosts: Sequence[str] = (), valid_days: int = 30) -> None:
    """Mint a fresh CA and one certificate per name into ``directory`` (replacing what is there);
    see :func:`gateway_common.local_ca.write_local_ca`."""
    # Imported here: only minting needs cryptography (~15 MB resident), and the services, which
    # only load their material, then never import it.
    from gateway_common import local_ca

    local_ca.write_local_ca(directory, names, hosts=hosts, valid_days=valid_days)


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
