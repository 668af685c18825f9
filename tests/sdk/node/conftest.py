"""The Node SDK's tests: its package built from the checkout (``sdks/node``) with tsc."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
SDK = ROOT / "sdks" / "node"


def node() -> str:
    """The node executable (the tests need Node 18 or later)."""
    found = shutil.which("node")
    assert found is not None, "node is not installed"
    return found


@pytest.fixture(scope="session")
def built_sdk() -> Path:
    """``sdks/node`` with ``dist/esm`` and ``dist/cjs`` freshly built by tsc (from the root node_modules)."""
    assert (ROOT / "node_modules" / ".bin" / "tsc").exists(), "typescript is missing: run `make install` (npm install)"
    build = subprocess.run(
        [node(), "scripts/build.mjs"], cwd=SDK, capture_output=True, text=True, timeout=120, check=False
    )
    assert build.returncode == 0, build.stdout + build.stderr
    return SDK
