"""The UI session: the caller's key in a cookie, and a CSRF token checked on every form post.

CSRF is the double-submit pattern: a random token in its own cookie and in a hidden field of every
form; a post is accepted only when both are present and equal. Another site can make a browser
send the cookies (SameSite=Strict already stops that in current browsers), but it can neither read
the token nor set the field, so the check holds where SameSite does not.
"""

from __future__ import annotations

import hmac
import secrets
import string
from dataclasses import dataclass
from typing import Literal
from urllib.parse import parse_qsl

from fastapi import Request
from fastapi.responses import Response

KEY_COOKIE = "gw_ui_key"
ROLE_COOKIE = "gw_ui_role"
CSRF_COOKIE = "gw_ui_csrf"
CSRF_FIELD = "csrf"
COOKIE_PATH = "/ui"

# The key becomes gRPC metadata (edge/headers.py bounds it to 4 KiB and printable ASCII).
MAX_KEY_LENGTH = 4096
# Admin forms are small; a larger body is refused before it is parsed.
MAX_FORM_BYTES = 64 * 1024

Role = Literal["admin", "tenant"]

_TOKEN_ALPHABET = frozenset(string.ascii_letters + string.digits + "-_")


class CsrfRejected(Exception):
    """A state-changing post without a matching CSRF token."""


class FormTooLarge(Exception):
    """A form body over MAX_FORM_BYTES."""


@dataclass(frozen=True)
class Session:
    """Who is signed in: the key sent to the RPCs, and whether auth accepted it as an admin's."""

    key: str
    role: Role

    @property
    def is_admin(self) -> bool:
        """Whether auth answered the admin RPCs for this key when it signed in."""
        return self.role == "admin"


def valid_key_shape(key: str) -> bool:
    """Whether ``key`` can travel as gRPC metadata at all (the services judge whether it is valid)."""
    return 0 < len(key) <= MAX_KEY_LENGTH and key.isascii() and key.isprintable() and " " not in key


def current(request: Request) -> Session | None:
    """The signed-in session, or None."""
    key = request.cookies.get(KEY_COOKIE, "")
    if not valid_key_shape(key):
        return None
    role: Role = "admin" if request.cookies.get(ROLE_COOKIE) == "admin" else "tenant"
    return Session(key, role)


def csrf_token(request: Request) -> str:
    """The request's CSRF token: the cookie's, or a new one (set on the response by ``remember_csrf``)."""
    existing = request.cookies.get(CSRF_COOKIE, "")
    if 32 <= len(existing) <= 128 and all(c in _TOKEN_ALPHABET for c in existing):
        return existing
    token: str = getattr(request.state, "ui_csrf", "") or secrets.token_urlsafe(32)
    request.state.ui_csrf = token
    return token


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


def remember_csrf(request: Request, response: Response) -> None:
    """Set the CSRF cookie when this request minted the token."""
    token = getattr(request.state, "ui_csrf", "")
    if token:
        response.set_cookie(
            CSRF_COOKIE, token, path=COOKIE_PATH, httponly=True, samesite="strict", secure=_secure(request)
        )


def sign_in(request: Request, response: Response, session: Session) -> None:
    """Keep the key and role in HttpOnly, SameSite=Strict cookies (Secure over https)."""
    for name, value in ((KEY_COOKIE, session.key), (ROLE_COOKIE, session.role)):
        response.set_cookie(name, value, path=COOKIE_PATH, httponly=True, samesite="strict", secure=_secure(request))


def sign_out(response: Response) -> None:
    """Forget the key and the role."""
    for name in (KEY_COOKIE, ROLE_COOKIE):
        response.delete_cookie(name, path=COOKIE_PATH)


async def checked_form(request: Request) -> dict[str, str]:
    """The url-encoded form of a post, after its CSRF token matched the cookie's.

    Parsed with the standard library: the forms are plain ``application/x-www-form-urlencoded``,
    so no multipart parser is needed. A repeated field keeps its last value.
    """
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise FormTooLarge
    try:
        form = dict(parse_qsl(body.decode(), keep_blank_values=True, strict_parsing=False))
    except UnicodeDecodeError:
        raise CsrfRejected from None
    cookie = request.cookies.get(CSRF_COOKIE, "")
    sent = form.pop(CSRF_FIELD, "")
    if not cookie or not sent or not hmac.compare_digest(cookie.encode(), sent.encode()):
        raise CsrfRejected
    return form
