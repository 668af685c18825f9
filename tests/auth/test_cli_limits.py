"""The CLI's limit flags, parsed and printed without any service."""

from __future__ import annotations

import argparse
from datetime import timedelta

import pytest

from gateway.auth.v1 import auth_pb2
from gateway.quota.v1 import quota_pb2
from gateway_cli.limits import (
    describe_limits,
    merge_limits,
    non_negative_int,
    parse_budget,
    parse_duration,
    parse_list,
    quotas_from_flags,
)

Q = quota_pb2.Quota


@pytest.mark.parametrize(
    ("text", "window", "micro_usd"),
    [
        ("50/month", quota_pb2.WINDOW_MONTH, 50_000_000),
        ("$5/day", quota_pb2.WINDOW_DAY, 5_000_000),
        ("0.1/minute", quota_pb2.WINDOW_MINUTE, 100_000),
        ("0.000001/Day", quota_pb2.WINDOW_DAY, 1),
        ("0/month", quota_pb2.WINDOW_MONTH, 0),
    ],
)
def test_budget(text: str, window: quota_pb2.Window.ValueType, micro_usd: int) -> None:
    assert parse_budget(text) == Q(unit=quota_pb2.UNIT_COST_MICRO_USD, window=window, limit=micro_usd)


@pytest.mark.parametrize("text", ["50", "50/week", "fifty/month", "-1/day", "0.0000001/day", "nan/day", "/day"])
def test_bad_budget(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_budget(text)


def test_durations() -> None:
    assert parse_duration("30d") == timedelta(days=30)
    assert parse_duration("12h") == timedelta(hours=12)
    assert parse_duration("90m") == timedelta(minutes=90)
    assert parse_duration("2w") == timedelta(weeks=2)
    for bad in ("0d", "30", "d", "1y", "-1d"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_duration(bad)


def test_lists_and_numbers() -> None:
    assert parse_list("openai:*, mock:*,") == ["openai:*", "mock:*"]
    with pytest.raises(argparse.ArgumentTypeError):
        parse_list(" , ")
    assert non_negative_int("100_000") == 100_000
    for bad in ("-1", "1.5", "x"):
        with pytest.raises(argparse.ArgumentTypeError):
            non_negative_int(bad)


def test_flags_to_quotas_and_merge_keeps_what_flags_do_not_touch() -> None:
    quotas = quotas_from_flags(rpm=60, tpm=100_000, budgets=[parse_budget("50/month")])
    assert [(q.unit, q.window, q.limit) for q in quotas] == [
        (quota_pb2.UNIT_REQUESTS, quota_pb2.WINDOW_MINUTE, 60),
        (quota_pb2.UNIT_TOKENS, quota_pb2.WINDOW_MINUTE, 100_000),
        (quota_pb2.UNIT_COST_MICRO_USD, quota_pb2.WINDOW_MONTH, 50_000_000),
    ]
    current = auth_pb2.Limits(quotas=quotas, max_concurrent_requests=4)
    merged = merge_limits(current, quotas_from_flags(rpm=120, rpd=1000), None)
    assert describe_limits(merged) == "120 req/min, 100000 tok/min, $50.00/month, 1000 req/day, 4 concurrent"
    assert merge_limits(auth_pb2.Limits(), [], 0).max_concurrent_requests == 0
    assert not merge_limits(auth_pb2.Limits(), [], None).HasField("max_concurrent_requests")


def test_describe() -> None:
    assert describe_limits(auth_pb2.Limits()) == "-"
    assert describe_limits(auth_pb2.Limits(quotas=[parse_budget("0.005/day")])) == "$0.005/day"
