"""Anonymous callers: requests without a key, served as one configured tenant when enabled.

Governed LLM Gateway's clients send ``client_id`` and no key. With ``anonymous.enabled`` such a
request gets a principal of its own, built here rather than by auth (there is no key to look up):
the anonymous tenant, a key id naming the caller (``client:<id>`` or ``ip:<addr>``, so that limits
and the ledger count each caller apart, as AI Gateway limits by client address), the configured
per-caller limits and model allowlist, and only the chat and embeddings scopes — never admin or
usage. Off (the default), a request without a key is refused as before.
"""

from __future__ import annotations

from gateway.auth.v1 import auth_pb2
from gateway.quota.v1 import quota_pb2
from gateway_common.config import AnonymousConfig

ANONYMOUS_SCOPES = ("chat", "embeddings")
"""Everything an anonymous caller may do; no admin, no usage reads."""


class AnonymousAccess:
    """Builds the principal of a keyless request, or refuses to (None) when the mode is off."""

    def __init__(self, config: AnonymousConfig) -> None:
        self._config = config
        self._limits = _per_minute(config.requests_per_minute, config.tokens_per_minute)
        # On the tenant descriptor, shared by every anonymous caller: inventing client ids gets a
        # caller fresh buckets of its own, never more than this together.
        self._total = _per_minute(config.total_requests_per_minute, config.total_tokens_per_minute)

    @property
    def enabled(self) -> bool:
        """Whether keyless requests are served at all."""
        return self._config.enabled

    def caller(self, client_id: str, client_ip: str) -> str | None:
        """The caller's key id: ``client:<id>``, or ``ip:<addr>`` when limited by address or no id
        was sent; None when the mode is off or the caller cannot be told apart from others."""
        if not self._config.enabled:
            return None
        if client_id and self._config.limit_by == "client_id":
            return f"client:{client_id}"
        if client_ip:
            return f"ip:{client_ip}"
        return None

    def principal(self, client_id: str, client_ip: str) -> auth_pb2.Principal | None:
        """The principal of a keyless request from this caller; None when it is not served."""
        key_id = self.caller(client_id, client_ip)
        if key_id is None:
            return None
        return auth_pb2.Principal(
            tenant_id=self._config.tenant,
            key_id=key_id,
            key_name="anonymous",
            scopes=list(ANONYMOUS_SCOPES),
            allowed_models=list(self._config.models),
            key_limits=self._limits,
            tenant_limits=self._total,
        )


def _per_minute(requests: int, tokens: int) -> auth_pb2.Limits:
    """Per-minute request and token quotas (a zero one left out)."""
    quotas = [
        quota_pb2.Quota(unit=unit, window=quota_pb2.WINDOW_MINUTE, limit=limit)
        for unit, limit in ((quota_pb2.UNIT_REQUESTS, requests), (quota_pb2.UNIT_TOKENS, tokens))
        if limit > 0
    ]
    return auth_pb2.Limits(quotas=quotas)
