"""What the kernel says about a process tree: CPU time, memory, CPU affinity (Linux /proc only).

The parsers take the text of a /proc file, so they are tested on fixed samples; the readers around
them tolerate a process or thread that exits between listing and reading (it is simply not counted
any more, and its CPU time moves into its parent's ``cutime``/``cstime`` once reaped).
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class StatLine:
    """The fields of ``/proc/<pid>/stat`` the benchmark reads, times in clock ticks."""

    ppid: int
    utime: int
    stime: int
    cutime: int
    cstime: int

    @property
    def ticks(self) -> int:
        """User + system time of the process and of its children it has waited for."""
        return self.utime + self.stime + self.cutime + self.cstime


def parse_stat(text: str) -> StatLine:
    """Parse ``/proc/<pid>/stat``. The command name (field 2) may hold spaces and parentheses, so
    the fields are counted from its last ``)``."""
    fields = text.rpartition(")")[2].split()
    # fields[0] is field 3 (state) of proc_pid_stat(5): field n is fields[n - 3].
    return StatLine(
        ppid=int(fields[1]),
        utime=int(fields[11]),
        stime=int(fields[12]),
        cutime=int(fields[13]),
        cstime=int(fields[14]),
    )


def parse_kb_field(text: str, name: str) -> int:
    """The value in kB of a ``Name:   123 kB`` line of ``status`` or ``smaps_rollup`` (0 when absent)."""
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == name:
            return int(value.split()[0])
    return 0


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None


def children_map(proc: Path = PROC) -> dict[int, list[int]]:
    """Every live process's children, by parent pid (one pass over /proc)."""
    children: dict[int, list[int]] = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        text = _read(entry / "stat")
        if text is not None:
            children.setdefault(parse_stat(text).ppid, []).append(int(entry.name))
    return children


def tree(pid: int, children: Mapping[int, list[int]], apart: Collection[int] = ()) -> list[int]:
    """``pid`` and its live descendants, but for those in ``apart`` and theirs (measured apart:
    the fork server's children are the suite's other processes)."""
    result, pending = [], [pid]
    while pending:
        current = pending.pop()
        result.append(current)
        pending.extend(child for child in children.get(current, ()) if child not in apart)
    return result


def cpu_seconds(pids: Iterable[int], proc: Path = PROC) -> float:
    """User + system CPU seconds of ``pids`` (and of their reaped children), summed."""
    ticks = 0
    for pid in pids:
        text = _read(proc / str(pid) / "stat")
        if text is not None:
            ticks += parse_stat(text).ticks
    return ticks / CLOCK_TICKS


@dataclass(frozen=True)
class Memory:
    """Memory of a process tree, in kB."""

    pss_kb: int
    """Proportional set size: shared pages split between the processes that map them."""
    rss_peak_kb: int
    """Peak resident set size (VmHWM), summed (shared pages count once per process)."""


def memory(pids: Iterable[int], proc: Path = PROC) -> Memory:
    """PSS (``smaps_rollup``) and peak RSS (``status`` VmHWM) of ``pids``, summed."""
    pss = peak = 0
    for pid in pids:
        rollup, status = _read(proc / str(pid) / "smaps_rollup"), _read(proc / str(pid) / "status")
        pss += parse_kb_field(rollup, "Pss") if rollup else 0
        peak += parse_kb_field(status, "VmHWM") if status else 0
    return Memory(pss_kb=pss, rss_peak_kb=peak)


def threads(pid: int, proc: Path = PROC) -> list[int]:
    """The thread ids of ``pid`` right now."""
    try:
        return [int(t.name) for t in (proc / str(pid) / "task").iterdir()]
    except FileNotFoundError:
        return []


def pin(pids: Iterable[int], cpus: set[int]) -> None:
    """Restrict every thread of ``pids`` to ``cpus``. Threads and processes they start later inherit
    it from their creator, so pinning what runs now pins what comes next."""
    for pid in pids:
        for tid in threads(pid):
            try:
                os.sched_setaffinity(tid, cpus)
            except ProcessLookupError:
                continue


def allowed_cpus(pid: int, proc: Path = PROC) -> str:
    """``Cpus_allowed_list`` of ``pid`` (e.g. ``0`` or ``0-1``), to show what pinning did."""
    text = _read(proc / str(pid) / "status") or ""
    for line in text.splitlines():
        if line.startswith("Cpus_allowed_list:"):
            return line.partition(":")[2].strip()
    return "?"
