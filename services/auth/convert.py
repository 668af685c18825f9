"""Protobuf <-> domain translation for the servicer. Incoming values are checked on the way in,
each failure naming its field path in the request (``tenant.limits.quotas[0].unit``)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from google.protobuf import timestamp_pb2

from gateway.auth.v1 import auth_pb2
from gateway.quota.v1 import quota_pb2
from gateway_common.errors import invalid_argument

from .model import ApiKey, Limits, Policy, Principal, Quota, Tenant, Unit, Window
from .validation import check_limits, check_policy

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


def limits_from_proto(message: auth_pb2.Limits, field: str) -> Limits:
    """Checked limits: every quota has a unit, a window and a limit of at least 0."""
    quotas: list[Quota] = []
    for i, quota in enumerate(message.quotas):
        path = f"{field}.quotas[{i}]"
        unit = _UNITS.get(quota.unit)
        if unit is None:
            raise invalid_argument(
                "unit is required (UNIT_REQUESTS, UNIT_TOKENS or UNIT_COST_MICRO_USD)", f"{path}.unit"
            )
        window = _WINDOWS.get(quota.window)
        if window is None:
            raise invalid_argument("window is required (WINDOW_MINUTE, WINDOW_DAY or WINDOW_MONTH)", f"{path}.window")
        quotas.append(Quota(unit, window, quota.limit))
    cap = message.max_concurrent_requests if message.HasField("max_concurrent_requests") else None
    return check_limits(Limits(tuple(quotas), cap), field)


def limits_to_proto(limits: Limits) -> auth_pb2.Limits:
    """The wire form of ``limits``."""
    message = auth_pb2.Limits(
        quotas=[
            quota_pb2.Quota(unit=_UNIT_PROTOS[q.unit], window=_WINDOW_PROTOS[q.window], limit=q.limit)
            for q in limits.quotas
        ]
    )
    if limits.max_concurrent_requests is not None:
        message.max_concurrent_requests = limits.max_concurrent_requests
    return message


def policy_from_proto(message: auth_pb2.Policy, field: str) -> Policy:
    """A checked policy."""
    policy = Policy(
        deny_models=tuple(message.deny_models),
        deny_providers=tuple(message.deny_providers),
        max_prompt_tokens=message.max_prompt_tokens if message.HasField("max_prompt_tokens") else None,
        log_prompts=message.log_prompts,
        refuse_unpriced=message.refuse_unpriced,
        continue_broken_streams=(
            message.continue_broken_streams if message.HasField("continue_broken_streams") else None
        ),
    )
    return check_policy(policy, field)


def policy_to_proto(policy: Policy) -> auth_pb2.Policy:
    """The wire form of ``policy``."""
    message = auth_pb2.Policy(
        deny_models=policy.deny_models,
        deny_providers=policy.deny_providers,
        log_prompts=policy.log_prompts,
        refuse_unpriced=policy.refuse_unpriced,
    )
    if policy.max_prompt_tokens is not None:
        message.max_prompt_tokens = policy.max_prompt_tokens
    if policy.continue_broken_streams is not None:
        message.continue_broken_streams = policy.continue_broken_streams
    return message


def timestamp(value: datetime) -> timestamp_pb2.Timestamp:
    """A protobuf Timestamp for an aware datetime."""
    message = timestamp_pb2.Timestamp()
    message.FromDatetime(value)
    return message


def datetime_from(message: timestamp_pb2.Timestamp) -> datetime:
    """An aware UTC datetime for a protobuf Timestamp."""
    return message.ToDatetime(tzinfo=UTC)


def tenant_to_proto(tenant: Tenant) -> auth_pb2.Tenant:
    """The wire form of ``tenant``."""
    return auth_pb2.Tenant(
        tenant_id=tenant.tenant_id,
        display_name=tenant.display_name,
        limits=limits_to_proto(tenant.limits),
        key_defaults=limits_to_proto(tenant.key_defaults),
        policy=policy_to_proto(tenant.policy),
        create_time=timestamp(tenant.create_time),
    )


def key_to_proto(key: ApiKey) -> auth_pb2.ApiKey:
    """The wire form of ``key``: its description, never its secret (the domain value holds none)."""
    message = auth_pb2.ApiKey(
        key_id=key.key_id,
        tenant_id=key.tenant_id,
        name=key.name,
        prefix=key.prefix,
        scopes=key.scopes,
        allowed_models=key.allowed_models,
        limits=limits_to_proto(key.limits or Limits()),
        create_time=timestamp(key.create_time),
    )
    if key.expire_time is not None:
        message.expire_time.CopyFrom(timestamp(key.expire_time))
    if key.revoke_time is not None:
        message.revoke_time.CopyFrom(timestamp(key.revoke_time))
    return message


def keys_to_proto(keys: Iterable[ApiKey]) -> list[auth_pb2.ApiKey]:
    """The wire form of several keys."""
    return [key_to_proto(key) for key in keys]


def principal_to_proto(principal: Principal) -> auth_pb2.Principal:
    """The wire form of ``principal``."""
    return auth_pb2.Principal(
        tenant_id=principal.tenant_id,
        key_id=principal.key_id,
        key_prefix=principal.key_prefix,
        key_name=principal.key_name,
        scopes=principal.scopes,
        allowed_models=principal.allowed_models,
        key_limits=limits_to_proto(principal.key_limits),
        tenant_limits=limits_to_proto(principal.tenant_limits),
        policy=policy_to_proto(principal.policy),
    )
