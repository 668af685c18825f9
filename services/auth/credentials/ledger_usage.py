"""What each listed credential served this month, from the metering service's usage ledger.

The ledger records the credential of every event (``UsageEvent.credential_id``); one QueryUsage per
tenant of the listing, grouped by credential, gives every credential's totals. As with the rate
limit state, the answer is decoration: a metering outage leaves ``month_usage`` unset and the
listing still answers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import grpc

from gateway.auth.v1 import credentials_pb2
from gateway.metering.v1 import metering_pb2

if TYPE_CHECKING:
    from gateway.metering.v1.metering_pb2_grpc import MeteringServiceAsyncStub

log = logging.getLogger(__name__)


def month_start(now: datetime) -> datetime:
    """The start of ``now``'s calendar month, UTC."""
    return now.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


class MeteringMonthUsage:
    """The month's ledger totals per credential over metering's ``QueryUsage``."""

    def __init__(self, stub: MeteringServiceAsyncStub, clock: Callable[[], datetime], timeout_s: float = 2.0) -> None:
        self._stub = stub
        self._clock = clock
        self._timeout_s = timeout_s

    async def __call__(
        self, credentials: Sequence[credentials_pb2.Credential]
    ) -> Mapping[str, credentials_pb2.CredentialLedgerUsage]:
        """Each credential's totals since the month began (zeros when it served nothing); empty when
        metering did not answer."""
        since = month_start(self._clock())
        found: dict[str, credentials_pb2.CredentialLedgerUsage] = {}
        for tenant_id in sorted({c.tenant_id for c in credentials}):
            request = metering_pb2.QueryUsageRequest(tenant_id=tenant_id, group_by=metering_pb2.GROUP_BY_CREDENTIAL)
            request.start_time.FromDatetime(since)
            try:
                response = await self._stub.QueryUsage(request, timeout=self._timeout_s)
            except grpc.aio.AioRpcError as exc:
                log.warning("credential usage not shown: the metering service answered %s", exc.code().name)
                return {}
            rows = {row.group: row for row in response.rows if row.group}
            for credential in credentials:
                if credential.tenant_id != tenant_id:
                    continue
                usage = credentials_pb2.CredentialLedgerUsage()
                usage.since.FromDatetime(since)
                row = rows.get(credential.credential_id)
                if row is not None:
                    usage.requests = row.requests
                    usage.prompt_tokens = row.prompt_tokens
                    usage.completion_tokens = row.completion_tokens
                    usage.cost_micro_usd = row.cost_micro_usd
                found[credential.credential_id] = usage
        return found
