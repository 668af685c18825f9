"""What the README shows works: its configuration example loads under the strict config model."""

from __future__ import annotations

import re
from pathlib import Path

from gateway_common.config import effective_providers, load_config

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_config_example_loads(tmp_path: Path) -> None:
    blocks = re.findall(r"```yaml\n(.*?)```", README.read_text(), re.S)
    assert blocks, "the README has a YAML configuration example"
    path = tmp_path / "gateway.yaml"
    path.write_text(blocks[0])
    config = load_config(path, env={})
    assert config.models["spread"].strategy == "weighted"
    assert {"openai", "local-vllm", "claude", "mock"} <= set(effective_providers(config))
