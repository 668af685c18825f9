"""Envelope encryption, key rings and log redaction on their own (no service, no database)."""

from __future__ import annotations

import base64
import logging
import os
import stat
from pathlib import Path

import pytest

from gateway_common.config import ConfigError
from gateway_common.redaction import REDACTED, RedactingLogFilter
from services.auth.credentials.envelope import Kek, KeyRing, SealError, row_aad
from services.auth.credentials.keyring import KEK_ENV, KEK_FILE_ENV, derived_id, load_keyring, parse_keks

SECRET = b"\x0a\x2cupstream-api-key-0123456789abcdef"
AAD = row_aad("cred_0123456789abcdef", "acme", "openai")


def _ring(*ids: str) -> KeyRing:
    return KeyRing(tuple(Kek(i, os.urandom(32)) for i in ids))


def test_a_sealed_secret_opens_to_itself_and_holds_no_clear_text() -> None:
    ring = _ring("k1")
    sealed = ring.seal(SECRET, AAD)
    assert ring.open(sealed, AAD, "c") == SECRET
    assert sealed.kek_id == "k1" and sealed.aad == AAD
    for part in (sealed.ciphertext, sealed.wrapped_key, sealed.nonce):
        assert b"upstream-api-key" not in part
    # A fresh data key and nonce every time: two seals of one secret share nothing.
    again = ring.seal(SECRET, AAD)
    assert again.ciphertext != sealed.ciphertext and again.wrapped_key != sealed.wrapped_key


def test_the_row_identity_is_authenticated() -> None:
    ring = _ring("k1")
    sealed = ring.seal(SECRET, AAD)
    for other in (
        row_aad("cred_0123456789abcdef", "beta", "openai"),
        row_aad("cred_0123456789abcdef", "acme", "anthropic"),
        row_aad("cred_ffffffffffffffff", "acme", "openai"),
    ):
        with pytest.raises(SealError):
            ring.open(sealed, other, "c")


def test_rewrap_keeps_the_ciphertext_and_needs_only_the_new_kek_afterwards() -> None:
    old = Kek("old", os.urandom(32))
    new = Kek("new", os.urandom(32))
    sealed = KeyRing((old,)).seal(SECRET, AAD)
    rotating = KeyRing((new, old))
    rewrapped = rotating.rewrap(sealed, AAD, "c")
    assert rewrapped.kek_id == "new" and rewrapped.ciphertext == sealed.ciphertext
    assert rewrapped.nonce == sealed.nonce and rewrapped.wrapped_key != sealed.wrapped_key
    assert KeyRing((new,)).open(rewrapped, AAD, "c") == SECRET
    with pytest.raises(SealError, match="'old', which is not configured"):
        KeyRing((new,)).open(sealed, AAD, "c")


def test_a_wrong_key_under_the_right_id_does_not_open() -> None:
    sealed = _ring("k1").seal(SECRET, AAD)
    with pytest.raises(SealError, match="KEK 'k1' does not open its data key"):
        _ring("k1").open(sealed, AAD, "c")


def _b64(key: bytes) -> str:
    return base64.b64encode(key).decode()


def test_key_rings_from_text() -> None:
    a, b = os.urandom(32), os.urandom(32)
    ring = parse_keks(f"new:{_b64(a)}, old:{_b64(b)}", KEK_ENV)
    assert ring.ids == ("new", "old") and ring.current.key == a
    bare = parse_keks(_b64(a), KEK_ENV)
    assert bare.ids == (derived_id(a),) and bare.current.kek_id.startswith("kek-")
    with pytest.raises(ConfigError, match=f"{KEK_ENV}: entry 2 decodes to 16 bytes, not 32"):
        parse_keks(f"a:{_b64(a)},b:{_b64(os.urandom(16))}", KEK_ENV)
    with pytest.raises(ConfigError, match="entry 1 is not valid base64"):
        parse_keks("k:not base64!", KEK_ENV)
    with pytest.raises(ConfigError, match="KEK ids must be distinct"):
        parse_keks(f"k:{_b64(a)},k:{_b64(b)}", KEK_ENV)
    with pytest.raises(ConfigError, match="holds no key"):
        parse_keks(" , ", KEK_ENV)
    # Never the key material in a message.
    short = _b64(os.urandom(31))
    with pytest.raises(ConfigError) as refused:
        parse_keks(f"k:{short}", KEK_ENV)
    assert short not in str(refused.value)


def test_the_embedded_default_generates_one_private_kek_file_once(tmp_path: Path) -> None:
    path = tmp_path / "data" / "credentials.kek"
    first = load_keyring(path, env={})
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = load_keyring(path, env={})
    assert again.ids == first.ids and again.current.key == first.current.key
    named = tmp_path / "ring"
    named.write_text(f"# rotating\nnew:{_b64(os.urandom(32))}\nold:{_b64(os.urandom(32))}\n")
    assert load_keyring(path, env={KEK_FILE_ENV: str(named)}).ids == ("new", "old")
    with pytest.raises(ConfigError, match=f"cannot read the credentials KEK file {KEK_FILE_ENV}="):
        load_keyring(path, env={KEK_FILE_ENV: str(tmp_path / "missing")})
    blocked = tmp_path / "file-not-folder"
    blocked.write_text("")
    with pytest.raises(ConfigError, match=f"cannot create the credentials KEK file .*; set {KEK_ENV}"):
        load_keyring(blocked / "credentials.kek", env={})
    # The environment wins over every file.
    key = os.urandom(32)
    assert load_keyring(path, env={KEK_ENV: _b64(key), KEK_FILE_ENV: str(named)}).current.key == key


@pytest.mark.parametrize(
    ("leak", "token"),
    [
        ("sk-proj-abcdefghijklmnop0123", "abcdefghijklmnop0123"),
        ("ya29.a0AfH6SMBx-0123456789_abcdefghijklmnop", "a0AfH6SMBx-0123456789"),
        ("1//0gLmnopqrstuvwxyz0123456789ABCDEF", "0gLmnopqrstuvwxyz0123456789"),
        ("AIzaSyA-0123456789abcdefghijklmnopqrstu", "SyA-0123456789abcdefghijklmnopqrstu"),
        ('{"access_token": "opaque-token-0123456789"}', "opaque-token-0123456789"),
        ("refresh_token=opaque-refresh-0123456789&x=1", "opaque-refresh-0123456789"),
        ("Authorization: Bearer opaque-bearer-0123456789", "opaque-bearer-0123456789"),
    ],
)
def test_a_secret_that_slips_into_a_log_line_is_redacted(leak: str, token: str) -> None:
    logger = logging.getLogger("tests.credentials.leak")
    handler = logging.Handler()
    seen: list[str] = []
    handler.emit = lambda record: seen.append(record.getMessage())  # type: ignore[method-assign]
    handler.addFilter(RedactingLogFilter())
    logger.addHandler(handler)
    try:
        logger.warning("upstream said no to %s today", leak)
    finally:
        logger.removeHandler(handler)
    assert len(seen) == 1 and REDACTED in seen[0]
    assert token not in seen[0] and seen[0].startswith("upstream said no to ")
