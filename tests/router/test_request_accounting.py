"""What a finished request leaves behind besides its usage event: its metrics, always, and its
request-log line, only while the log is on (its fields are not gathered when it is off)."""

from __future__ import annotations

import logging

import pytest
from prometheus_client import REGISTRY

from services.router import metrics
from services.router.orchestrator import CallContext
from services.router.usage_spool import UsageSpool
from tests.router.test_usage_admission import FakeProviders, _no_headers, _orchestrator, _request, spool

__all__ = ["spool"]  # the fixture, used by name

_LOGGER = "services.router.orchestrator"
_LABELS = {"operation": "chat", "model": "mock:*", "provider": "mock", "outcome": "success"}


def _requests_counted() -> float:
    return REGISTRY.get_sample_value("gateway_requests_total", _LABELS) or 0.0


def _request_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == _LOGGER and r.getMessage().startswith("chat mock:demo")]


@pytest.mark.parametrize(("level", "lines"), [(logging.INFO, 1), (logging.WARNING, 0)])
async def test_a_request_is_counted_whatever_the_level_and_logged_only_at_info(
    spool: UsageSpool, caplog: pytest.LogCaptureFixture, level: int, lines: int
) -> None:
    orchestrator = _orchestrator(spool, FakeProviders(spool))
    before = _requests_counted()
    with caplog.at_level(level, logger=_LOGGER):
        await orchestrator.chat(_request(), CallContext(api_key="k", request_id="r1"), _no_headers)
    assert _requests_counted() == before + 1
    logged = _request_lines(caplog)
    assert len(logged) == lines
    if lines:
        assert logged[0].__dict__["tenant_id"] == "acme"
        assert (logged[0].__dict__["prompt_tokens"], logged[0].__dict__["completion_tokens"]) == (3, 4)


def test_a_cached_child_is_the_metrics_own_and_is_looked_up_once(monkeypatch: pytest.MonkeyPatch) -> None:
    children = metrics.Children(metrics.COST)
    child = children("p:m", "p")
    assert child is metrics.COST.labels("p:m", "p")
    looked_up: list[tuple[str, ...]] = []
    labels = metrics.COST.labels
    monkeypatch.setattr(metrics.COST, "labels", lambda *values: looked_up.append(values) or labels(*values))
    assert children("p:m", "p") is child
    assert children("p:n", "p") is metrics.COST.labels("p:n", "p")
    assert looked_up == [("p:n", "p"), ("p:n", "p")]  # the new child once, and this test's own call
