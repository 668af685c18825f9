"""The configuration: strict, overridden by the environment, and clear about what is wrong."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateway_cli.main import main as cli
from gateway_common.config import ConfigError, load_config

BAD = Path(__file__).parent / "bad"

EXPECTED = {
    "bad_unknown_key.yaml": ("limits.request_per_minute", "Extra inputs are not permitted"),
    "bad_type.yaml": ("edge.port", "valid integer"),
    "bad_unknown_provider.yaml": ("unknown provider 'nowhere'", "models.fast.deployments.0.provider"),
    "bad_provider_type.yaml": ("providers.vllm", "vllm"),
    "bad_yaml.yaml": ("invalid YAML", "bad_yaml.yaml"),
    "bad_not_a_mapping.yaml": ("top level must be a mapping", "bad_not_a_mapping.yaml"),
    "bad_empty_deployments.yaml": ("models.fast.deployments", "at least 1 item"),
    "bad_provider_name.yaml": ("providers", "must be non-empty and contain no ':'"),
}


def test_every_bad_fixture_is_covered() -> None:
    assert sorted(p.name for p in BAD.glob("bad_*.yaml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_a_bad_config_names_the_file_the_field_and_the_reason(name: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(BAD / name, env={})
    message = str(info.value)
    assert name in message
    for fragment in EXPECTED[name]:
        assert fragment in message, message


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text("default_model: mock:from-file\nlimits: {requests_per_minute: 5}\n")
    config = load_config(
        path,
        env={
            "GATEWAY_DEFAULT_MODEL": "mock:from-env",
            "REDIS_URL": "redis://r:6379/0",
            "DATABASE_URL": "postgresql://db/x",
            "GATEWAY_RATE_LIMIT_RPM": "7",
            "GATEWAY_ROUTER_LISTEN": "0.0.0.0:1",
        },
    )
    assert config.default_model == "mock:from-env"
    assert config.limits.requests_per_minute == 7
    assert config.ratelimit.redis_url == "redis://r:6379/0"
    assert config.auth.database_url == config.metering.database_url == "postgresql://db/x"
    assert (config.services.router.listen, config.services.router.address) == ("0.0.0.0:1", "127.0.0.1:50051")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={"GATEWAY_RATE_LIMIT_RPM": "lots"})
    assert "GATEWAY_RATE_LIMIT_RPM" in str(info.value) and "limits.requests_per_minute" in str(info.value)


def test_check_config_command(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("default_model: mock:x\n")
    assert cli(["check-config", str(good)]) == 0
    capsys.readouterr()
    assert cli(["check-config", str(BAD / "bad_type.yaml")]) != 0
    captured = capsys.readouterr()
    assert "edge.port" in captured.err + captured.out


def test_a_service_with_a_bad_config_stops_at_start_naming_it() -> None:
    env = {"GATEWAY_CONFIG": str(BAD / "bad_type.yaml"), "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-m", "services.router"], env=env, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    assert "bad_type.yaml" in result.stderr and "edge.port" in result.stderr
