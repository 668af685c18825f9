"""Protobuf <-> credential domain values. Secrets become opaque bytes here and nowhere else."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC

from gateway.auth.v1 import credentials_pb2
from gateway.quota.v1 import quota_pb2
from gateway_common.errors import invalid_argument

from ..model import Quota, Unit, Window
from .model import Credential, Kind, Secret, State

_UNITS: dict[quota_pb2.Unit.ValueType, Unit] = {
    quota_pb2.UNIT_REQUESTS: Unit.REQUESTS,
    quota_pb2.UNIT_TOKENS: Unit.TOKENS,
    quota_pb2.UNIT_COST_MICRO_USD: Unit.COST_MICRO_USD,
}
_WINDOWS: dict[quota_pb2.Window.ValueType, Window] = {
    quota_pb2.WINDOW_MINUTE: Window.MINUTE,
    quota_pb2.WINDOW_DAY: Window.DAY,
    quota_pb2.WINDOW_MONTH: Window.MONTH,
}
_UNIT_PROTOS = {unit: number for number, unit in _UNITS.items()}
_WINDOW_PROTOS = {window: number for number, window in _WINDOWS.items()}
_KIND_PROTOS = {
    Kind.API_KEY: credentials_pb2.CREDENTIAL_KIND_API_KEY,
    Kind.OAUTH: credentials_pb2.CREDENTIAL_KIND_OAUTH,
}
_STATE_PROTOS = {
    State.ACTIVE: credentials_pb2.CREDENTIAL_STATE_ACTIVE,
    State.DISABLED: credentials_pb2.CREDENTIAL_STATE_DISABLED,
}
_STATES = {number: state for state, number in _STATE_PROTOS.items()}


def quotas_from_proto(quotas: Iterable[quota_pb2.Quota], field: str) -> tuple[Quota, ...]:
    """Quotas with a unit and a window each (limits are checked by the domain)."""
    result: list[Quota] = []
    for i, quota in enumerate(quotas):
        unit = _UNITS.get(quota.unit)
        if unit is None:
            raise invalid_argument("unit is required (UNIT_REQUESTS or UNIT_TOKENS)", f"{field}[{i}].unit")
        window = _WINDOWS.get(quota.window)
        if window is None:
            raise invalid_argument(
                "window is required (WINDOW_MINUTE, WINDOW_DAY or WINDOW_MONTH)", f"{field}[{i}].window"
            )
        result.append(Quota(unit, window, quota.limit))
    return tuple(result)


def state_from_proto(state: credentials_pb2.CredentialState.ValueType) -> State | None:
    """The state an update asks for; None when unspecified (left as it is)."""
    return _STATES.get(state)


def _last_four(value: str) -> str:
    # A very short secret would be half shown by its last four: show none of it.
    return value[-4:] if len(value) >= 12 else "****"


def secret_from_proto(secret: credentials_pb2.CredentialSecret, field: str) -> Secret:
    """The serialized secret with its kind, last four and expiry; INVALID_ARGUMENT when empty."""
    which = secret.WhichOneof("secret")
    if which == "api_key":
        if not secret.api_key.strip():
            raise invalid_argument("the API key is empty", f"{field}.api_key")
        return Secret(Kind.API_KEY, secret.SerializeToString(deterministic=True), _last_four(secret.api_key))
    if which == "oauth":
        tokens = secret.oauth
        if not tokens.access_token.strip():
            raise invalid_argument("the access token is empty", f"{field}.oauth.access_token")
        expires = tokens.expires_at.ToDatetime(tzinfo=UTC) if tokens.HasField("expires_at") else None
        return Secret(
            Kind.OAUTH, secret.SerializeToString(deterministic=True), _last_four(tokens.access_token), expires
        )
    raise invalid_argument("a secret is required: api_key or oauth", field)


def secret_to_proto(payload: bytes) -> credentials_pb2.CredentialSecret:
    """The secret a sealed payload holds."""
    return credentials_pb2.CredentialSecret.FromString(payload)


def merge_refreshed(payload: bytes, tokens: credentials_pb2.OAuthTokens) -> Secret:
    """The stored token set replaced by ``tokens``; an empty refresh token keeps the stored one."""
    stored = secret_to_proto(payload)
    merged = credentials_pb2.OAuthTokens()
    merged.CopyFrom(tokens)
    if not merged.refresh_token and stored.WhichOneof("secret") == "oauth":
        merged.refresh_token = stored.oauth.refresh_token
    return secret_from_proto(credentials_pb2.CredentialSecret(oauth=merged), "tokens")


def credential_to_proto(credential: Credential) -> credentials_pb2.Credential:
    """The public view: no secret, only its last four."""
    message = credentials_pb2.Credential(
        credential_id=credential.credential_id,
        tenant_id=credential.tenant_id,
        provider=credential.provider,
        kind=_KIND_PROTOS[credential.kind],
        name=credential.name,
        priority=credential.priority,
        state=_STATE_PROTOS[credential.state],
        limits=[
            quota_pb2.Quota(unit=_UNIT_PROTOS[q.unit], window=_WINDOW_PROTOS[q.window], limit=q.limit)
            for q in credential.limits
        ],
        secret_last_four=credential.secret_last_four,
    )
    if credential.expires_at is not None:
        message.expires_at.FromDatetime(credential.expires_at)
    # cooldown_until is runtime state of the rate limit service; the auth store has none to fill.
    message.created_at.FromDatetime(credential.create_time)
    message.rotated_at.FromDatetime(credential.rotate_time)
    return message
