"""The SDK's vendored stubs are gen/'s, so the SDK speaks exactly the contracts in protos/."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from tests.sdk.python.conftest import SDK_SRC

TOOL = SDK_SRC.parent / "tools" / "vendor_stubs.py"


def _tool() -> object:
    spec = importlib.util.spec_from_file_location("vendor_stubs", TOOL)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("vendor_stubs", module)
    spec.loader.exec_module(module)
    return module


def test_vendored_stubs_match_gen() -> None:
    tool = _tool()
    expected: dict[Path, str] = tool.expected()  # type: ignore[attr-defined]
    actual: dict[Path, str] = tool.actual()  # type: ignore[attr-defined]
    assert Path("router/v1/router_pb2.py") in expected
    missing = sorted(str(p) for p in set(expected) - set(actual))
    stale = sorted(str(p) for p in set(actual) - set(expected))
    differ = sorted(str(p) for p in set(expected) & set(actual) if expected[p] != actual[p])
    hint = "run: python sdks/python/tools/vendor_stubs.py"
    assert not missing, f"not vendored: {missing}; {hint}"
    assert not stale, f"vendored but gone from gen/: {stale}; {hint}"
    assert not differ, f"vendored copy differs from gen/: {differ}; {hint}"


def test_rewrite_moves_every_gateway_reference() -> None:
    tool = _tool()
    for relative, text in tool.expected().items():  # type: ignore[attr-defined]
        for line in text.splitlines():
            assert not line.startswith(("from gateway.", "import gateway.")), (relative, line)


def test_the_sdk_and_the_gateway_stubs_share_one_process() -> None:
    # Both copies register the same files: protobuf accepts identical ones, so an internal
    # service that has gen/ can use the SDK too.
    from llm_gateway._gen.gateway.router.v1 import router_pb2 as vendored

    from gateway.router.v1 import router_pb2 as ours

    assert vendored.UnifiedChatRequest.DESCRIPTOR.full_name == ours.UnifiedChatRequest.DESCRIPTOR.full_name
    assert vendored.DESCRIPTOR.serialized_pb == ours.DESCRIPTOR.serialized_pb
