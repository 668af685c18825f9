"""A background task that runs a coroutine every interval and outlives any one failure.

Lease renewal, route-table refreshes and spool adoption all need the same loop: wait, run, log a
failure and carry on (a loop that died on one error would silently stop renewing leases or
refreshing routes), and stop cleanly on shutdown.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


class Periodic:
    """Runs ``run`` every ``interval_s`` seconds until stopped: the first time after one interval,
    or at once with ``run_at_start``."""

    def __init__(
        self, name: str, interval_s: float, run: Callable[[], Awaitable[object]], *, run_at_start: bool = False
    ) -> None:
        self._name = name
        self._interval_s = interval_s
        self._run = run
        self._run_at_start = run_at_start
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the loop on the running event loop."""
        self._task = asyncio.create_task(self._loop(), name=self._name)

    async def stop(self) -> None:
        """Cancel the loop and wait for it to end."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _loop(self) -> None:
        wait = 0.0 if self._run_at_start else self._interval_s
        while True:
            await asyncio.sleep(wait)
            wait = self._interval_s
            try:
                await self._run()
            except Exception:
                log.exception("%s failed; retrying in %.1fs", self._name, self._interval_s)
