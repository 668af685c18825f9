"""The router's own checks of a canonical request, for gRPC callers that no edge parser vetted."""

from __future__ import annotations

import math

import pytest

from gateway.chat.v1 import chat_pb2
from gateway_common.errors import GatewayError
from services.router.validation import validate_chat


def _request(**fields: float) -> chat_pb2.ChatCompletionRequest:
    return chat_pb2.ChatCompletionRequest(
        model="mock:echo", messages=[chat_pb2.Message(role=chat_pb2.ROLE_USER, text="hi")], **fields
    )


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("temperature", 7.0),
        ("temperature", -0.1),
        ("temperature", math.nan),
        ("top_p", 1.5),
        ("presence_penalty", -3.0),
        ("frequency_penalty", 2.5),
    ],
)
def test_a_sampling_value_out_of_range_is_refused_by_name(field: str, value: float) -> None:
    with pytest.raises(GatewayError) as caught:
        validate_chat(_request(**{field: value}))
    assert caught.value.metadata["param"] == field
    assert "must be between" in caught.value.message


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("temperature", 0.0),
        ("temperature", 2.0),
        ("top_p", 1.0),
        ("presence_penalty", -2.0),
        ("frequency_penalty", 2.0),
    ],
)
def test_the_bounds_themselves_are_accepted(field: str, value: float) -> None:
    validate_chat(_request(**{field: value}))
