"""A request chooses its routing strategy through the edge, and the answer says where it went and why."""

from __future__ import annotations

import openai
import pytest

from tests.e2e.conftest import Gateway

pytestmark = pytest.mark.e2e

HELLO = [{"role": "user", "content": "Route me, gateway!"}]


def _routing(**routing: object) -> dict[str, object]:
    return {"gateway": {"constraints": {"routing": routing}}}


def test_a_request_chooses_its_strategy_and_reads_the_route_header(gateway: Gateway) -> None:
    chat = gateway.client().chat.completions.with_raw_response
    ordered = chat.create(model="choose", messages=HELLO, max_tokens=16)
    assert ordered.headers["x-gateway-route"] == "mock:dear; strategy=ordered"
    cheapest = chat.create(model="choose", messages=HELLO, max_tokens=16, extra_body=_routing(strategy="cost"))
    assert cheapest.headers["x-gateway-route"] == "mock:cheap; strategy=cost"
    assert cheapest.headers["x-gateway-provider"] == "mock"
    assert cheapest.parse().choices[0].message.content
    streamed = chat.create(
        model="choose", messages=HELLO, max_tokens=16, stream=True, extra_body=_routing(strategy="cost")
    )
    assert streamed.headers["x-gateway-route"] == "mock:cheap; strategy=cost"
    assert "".join(chunk.choices[0].delta.content or "" for chunk in streamed.parse() if chunk.choices)
    # A budget the cheapest deployment fits, under the Unified Model Gateway's name for it.
    budget = {"gateway": {"constraints": {"routing": {"strategy": "cost"}, "budget": {"max_cost_usd": 0.001}}}}
    assert chat.create(model="choose", messages=HELLO, max_tokens=16, extra_body=budget).headers["x-gateway-route"]


def test_allow_providers_that_leave_nothing_are_refused_naming_the_parameter(gateway: Gateway) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        gateway.client().chat.completions.create(
            model="choose", messages=HELLO, max_tokens=16, extra_body=_routing(allow_providers=["fake"])
        )
    assert info.value.param == "gateway.constraints.routing.allow_providers"
    with pytest.raises(openai.BadRequestError) as bad:
        gateway.client().chat.completions.create(
            model="choose", messages=HELLO, max_tokens=16, extra_body=_routing(strategy="fastest")
        )
    assert bad.value.param == "gateway.constraints.routing.strategy"
