"""Jobs, the Responses API and the admin helpers against the real suite.

Jobs and responses are routes other branches are adding (``jobs``, ``responses``), and the
credential routes come with ``credentials``: their tests skip, naming the branch, until it is
merged into the checkout the test runs from, then they run.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import llm_gateway
import pytest
from llm_gateway import AsyncClient, Client

from tests.e2e.conftest import Gateway
from tests.sdk.python.conftest import ClientFactory, client_kwargs

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[3]
HELLO = [{"role": "user", "content": "Hello from the SDK"}]

needs_jobs = pytest.mark.skipif(
    not (ROOT / "gen" / "gateway" / "jobs").is_dir(), reason="async jobs are not merged yet (branch jobs)"
)
needs_responses = pytest.mark.skipif(
    not (ROOT / "edge" / "responses_api.py").is_file(), reason="the Responses API is not merged yet (branch responses)"
)
needs_credentials = pytest.mark.skipif(
    "CredentialService" not in (ROOT / "edge" / "transcoding.py").read_text(),
    reason="the credential admin routes are not merged yet (branch credentials)",
)


def _admin(gateway: Gateway) -> Client:
    return Client(gateway.admin_key, base_url=gateway.url, max_retries=0)


@needs_jobs
def test_jobs_submitted_and_awaited(make_client: ClientFactory, transport: str) -> None:
    client = make_client()
    job = client.jobs.submit({"model": "mock:demo", "messages": HELLO})
    assert isinstance(job, llm_gateway.Job) and job.id.startswith("job_")
    assert job.status in ("queued", "running", "succeeded") and job.format == "chat.completions"
    done = client.jobs.wait(job.id, poll_interval=0.1, timeout=60)
    assert done.status == "succeeded" and done.done and done.error is None
    assert done.result is not None
    assert done.result["choices"][0]["message"]["content"] == "Mock reply to: Hello from the SDK"
    assert done.finished_at is not None and done.attempts >= 1
    assert job.id in [j.id for j in client.jobs.list(limit=100).data]
    # Cancelling a finished job returns it as it ended.
    assert client.jobs.cancel(job.id).status == "succeeded"
    with pytest.raises(llm_gateway.NotFoundError):
        client.jobs.get("job_does_not_exist")


@needs_jobs
def test_a_failed_job_carries_its_error(make_client: ClientFactory, transport: str) -> None:
    client = make_client()
    job = client.jobs.submit({"model": "mock:error-400", "messages": HELLO})
    done = client.jobs.wait(job.id, poll_interval=0.1, timeout=60)
    assert done.status == "failed" and done.error is not None and done.error.message


@needs_jobs
async def test_async_jobs(gateway: Gateway, transport: str) -> None:
    async with AsyncClient(gateway.key, max_retries=0, **client_kwargs(gateway, transport)) as client:  # type: ignore[arg-type]
        job = await client.jobs.submit({"model": "mock:demo", "messages": HELLO})
        done = await client.jobs.wait(job.id, poll_interval=0.1, timeout=60)
        assert done.status == "succeeded"
        page = await client.jobs.list(limit=1)
        assert len(page.data) == 1


@needs_responses
def test_responses(make_client: ClientFactory, transport: str) -> None:
    client = make_client()
    response = client.responses("mock:demo", "Hello from the SDK", store=False)
    assert isinstance(response, llm_gateway.Response)
    assert response.id.startswith("resp_") and response.status == "completed"
    assert response.output_text == "Mock reply to: Hello from the SDK"
    assert response.raw["object"] == "response" and response.usage


@needs_responses
def test_responses_stream(make_client: ClientFactory, transport: str) -> None:
    with make_client().responses_stream("mock:demo", "Hello from the SDK", store=False) as stream:
        events = list(stream)
    kinds = [e.type for e in events]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    deltas = "".join(str(e.data.get("delta", "")) for e in events if e.type == "response.output_text.delta")
    assert deltas == "Mock reply to: Hello from the SDK"


@needs_responses
def test_stored_responses_are_read_back_and_deleted(make_client: ClientFactory, transport: str) -> None:
    client = make_client()
    first = client.responses("mock:demo", "Hello from the SDK", store=True)
    assert client.get_response(first.id).id == first.id
    follow_up = client.responses("mock:demo", "And again", previous_response_id=first.id)
    assert follow_up.previous_response_id == first.id
    assert client.delete_response(first.id) is True
    with pytest.raises(llm_gateway.NotFoundError):
        client.get_response(first.id)


def test_admin_tenants_and_keys(gateway: Gateway) -> None:
    tenant_id = f"sdk-{secrets.token_hex(4)}"
    with _admin(gateway) as admin:
        tenant = admin.admin.tenants.create(
            tenant_id,
            display_name="SDK tenant",
            limits=llm_gateway.Limits(quotas=[llm_gateway.Quota("UNIT_REQUESTS", "WINDOW_DAY", 1000)]),
            policy=llm_gateway.Policy(deny_providers=["stubbed"]),
        )
        assert isinstance(tenant, llm_gateway.Tenant)
        assert tenant.tenant_id == tenant_id and tenant.display_name == "SDK tenant" and tenant.create_time
        assert tenant.limits is not None and tenant.limits.quotas[0].limit == 1000
        assert tenant.policy is not None and tenant.policy.deny_providers == ["stubbed"]
        assert tenant_id in [t.tenant_id for t in admin.admin.tenants.list()]
        updated = admin.admin.tenants.update(tenant_id, policy={"deny_providers": [], "log_prompts": True})
        assert updated.policy is not None and updated.policy.log_prompts

        created = admin.admin.keys.create(tenant_id, name="sdk", scopes=["chat"], allowed_models=["mock:*"])
        assert isinstance(created, llm_gateway.CreatedKey) and created.secret
        assert created.key.tenant_id == tenant_id and created.key.scopes == ["chat"]
        assert created.secret.startswith(created.key.prefix)
        with Client(created.secret, base_url=gateway.url, max_retries=0) as user:
            assert user.chat("mock:demo", HELLO).text
        listed = admin.admin.keys.list(tenant_id=tenant_id)
        assert [k.key_id for k in listed] == [created.key.key_id]
        changed = admin.admin.keys.update(created.key.key_id, allowed_models=["mock:demo"])
        assert changed.allowed_models == ["mock:demo"]
        revoked = admin.admin.keys.revoke(created.key.key_id)
        assert revoked.revoke_time is not None
        assert admin.admin.keys.list(tenant_id=tenant_id) == []
        assert [k.key_id for k in admin.admin.keys.list(tenant_id=tenant_id, include_revoked=True)] == [
            created.key.key_id
        ]
    with (
        Client(gateway.key, base_url=gateway.url, max_retries=0) as user,
        pytest.raises(llm_gateway.PermissionDeniedError),
    ):
        user.admin.tenants.list()


@needs_credentials
def test_admin_credentials(gateway: Gateway) -> None:
    with _admin(gateway) as admin:
        credential = admin.admin.credentials.create("fake", "sk-sdk-test-1234", tenant_id="acme", name="sdk")
        assert isinstance(credential, llm_gateway.Credential)
        assert credential.kind == "CREDENTIAL_KIND_API_KEY" and credential.secret_last_four == "1234"
        assert credential.credential_id in [c.credential_id for c in admin.admin.credentials.list(tenant_id="acme")]
        changed = admin.admin.credentials.update(
            credential.credential_id, priority=5, state="CREDENTIAL_STATE_DISABLED"
        )
        assert changed.priority == 5 and changed.state == "CREDENTIAL_STATE_DISABLED"
        rotated = admin.admin.credentials.rotate(credential.credential_id, "sk-sdk-test-5678")
        assert rotated.secret_last_four == "5678"
        admin.admin.credentials.delete(credential.credential_id)
        assert credential.credential_id not in [c.credential_id for c in admin.admin.credentials.list(tenant_id="acme")]
