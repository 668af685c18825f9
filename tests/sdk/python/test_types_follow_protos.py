"""The SDK's types and method parameters cover every field of the messages the native API exposes.

Each test walks the vendored descriptors (equal to gen/'s, see test_vendored_stubs.py): a field
added to a proto without its attribute or parameter in the SDK fails here.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import Any

import llm_gateway
import pytest
from google.protobuf import descriptor, descriptor_pool

# Registers every vendored message in the default pool.
from llm_gateway._gen.gateway.auth.v1 import auth_pb2, credentials_pb2  # noqa: F401
from llm_gateway._gen.gateway.router.v1 import router_pb2
from llm_gateway.types import PROTO_MESSAGES

NATIVE_SERVICES = [router_pb2.DESCRIPTOR.services_by_name["RouterService"]]


def _message(name: str) -> descriptor.Descriptor:
    return descriptor_pool.Default().FindMessageTypeByName(name)


def _fields(name: str) -> set[str]:
    return {f.name for f in _message(name).fields}


@pytest.mark.parametrize("cls", list(PROTO_MESSAGES), ids=lambda c: c.__name__)
def test_every_proto_field_is_an_attribute(cls: type) -> None:
    attributes = {f.name for f in dataclasses.fields(cls)}
    missing = _fields(PROTO_MESSAGES[cls]) - attributes
    assert not missing, f"{cls.__name__} lacks {sorted(missing)} of {PROTO_MESSAGES[cls]}"


def test_every_message_an_annotated_rpc_answers_has_a_type() -> None:
    """The messages the native HTTP routes answer (directly or via response_body) are all mapped."""
    from google.api import annotations_pb2

    mapped = set(PROTO_MESSAGES.values())
    unmapped = []
    for service in NATIVE_SERVICES:
        for method in service.methods:
            options = method.GetOptions()
            if not options.HasExtension(annotations_pb2.http):
                continue
            rule = options.Extensions[annotations_pb2.http]
            output = method.output_type
            if rule.response_body:
                output = output.fields_by_name[rule.response_body].message_type
            for field in output.fields:
                kind = field.message_type
                if kind is not None and not kind.full_name.startswith("google.protobuf."):
                    if kind.full_name not in mapped and output.full_name not in mapped:
                        unmapped.append(f"{method.name}: {kind.full_name}")
    assert not unmapped, unmapped


def _parameters(function: Callable[..., Any]) -> set[str]:
    return set(inspect.signature(function).parameters) - {"self"}


REQUESTS: list[tuple[str, str, set[str]]] = [
    # (SDK method, request message, proto fields the method sets itself)
    ("chat", "gateway.router.v1.UnifiedChatRequest", {"stream"}),
    ("chat_stream", "gateway.router.v1.UnifiedChatRequest", {"stream"}),
    ("models", "gateway.router.v1.ListModelsRequest", set()),
    ("usage", "gateway.router.v1.GetUsageRequest", set()),
]

ADMIN_REQUESTS: list[tuple[str, str, str, set[str]]] = [
    ("tenants", "create", "gateway.auth.v1.Tenant", {"create_time"}),
    ("tenants", "update", "gateway.auth.v1.UpdateTenantRequest", set()),
    ("keys", "create", "gateway.auth.v1.CreateKeyRequest", set()),
    ("keys", "list", "gateway.auth.v1.ListKeysRequest", set()),
    ("keys", "update", "gateway.auth.v1.UpdateKeyRequest", set()),
    ("keys", "revoke", "gateway.auth.v1.RevokeKeyRequest", set()),
    ("credentials", "create", "gateway.auth.v1.CreateCredentialRequest", set()),
    ("credentials", "list", "gateway.auth.v1.ListCredentialsRequest", set()),
    ("credentials", "update", "gateway.auth.v1.UpdateCredentialRequest", set()),
    ("credentials", "rotate", "gateway.auth.v1.RotateCredentialRequest", set()),
    ("credentials", "delete", "gateway.auth.v1.DeleteCredentialRequest", set()),
]


@pytest.mark.parametrize("client_class", [llm_gateway.Client, llm_gateway.AsyncClient], ids=lambda c: c.__name__)
@pytest.mark.parametrize(("method", "message", "implied"), REQUESTS, ids=[r[0] for r in REQUESTS])
def test_every_request_field_is_a_parameter(client_class: type, method: str, message: str, implied: set[str]) -> None:
    missing = _fields(message) - implied - _parameters(getattr(client_class, method))
    assert not missing, f"{client_class.__name__}.{method} lacks {sorted(missing)} of {message}"


@pytest.mark.parametrize("is_async", [False, True], ids=["Client", "AsyncClient"])
@pytest.mark.parametrize(
    ("group", "method", "message", "implied"), ADMIN_REQUESTS, ids=[f"{a}.{b}" for a, b, _, _ in ADMIN_REQUESTS]
)
def test_every_admin_request_field_is_a_parameter(
    is_async: bool, group: str, method: str, message: str, implied: set[str]
) -> None:
    client = (llm_gateway.AsyncClient if is_async else llm_gateway.Client)("k", base_url="http://127.0.0.1:9")
    function = getattr(getattr(client.admin, group), method)
    missing = _fields(message) - implied - _parameters(function)
    assert not missing, f"admin.{group}.{method} lacks {sorted(missing)} of {message}"


def test_sync_and_async_clients_have_the_same_methods() -> None:
    public = {n for n in dir(llm_gateway.Client) if not n.startswith("_")} - {"close"}
    async_public = {n for n in dir(llm_gateway.AsyncClient) if not n.startswith("_")} - {"aclose"}
    assert public == async_public
    for name in public:
        member = getattr(llm_gateway.Client, name)
        if callable(member):
            assert _parameters(member) == _parameters(getattr(llm_gateway.AsyncClient, name)), name


def test_a_missing_field_would_fail() -> None:
    """The check bites: a type without one of its message's fields is reported."""

    @dataclasses.dataclass
    class Partial:
        prompt_tokens: int = 0
        completion_tokens: int = 0

    assert _fields("gateway.router.v1.UnifiedUsage") - {f.name for f in dataclasses.fields(Partial)} == {"total_tokens"}
