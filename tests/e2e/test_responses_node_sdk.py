"""The official openai Node SDK's Responses API (``responses.test.mjs`` under ``node --test``)
through the edge of the real suite."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.e2e.conftest import Gateway
from tests.e2e.test_responses_sdk import store_served

pytestmark = pytest.mark.e2e

__all__ = ["store_served"]

ROOT = Path(__file__).resolve().parents[2]
NODE_TEST = Path(__file__).with_name("responses.test.mjs")
VERCEL_TEST = Path(__file__).with_name("vercel_ai.test.mjs")


def _node_test(script: Path, env: dict[str, str]) -> str:
    node = shutil.which("node")
    assert node is not None, "node is not installed"
    result = subprocess.run(
        [node, "--test", str(script)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=90, check=False
    )
    report = result.stdout + result.stderr
    assert result.returncode == 0, report
    return report


def test_node_sdk_responses(gateway: Gateway, store_served: bool) -> None:
    assert (ROOT / "node_modules" / "openai").exists(), "the openai npm package is missing: run `npm install`"
    env = {
        **os.environ,
        "GATEWAY_EDGE_URL": gateway.url,
        "GATEWAY_TEST_KEY": gateway.key,
        "GATEWAY_OTHER_KEY": gateway.other_key,
        "GATEWAY_STORE_SERVED": "1" if store_served else "0",
    }
    report = _node_test(NODE_TEST, env)
    expected = "# pass 3" if store_served else "# pass 2"
    assert "# fail 0" in report and expected in report, report


def test_vercel_ai_sdk_default_openai_provider(gateway: Gateway, store_served: bool) -> None:
    """``openai(model)`` of ``@ai-sdk/openai`` uses the Responses API: generateText, streamText, tools."""
    assert (ROOT / "node_modules" / "@ai-sdk" / "openai").exists(), "run `npm install` (ai, @ai-sdk/openai)"
    env = {
        **os.environ,
        "GATEWAY_EDGE_URL": gateway.url,
        "GATEWAY_TEST_KEY": gateway.key,
        "GATEWAY_STORE_SERVED": "1" if store_served else "0",
    }
    report = _node_test(VERCEL_TEST, env)
    expected = "# pass 3" if store_served else "# pass 2"
    assert "# fail 0" in report and expected in report, report
