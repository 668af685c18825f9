"""Providers from config and environment: implicit env-only providers, missing keys, lookups, listing."""

from __future__ import annotations

import logging

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway.chat.v1 import chat_pb2
from gateway.providers.v1 import providers_pb2, providers_pb2_grpc
from gateway_common.config import ConfigError, GatewayConfig, MockProviderConfig, effective_providers
from gateway_common.errors import GatewayError
from services.providers.adapters.openai import OpenAIAdapter
from services.providers.registry import build_registry
from services.providers.server import build
from tests.providers.conformance import from_completion
from tests.providers.harness import provider_service
from tests.providers.replay import ReplayServer, load

REQUEST = chat_pb2.ChatCompletionRequest(messages=[chat_pb2.Message(role=chat_pb2.ROLE_USER, text="Hi")])


def _chat(provider: str, model: str = "gpt-4o") -> providers_pb2.ChatRequest:
    return providers_pb2.ChatRequest(target=providers_pb2.Target(provider=provider, model=model), completion=REQUEST)


async def _error(call: object) -> GatewayError:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call  # type: ignore[misc]
    return GatewayError.from_rpc_error(raised.value)


async def test_env_only_openai_and_azure_work_without_a_config_file(replay: ReplayServer) -> None:
    env = {
        "OPENAI_API_KEY": "openai-key-1",
        "OPENAI_BASE_URL": f"{replay.url}/v1",
        "AZURE_OPENAI_API_KEY": "azure-key-2",
        "AZURE_OPENAI_ENDPOINT": replay.url,
    }
    replay.reply(load("openai/chat.text.json"), load("azure-openai/chat.text.json"))
    config = GatewayConfig()  # no file: only the default mock provider
    app = build(config, listen="127.0.0.1:0", env=env)
    port = await app.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = providers_pb2_grpc.ProviderServiceStub(channel)
            openai = await stub.Chat(_chat("openai", "gpt-3.5-turbo"))
            azure = await stub.Chat(_chat("azure", "gpt-4o-mini"))
            mock = await stub.Chat(_chat("mock", "demo"))
            health = health_pb2_grpc.HealthStub(channel)
            status = await health.Check(health_pb2.HealthCheckRequest(service=""))
    finally:
        await app.stop(0)
    assert status.status == health_pb2.HealthCheckResponse.SERVING
    assert from_completion(openai.completion, "openai").choices[0].text.startswith("Why did the Opentelemetry")
    assert azure.completion.choices[0].message.text == "Hello! How can I assist you today?"
    assert mock.completion.provider == "mock"
    first, second = replay.requests
    assert (first.path, first.header("authorization")) == ("/v1/chat/completions", "Bearer openai-key-1")
    assert second.path == "/openai/deployments/gpt-4o-mini/chat/completions"
    assert (second.header("api-key"), second.header("authorization")) == ("azure-key-2", None)


def test_built_in_providers_exist_without_config_and_yield_to_configured_ones() -> None:
    config = GatewayConfig.model_validate(
        {"providers": {"openai": {"type": "openai_compatible", "base_url": "http://x"}}}
    )
    entries = effective_providers(config)
    assert {name: e.type for name, e in entries.items()} == {
        "openai": "openai_compatible",
        "azure": "azure",
        "anthropic": "anthropic",
        "gemini": "gemini",
        "mock": "mock",
    }


def test_a_configured_mock_replaces_the_default_one() -> None:
    config = GatewayConfig.model_validate({"providers": {"mock": {"type": "mock", "latency_ms": 5}}})
    assert effective_providers(config)["mock"] == MockProviderConfig(latency_ms=5)
    config = GatewayConfig.model_validate({"providers": {"local": {"type": "mock"}}})
    assert "local" in effective_providers(config) and "mock" in effective_providers(config)


