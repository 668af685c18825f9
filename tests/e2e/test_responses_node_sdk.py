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


def test_node_sdk_responses(gateway: Gateway, store_served: bool) -> None:
    node = shutil.which("node")
    assert node is not None, "node is not installed"
    assert (ROOT / "node_modules" / "openai").exists(), "the openai npm package is missing: run `npm install`"
    env = {
        **os.environ,
        "GATEWAY_EDGE_URL": gateway.url,
        "GATEWAY_TEST_KEY": gateway.key,
        "GATEWAY_OTHER_KEY": gateway.other_key,
        "GATEWAY_STORE_SERVED": "1" if store_served else "0",
    }
    result = subprocess.run(
        [node, "--test", str(NODE_TEST)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=90, check=False
    )
    report = result.stdout + result.stderr
    assert result.returncode == 0, report
    expected = "# pass 3" if store_served else "# pass 2"
    assert "# fail 0" in report and expected in report, report
