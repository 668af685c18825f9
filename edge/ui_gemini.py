"""``GET /ui/gemini``: a tenant logs the Gemini CLI provider in with its own Google account.

The flow (OAuth 2.0 authorization code with PKCE, RFC 7636, done by ``authlib``):

1. ``GET /ui/gemini`` shows a form; the user pastes a gateway key and submits it by POST (the key
   never travels in a URL).
2. ``POST /ui/gemini/login`` checks the key against auth (``CredentialService.ListCredentials`` for
   the provider, as the edge identity with the key as the caller: a bad key, or one that may not
   manage credentials, gets the error on the page and nothing happens), then redirects to Google's
   consent page with a fresh ``state`` and an S256 code challenge. The state, the PKCE verifier and
   the key are kept in a cookie sealed with AES-GCM (``cryptography``): HttpOnly, SameSite=Lax,
   limited to ``/ui/gemini`` and to ``state_ttl_s``. Sealing (not a server-side table) keeps the
   edge stateless across replicas; every replica needs the same ``GATEWAY_UI_SESSION_SECRET``.
3. ``GET /ui/gemini/callback`` refuses a missing, expired or foreign cookie and a ``state`` that is
   not the cookie's, exchanges the code (with the verifier and the client secret), and stores the
   token set as the key's tenant's credential for the ``gemini-cli`` provider with
   ``CredentialService.CreateCredential`` (tenant left empty: the caller's own). The page shows the
   provider, the last four characters and the expiry; never a token.

Pages are plain HTML rendered here, with no external assets and a CSP that allows none.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import os
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

import grpc
import httpx
from authlib.common.security import generate_token
from authlib.integrations.base_client.errors import OAuthError
from authlib.integrations.httpx_client import AsyncOAuth2Client
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from edge.state import EdgeState
from gateway.auth.v1 import credentials_pb2, credentials_pb2_grpc
from gateway_common.config import GatewayConfig, GeminiOAuthConfig

COOKIE = "gateway_gemini_login"
COOKIE_PATH = "/ui/gemini"
_AAD = b"gateway /ui/gemini login v1"
_MAX_FORM_BYTES = 16 * 1024
_RPC_TIMEOUT_S = 10.0


class SealError(Exception):
    """A cookie that was not sealed here, was altered, or has expired."""


class Sealer:
    """Seals small JSON values with AES-256-GCM under a key derived from the session secret."""

    def __init__(self, secret: bytes) -> None:
        self._aead = AESGCM(hashlib.sha256(b"gateway-ui-session:" + secret).digest())

    def seal(self, value: Mapping[str, Any], ttl_s: float, now: float | None = None) -> str:
        """The sealed value, valid for ``ttl_s`` seconds."""
        nonce = os.urandom(12)
        plain = json.dumps({**value, "exp": (now or time.time()) + ttl_s}).encode()
        return base64.urlsafe_b64encode(nonce + self._aead.encrypt(nonce, plain, _AAD)).decode().rstrip("=")

    def open(self, sealed: str, now: float | None = None) -> dict[str, Any]:
        """The value; SealError when it is not ours, altered, or expired."""
        try:
            raw = base64.urlsafe_b64decode(sealed + "=" * (-len(sealed) % 4))
            value = json.loads(self._aead.decrypt(raw[:12], raw[12:], _AAD))
        except (ValueError, InvalidTag) as exc:
            raise SealError("the login cookie is not valid") from exc
        if not isinstance(value, dict) or float(value.get("exp", 0)) < (now or time.time()):
            raise SealError("the login has expired")
        return value


# ---------------------------------------------------------------------------------------------
# Pages
# ---------------------------------------------------------------------------------------------

_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:40rem;margin:3rem auto;padding:0 1rem;color:#222}"
    "input[type=password]{width:100%;padding:.5rem;font-family:monospace}"
    "button{margin-top:1rem;padding:.5rem 1.5rem}.error{color:#a00}.ok{color:#060}"
    "dt{font-weight:bold}dd{margin:0 0 .5rem 0;font-family:monospace}"
)
_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    document = (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width,initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body><h1>{html.escape(title)}</h1>{body}</body></html>"
    )
    return HTMLResponse(document, status_code=status, headers=_HEADERS)


def _form(error: str | None = None, status: int = 200) -> HTMLResponse:
    notice = f"<p class=error role=alert>{html.escape(error)}</p>" if error else ""
    return _page(
        "Gemini CLI login",
        f"{notice}<p>Log the Gemini CLI provider in with your Google account. The tokens are stored "
        "encrypted as your tenant's credential; this page never shows them.</p>"
        '<form method=post action="/ui/gemini/login">'
        "<label for=api_key>Gateway API key</label>"
        "<input id=api_key name=api_key type=password autocomplete=off required>"
        "<button type=submit>Log in with Google</button></form>",
        status,
    )


def _failure(message: str, status: int) -> HTMLResponse:
    return _page(
        "Gemini CLI login failed",
        f'<p class=error role=alert>{html.escape(message)}</p><p><a href="/ui/gemini">Start again</a></p>',
        status,
    )


def _stored(credential: credentials_pb2.Credential) -> HTMLResponse:
    expires = "unknown"
    if credential.HasField("expires_at"):
        expires = credential.expires_at.ToDatetime(tzinfo=UTC).isoformat(timespec="seconds")
    rows = {
        "Provider": credential.provider,
        "Credential": credential.credential_id,
        "Token ends in": f"…{credential.secret_last_four}",
        "Expires": expires,
    }
    items = "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in rows.items())
    return _page(
        "Gemini CLI login stored",
        f"<p class=ok>Your Google login is stored for your tenant.</p><dl>{items}</dl>"
        '<p><a href="/ui/gemini">Log in again</a></p>',
    )


# ---------------------------------------------------------------------------------------------
# The flow
# ---------------------------------------------------------------------------------------------

_RPC_MESSAGES = {
    grpc.StatusCode.UNAUTHENTICATED: ("That gateway key is not valid.", 401),
    grpc.StatusCode.PERMISSION_DENIED: ("That gateway key may not manage credentials.", 403),
    grpc.StatusCode.INVALID_ARGUMENT: ("The credential was refused: {detail}", 400),
    grpc.StatusCode.NOT_FOUND: ("The credential was refused: {detail}", 400),
    grpc.StatusCode.ALREADY_EXISTS: ("The credential was refused: {detail}", 409),
    grpc.StatusCode.RESOURCE_EXHAUSTED: ("Too many credentials or requests: {detail}", 429),
}


def _rpc_failure(exc: grpc.aio.AioRpcError) -> HTMLResponse:
    message, status = _RPC_MESSAGES.get(exc.code(), ("The gateway's credential store is unavailable.", 503))
    return _failure(message.format(detail=exc.details() or exc.code().name.lower()), status)


@dataclass(frozen=True)
class _Client:
    id: str
    secret: str


class GeminiLogin:
    """The three routes, with the OAuth client and the cookie key read once at start."""

    def __init__(self, config: GatewayConfig, env: Mapping[str, str]) -> None:
        self._oauth: GeminiOAuthConfig = config.edge.gemini_oauth
        client_id = env.get(self._oauth.client_id_env, "")
        self._client = _Client(client_id, env.get(self._oauth.client_secret_env, "")) if client_id else None
        session_secret = env.get(self._oauth.session_secret_env, "")
        # Without a shared secret a login must come back to the replica that started it.
        self._sealer = Sealer(session_secret.encode() if session_secret else secrets.token_bytes(32))
        self.router = APIRouter(include_in_schema=False)
        self.router.add_api_route("/ui/gemini", self.form, methods=["GET"])
        self.router.add_api_route("/ui/gemini/login", self.login, methods=["POST"])
        self.router.add_api_route("/ui/gemini/callback", self.callback, methods=["GET"], name="ui_gemini_callback")

    def _oauth_client(self, client: _Client, redirect_uri: str) -> AsyncOAuth2Client:
        return AsyncOAuth2Client(
            client_id=client.id,
            client_secret=client.secret,
            scope=" ".join(self._oauth.scopes),
            redirect_uri=redirect_uri,
            code_challenge_method="S256",
            token_endpoint_auth_method="client_secret_post",
            timeout=self._oauth.http_timeout_s,
        )

    def _redirect_uri(self, request: Request) -> str:
        return self._oauth.redirect_url or str(request.url_for("ui_gemini_callback"))

    @staticmethod
    def _credentials(request: Request) -> credentials_pb2_grpc.CredentialServiceAsyncStub:
        state: EdgeState = request.app.state.edge
        # A stub is a thin wrapper: the channel under it is the edge's one long-lived auth channel.
        return credentials_pb2_grpc.CredentialServiceStub(state.channels["auth"])

    @staticmethod
    def _as_caller(request: Request, key: str) -> tuple[tuple[str, str], ...]:
        # The edge calls auth as itself (mutual TLS); the user's key says whose tenant it acts for.
        return (("authorization", f"Bearer {key}"), ("x-request-id", str(request.state.request_id)))

    async def form(self, request: Request) -> Response:
        """The login form."""
        if self._client is None:
            return _failure(f"Google login is not configured: set {self._oauth.client_id_env}.", 503)
        return _form()

    async def login(self, request: Request) -> Response:
        """Check the key, then send the browser to Google's consent page with state and PKCE."""
        if self._client is None:
            return _failure(f"Google login is not configured: set {self._oauth.client_id_env}.", 503)
        key = await _form_field(request, "api_key")
        if not key:
            return _form("Paste your gateway API key.", 400)
        try:
            await self._credentials(request).ListCredentials(
                credentials_pb2.ListCredentialsRequest(provider=self._oauth.provider),
                metadata=self._as_caller(request, key),
                timeout=_RPC_TIMEOUT_S,
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
                return _form(_RPC_MESSAGES[exc.code()][0], _RPC_MESSAGES[exc.code()][1])
            return _rpc_failure(exc)
        state, verifier = generate_token(32), generate_token(64)
        async with self._oauth_client(self._client, self._redirect_uri(request)) as client:
            url, _ = client.create_authorization_url(
                self._oauth.authorize_url,
                state=state,
                code_verifier=verifier,
                # A refresh token, every time: the CLI (or the gateway) renews the login with it.
                access_type="offline",
                prompt="consent",
            )
        response = RedirectResponse(url, status_code=303, headers=_HEADERS)
        response.set_cookie(
            COOKIE,
            self._sealer.seal({"state": state, "verifier": verifier, "key": key}, self._oauth.state_ttl_s),
            max_age=int(self._oauth.state_ttl_s),
            path=COOKIE_PATH,
            httponly=True,
            samesite="lax",
            secure=request.url.scheme == "https",
        )
        return response

    async def callback(self, request: Request) -> Response:
        """Check the state, exchange the code, store the token set as the tenant's credential."""
        if self._client is None:
            return _failure(f"Google login is not configured: set {self._oauth.client_id_env}.", 503)
        params = request.query_params
        try:
            session = self._sealer.open(request.cookies.get(COOKIE, ""))
        except SealError:
            return self._done(_failure("This login was not started here or has expired.", 400))
        if not secrets.compare_digest(str(session.get("state", "")), params.get("state", "")):
            return self._done(_failure("The login's state does not match: nothing was stored.", 400))
        if params.get("error"):
            return self._done(_failure(f"Google refused the login: {params['error']}.", 400))
        code = params.get("code")
        if not code:
            return self._done(_failure("Google sent no authorization code.", 400))
        try:
            async with self._oauth_client(self._client, self._redirect_uri(request)) as client:
                token: dict[str, Any] = await client.fetch_token(
                    self._oauth.token_url,
                    grant_type="authorization_code",
                    code=code,
                    code_verifier=str(session["verifier"]),
                )
        except OAuthError as exc:
            return self._done(_failure(f"Google refused the code: {exc.error}.", 502))
        except httpx.HTTPError as exc:
            return self._done(_failure(f"Google's token endpoint is unreachable ({type(exc).__name__}).", 502))
        try:
            created = await self._credentials(request).CreateCredential(
                credentials_pb2.CreateCredentialRequest(
                    provider=self._oauth.provider,
                    name="Google login (/ui/gemini)",
                    secret=credentials_pb2.CredentialSecret(oauth=oauth_tokens(token)),
                ),
                metadata=self._as_caller(request, str(session["key"])),
                timeout=_RPC_TIMEOUT_S,
            )
        except grpc.aio.AioRpcError as exc:
            return self._done(_rpc_failure(exc))
        return self._done(_stored(created.credential))

    @staticmethod
    def _done(response: Response) -> Response:
        # A login cookie is good for one callback, whatever its outcome.
        response.delete_cookie(COOKIE, path=COOKIE_PATH, httponly=True, samesite="lax")
        return response


def oauth_tokens(token: Mapping[str, Any]) -> credentials_pb2.OAuthTokens:
    """The token endpoint's answer (authlib's ``OAuth2Token``) as the credential contract's token set."""
    out = credentials_pb2.OAuthTokens(
        access_token=str(token.get("access_token") or ""),
        refresh_token=str(token.get("refresh_token") or ""),
        token_type=str(token.get("token_type") or "Bearer"),
        id_token=str(token.get("id_token") or ""),
        scopes=str(token.get("scope") or "").split(),
    )
    expires_at = token.get("expires_at")
    if isinstance(expires_at, int | float):
        out.expires_at.FromDatetime(datetime.fromtimestamp(float(expires_at), tz=UTC))
    return out


async def _form_field(request: Request, name: str) -> str:
    # A form of one short field: read within a small bound and parsed by the standard library.
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > _MAX_FORM_BYTES:
            return ""
    try:
        values = parse_qs(body.decode("utf-8", "replace"), max_num_fields=8).get(name, [""])
    except ValueError:  # more fields than any form of this page has
        return ""
    return values[0].strip()


def router_for(config: GatewayConfig, env: Mapping[str, str] | None = None) -> APIRouter:
    """The ``/ui/gemini`` routes of an edge built from ``config`` and the environment (``os.environ``)."""
    return GeminiLogin(config, os.environ if env is None else env).router
