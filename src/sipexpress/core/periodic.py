"""A job run every few seconds for as long as its owner runs: usrloc's
timer, msilo's clean-up, nathelper's keep-alives, the web monitor.

One failed round is logged and the next one comes as planned: a periodic
job that died on one bad row would stop expiring contacts (or pinging
phones) silently for the rest of the server's life.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger("sipexpress.core")


class Periodic:
    """``job`` every ``interval`` seconds (the first one after an interval,
    or at once with ``at_start``), from :meth:`start` to :meth:`stop`."""

    def __init__(
        self, name: str, interval: float, job: Callable[[], Awaitable[object]], at_start: bool = False
    ) -> None:
        self.name = name
        self.interval = interval
        self.job = job
        self.at_start = at_start
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        if not self.at_start:
            await asyncio.sleep(self.interval)
        while True:
            try:
                await self.job()
            except Exception:
                log.exception("%s failed", self.name)
            await asyncio.sleep(self.interval)
