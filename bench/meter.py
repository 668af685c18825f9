"""CPU and memory windows over the suite's processes, the fake upstream and the bench client."""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Mapping
from dataclasses import dataclass

from bench import procstat

CLIENT = "bench client"
UPSTREAM = "fake upstream"


@dataclass(frozen=True)
class CpuSample:
    """CPU seconds spent so far, per suite service, by this process and by the upstream, and when."""

    services: dict[str, float]
    client: float
    upstream: float
    at: float
    """``time.perf_counter()`` when sampled."""

    @property
    def suite(self) -> float:
        """All suite processes together."""
        return sum(self.services.values())


@dataclass(frozen=True)
class CpuWindow:
    """CPU seconds spent between two samples, per suite service, and by the client and upstream."""

    services: dict[str, float]
    client: float
    upstream: float
    wall_s: float
    """How long the window lasted."""

    @property
    def suite(self) -> float:
        """All suite processes together."""
        return sum(self.services.values())


class Meter:
    """Samples the CPU time of each suite process tree (children included), the fake upstream's
    tree and this process, and the memory of each suite process tree."""

    def __init__(self, services: Mapping[str, int], upstream_pid: int) -> None:
        self._services = dict(services)
        self._upstream = upstream_pid

    def _trees(self) -> tuple[dict[str, list[int]], list[int]]:
        children = procstat.children_map()
        roots = set(self._services.values())
        trees = {name: procstat.tree(pid, children, roots - {pid}) for name, pid in self._services.items()}
        return trees, procstat.tree(self._upstream, children)

    def cpu(self) -> CpuSample:
        """CPU time so far of every suite tree, of this process and of the upstream's tree."""
        trees, upstream = self._trees()
        usage = resource.getrusage(resource.RUSAGE_SELF)  # microseconds, every thread of this process
        return CpuSample(
            services={name: procstat.cpu_seconds(pids) for name, pids in trees.items()},
            client=usage.ru_utime + usage.ru_stime,
            upstream=procstat.cpu_seconds(upstream),
            at=time.perf_counter(),
        )

    def window(self, before: CpuSample) -> CpuWindow:
        """What was spent since ``before``."""
        now = self.cpu()
        return CpuWindow(
            services={name: now.services[name] - before.services.get(name, 0.0) for name in now.services},
            client=now.client - before.client,
            upstream=now.upstream - before.upstream,
            wall_s=now.at - before.at,
        )

    def memory(self) -> dict[str, procstat.Memory]:
        """PSS and peak RSS of each suite process tree."""
        trees, _ = self._trees()
        return {name: procstat.memory(pids) for name, pids in trees.items()}

    def pin(self, suite_cpus: set[int], other_cpus: set[int]) -> None:
        """The suite on ``suite_cpus``; the fake upstream and this process on ``other_cpus``."""
        trees, upstream = self._trees()
        procstat.pin([pid for pids in trees.values() for pid in pids], suite_cpus)
        procstat.pin(upstream, other_cpus)
        procstat.pin([os.getpid()], other_cpus)

    def affinity(self) -> dict[str, str]:
        """Each process's allowed CPUs, as the kernel reports them (and how many processes each
        suite tree holds, to show what the CPU figures sum)."""
        trees, _ = self._trees()
        shown = {
            name: f"{procstat.allowed_cpus(pid)} ({len(trees[name])} process{'es' if len(trees[name]) > 1 else ''})"
            for name, pid in self._services.items()
        }
        shown[UPSTREAM] = procstat.allowed_cpus(self._upstream)
        shown[CLIENT] = procstat.allowed_cpus(os.getpid())
        return shown
