"""Credential values the domain works on; no protobuf, no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from ..model import Quota
from .envelope import Sealed


class Kind(StrEnum):
    """What a credential holds."""

    API_KEY = "api_key"
    OAUTH = "oauth"


class State(StrEnum):
    """A credential's administrative state."""

    ACTIVE = "active"
    DISABLED = "disabled"


@dataclass(frozen=True)
class Secret:
    """A secret as the servicer hands it over: serialized, with what may be shown of it."""

    kind: Kind
    payload: bytes = field(repr=False)
    """The serialized ``CredentialSecret``; opaque to the domain."""
    last_four: str
    expires_at: datetime | None = None


@dataclass(frozen=True)
class Credential:
    """A stored credential: public settings and its sealed secret."""

    credential_id: str
    tenant_id: str
    provider: str
    kind: Kind
    name: str
    priority: int
    state: State
    limits: tuple[Quota, ...]
    secret_last_four: str
    expires_at: datetime | None
    sealed: Sealed = field(repr=False)
    create_time: datetime
    rotate_time: datetime


@dataclass(frozen=True)
class CredentialChanges:
    """What an update replaces; None leaves a field as it is."""

    name: str | None = None
    priority: int | None = None
    state: State | None = None
    limits: tuple[Quota, ...] | None = None


@dataclass(frozen=True)
class Resolved:
    """A usable credential and its secret in clear (the serialized ``CredentialSecret``)."""

    credential: Credential
    payload: bytes = field(repr=False)
