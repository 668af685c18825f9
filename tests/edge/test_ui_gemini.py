"""``/ui/gemini``: the Google login (authorization code + PKCE) stored as the tenant's credential.

The edge runs in-process; Google is the loopback fake OAuth server (which verifies the PKCE
verifier against the challenge and the client secret) and auth's CredentialService a fake on
loopback gRPC, so the test sees exactly which tenant got which token set.
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fastapi.testclient import TestClient

from edge.app import create_app
from edge.ui_gemini import COOKIE, Sealer, SealError
from gateway_common.config import GatewayConfig
from tests.fake_credentials import FakeCredentialService, fake_credential_service
from tests.fake_oauth import FakeOAuthServer

KEY = "gw-key-of-tenant-a-0123456789"


@dataclass
class Flow:
    edge: TestClient
    oauth: FakeOAuthServer
    store: FakeCredentialService


@pytest.fixture(scope="module")
def oauth() -> Iterator[FakeOAuthServer]:
    server = FakeOAuthServer().start()
    yield server
    server.stop()


@pytest.fixture
def flow(oauth: FakeOAuthServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[Flow]:
    oauth.state.token_requests.clear()
    oauth.state.authorize_requests.clear()
    oauth.state.pkce_verified = 0
    monkeypatch.setenv("GATEWAY_GEMINI_OAUTH_CLIENT_ID", oauth.state.client_id)
    monkeypatch.setenv("GATEWAY_GEMINI_OAUTH_CLIENT_SECRET", oauth.state.client_secret)
    monkeypatch.setenv("GATEWAY_UI_SESSION_SECRET", "a shared secret of every edge replica")
    with fake_credential_service({KEY: "tenant-a", "gw-key-of-tenant-b": "tenant-b"}) as (address, store):
        config = GatewayConfig.model_validate(
            {
                "services": {"auth": {"address": address}},
                "edge": {
                    "gemini_oauth": {
                        "authorize_url": f"{oauth.base_url}/authorize",
                        "token_url": f"{oauth.base_url}/token",
                    }
                },
            }
        )
        with TestClient(create_app(config), raise_server_exceptions=False) as edge:
            yield Flow(edge, oauth, store)


def start_login(flow: Flow, key: str = KEY) -> Any:
    return flow.edge.post("/ui/gemini/login", data={"api_key": key}, follow_redirects=False)


def consent(location: str) -> dict[str, str]:
    """What the browser does at Google: open the authorize URL, get redirected back with a code."""
    answer = httpx.get(location, follow_redirects=False, timeout=10)
    assert answer.status_code == 302, answer.text
    back = urlsplit(answer.headers["location"])
    assert f"{back.scheme}://{back.netloc}{back.path}" == "http://testserver/ui/gemini/callback"
    return {k: v[0] for k, v in parse_qs(back.query).items()}


def test_the_page_is_a_self_contained_form_posting_the_key(flow: Flow) -> None:
    page = flow.edge.get("/ui/gemini")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<form method=post action="/ui/gemini/login">' in page.text and "type=password" in page.text
    assert page.headers["content-security-policy"].startswith("default-src 'none'")
    assert "<script" not in page.text and "http" not in page.text.split("<body>")[1]


def test_the_login_flow_stores_the_token_set_for_the_keys_tenant_with_pkce(flow: Flow) -> None:
    started = start_login(flow)
    assert started.status_code == 303
    location = started.headers["location"]
    assert location.startswith(f"{flow.oauth.base_url}/authorize?")
    query = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
    assert query["response_type"] == "code" and query["code_challenge_method"] == "S256"
    assert len(query["code_challenge"]) == 43 and query["state"]
    assert query["client_id"] == flow.oauth.state.client_id and "client_secret" not in query
    assert query["redirect_uri"] == "http://testserver/ui/gemini/callback"
    assert "https://www.googleapis.com/auth/cloud-platform" in query["scope"].split()
    assert query["access_type"] == "offline"
    # The key is in no URL, and the cookie carrying the flow is sealed, HttpOnly, Lax, scoped.
    assert KEY not in location
    cookie = started.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=") and KEY not in cookie and query["state"] not in cookie
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/ui/gemini" in cookie
    assert flow.store.list_calls == 1  # the key was checked before the browser left

    back = consent(location)
    assert back["state"] == query["state"]
    done = flow.edge.get("/ui/gemini/callback", params=back)

    assert done.status_code == 200, done.text
    assert flow.oauth.state.pkce_verified == 1
    (exchange,) = flow.oauth.state.token_requests
    assert exchange["grant_type"] == "authorization_code" and exchange["code_verifier"]
    assert exchange["client_secret"] == flow.oauth.state.client_secret
    (stored,) = flow.store.stored
    issued = flow.oauth.state.issued[-1]
    assert stored.tenant_id == "tenant-a" and stored.request.provider == "gemini-cli"
    tokens = stored.request.secret.oauth
    assert tokens.access_token == issued["access_token"] and tokens.refresh_token == issued["refresh_token"]
    assert tokens.id_token == issued["id_token"] and tokens.token_type == "Bearer"
    assert "https://www.googleapis.com/auth/cloud-platform" in tokens.scopes
    assert abs(tokens.expires_at.seconds - (time.time() + 3599)) < 120
    # The page shows provider, last four and expiry, never a token.
    assert "gemini-cli" in done.text and issued["access_token"][-4:] in done.text and "Expires" in done.text
    for secret in (issued["access_token"], issued["refresh_token"], issued["id_token"], KEY):
        assert secret not in done.text
    # One callback per login: the cookie is gone, replaying the callback stores nothing more.
    assert f'{COOKIE}=""' in done.headers["set-cookie"] or "Max-Age=0" in done.headers["set-cookie"]
    again = flow.edge.get("/ui/gemini/callback", params=back)
    assert again.status_code == 400 and len(flow.store.stored) == 1


def test_a_state_that_is_not_the_logins_is_refused_and_nothing_is_stored(flow: Flow) -> None:
    back = consent(start_login(flow).headers["location"])
    refused = flow.edge.get("/ui/gemini/callback", params={**back, "state": "forged-state"})
    assert refused.status_code == 400 and "state does not match" in refused.text
    assert flow.oauth.state.token_requests == [] and flow.store.stored == []


def test_a_callback_without_the_login_cookie_is_refused(flow: Flow) -> None:
    back = consent(start_login(flow).headers["location"])
    flow.edge.cookies.clear()
    refused = flow.edge.get("/ui/gemini/callback", params=back)
    assert refused.status_code == 400 and "not started here" in refused.text
    assert flow.oauth.state.token_requests == [] and flow.store.stored == []


def test_a_bad_key_is_refused_on_the_page_before_the_flow_starts(flow: Flow) -> None:
    refused = start_login(flow, "gw-not-a-key")
    assert refused.status_code == 401 and "not valid" in refused.text
    assert "set-cookie" not in refused.headers and "location" not in refused.headers
    assert "gw-not-a-key" not in refused.text
    assert flow.oauth.state.authorize_requests == [] and flow.store.stored == []
    empty = start_login(flow, "")
    assert empty.status_code == 400 and "Paste your gateway API key" in empty.text


def test_google_refusing_the_code_stores_nothing(flow: Flow) -> None:
    back = consent(start_login(flow).headers["location"])
    flow.oauth.state.codes.clear()  # the code expired at Google
    refused = flow.edge.get("/ui/gemini/callback", params=back)
    assert refused.status_code == 502 and "invalid_grant" in refused.text and flow.store.stored == []


def test_without_a_client_id_the_page_says_it_is_not_configured(flow: Flow, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GATEWAY_GEMINI_OAUTH_CLIENT_ID")
    with TestClient(create_app(GatewayConfig())) as edge:
        page = edge.get("/ui/gemini")
    assert page.status_code == 503 and "GATEWAY_GEMINI_OAUTH_CLIENT_ID" in page.text


def test_the_fake_oauth_server_checks_pkce_and_refreshes(oauth: FakeOAuthServer) -> None:
    # The fake's own checks are what make the flow test prove PKCE: a wrong verifier is refused.
    state = oauth.state
    verifier = "v" * 64
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")

    def code() -> str:
        location = httpx.get(
            f"{oauth.base_url}/authorize",
            params={
                "client_id": state.client_id,
                "response_type": "code",
                "redirect_uri": "http://x/cb",
                "code_challenge": challenge,
                "code_challenge_method": "S256",
            },
            follow_redirects=False,
        ).headers["location"]
        return parse_qs(urlsplit(location).query)["code"][0]

    form = {"client_id": state.client_id, "client_secret": state.client_secret, "redirect_uri": "http://x/cb"}
    grant = {**form, "grant_type": "authorization_code"}
    wrong = httpx.post(f"{oauth.base_url}/token", data={**grant, "code": code(), "code_verifier": "w" * 64})
    assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_grant"
    right = httpx.post(f"{oauth.base_url}/token", data={**grant, "code": code(), "code_verifier": verifier})
    assert right.status_code == 200, right.text
    renewed = httpx.post(
        f"{oauth.base_url}/token",
        data={**form, "grant_type": "refresh_token", "refresh_token": right.json()["refresh_token"]},
    )
    assert renewed.status_code == 200 and renewed.json()["access_token"] != right.json()["access_token"]
    bad_client = httpx.post(f"{oauth.base_url}/token", data={**grant, "client_secret": "nope", "code": code()})
    assert bad_client.status_code == 401


def test_the_sealed_cookie_expires_and_cannot_be_altered() -> None:
    sealer = Sealer(b"secret")
    sealed = sealer.seal({"state": "s"}, ttl_s=60, now=1000.0)
    assert sealer.open(sealed, now=1059.0)["state"] == "s"
    with pytest.raises(SealError):
        sealer.open(sealed, now=1061.0)
    with pytest.raises(SealError):
        sealer.open(sealed[:-2] + ("A" if sealed[-2] != "A" else "B") + sealed[-1], now=1000.0)
    with pytest.raises(SealError):
        Sealer(b"another replica's secret").open(sealed, now=1000.0)
