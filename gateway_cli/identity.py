"""How the ``gateway`` CLI proves its service identity (``cli``) to the auth service.

In order: the ``--tls-*`` flags; the configuration's TLS settings (``GATEWAY_TLS_DIR``,
``GATEWAY_TLS_CA/CERT/KEY``); the folder ``make up`` mints (``$GATEWAY_DATA_DIR/tls``, default
``.gateway/tls``) when it holds a ``cli`` certificate; otherwise plaintext, which a suite running
with ``GATEWAY_INTERNAL_TLS=off`` accepts.
"""

from __future__ import annotations

import os
from pathlib import Path

import grpc

from gateway_common.config import ConfigError, TlsConfig
from gateway_common.identity import CLI
from gateway_common.tls import CA_CERT, client_credentials

DATA_DIR_ENV = "GATEWAY_DATA_DIR"


def tls_settings(
    configured: TlsConfig, *, ca: str | None, cert: str | None, key: str | None, env: dict[str, str] | None = None
) -> TlsConfig:
    """The TLS settings the CLI dials with: flags over the configuration over ``make up``'s folder."""
    env = dict(os.environ) if env is None else env
    if bool(cert) != bool(key):
        raise ConfigError("--tls-cert and --tls-key go together")
    minted = Path(env.get(DATA_DIR_ENV) or ".gateway") / "tls"
    # A flag replaces one file; what it leaves out comes from the configuration, else the minted folder.
    folder = configured.dir or (str(minted) if (minted / CA_CERT).exists() else None)
    if ca or cert:
        update = {"ca_file": ca or configured.ca_file, "dir": folder}
        if cert:
            update |= {"cert_file": cert, "key_file": key}
        return configured.model_copy(update=update)
    if configured.internal == "off" or configured.dir or configured.ca_file:
        return configured
    if folder and (Path(folder) / f"{CLI}.crt").exists():
        return configured.model_copy(update={"dir": folder})
    return configured


def channel_credentials(tls: TlsConfig) -> grpc.ChannelCredentials | None:
    """The CLI's channel credentials (its ``cli`` certificate), or None for plaintext."""
    return client_credentials(tls, CLI)
