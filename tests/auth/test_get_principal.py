"""GetPrincipal: a key resolved by its id for work it submitted earlier; revocation and expiry honoured."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import grpc
import pytest
from google.protobuf import timestamp_pb2

from gateway.auth.v1 import auth_pb2
from gateway.quota.v1 import quota_pb2
from gateway_common.errors import Reason
from tests.auth.helpers import FakeClock, auth_config, bearer, gateway_error, running_auth
from tests.auth.test_service import ADMIN, SECRETS


async def _denied(call: object) -> tuple[grpc.StatusCode, str, str]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    error = gateway_error(caught.value)
    return error.code, str(error.reason), error.metadata.get("param", "")


async def test_principal_by_key_id_follows_the_key_until_it_is_revoked_or_expires(
    database_url: str, tmp_path: Path
) -> None:
    clock = FakeClock()
    async with running_auth(auth_config(database_url, tmp_path), SECRETS, clock) as auth:
        expire = timestamp_pb2.Timestamp()
        expire.FromDatetime(clock.now + timedelta(hours=1))
        created = await auth.stub.CreateKey(
            auth_pb2.CreateKeyRequest(tenant_id="acme", name="jobs", expire_time=expire), metadata=bearer(ADMIN)
        )
        key_id = created.key.key_id
        principal = (await auth.stub.GetPrincipal(auth_pb2.GetPrincipalRequest(key_id=key_id))).principal
        assert (principal.tenant_id, principal.key_id, principal.key_name) == ("acme", key_id, "jobs")

        # Re-limited meanwhile: the next resolution carries the new limits.
        rpm = quota_pb2.Quota(unit=quota_pb2.UNIT_REQUESTS, window=quota_pb2.WINDOW_MINUTE, limit=5)
        await auth.stub.UpdateKey(
            auth_pb2.UpdateKeyRequest(key_id=key_id, limits=auth_pb2.Limits(quotas=[rpm])), metadata=bearer(ADMIN)
        )
        principal = (await auth.stub.GetPrincipal(auth_pb2.GetPrincipalRequest(key_id=key_id))).principal
        assert list(principal.key_limits.quotas) == [rpm]

        denied = (grpc.StatusCode.PERMISSION_DENIED, str(Reason.PERMISSION_DENIED), "key_id")
        assert await _denied(auth.stub.GetPrincipal(auth_pb2.GetPrincipalRequest(key_id="key_unknown"))) == denied
        assert await _denied(auth.stub.GetPrincipal(auth_pb2.GetPrincipalRequest())) == denied
        clock.advance(timedelta(hours=2))
        assert await _denied(auth.stub.GetPrincipal(auth_pb2.GetPrincipalRequest(key_id=key_id))) == denied

        other = await auth.stub.CreateKey(auth_pb2.CreateKeyRequest(tenant_id="acme"), metadata=bearer(ADMIN))
        await auth.stub.RevokeKey(auth_pb2.RevokeKeyRequest(key_id=other.key.key_id), metadata=bearer(ADMIN))
        revoked = auth.stub.GetPrincipal(auth_pb2.GetPrincipalRequest(key_id=other.key.key_id))
        assert await _denied(revoked) == denied
