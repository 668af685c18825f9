"""A loopback stand-in for Google's OAuth 2.0 endpoints: authorize, token (code + PKCE), refresh.

``/authorize`` checks the client id, the redirect URI and the S256 code challenge, then answers
like Google after consent: a redirect to the redirect URI with a one-time ``code`` and the
``state``. ``/token`` authenticates the client (``client_secret_post`` or HTTP Basic), and for
``authorization_code`` checks the code, the redirect URI and that
``BASE64URL(SHA256(code_verifier))`` equals the stored challenge (RFC 7636 §4.6); for
``refresh_token`` issues a new access token. Every request it saw is kept for assertions.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlencode

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route


@dataclass
class _Grant:
    challenge: str
    redirect_uri: str
    scope: str


@dataclass
class OAuthState:
    """What the fake knows and saw."""

    client_id: str
    client_secret: str
    codes: dict[str, _Grant] = field(default_factory=dict)
    refresh_tokens: dict[str, str] = field(default_factory=dict)
    authorize_requests: list[dict[str, str]] = field(default_factory=list)
    token_requests: list[dict[str, str]] = field(default_factory=list)
    pkce_verified: int = 0
    issued: list[dict[str, Any]] = field(default_factory=list)


def _challenge(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")


def _error(error: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": error, "error_description": f"fake oauth: {error}"}, status_code=status)


def create_app(state: OAuthState) -> Starlette:
    """The fake's routes over ``state``."""

    async def authorize(request: Request) -> Response:
        params = dict(request.query_params)
        state.authorize_requests.append(params)
        if params.get("client_id") != state.client_id:
            return _error("invalid_client", 401)
        if params.get("response_type") != "code" or params.get("code_challenge_method") != "S256":
            return _error("invalid_request")
        if not params.get("code_challenge") or not params.get("redirect_uri"):
            return _error("invalid_request")
        code = "fake-code-" + secrets.token_urlsafe(8)
        state.codes[code] = _Grant(params["code_challenge"], params["redirect_uri"], params.get("scope", ""))
        query = urlencode({"code": code, "state": params.get("state", "")})
        return RedirectResponse(f"{params['redirect_uri']}?{query}", status_code=302)

    def _client_ok(request: Request, form: dict[str, str]) -> bool:
        header = request.headers.get("authorization", "")
        if header.lower().startswith("basic "):
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
            return user == state.client_id and password == state.client_secret
        return form.get("client_id") == state.client_id and form.get("client_secret") == state.client_secret

    def _issue(scope: str, refresh: str | None = None) -> JSONResponse:
        body: dict[str, Any] = {
            "access_token": "ya29.fake-" + secrets.token_urlsafe(16),
            "expires_in": 3599,
            "scope": scope,
            "token_type": "Bearer",
            "id_token": "fake.id." + secrets.token_urlsafe(8),
        }
        refresh_token = refresh or "1//fake-" + secrets.token_urlsafe(16)
        state.refresh_tokens[refresh_token] = scope
        if refresh is None:
            body["refresh_token"] = refresh_token
        state.issued.append({**body, "refresh_token": refresh_token, "at": time.time()})
        return JSONResponse(body)

    async def token(request: Request) -> Response:
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode()).items()}
        state.token_requests.append(form)
        if not _client_ok(request, form):
            return _error("invalid_client", 401)
        if form.get("grant_type") == "authorization_code":
            grant = state.codes.pop(form.get("code", ""), None)
            if grant is None:
                return _error("invalid_grant")
            if form.get("redirect_uri") != grant.redirect_uri:
                return _error("invalid_grant")
            verifier = form.get("code_verifier", "")
            if not verifier or _challenge(verifier) != grant.challenge:
                return _error("invalid_grant")
            state.pkce_verified += 1
            return _issue(grant.scope)
        if form.get("grant_type") == "refresh_token":
            scope = state.refresh_tokens.get(form.get("refresh_token", ""))
            if scope is None:
                return _error("invalid_grant")
            return _issue(scope, refresh=form["refresh_token"])
        return _error("unsupported_grant_type")

    return Starlette(routes=[Route("/authorize", authorize), Route("/token", token, methods=["POST"])])


class FakeOAuthServer:
    """The fake served by uvicorn on a free loopback port in a background thread."""

    def __init__(self, client_id: str = "fake-client.apps.googleusercontent.com", client_secret: str = "fake-secret"):
        self.state = OAuthState(client_id, client_secret)
        config = uvicorn.Config(
            create_app(self.state), host="127.0.0.1", port=0, log_level="warning", access_log=False, lifespan="off"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        port = self._server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def start(self, timeout_s: float = 10.0) -> FakeOAuthServer:
        """Start serving and wait until it listens."""
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("fake OAuth server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        """Stop serving."""
        self._server.should_exit = True
        self._thread.join(timeout=10)
