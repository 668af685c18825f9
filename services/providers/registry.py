"""The configured providers: one adapter per provider, built from the config and the environment.

Which adapter serves a provider is data: :data:`HTTP_FLAVOURS` maps each HTTP ``type`` of the
config to its adapter class (imported lazily, so a missing optional module only affects the
providers that use it), the environment variables of its key and endpoint, and its public
endpoint. Every HTTP adapter class is constructed as ``Cls(name, config, api_key, base_url)``.

The env-only setup needs no config file: ``mock``, ``openai``, ``azure``, ``anthropic`` and
``gemini`` exist unless the config defines a provider of that name
(``gateway_common.config.effective_providers``, shared with the router's planner); a ``gemini-cli``
entry runs the Gemini CLI (``adapters/gemini_cli.py``, one subprocess per request). A provider whose
endpoint variable (Azure's) is unset is reported at start and answers every call with UNAVAILABLE /
PROVIDER_NOT_CONFIGURED naming the variable. One whose key variable is unset is built without a
key and serves only tenants with a credential of their own (:mod:`services.providers.tenant_only`):
any other call is refused with FAILED_PRECONDITION naming the provider, before anything goes
upstream. ``stub: true`` providers answer like the mock instead, labelled ``"<name> (stub)"``, and
so do ``stub: auto`` providers (or every HTTP provider, with ``providers_stub_when_key_missing``)
while their key variable is unset.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass

import grpc

from gateway.chat.v1 import chat_pb2
from gateway_common.config import (
    ConfigError,
    GatewayConfig,
    GeminiCliProviderConfig,
    HttpProviderConfig,
    MockProviderConfig,
    effective_providers,
)
from gateway_common.errors import GatewayError, Reason
from services.providers.adapters.base import Adapter
from services.providers.adapters.mock import MockAdapter
from services.providers.http import not_configured
from services.providers.tenant_only import TenantCredentialsOnly

log = logging.getLogger(__name__)

AdapterFactory = Callable[[str, HttpProviderConfig, str | None, str], Adapter]
"""``Cls(name, config, api_key, base_url)``: how every HTTP adapter is constructed."""


def _openai() -> AdapterFactory:
    from services.providers.adapters.openai import OpenAIAdapter

    return OpenAIAdapter


def _anthropic() -> AdapterFactory:
    from services.providers.adapters.anthropic import AnthropicAdapter

    return AnthropicAdapter


def _gemini() -> AdapterFactory:
    from services.providers.adapters.gemini import GeminiAdapter

    return GeminiAdapter


@dataclass(frozen=True)
class HttpFlavour:
    """How providers of one config ``type`` are built."""

    load: Callable[[], AdapterFactory]
    """Imports and returns the adapter class."""
    key_env: str | None
    """The variable holding the key when the entry names none (``api_key_env``)."""
    key_required: bool
    """Whether a call without a key is pointless (an entry naming ``api_key_env`` always needs it)."""
    base_url_env: str | None
    """The variable overriding the default endpoint when the entry has no ``base_url``."""
    default_base_url: str | None
    """The public endpoint; None when the entry (or the variable) must give one."""


HTTP_FLAVOURS: dict[str, HttpFlavour] = {
    "openai": HttpFlavour(_openai, "OPENAI_API_KEY", True, "OPENAI_BASE_URL", "https://api.openai.com/v1"),
    "openai_compatible": HttpFlavour(_openai, None, False, None, None),
    "azure": HttpFlavour(_openai, "AZURE_OPENAI_API_KEY", True, "AZURE_OPENAI_ENDPOINT", None),
    # --- Anthropic and Gemini: services/providers/adapters/anthropic.py and gemini.py ---
    "anthropic": HttpFlavour(_anthropic, "ANTHROPIC_API_KEY", True, "ANTHROPIC_BASE_URL", "https://api.anthropic.com"),
    "gemini": HttpFlavour(
        _gemini, "GEMINI_API_KEY", True, "GEMINI_BASE_URL", "https://generativelanguage.googleapis.com"
    ),
}

ProviderEntry = MockProviderConfig | HttpProviderConfig | GeminiCliProviderConfig


def _gemini_cli(name: str, entry: GeminiCliProviderConfig, env: Mapping[str, str]) -> Adapter:
    # The ``gemini-cli`` type runs a subprocess instead of an HTTP client: its own constructor.
    from services.providers.adapters.gemini_cli import GeminiCliAdapter

    return GeminiCliAdapter(name, entry, env)


class UnconfiguredAdapter:
    """A provider missing an environment variable: every call raises PROVIDER_NOT_CONFIGURED."""

    def __init__(self, name: str, variable: str, what: str) -> None:
        self.name = name
        self._variable = variable
        self._what = what

    def _error(self) -> GatewayError:
        return not_configured(self.name, self._variable, self._what)

    async def chat(self, model: str, request: chat_pb2.ChatCompletionRequest) -> chat_pb2.ChatCompletion:
        """Raise PROVIDER_NOT_CONFIGURED."""
        raise self._error()

    async def stream_chat(
        self, model: str, request: chat_pb2.ChatCompletionRequest
    ) -> AsyncIterator[chat_pb2.ChatCompletionChunk]:
        """Raise PROVIDER_NOT_CONFIGURED."""
        raise self._error()
        yield  # makes this an async generator, like every adapter's stream_chat

    async def embed(self, model: str, request: chat_pb2.EmbeddingRequest) -> chat_pb2.EmbeddingResponse:
        """Raise PROVIDER_NOT_CONFIGURED."""
        raise self._error()

    async def list_models(self) -> list[chat_pb2.Model]:
        """Raise PROVIDER_NOT_CONFIGURED."""
        raise self._error()

    async def aclose(self) -> None:
        """Nothing to close."""


# The adapters that can send a client's own key (bring-your-own-key) per request.
_FORWARDING_TYPES = frozenset({"openai", "openai_compatible", "azure"})


def _stub(name: str) -> Adapter:
    return MockAdapter(name, MockProviderConfig(), label=f"{name} (stub)")


def _http_adapter(name: str, entry: HttpProviderConfig, env: Mapping[str, str], stub_when_missing: bool) -> Adapter:
    flavour = HTTP_FLAVOURS[entry.type]
    key_env = entry.api_key_env or flavour.key_env
    api_key = (env.get(key_env) or None) if key_env else None
    if entry.forward_client_key and entry.type not in _FORWARDING_TYPES:
        raise ConfigError(
            f"invalid configuration: providers.{name}.forward_client_key: supported for types "
            f"{', '.join(sorted(_FORWARDING_TYPES))}, not {entry.type}"
        )
    keyless = api_key is None and key_env and (flavour.key_required or entry.api_key_env)
    if keyless and not entry.forward_client_key and stub_when_missing:
        log.warning("provider %s answers as a stub: environment variable %s is not set", name, key_env)
        return _stub(name)
    env_base_url = env.get(flavour.base_url_env) if flavour.base_url_env else None
    base_url = entry.base_url or env_base_url or flavour.default_base_url
    if not base_url:
        if flavour.base_url_env:
            log.warning("provider %s is not configured: environment variable %s is not set", name, flavour.base_url_env)
            return UnconfiguredAdapter(name, flavour.base_url_env, "endpoint")
        raise ConfigError(f"invalid configuration: providers.{name}.base_url: required for type {entry.type}")
    adapter = flavour.load()(name, entry, api_key, base_url)
    if keyless and key_env and not entry.forward_client_key:
        # No global key: tenants' own credentials are the only ones (the LLM Proxy Gateway's model).
        log.warning(
            "provider %s has no global key (environment variable %s is not set): it serves only tenants "
            "with a credential of their own",
            name,
            key_env,
        )
        return TenantCredentialsOnly(adapter, key_env)
    return adapter


class ProviderRegistry:
    """The adapters by provider name, and which of them list their models."""

    def __init__(self, adapters: Mapping[str, Adapter], listed: Iterable[str] = ()) -> None:
        self._adapters = dict(adapters)
        self._listed = [name for name in listed if name in self._adapters]

    @property
    def names(self) -> list[str]:
        """Every provider name, sorted."""
        return sorted(self._adapters)

    def get(self, name: str) -> Adapter:
        """The adapter of provider ``name``; NOT_FOUND (MODEL_NOT_FOUND) naming it when there is none."""
        adapter = self._adapters.get(name)
        if adapter is None:
            raise GatewayError(
                grpc.StatusCode.NOT_FOUND,
                Reason.MODEL_NOT_FOUND,
                f"unknown provider '{name}' (known: {', '.join(self.names)})",
                {"provider": name, "retryable": "false"},
            )
        return adapter

    def listed(self) -> list[Adapter]:
        """The adapters configured with ``list_models: true``."""
        return [self._adapters[name] for name in self._listed]

    def lists_models(self, name: str) -> bool:
        """Whether provider ``name`` is configured with ``list_models: true``."""
        return name in self._listed

    async def aclose(self) -> None:
        """Close every adapter's HTTP client."""
        results = await asyncio.gather(*(a.aclose() for a in self._adapters.values()), return_exceptions=True)
        for name, result in zip(self._adapters, results, strict=True):
            if isinstance(result, Exception):
                log.warning("closing provider %s failed: %s", name, result)


def build_registry(config: GatewayConfig, env: Mapping[str, str]) -> ProviderRegistry:
    """Every provider's adapter, from ``config`` and the environment ``env``.

    Raises ConfigError for an entry that cannot work whatever the environment says (an
    ``openai_compatible`` provider without ``base_url``).
    """
    adapters: dict[str, Adapter] = {}
    listed: list[str] = []
    # The same set of providers the router plans with: the configured ones plus the built-in
    # mock, openai, azure, anthropic and gemini; a built-in without its key answers 503 naming it.
    for name, entry in effective_providers(config).items():
        if isinstance(entry, MockProviderConfig):
            adapters[name] = MockAdapter(name, entry)
            continue
        if isinstance(entry, GeminiCliProviderConfig):
            adapters[name] = _gemini_cli(name, entry, env)
            if entry.list_models:
                listed.append(name)
            continue
        if entry.stub is True:
            adapters[name] = _stub(name)
        else:
            stub_when_missing = entry.stub == "auto" or config.providers_stub_when_key_missing
            adapters[name] = _http_adapter(name, entry, env, stub_when_missing)
        if entry.list_models:
            listed.append(name)
    return ProviderRegistry(adapters, listed)
