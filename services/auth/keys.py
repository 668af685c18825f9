"""API key secrets: how they are made, hashed and recognised. The secret itself is never stored."""

from __future__ import annotations

import base64
import hashlib
import secrets

KEY_PREFIX = "gw-"
"""Every generated key starts with this, so scanners and people recognise it."""
ENTROPY_BYTES = 32
"""Random bytes per key: 256 bits, far beyond guessing."""
DISPLAY_PREFIX_CHARS = 8


def generate_key() -> str:
    """A new key: ``gw-`` followed by 32 random bytes in URL-safe base64 (no padding)."""
    raw = secrets.token_bytes(ENTROPY_BYTES)
    return KEY_PREFIX + base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def hash_key(secret: str) -> str:
    """The SHA-256 hex digest the store looks keys up by.

    A plain (unsalted) hash is enough here because keys carry 256 bits of entropy: there is no
    dictionary to attack, and lookups must be by hash in one indexed query.
    """
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def display_prefix(secret: str) -> str:
    """The first characters of a key, to recognise it in listings.

    Never more than a quarter of the key, so a short key bootstrapped from the environment
    cannot be read back from its prefix.
    """
    return secret[: min(DISPLAY_PREFIX_CHARS, len(secret) // 4)]


def new_key_id() -> str:
    """A key's public id (not a secret): ``key_`` and 16 random hex digits."""
    return "key_" + secrets.token_hex(8)
