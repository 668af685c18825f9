"""The /proc parsing and the CPU and memory readers of the benchmark."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from bench import procstat
from bench.meter import Meter

# A real stat line, of a process whose name holds a space and parentheses (fields are counted from
# the last ')'): ppid 41, utime 250, stime 30, cutime 7, cstime 3.
STAT = "42 (py (worker) 1) S 41 42 42 0 -1 4194560 2277 0 0 0 250 30 7 3 20 0 3 0 1234 56789 1000 18446744073709551615"
ROLLUP = """55d0a1a00000-7ffd1b9fe000 ---p 00000000 00:00 0                          [rollup]
Rss:               61232 kB
Pss:               40210 kB
Pss_Anon:          30100 kB
Shared_Clean:      20000 kB
"""
STATUS = "Name:\tpython\nVmPeak:\t  300000 kB\nVmHWM:\t   99408 kB\nVmRSS:\t   61232 kB\nCpus_allowed_list:\t0\n"


def test_parse_stat_counts_fields_after_the_last_parenthesis() -> None:
    line = procstat.parse_stat(STAT)
    assert (line.ppid, line.utime, line.stime, line.cutime, line.cstime) == (41, 250, 30, 7, 3)
    assert line.ticks == 290


def test_parse_kb_field_reads_the_named_line_only() -> None:
    assert procstat.parse_kb_field(ROLLUP, "Pss") == 40210
    assert procstat.parse_kb_field(ROLLUP, "Rss") == 61232
    assert procstat.parse_kb_field(STATUS, "VmHWM") == 99408
    assert procstat.parse_kb_field(STATUS, "VmSwap") == 0


def _fake_proc(root: Path, pid: int, ppid: int, utime: int, pss_kb: int, hwm_kb: int) -> None:
    folder = root / str(pid)
    folder.mkdir()
    (folder / "stat").write_text(f"{pid} (svc) S {ppid} 1 1 0 -1 0 0 0 0 0 {utime} 0 0 0 20 0 1 0 1 1 1")
    (folder / "smaps_rollup").write_text(f"[rollup]\nPss:  {pss_kb} kB\n")
    (folder / "status").write_text(f"VmHWM:  {hwm_kb} kB\nCpus_allowed_list:\t1\n")


def test_a_tree_sums_its_descendants_and_nothing_else(tmp_path: Path) -> None:
    _fake_proc(tmp_path, 10, 1, utime=100, pss_kb=1000, hwm_kb=2000)
    _fake_proc(tmp_path, 11, 10, utime=50, pss_kb=100, hwm_kb=200)
    _fake_proc(tmp_path, 12, 11, utime=25, pss_kb=10, hwm_kb=20)  # a grandchild
    _fake_proc(tmp_path, 20, 1, utime=999, pss_kb=9999, hwm_kb=9999)  # a stranger
    (tmp_path / "self").mkdir()
    children = procstat.children_map(tmp_path)
    pids = procstat.tree(10, children)
    assert sorted(pids) == [10, 11, 12]
    assert procstat.cpu_seconds(pids, tmp_path) == 175 / procstat.CLOCK_TICKS
    assert procstat.memory(pids, tmp_path) == procstat.Memory(pss_kb=1110, rss_peak_kb=2220)
    assert procstat.allowed_cpus(10, tmp_path) == "1"


def test_a_tree_stops_at_the_processes_measured_apart(tmp_path: Path) -> None:
    # The fork server (10) is the parent of the services (11, 13); each is a row of its own.
    _fake_proc(tmp_path, 10, 1, utime=1, pss_kb=30, hwm_kb=30)
    _fake_proc(tmp_path, 11, 10, utime=50, pss_kb=100, hwm_kb=200)
    _fake_proc(tmp_path, 12, 11, utime=25, pss_kb=10, hwm_kb=20)  # a service's own child
    _fake_proc(tmp_path, 13, 10, utime=70, pss_kb=300, hwm_kb=400)
    (tmp_path / "self").mkdir()
    children = procstat.children_map(tmp_path)
    assert sorted(procstat.tree(10, children, apart={11, 13})) == [10]
    assert sorted(procstat.tree(11, children, apart={10, 13})) == [11, 12]


def test_a_process_gone_between_listing_and_reading_counts_nothing(tmp_path: Path) -> None:
    assert procstat.cpu_seconds([999999], tmp_path) == 0
    assert procstat.memory([999999], tmp_path) == procstat.Memory(0, 0)


BURNER = """
import sys, time
end = time.process_time() + 0.15
while time.process_time() < end:
    pass
print("done", flush=True)
sys.stdin.read()
"""


def test_the_meter_counts_a_child_process_cpu_to_its_service() -> None:
    # A real process that burns 0.15 s of CPU, then waits on stdin: the meter sees its time.
    with subprocess.Popen([sys.executable, "-c", BURNER], stdin=subprocess.PIPE, stdout=subprocess.PIPE) as burner:
        try:
            meter = Meter({"svc": os.getpid()}, upstream_pid=burner.pid)
            assert burner.stdout is not None
            assert burner.stdout.readline() == b"done\n"
            sample = meter.cpu()
            assert sample.upstream >= 0.14
            # This process's tree holds the burner too (it is a child of this process).
            assert sample.services["svc"] >= sample.upstream
            assert meter.memory()["svc"].pss_kb > 0
        finally:
            burner.kill()
