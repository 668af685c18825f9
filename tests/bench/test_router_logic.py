"""``python -m bench.router_logic``: the router's own code per chat, in process, both log levels."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("log", ["on", "off"])
def test_it_measures_every_round_and_quota_blocks_serve_most_chats(log: str) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "bench.router_logic", "--chats", "160", "--rounds", "3", "--warm", "80", "--log", log],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    found = re.search(
        rf"router logic, log {log}: CPU per chat (\d+) µs median, (\d+) µs best \(rounds: ([\d ]+)\); "
        r"(\d+) Acquires for (\d+) chats",
        run.stdout,
    )
    assert found is not None, run.stdout
    median, best, rounds, acquires, chats = found.groups()
    assert len(rounds.split()) == 3 and 0 < int(best) <= int(median)
    assert int(chats) == 80 + 3 * 160
    # Quota blocks, as in the suite: far fewer Acquires than chats.
    assert 0 < int(acquires) < int(chats) // 4
