"""gateway_common.openai_wire.values: a number outside a one-sided range is a 400, never a crash."""

from __future__ import annotations

import grpc
import pytest

from gateway_common.errors import GatewayError
from gateway_common.openai_wire.values import read_number


@pytest.mark.parametrize(
    ("value", "low", "high", "says"),
    [(-1, 0, None, "at least 0"), (5, None, 2, "at most 2"), (3, 0, 2, "between 0 and 2"), (-3, 0, 2, "between 0")],
)
def test_out_of_range_names_the_parameter_and_its_bound(
    value: float, low: float | None, high: float | None, says: str
) -> None:
    with pytest.raises(GatewayError) as info:
        read_number(value, "gateway.max_cost_usd", low, high)
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert says in info.value.message and "gateway.max_cost_usd" in info.value.message
