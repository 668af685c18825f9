"""The usage event written when a request is admitted: what the ledger gets if the router dies.

It stands in for the request until its final event replaces it, so it is shaped as the event of
a request cut short by a restart: outcome ERROR, ``ROUTER_RESTARTED``, and the reservation's
estimate as usage (the most the request was allowed to use), marked as estimated.
"""

from __future__ import annotations

from google.protobuf import timestamp_pb2

from gateway.auth.v1 import auth_pb2
from gateway.metering.v1 import metering_pb2
from gateway.ratelimit.v1 import ratelimit_pb2

RESTARTED_ERROR_CODE = "ROUTER_RESTARTED"
"""The error code of a request whose router died before it ended."""


def intent_event(
    *,
    event_id: str,
    request_id: str,
    principal: auth_pb2.Principal,
    model: str,
    operation: str,
    prompt_tokens: int,
    estimate: ratelimit_pb2.Amounts,
    received: timestamp_pb2.Timestamp,
) -> metering_pb2.UsageEvent:
    """The intent of an admitted request; ``estimate`` is what was (or would have been) reserved."""
    return metering_pb2.UsageEvent(
        event_id=event_id,
        request_id=request_id,
        tenant_id=principal.tenant_id,
        key_id=principal.key_id,
        model=model,
        prompt_tokens=prompt_tokens,
        completion_tokens=max(0, estimate.tokens - prompt_tokens),
        cost_micro_usd=estimate.cost_micro_usd,
        outcome=metering_pb2.OUTCOME_ERROR,
        error_code=RESTARTED_ERROR_CODE,
        time=received,
        operation=operation,
        usage_estimated=True,
    )