@pytest.mark.parametrize(
    ("entry", "variable"),
    [
        ({"type": "openai"}, "OPENAI_API_KEY"),
        ({"type": "openai", "api_key_env": "MY_TEAM_OPENAI_KEY"}, "MY_TEAM_OPENAI_KEY"),
        ({"type": "openai_compatible", "base_url": "http://127.0.0.1:9", "api_key_env": "VLLM_KEY"}, "VLLM_KEY"),
        ({"type": "azure", "base_url": "http://127.0.0.1:9"}, "AZURE_OPENAI_API_KEY"),
        ({"type": "azure"}, "AZURE_OPENAI_ENDPOINT"),
    ],
)
async def test_a_provider_missing_its_variable_answers_not_configured_naming_it(
    entry: dict[str, str], variable: str, caplog: pytest.LogCaptureFixture
) -> None:
    env = {"AZURE_OPENAI_API_KEY": "k"} if variable == "AZURE_OPENAI_ENDPOINT" else {}
    with caplog.at_level(logging.WARNING, logger="services.providers.registry"):
        async with provider_service({"up": entry}, env) as stub:
            errors = [
                await _error(stub.Chat(_chat("up"))),
                await _error(_first(stub.StreamChat(providers_pb2.StreamChatRequest(target=_chat("up").target)))),
                await _error(stub.Embed(providers_pb2.EmbedRequest(target=_chat("up").target))),
            ]
    assert any(variable in record.getMessage() for record in caplog.records)
    # A missing key leaves the provider to tenants' own credentials (none here): a precondition the
    # caller can meet, not an outage; a missing endpoint is the operator's to fix.
    expected = (
        (grpc.StatusCode.UNAVAILABLE, "PROVIDER_NOT_CONFIGURED")
        if variable == "AZURE_OPENAI_ENDPOINT"
        else (grpc.StatusCode.FAILED_PRECONDITION, "MISSING_API_KEY")
    )
    for error in errors:
        assert (error.code, error.reason) == expected
        assert variable in error.message
        assert error.metadata["retryable"] == "false"
        assert error.metadata["provider"] == "up"


async def _first(call: object) -> object:
    async for item in call:  # type: ignore[attr-defined]
        return item
    return None


def test_an_openai_compatible_provider_needs_a_base_url() -> None:
    config = GatewayConfig.model_validate({"providers": {"local": {"type": "openai_compatible"}}})
    with pytest.raises(ConfigError, match=r"providers\.local\.base_url"):
        build_registry(config, {})


async def test_unknown_provider_and_empty_model_are_refused() -> None:
    async with provider_service({}) as stub:
        unknown = await _error(stub.Chat(_chat("nope")))
        no_model = await _error(stub.Chat(_chat("mock", "")))
    assert (unknown.code, unknown.reason) == (grpc.StatusCode.NOT_FOUND, "MODEL_NOT_FOUND")
    assert "'nope'" in unknown.message and "mock" in unknown.message
    assert (no_model.code, no_model.field_violations[0].field) == (grpc.StatusCode.INVALID_ARGUMENT, "target.model")


async def test_list_models_comes_from_providers_that_list_and_survives_one_failing(replay: ReplayServer) -> None:
    providers = {
        "listed": {"type": "openai_compatible", "base_url": f"{replay.url}/v1", "list_models": True},
        "broken": {"type": "openai_compatible", "base_url": f"{replay.url}/v1", "list_models": True},
        "quiet": {"type": "openai_compatible", "base_url": f"{replay.url}/v1"},
    }
    models = load("openai/models.list.json")
    error = load("openai/error.404.model_not_found.json")
    async with provider_service(providers) as stub:
        replay.reply(models, error)  # the two listing providers are asked concurrently, in config order
        everything = await stub.ListModels(providers_pb2.ListModelsRequest())
        replay.reply(error)
        one = await _error(stub.ListModels(providers_pb2.ListModelsRequest(provider="listed")))
        quiet = await stub.ListModels(providers_pb2.ListModelsRequest(provider="quiet"))
    count = len(models.json()["data"])
    assert len(everything.models) == count
    assert {m.provider for m in everything.models} in ({"listed"}, {"broken"})
    assert all(m.id.startswith(f"{m.provider}:") for m in everything.models)
    assert (one.code, one.metadata["provider"]) == (grpc.StatusCode.NOT_FOUND, "listed")
    assert not quiet.models
    assert len(replay.requests) == 3


async def test_closing_the_registry_closes_every_http_client() -> None:
    config = GatewayConfig.model_validate(
        {"providers": {"a": {"type": "openai_compatible", "base_url": "http://127.0.0.1:9"}}}
    )
    registry = build_registry(config, {})
    adapter = registry.get("a")
    assert isinstance(adapter, OpenAIAdapter)
    await registry.aclose()
    assert adapter._client.is_closed


def test_http_adapters_take_the_flavour_defaults() -> None:
    env = {"OPENAI_API_KEY": "k", "OPENAI_BASE_URL": "http://proxy.local/v1"}
    config = GatewayConfig.model_validate(
        {
            "providers": {
                "default": {"type": "openai"},
                "pinned": {"type": "openai", "base_url": "http://pinned.local/v1"},
            }
        }
    )
    registry = build_registry(config, env)
    urls = {name: str(registry.get(name)._client.base_url) for name in ("default", "pinned")}  # type: ignore[attr-defined]
    assert urls == {"default": "http://proxy.local/v1/", "pinned": "http://pinned.local/v1/"}
