"""One timer heap for every transaction machine of tm.

Each machine (or group of machines) that has timers is a :class:`Timed`
object: ``next_timer()`` gives its earliest deadline and ``on_timer(now)``
fires what is due.  The heap holds ``(deadline, seq, obj)``; an object is
pushed again only when its deadline moves earlier, and stale entries are
skipped when popped, so a retransmission flood or a timer reset costs one
comparison.  A single ``call_later`` handle is armed for the earliest
deadline (the asyncio adapter of the sans-I/O machines, as aioquic does).
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable
from typing import Any, Protocol


class Timed(Protocol):
    sched: float

    def next_timer(self) -> float | None: ...

    def on_timer(self, now: float) -> None: ...


class TimerHeap:
    __slots__ = ("_armed", "_call_later", "_handle", "_heap", "_now", "_seq")

    def __init__(
        self, now: Callable[[], float], call_later: Callable[[float, Callable[[], Any]], Any]
    ) -> None:
        self._now = now
        self._call_later = call_later
        self._heap: list[tuple[float, int, Timed]] = []
        self._seq = itertools.count()
        self._handle: Any = None
        self._armed = math.inf

    def __len__(self) -> int:
        return len(self._heap)

    def update(self, obj: Timed) -> None:
        """Call after anything that may have changed ``obj``'s timers."""
        nt = obj.next_timer()
        if nt is None or nt >= obj.sched:
            return
        obj.sched = nt
        heapq.heappush(self._heap, (nt, next(self._seq), obj))
        if nt < self._armed:
            self._arm(nt)

    def _arm(self, deadline: float) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._armed = deadline
        self._handle = self._call_later(max(0.0, deadline - self._now()), self._run)

    def _run(self) -> None:
        self._handle = None
        # while due timers fire, update() arms nothing: what they re-queue
        # may come after another object's deadline already in the heap
        self._armed = -math.inf
        now = self._now()
        heap = self._heap
        # fire what is due (1 ms slack: the loop may wake a hair early)
        due = now + 0.001
        pop = heapq.heappop
        try:
            while heap and heap[0][0] <= due:
                deadline, _, obj = pop(heap)
                if obj.sched != deadline:
                    continue  # stale entry
                obj.sched = math.inf
                nt = obj.next_timer()
                if nt is not None and nt > due:
                    # the timer that was due went away (e.g. retransmissions
                    # stopped by a reply): only re-queue the next one
                    self.update(obj)
                    continue
                try:
                    obj.on_timer(max(now, deadline))
                finally:
                    self.update(obj)
        finally:
            self._armed = math.inf
            if heap:
                self._arm(heap[0][0])

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._heap.clear()
