"""The admin UI at /ui/: pages render, every form post is CSRF-checked, a tenant key sees only its
own tenant, values are escaped, a new key's secret is shown once, credentials degrade cleanly."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from gateway.quota.v1 import quota_pb2
from tests.edge.ui_fakes import ACME_KEY, ADMIN_KEY, Fakes, ui_edge


@pytest.fixture
def edge() -> Iterator[tuple[TestClient, Fakes]]:
    with ui_edge() as pair:
        yield pair


@pytest.fixture
def edge_with_credentials() -> Iterator[tuple[TestClient, Fakes]]:
    with ui_edge(with_credentials=True) as pair:
        yield pair


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match, "the page has no CSRF field"
    return match.group(1)


def sign_in(client: TestClient, key: str) -> None:
    page = client.get("/ui/login")
    answer = client.post("/ui/login", data={"csrf": csrf_of(page.text), "key": key})
    assert answer.status_code == 303, answer.text
    assert answer.headers["location"] == "/ui/"


def test_without_a_session_every_page_leads_to_the_sign_in_page(edge: tuple[TestClient, Fakes]) -> None:
    client, fakes = edge
    for path in ("/ui/", "/ui/tenants", "/ui/keys", "/ui/routes", "/ui/usage", "/ui/credentials", "/ui/prompt-log"):
        answer = client.get(path)
        assert answer.status_code == 303 and answer.headers["location"] == "/ui/login", path
    page = client.get("/ui/login")
    assert page.status_code == 200 and 'name="key"' in page.text
    assert client.get("/ui/static/ui.css").headers["content-type"].startswith("text/css")
    assert sum(fakes.calls.values()) == 0


def test_signing_in_keeps_the_key_in_an_httponly_samesite_strict_cookie(edge: tuple[TestClient, Fakes]) -> None:
    client, _ = edge
    page = client.get("/ui/login")
    answer = client.post("/ui/login", data={"csrf": csrf_of(page.text), "key": ADMIN_KEY})
    cookies = [v for k, v in answer.headers.multi_items() if k == "set-cookie"]
    key_cookie = next(c for c in cookies if c.startswith("gw_ui_key="))
    assert "HttpOnly" in key_cookie and "SameSite=strict" in key_cookie.replace("Strict", "strict")
    assert "Path=/ui" in key_cookie
    assert client.get("/ui/").headers["location"] == "/ui/tenants"
    tenants = client.get("/ui/tenants")
    assert tenants.status_code == 200 and 'data-tenant="acme"' in tenants.text
    # The key itself is never written into a page.
    assert ADMIN_KEY not in tenants.text


def test_a_bad_key_is_refused_at_sign_in_without_a_session(edge: tuple[TestClient, Fakes]) -> None:
    client, _ = edge
    page = client.get("/ui/login")
    answer = client.post("/ui/login", data={"csrf": csrf_of(page.text), "key": "gw-nobody"})
    assert answer.status_code == 401 and "not valid" in answer.text
    assert "gw_ui_key" not in answer.headers.get("set-cookie", "")
    assert "gw-nobody" not in answer.text


def test_a_form_post_without_the_matching_csrf_token_changes_nothing(edge: tuple[TestClient, Fakes]) -> None:
    client, fakes = edge
    sign_in(client, ADMIN_KEY)
    token = csrf_of(client.get("/ui/tenants").text)
    for data in ({"tenant_id": "evil"}, {"tenant_id": "evil", "csrf": "x" * 43}, {"tenant_id": "evil", "csrf": ""}):
        answer = client.post("/ui/tenants", data=data)
        assert answer.status_code == 403, data
        assert "CSRF" in answer.text
    # The same holds for every other state-changing form, sign-out included.
    for path in ("/ui/keys", "/ui/keys/key_1/revoke", "/ui/routes", "/ui/routes/m/delete", "/ui/logout"):
        assert client.post(path, data={"csrf": "wrong" * 9}).status_code == 403, path
    assert fakes.calls["CreateTenant"] == fakes.calls["CreateKey"] == fakes.calls["SetRoute"] == 0
    assert "evil" not in fakes.tenants
    # Signing in is CSRF-checked too (login CSRF would sign a victim into the attacker's account).
    fresh = TestClient(client.app, follow_redirects=False)
    assert fresh.post("/ui/login", data={"key": ADMIN_KEY}).status_code == 403
    # With the token the same post goes through.
    answer = client.post("/ui/tenants", data={"csrf": token, "tenant_id": "gamma", "display_name": "Gamma"})
    assert answer.status_code == 303 and "gamma" in fakes.tenants


def test_tenant_limits_and_budgets_are_sent_as_quotas(edge: tuple[TestClient, Fakes]) -> None:
    client, fakes = edge
    sign_in(client, ADMIN_KEY)
    token = csrf_of(client.get("/ui/tenants").text)
    form = {
        "csrf": token,
        "limits_requests_minute": "60",
        "limits_cost_usd_month": "12.5",
        "limits_concurrent": "4",
        "key_defaults_tokens_day": "1000",
    }
    assert client.post("/ui/tenants/acme", data=form).status_code == 303
    tenant = fakes.tenants["acme"]
    assert {(q.unit, q.window, q.limit) for q in tenant.limits.quotas} == {
        (quota_pb2.UNIT_REQUESTS, quota_pb2.WINDOW_MINUTE, 60),
        (quota_pb2.UNIT_COST_MICRO_USD, quota_pb2.WINDOW_MONTH, 12_500_000),
    }
    assert tenant.limits.max_concurrent_requests == 4
    assert [(q.unit, q.limit) for q in tenant.key_defaults.quotas] == [(quota_pb2.UNIT_TOKENS, 1000)]
    page = client.get("/ui/tenants").text
    assert 'name="limits_cost_usd_month" value="12.5"' in page
    bad = client.post("/ui/tenants/acme", data={"csrf": token, "limits_requests_day": "lots"})
    assert bad.status_code == 400 and "limits_requests_day" in bad.text


def test_a_tenant_named_script_renders_inert(edge: tuple[TestClient, Fakes]) -> None:
    client, _ = edge
    sign_in(client, ADMIN_KEY)
    token = csrf_of(client.get("/ui/tenants").text)
    name = "<script>alert(1)</script>"
    client.post(
        "/ui/tenants", data={"csrf": token, "tenant_id": name, "display_name": '"><img src=x onerror=alert(2)>'}
    )
    page = client.get("/ui/tenants").text
    assert "<script>alert(1)</script>" not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&#34;&gt;&lt;img src=x onerror=alert(2)&gt;" in page
    # And no script would run even if one slipped through: the pages allow none.
    policy = client.get("/ui/tenants").headers["content-security-policy"]
    assert "default-src 'none'" in policy and "script-src" not in policy
    # The prompt log previews are escaped too.
    assert "&lt;b&gt;hi&lt;/b&gt;" in client.get("/ui/prompt-log").text


def test_a_new_keys_secret_is_shown_once(edge: tuple[TestClient, Fakes]) -> None:
    client, fakes = edge
    sign_in(client, ADMIN_KEY)
    token = csrf_of(client.get("/ui/keys").text)
    created = client.post(
        "/ui/keys", data={"csrf": token, "tenant_id": "acme", "name": "ci", "limits_tokens_day": "500"}
    )
    assert created.status_code == 200
    assert 'id="new-secret">gw-secret-of-key_1<' in created.text
    assert [q.limit for q in fakes.keys["key_1"].limits.quotas] == [500]
    listing = client.get("/ui/keys?tenant=acme").text
    assert 'data-key="key_1"' in listing and "gw-secret-of-key_1" not in listing
    edit = {"csrf": token, "tenant": "acme", "limits_cost_usd_day": "0.25", "allowed_models": "fast, mock:*"}
    assert client.post("/ui/keys/key_1", data=edit).status_code == 303
    key = fakes.keys["key_1"]
    assert [(q.unit, q.window, q.limit) for q in key.limits.quotas] == [
        (quota_pb2.UNIT_COST_MICRO_USD, quota_pb2.WINDOW_DAY, 250_000)
    ]
    assert list(key.allowed_models) == ["fast", "mock:*"]
    assert client.post("/ui/keys/key_1/revoke", data={"csrf": token, "tenant": "acme"}).status_code == 303
    assert "revoked" in client.get("/ui/keys?tenant=acme").text


def test_routes_are_listed_set_and_deleted(edge: tuple[TestClient, Fakes]) -> None:
    client, fakes = edge
    sign_in(client, ADMIN_KEY)
    token = csrf_of(client.get("/ui/routes").text)
    client.post("/ui/routes", data={"csrf": token, "model": "gpt-4o", "provider": "openai-eu", "upstream_model": ""})
    assert "openai-eu" in client.get("/ui/routes").text
    client.post("/ui/routes/gpt-4o/delete", data={"csrf": token})
    assert fakes.routes == {} and "No route overrides." in client.get("/ui/routes").text
    # A model id with a slash (a Hugging Face name) is one path segment of the delete form's action.
    client.post("/ui/routes", data={"csrf": token, "model": "meta/llama-3", "provider": "vllm", "upstream_model": ""})
    assert 'action="/ui/routes/meta%2Fllama-3/delete"' in client.get("/ui/routes").text
    assert client.post("/ui/routes/meta%2Fllama-3/delete", data={"csrf": token}).status_code == 303
    assert fakes.routes == {}


def test_a_tenant_key_sees_only_its_own_tenant(edge: tuple[TestClient, Fakes]) -> None:
    client, fakes = edge
    sign_in(client, ACME_KEY)
    assert client.get("/ui/").headers["location"] == "/ui/usage"
    usage = client.get("/ui/usage")
    assert usage.status_code == 200
    assert 'data-group="key_acme"' in usage.text and "beta" not in usage.text
    assert 'href="/ui/tenants"' not in usage.text
    # Naming another tenant is the router's call, and it refuses; the page shows no data of it.
    other = client.get("/ui/usage?tenant=beta")
    assert other.status_code == 403 and "only its own tenant" in other.text and "key_beta" not in other.text
    # Admin pages: auth refuses the key, the page says so and lists nothing.
    tenants = client.get("/ui/tenants")
    assert tenants.status_code == 403 and "admin" in tenants.text and 'data-tenant="beta"' not in tenants.text
    assert client.get("/ui/keys").status_code == 403
    assert all(not r.tenant_id or r.tenant_id == "beta" for r in fakes.usage_requests)


def test_usage_is_charted_per_key_and_model_over_time(edge: tuple[TestClient, Fakes]) -> None:
    client, fakes = edge
    sign_in(client, ADMIN_KEY)
    page = client.get("/ui/usage?tenant=acme&range=day&metric=cost_usd").text
    assert 'id="chart-by-key"' in page and 'id="chart-by-model"' in page
    # One GetUsage per hourly bucket per grouping, each over its own window, for the tenant named.
    windows = [r for r in fakes.usage_requests if r.tenant_id == "acme"]
    assert len(windows) == 48 and all(r.HasField("start_time") and r.HasField("end_time") for r in windows)
    assert page.count('class="bar"') == 48
    assert "key_acme: 0.0015 USD" in page
    # The totals table sums the buckets: 24 requests of 15 tokens each.
    assert re.search(r'data-group="model-of-acme"><td>model-of-acme</td><td>24</td><td>240</td><td>120</td>', page)


def test_credentials_say_they_are_not_available_when_auth_does_not_serve_them(
    edge: tuple[TestClient, Fakes],
) -> None:
    client, _ = edge
    sign_in(client, ADMIN_KEY)
    page = client.get("/ui/credentials")
    assert page.status_code == 200 and "Credentials are not available" in page.text


def test_credentials_show_only_the_last_four_and_can_be_disabled(
    edge_with_credentials: tuple[TestClient, Fakes],
) -> None:
    client, fakes = edge_with_credentials
    sign_in(client, ACME_KEY)
    token = csrf_of(client.get("/ui/credentials").text)
    secret = "sk-upstream-very-secret-9876"
    added = client.post(
        "/ui/credentials", data={"csrf": token, "provider": "openai", "name": "main", "api_key": secret}
    )
    assert added.status_code == 303
    page = client.get("/ui/credentials").text
    assert "…9876" in page and secret not in page
    assert fakes.credentials["cred_1"].tenant_id == "acme"
    client.post("/ui/credentials/cred_1/state", data={"csrf": token, "state": "disabled"})
    assert ">disabled<" in client.get("/ui/credentials").text


def test_signing_out_forgets_the_key(edge: tuple[TestClient, Fakes]) -> None:
    client, _ = edge
    sign_in(client, ADMIN_KEY)
    token = csrf_of(client.get("/ui/tenants").text)
    answer = client.post("/ui/logout", data={"csrf": token})
    assert answer.status_code == 303 and answer.headers["location"] == "/ui/login"
    assert client.get("/ui/tenants").headers["location"] == "/ui/login"
