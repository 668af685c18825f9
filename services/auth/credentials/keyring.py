"""Where the key-encryption keys come from: the environment, a file, or (embedded default) a file
generated once.

- ``GATEWAY_CREDENTIALS_KEK``: one base64 key of 32 bytes, or ``id:base64`` entries separated by
  commas, the first being current (``new:…,old:…`` while a rotation is under way);
- ``GATEWAY_CREDENTIALS_KEK_FILE``: a file holding the same text (entries on lines or commas);
- neither: the file ``auth.credentials.kek_file`` of the configuration, created with one fresh key
  and mode 0600 when it does not exist (the ``make up`` default; back it up with the database).

A bare key's id is derived from the key itself (``kek-`` and 12 hex digits of its SHA-256), so a
different key never passes for the one that sealed a row. Errors name the variable or file and the
entry's position, never key material.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

from gateway_common.config import ConfigError

from .envelope import KEY_BYTES, Kek, KeyRing

KEK_ENV = "GATEWAY_CREDENTIALS_KEK"
KEK_FILE_ENV = "GATEWAY_CREDENTIALS_KEK_FILE"
_KEK_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
_HINT = "expected a base64 key of 32 bytes, or 'id:base64key' entries separated by commas, current first"


def derived_id(key: bytes) -> str:
    """The id of a KEK given without one."""
    return "kek-" + hashlib.sha256(key).hexdigest()[:12]


def parse_keks(text: str, source: str) -> KeyRing:
    """The key ring ``text`` describes; ConfigError naming ``source`` and the entry when malformed."""
    keks: list[Kek] = []
    # Comments are whole lines starting with '#' (the generated file explains itself in one).
    lines = (line for line in text.splitlines() if not line.lstrip().startswith("#"))
    entries = [e.strip() for line in lines for e in line.split(",")]
    for position, entry in enumerate((e for e in entries if e), 1):
        kek_id, colon, encoded = entry.rpartition(":")
        if not colon:
            kek_id, encoded = "", entry
        where = f"{source}: entry {position}"
        if kek_id and not _KEK_ID.fullmatch(kek_id):
            raise ConfigError(f"{where}: the KEK id must be 1-63 characters of letters, digits, '.', '_' or '-'")
        try:
            key = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise ConfigError(f"{where} is not valid base64 ({_HINT})") from None
        if len(key) != KEY_BYTES:
            raise ConfigError(f"{where} decodes to {len(key)} bytes, not {KEY_BYTES} ({_HINT})")
        keks.append(Kek(kek_id or derived_id(key), key))
    if not keks:
        raise ConfigError(f"{source} holds no key ({_HINT})")
    try:
        return KeyRing(tuple(keks))
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def generate_kek_file(path: Path) -> None:
    """Write a file with one fresh KEK, readable by its owner only; an existing file is kept."""
    path.parent.mkdir(parents=True, exist_ok=True)
    key = base64.b64encode(os.urandom(KEY_BYTES)).decode()
    kek_id = "k" + datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    # O_EXCL: two processes starting together never overwrite each other's key.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    with os.fdopen(fd, "w") as out:
        out.write(
            "# Key-encryption keys of the gateway's credential store, current first (id:base64).\n"
            "# Losing this file makes every stored credential unreadable.\n"
            f"{kek_id}:{key}\n"
        )


def load_keyring(default_file: Path, env: Mapping[str, str] | None = None) -> KeyRing:
    """The key ring from the environment, else the KEK file, else a newly generated default file."""
    env = os.environ if env is None else env
    inline = env.get(KEK_ENV, "").strip()
    if inline:
        return parse_keks(inline, KEK_ENV)
    named = env.get(KEK_FILE_ENV, "").strip()
    path = Path(named) if named else default_file
    if not named:
        try:
            generate_kek_file(path)
        except OSError as exc:
            raise ConfigError(
                f"cannot create the credentials KEK file {path}: {exc.strerror}; set {KEK_ENV} or {KEK_FILE_ENV}"
            ) from None
    try:
        text = path.read_text()
    except OSError as exc:
        source = f"{KEK_FILE_ENV}={path}" if named else str(path)
        raise ConfigError(f"cannot read the credentials KEK file {source}: {exc.strerror}") from None
    return parse_keks(text, f"KEK file {path}")
