"""Stub mode when a provider's key is missing: opt-in per provider (``stub: auto``) or for all."""

from __future__ import annotations

import pytest

from gateway.chat.v1 import chat_pb2
from gateway_common.config import GatewayConfig, load_config
from gateway_common.errors import GatewayError, Reason
from services.providers.adapters.mock import MockAdapter
from services.providers.registry import UnconfiguredAdapter, build_registry
from services.providers.tenant_only import TenantCredentialsOnly

REQUEST = chat_pb2.ChatCompletionRequest(messages=[chat_pb2.Message(role=chat_pb2.ROLE_USER, text="Hi")])


async def test_stub_auto_answers_like_the_mock_and_says_so_while_the_key_is_unset() -> None:
    config = GatewayConfig.model_validate({"providers": {"openai": {"type": "openai", "stub": "auto"}}})
    adapter = build_registry(config, env={}).get("openai")
    assert isinstance(adapter, MockAdapter)
    completion = await adapter.chat("gpt-4o-mini", REQUEST)
    assert completion.provider == "openai (stub)"
    assert completion.choices[0].message.text


def test_stub_auto_calls_the_upstream_once_the_key_is_set() -> None:
    config = GatewayConfig.model_validate({"providers": {"openai": {"type": "openai", "stub": "auto"}}})
    adapter = build_registry(config, env={"OPENAI_API_KEY": "sk-test"}).get("openai")
    assert not isinstance(adapter, MockAdapter | UnconfiguredAdapter)


def test_the_global_switch_stubs_every_provider_missing_its_key() -> None:
    config = load_config(env={"GATEWAY_STUB_WHEN_KEY_MISSING": "true"})
    assert config.providers_stub_when_key_missing
    registry = build_registry(config, env={"ANTHROPIC_API_KEY": "sk-ant"})
    assert isinstance(registry.get("openai"), MockAdapter)
    assert isinstance(registry.get("gemini"), MockAdapter)
    assert not isinstance(registry.get("anthropic"), MockAdapter | UnconfiguredAdapter)


async def test_off_by_default_a_missing_key_leaves_the_provider_to_tenant_credentials() -> None:
    adapter = build_registry(GatewayConfig(), env={}).get("openai")
    assert isinstance(adapter, TenantCredentialsOnly)
    with pytest.raises(GatewayError) as raised:
        await adapter.chat("gpt-4o-mini", REQUEST)
    assert raised.value.reason == Reason.MISSING_API_KEY
    assert "OPENAI_API_KEY" in raised.value.message
