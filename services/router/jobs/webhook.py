"""Completion webhooks: the final job JSON POSTed to the submitter's URL, signed, retried, never blocking.

``X-Gateway-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 over "<t>.<body>">`` with
``router.jobs.webhook_secret`` (Stripe's scheme: the timestamp inside the MAC lets a receiver
refuse replays). Only http(s); loopback, private, link-local and reserved targets are refused
unless ``webhook_allow_private`` (checked at submit for literal addresses and names such as
``localhost``, and again on every delivery for what the name resolves to, against DNS rebinding).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import logging
import socket
import time
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import grpc

from gateway_common.config import JobsConfig
from gateway_common.errors import GatewayError, Reason

if TYPE_CHECKING:
    import httpx

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Gateway-Signature"


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The signature header's value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def _bad_url(why: str) -> GatewayError:
    return GatewayError(
        grpc.StatusCode.INVALID_ARGUMENT, Reason.INVALID_REQUEST, f"webhook.url {why}", {"param": "webhook.url"}
    )


def _private(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    return not ip.is_global or ip.is_multicast


def check_url(url: str, allow_private: bool) -> None:
    """Refuse a URL the gateway will not post to (INVALID_ARGUMENT naming ``webhook.url``)."""
    if len(url) > 2048:
        raise _bad_url("is longer than 2048 characters.")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _bad_url("must be an http or https URL with a host.")
    if allow_private:
        return
    host = parts.hostname
    if host == "localhost" or host.endswith((".localhost", ".local", ".internal")):
        raise _bad_url("must not target a loopback or private host.")
    try:
        if _private(host):
            raise _bad_url("must not target a loopback or private address.")
    except ValueError:
        pass  # a name: checked on delivery, against what it resolves to


class Webhooks:
    """Deliveries in background tasks, each with bounded retries."""

    def __init__(self, settings: JobsConfig) -> None:
        self._settings = settings
        self._client: httpx.AsyncClient | None = None
        self._pending: set[asyncio.Task[None]] = set()

    def _http(self) -> httpx.AsyncClient:
        # Made on the first delivery: most routers never deliver one, and httpx weighs ~15 MB resident.
        if self._client is None:
            import httpx

            self._client = httpx.AsyncClient(timeout=self._settings.webhook_timeout_s, follow_redirects=False)
        return self._client

    def deliver(self, url: str, body: bytes) -> None:
        """Post ``body`` to ``url`` in the background."""
        task = asyncio.create_task(self._deliver(url, body))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _resolves_private(self, url: str) -> bool:
        host = urlsplit(url).hostname or ""
        infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
        return any(_private(str(info[4][0])) for info in infos)

    async def _deliver(self, url: str, body: bytes) -> None:
        import httpx  # loaded by _http() already; named here for its errors

        delay = 1.0
        for attempt in range(1, self._settings.webhook_attempts + 1):
            try:
                if not self._settings.webhook_allow_private and await self._resolves_private(url):
                    log.warning("webhook %s refused: it resolves to a private address", url)
                    return
                stamp = int(time.time())
                response = await self._http().post(
                    url,
                    content=body,
                    headers={
                        "content-type": "application/json",
                        SIGNATURE_HEADER: sign(self._settings.webhook_secret, body, stamp),
                    },
                )
                if response.status_code < 300:
                    return
                log.info("webhook %s answered %d (attempt %d)", url, response.status_code, attempt)
                if 400 <= response.status_code < 500 and response.status_code not in (408, 429):
                    return
            except (httpx.HTTPError, OSError) as exc:
                log.info("webhook %s failed: %s (attempt %d)", url, exc, attempt)
            if attempt < self._settings.webhook_attempts:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 60.0)
        log.warning("webhook %s given up after %d attempts", url, self._settings.webhook_attempts)

    async def close(self, grace_s: float = 5.0) -> None:
        """Let deliveries in flight finish for ``grace_s``, then cancel them and close the client."""
        if self._pending:
            _, late = await asyncio.wait(set(self._pending), timeout=grace_s)
            for task in late:
                task.cancel()
        if self._client is not None:
            await self._client.aclose()
