"""Validators for the official Anthropic OpenAPI schemas (../shared/fixtures/specs/anthropic/).

The spec is OpenAPI 3.1 (JSON Schema 2020-12). One wrinkle: ``Model`` carries ``type: null`` (YAML
null, i.e. no type at all) beside its ``anyOf``; a ``type`` of None is not valid JSON Schema, so such
keys are dropped before validating. References (``#/components/schemas/...``) resolve inside the
spec document. The spec has no schema for ``ping`` (``{"type": "ping"}``), which
:func:`stream_event_errors` checks by hand, and error events are ``ErrorResponse``.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SPEC = (
    Path(__file__).resolve().parents[3]
    / "shared"
    / "fixtures"
    / "specs"
    / "anthropic"
    / "anthropic-hosted-spec-2024-11.yaml"
)
_URI = "urn:anthropic-openapi"


def _clean(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _clean(v) for k, v in node.items() if not (k == "type" and v is None)}
    if isinstance(node, list):
        return [_clean(v) for v in node]
    return node


@functools.cache
def _spec() -> dict[str, Any]:
    document: dict[str, Any] = yaml.load(SPEC.read_text(encoding="utf-8"), Loader=yaml.CSafeLoader)
    return {"components": {"schemas": _clean(document["components"]["schemas"])}}


@functools.cache
def validator(component: str) -> Draft202012Validator:
    """A validator for ``#/components/schemas/<component>`` of the official spec."""
    registry: Registry = Registry().with_resource(
        _URI, Resource.from_contents(_spec(), default_specification=DRAFT202012)
    )
    return Draft202012Validator({"$ref": f"{_URI}#/components/schemas/{component}"}, registry=registry)


def errors(component: str, instance: Any) -> list[str]:
    """Every violation of ``instance`` against the component, as readable lines (empty when valid)."""
    return [
        f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
        for e in validator(component).iter_errors(instance)
    ]


def stream_event_errors(event: str, data: Any) -> list[str]:
    """Violations of one stream event: its name must equal its payload's type, and the payload must
    be a ``MessageStreamEvent`` (or ``ErrorResponse`` for ``error``, ``{"type": "ping"}`` for ``ping``)."""
    if not isinstance(data, dict) or data.get("type") != event:
        return [f"event {event!r} carries a payload of type {getattr(data, 'get', lambda _: None)('type')!r}"]
    if event == "ping":
        return [] if data == {"type": "ping"} else [f"ping has extra fields: {data}"]
    if event == "error":
        return errors("ErrorResponse", data)
    return errors("MessageStreamEvent", data)


def parse_sse(raw: bytes | str) -> list[tuple[str, Any]]:
    """``(event, data)`` pairs of an Anthropic SSE body; fails on a frame without both lines."""
    import json

    text = raw.decode() if isinstance(raw, bytes) else raw
    events: list[tuple[str, Any]] = []
    for frame in text.split("\n\n"):
        if not frame.strip():
            continue
        lines = dict(line.split(": ", 1) for line in frame.split("\n") if not line.startswith(":"))
        assert set(lines) == {"event", "data"}, f"malformed frame {frame!r}"
        events.append((lines["event"], json.loads(lines["data"])))
    return events
