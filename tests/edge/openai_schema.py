"""Validators for the official OpenAI OpenAPI schemas (../shared/fixtures/specs/openai/openapi.yaml).

The spec is OpenAPI 3.1 but still marks some fields with OpenAPI 3.0's ``nullable: true``, which
JSON Schema ignores; those are rewritten to also accept null before validating. References
(``#/components/schemas/...``) resolve inside the spec document.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SPEC = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "specs" / "openai" / "openapi.yaml"
_URI = "urn:openai-openapi"


def _nullable(node: Any) -> Any:
    if isinstance(node, dict):
        node = {k: _nullable(v) for k, v in node.items()}
        if node.pop("nullable", False):
            node = {"anyOf": [node, {"type": "null"}]}
        return node
    if isinstance(node, list):
        return [_nullable(v) for v in node]
    return node


@functools.cache
def _spec() -> dict[str, Any]:
    document: dict[str, Any] = yaml.load(SPEC.read_text(encoding="utf-8"), Loader=yaml.CSafeLoader)
    return {"components": {"schemas": _nullable(document["components"]["schemas"])}}


@functools.cache
def validator(component: str) -> Draft202012Validator:
    """A validator for ``#/components/schemas/<component>`` of the official spec."""
    spec = _spec()
    registry: Registry = Registry().with_resource(_URI, Resource.from_contents(spec, default_specification=DRAFT202012))
    schema = {"$ref": f"{_URI}#/components/schemas/{component}"}
    return Draft202012Validator(schema, registry=registry)


def errors(component: str, instance: Any) -> list[str]:
    """Every violation of ``instance`` against the component, as readable lines (empty when valid)."""
    return [
        f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
        for e in validator(component).iter_errors(instance)
    ]


@functools.cache
def _stream_event_components() -> dict[str, str]:
    # ResponseStreamEvent is an anyOf of one schema per event type; its errors would list every
    # branch, so each event is validated against the one schema its "type" names.
    schemas = _spec()["components"]["schemas"]
    names: dict[str, str] = {}
    for branch in schemas["ResponseStreamEvent"]["anyOf"]:
        component = branch["$ref"].rsplit("/", 1)[-1]
        kind = schemas[component].get("properties", {}).get("type", {}).get("enum", [None])[0]
        if kind is not None:
            names[kind] = component
    return names


def stream_event_errors(event: Any) -> list[str]:
    """Every violation of one Responses API stream event against the schema of its type (and
    ``ResponseStreamEvent``, of which it must be a branch)."""
    kind = event.get("type") if isinstance(event, dict) else None
    component = _stream_event_components().get(kind) if isinstance(kind, str) else None
    if component is None:
        return [f"(root): {event.get('type')!r} is not a ResponseStreamEvent type"]
    return errors(component, event)
