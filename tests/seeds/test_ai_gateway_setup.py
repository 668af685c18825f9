"""AI Gateway's environment variables (seed 004) read by our configuration loading, offline."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway_common.config import ConfigError, HttpProviderConfig, load_config

ROUTES = "gpt-4:https://api.openai.com/v1,llama:http://127.0.0.1:8080/v1"


@pytest.mark.parametrize("variable", ["GATEWAY_MODEL_ROUTES", "AI_GATEWAY_MODEL_ROUTES"])
def test_model_routes_become_providers_and_models(variable: str) -> None:
    """Each entry is an openai_compatible provider and a model of that id, keyed by AI_GATEWAY_API_KEY."""
    config = load_config(env={variable: ROUTES, "AI_GATEWAY_API_KEY": "sk-x"})
    llama = config.providers["route-llama"]
    assert isinstance(llama, HttpProviderConfig)
    assert (llama.type, llama.base_url, llama.api_key_env) == (
        "openai_compatible",
        "http://127.0.0.1:8080/v1",
        "AI_GATEWAY_API_KEY",
    )
    assert llama.forward_client_key
    assert [(d.provider, d.model) for d in config.models["gpt-4"].deployments] == [("route-gpt-4", "gpt-4")]


def test_model_routes_use_openai_api_key_without_ai_gateway_api_key() -> None:
    """The seed's fallback: OPENAI_API_KEY when AI_GATEWAY_API_KEY is not set."""
    provider = load_config(env={"AI_GATEWAY_MODEL_ROUTES": ROUTES}).providers["route-gpt-4"]
    assert isinstance(provider, HttpProviderConfig) and provider.api_key_env == "OPENAI_API_KEY"


@pytest.mark.parametrize(
    "value",
    ["llama", "llama:", ":http://x/v1", "llama:ftp://x", "a:http://x/v1,,b:http://y/v1", "a:http://x,a:http://y"],
)
def test_bad_model_routes_stop_the_service_naming_the_variable(value: str) -> None:
    """A malformed entry is a ConfigError naming the variable and the entry."""
    with pytest.raises(ConfigError, match="AI_GATEWAY_MODEL_ROUTES entry"):
        load_config(env={"AI_GATEWAY_MODEL_ROUTES": value})


def test_seed_variables_alias_ours_and_ours_win() -> None:
    """RPM, retry attempts (retries after the first try) and delay (ms) map to our settings."""
    config = load_config(
        env={"AI_GATEWAY_RATE_LIMIT_RPM": "7", "AI_GATEWAY_RETRY_ATTEMPTS": "3", "AI_GATEWAY_RETRY_DELAY_MS": "250"}
    )
    assert config.limits.requests_per_minute == 7
    assert config.router.max_attempts == 4
    assert config.router.retry_backoff_s == pytest.approx(0.25)
    both = load_config(env={"AI_GATEWAY_RATE_LIMIT_RPM": "7", "GATEWAY_RATE_LIMIT_RPM": "9"})
    assert both.limits.requests_per_minute == 9


@pytest.mark.parametrize(("value", "mode"), [("true", "all"), ("false", "off"), ("policy", "policy")])
def test_prompt_logging_switch(value: str, mode: str) -> None:
    """GATEWAY_PROMPT_LOGGING and the seed's AI_GATEWAY_PROMPT_LOGGING set the prompt log mode."""
    assert load_config(env={"GATEWAY_PROMPT_LOGGING": value}).prompt_log.mode == mode
    assert load_config(env={"AI_GATEWAY_PROMPT_LOGGING": value}).prompt_log.mode == mode


def test_bad_redact_pattern_names_the_field(tmp_path: Path) -> None:
    """A redact pattern that is no regular expression stops the service naming prompt_log.redact_patterns."""
    path = tmp_path / "gateway.yaml"
    path.write_text('prompt_log:\n  redact_patterns: ["(unclosed"]\n')
    with pytest.raises(ConfigError, match=r"prompt_log\.redact_patterns"):
        load_config(path, env={})
