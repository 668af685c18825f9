"""AI Gateway's header names computed from what the router reports."""

from __future__ import annotations

import pytest

from edge.observability import cost_usd, duration_ms, format_usd, window_headers


@pytest.mark.parametrize(("text", "ms"), [("6ms", 6), ("1s", 1000), ("6m0s", 360_000), ("1h2m3s", 3_723_000)])
def test_openai_reset_durations_in_milliseconds(text: str, ms: int) -> None:
    """The forms quotas.format_reset writes."""
    assert duration_ms(text) == ms


@pytest.mark.parametrize("text", ["", "soon", "5", "1s garbage"])
def test_what_is_no_duration_gives_no_header(text: str) -> None:
    """Anything else is not guessed at."""
    assert duration_ms(text) is None
    assert "x-ratelimit-reset-ms" not in window_headers({"x-ratelimit-reset-requests": text})


def test_window_headers_restate_the_request_window() -> None:
    """Remaining and reset of the requests window, not the tokens one."""
    headers = {
        "x-ratelimit-remaining-requests": "59",
        "x-ratelimit-reset-requests": "1s",
        "x-ratelimit-remaining-tokens": "1000",
    }
    assert window_headers(headers) == {"x-ratelimit-remaining": "59", "x-ratelimit-reset-ms": "1000"}
    assert window_headers({}) == {}


def test_cost_trailer() -> None:
    """The router's x-gateway-cost-usd trailer, as a number and as the header writes it."""
    assert cost_usd((("x-gateway-cost-usd", "0.000123"),)) == pytest.approx(0.000123)
    assert cost_usd((("other", "1"),)) is None
    assert cost_usd(None) is None
    assert format_usd(0.000123) == "0.000123"


def test_the_upstream_key_header_is_bounded_like_the_other_forwarded_ones() -> None:
    """X-Upstream-Authorization becomes gRPC metadata: non-ASCII is a 400, an oversized one a 431."""
    from edge.headers import check_headers

    assert check_headers([(b"x-upstream-authorization", b"Bearer sk-ok")]) is None
    bad = check_headers([(b"x-upstream-authorization", "Bearer sk-é".encode())])
    assert bad is not None and bad[0] == 400
    long = check_headers([(b"x-upstream-authorization", b"Bearer " + b"k" * 3000)])
    assert long is not None and long[0] == 431
