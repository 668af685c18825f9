"""The SDK's tests: the package from the checkout (``sdks/python/src``) against the real suite."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

SDK_SRC = Path(__file__).resolve().parents[3] / "sdks" / "python" / "src"
if str(SDK_SRC) not in sys.path:
    sys.path.insert(0, str(SDK_SRC))

import llm_gateway  # noqa: E402

from tests.e2e.conftest import Gateway, gateway  # noqa: E402, F401  (the session's suite, as the e2e tests get it)

ClientFactory = Callable[..., llm_gateway.Client]


def client_kwargs(gw: Gateway, transport: str) -> dict[str, object]:
    """The settings a client of ``transport`` needs to reach the suite."""
    kwargs: dict[str, object] = {"base_url": gw.url, "transport": transport}
    if transport == "grpc":
        # The router is TLS without a client certificate, verified against the suite's CA.
        kwargs["grpc_target"] = f"{gw.suite.host}:{gw.suite.ports['router']}"
        kwargs["grpc_credentials"] = gw.suite.credentials(None)
    return kwargs


@pytest.fixture(params=["http", "grpc"])
def transport(request: pytest.FixtureRequest) -> str:
    """Each test runs over both transports."""
    return str(request.param)


@pytest.fixture
def make_client(gateway: Gateway, transport: str) -> Iterator[ClientFactory]:  # noqa: F811
    """Clients of the suite over the test's transport (closed at the end)."""
    made: list[llm_gateway.Client] = []

    def make(key: str | None = None, **kwargs: object) -> llm_gateway.Client:
        settings = {**client_kwargs(gateway, transport), "max_retries": 0, **kwargs}
        client = llm_gateway.Client(key or gateway.key, **settings)  # type: ignore[arg-type]
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()
