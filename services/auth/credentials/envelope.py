"""Envelope encryption of credential secrets with AES-256-GCM (``cryptography``'s AESGCM).

Each credential gets its own random 256-bit data key. The data key encrypts the serialized secret;
a key-encryption key (KEK) encrypts ("wraps") the data key. A row keeps the ciphertext, its nonce,
the wrapped data key and the id of the KEK that wrapped it, never a key in clear. Both encryptions
authenticate the row's identity (credential id, tenant, provider) as associated data, so a
ciphertext or a wrapped key copied into another row fails to open instead of serving the wrong
tenant's secret. Rotating the KEK re-wraps data keys only: the ciphertexts stay as they are.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_BYTES = 32
NONCE_BYTES = 12
_AAD_PREFIX = "llm-gateway/credential/v1"


class SealError(Exception):
    """A sealed secret cannot be opened: wrong key, unknown key id, or a row that was tampered with.

    The message names the credential and the KEK id, never key material."""


@dataclass(frozen=True)
class Kek:
    """A key-encryption key and its id (the id is stored with every data key it wraps)."""

    kek_id: str
    key: bytes = field(repr=False)


@dataclass(frozen=True)
class Sealed:
    """What a row stores for a secret; nothing here is readable without a KEK."""

    ciphertext: bytes
    nonce: bytes
    wrapped_key: bytes
    kek_id: str
    aad: str


def row_aad(credential_id: str, tenant_id: str, provider: str) -> str:
    """The associated data that binds a sealed secret to its row."""
    return f"{_AAD_PREFIX}|{credential_id}|{tenant_id}|{provider}"


class KeyRing:
    """The KEKs a process holds: the first is current (it wraps new data keys), the others are
    still accepted for opening until every row has been re-wrapped."""

    def __init__(self, keks: tuple[Kek, ...]) -> None:
        if not keks:
            raise ValueError("a key ring needs at least one KEK")
        ids = [k.kek_id for k in keks]
        if len(set(ids)) != len(ids):
            raise ValueError("KEK ids must be distinct")
        self._keks: Mapping[str, Kek] = {k.kek_id: k for k in keks}
        self.current = keks[0]

    @property
    def ids(self) -> tuple[str, ...]:
        """Every KEK id, current first."""
        return tuple(self._keks)

    def __contains__(self, kek_id: object) -> bool:
        return kek_id in self._keks

    def _kek(self, kek_id: str, what: str) -> Kek:
        kek = self._keks.get(kek_id)
        if kek is None:
            raise SealError(f"{what} is sealed under KEK {kek_id!r}, which is not configured")
        return kek

    def seal(self, plaintext: bytes, aad: str) -> Sealed:
        """Encrypt ``plaintext`` under a fresh data key wrapped by the current KEK."""
        data_key = AESGCM.generate_key(bit_length=KEY_BYTES * 8)
        nonce = os.urandom(NONCE_BYTES)
        ciphertext = AESGCM(data_key).encrypt(nonce, plaintext, aad.encode())
        return Sealed(ciphertext, nonce, self._wrap(self.current, data_key, aad), self.current.kek_id, aad)

    def open(self, sealed: Sealed, aad: str, what: str) -> bytes:
        """The plaintext; SealError when the KEK is unknown or wrong, or ``aad`` is not the row's."""
        data_key = self._unwrap(sealed, aad, what)
        try:
            return AESGCM(data_key).decrypt(sealed.nonce, sealed.ciphertext, aad.encode())
        except InvalidTag:
            raise SealError(f"{what}: the secret does not authenticate (altered, or moved from another row)") from None

    def rewrap(self, sealed: Sealed, aad: str, what: str) -> Sealed:
        """The same ciphertext with its data key wrapped by the current KEK instead."""
        data_key = self._unwrap(sealed, aad, what)
        return Sealed(
            sealed.ciphertext, sealed.nonce, self._wrap(self.current, data_key, aad), self.current.kek_id, sealed.aad
        )

    def check(self, sealed: Sealed, aad: str, what: str) -> None:
        """Raise SealError unless this ring opens the row's data key."""
        self._unwrap(sealed, aad, what)

    @staticmethod
    def _wrap(kek: Kek, data_key: bytes, aad: str) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + AESGCM(kek.key).encrypt(nonce, data_key, _wrap_aad(kek.kek_id, aad))

    def _unwrap(self, sealed: Sealed, aad: str, what: str) -> bytes:
        kek = self._kek(sealed.kek_id, what)
        nonce, wrapped = sealed.wrapped_key[:NONCE_BYTES], sealed.wrapped_key[NONCE_BYTES:]
        try:
            return AESGCM(kek.key).decrypt(nonce, wrapped, _wrap_aad(kek.kek_id, aad))
        except InvalidTag:
            raise SealError(
                f"{what}: KEK {kek.kek_id!r} does not open its data key (a wrong key under that id, "
                "or a row moved from elsewhere)"
            ) from None


def _wrap_aad(kek_id: str, aad: str) -> bytes:
    return f"{aad}|kek={kek_id}".encode()
