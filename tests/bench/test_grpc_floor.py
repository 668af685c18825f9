"""``python -m bench.grpc_floor``: it runs, plaintext and over mutual TLS, and prints every row."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_ROWS = (
    "unary call, 1 caller",
    "unary call, 8 concurrent callers",
    "streamed message, burst",
    "streamed message, one every 1 ms",
)


def _floor(*extra: str) -> str:
    run = subprocess.run(
        [sys.executable, "-m", "bench.grpc_floor", "--calls", "80", "--paced", "10", "--pace-ms", "1", *extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    return run.stdout


@pytest.mark.parametrize(("extra", "transport"), [((), "plaintext"), (("--tls",), "mutual TLS")])
def test_every_row_is_measured_and_two_hops_are_set_beside_the_targets(extra: tuple[str, ...], transport: str) -> None:
    out = _floor(*extra)
    assert f"uvloop, {transport} loopback" in out
    for row in _ROWS:
        line = next(line for line in out.splitlines() if line.strip().startswith(row))
        client_us, server_us, both_us = (float(x) for x in line.removeprefix("  " + row).split()[:3])
        assert client_us > 0 and server_us > 0 and both_us == pytest.approx(client_us + server_us, abs=0.11)
    one_caller = next(line for line in out.splitlines() if "unary call, 1 caller" in line)
    assert len(one_caller.split()) == 8  # label (4 words), client, server, both, p50
    for target in ("CPU per unary request", "added p50, 1 caller", "CPU per relayed event, at best"):
        assert re.search(rf"{re.escape(target)}\s+\d+\.\d{{3}} ms", out), out
