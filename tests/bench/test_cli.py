"""The bench's command line: which cores, which scenarios, every count as an option."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from bench.__main__ import choose_cpus, parse_args
from bench.args import positive_int


def test_the_suite_gets_the_first_core_by_default_and_the_rest_get_the_others() -> None:
    assert choose_cpus("auto", {0, 1}) == ({0}, {1})
    assert choose_cpus("auto", {2, 3, 5}) == ({2}, {3, 5})
    assert choose_cpus("1", {0, 1}) == ({1}, {0})
    assert choose_cpus("auto", {0}) is None  # one core: nothing to separate
    assert choose_cpus("none", {0, 1}) is None
    with pytest.raises(SystemExit):
        choose_cpus("7", {0, 1})
    with pytest.raises(SystemExit):
        choose_cpus("0", {0})


def test_options_cover_every_setting_and_unknown_scenarios_are_refused() -> None:
    args = parse_args(["--scenarios", "unary,paced", "--concurrency", "8", "--max-seconds", "2.5", "--checkout", "."])
    assert (args.scenarios, args.concurrency, args.max_seconds) == ("unary,paced", 8, 2.5)
    assert args.checkout == Path(".").resolve()
    assert parse_args([]).request_log == "both"
    with pytest.raises(SystemExit):
        parse_args(["--scenarios", "unary,nope"])


def test_the_floor_and_router_logic_tools_refuse_counts_that_would_measure_nothing() -> None:
    assert positive_int("3") == 3
    for bad in ("0", "-2", "x", "1.5"):
        with pytest.raises(argparse.ArgumentTypeError):
            positive_int(bad)
