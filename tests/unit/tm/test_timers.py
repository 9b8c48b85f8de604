"""TimerHeap on a virtual clock: one armed handle for the earliest
deadline, stale entries skipped, timers that move."""

from __future__ import annotations

import math

from sipexpress.modules.tm.timers import TimerHeap
from tests.unit.tm.conftest import VirtualClock


class Machine:
    """A timed object whose deadlines the test sets."""

    def __init__(self, clock: VirtualClock, *deadlines: float) -> None:
        self.clock = clock
        self.deadlines = sorted(deadlines)
        self.fired: list[float] = []
        self.sched = math.inf

    def next_timer(self) -> float | None:
        return self.deadlines[0] if self.deadlines else None

    def on_timer(self, now: float) -> None:
        self.fired.append(self.clock.now)
        self.deadlines = [d for d in self.deadlines if d > now]


def heap(clock: VirtualClock) -> tuple[TimerHeap, list[float]]:
    armed: list[float] = []

    def call_later(delay: float, callback: object) -> object:
        armed.append(clock.now + delay)
        return clock.call_later(delay, callback)  # type: ignore[arg-type]

    return TimerHeap(lambda: clock.now, call_later), armed


def test_fires_each_deadline_in_order_with_one_handle() -> None:
    clock = VirtualClock()
    timers, armed = heap(clock)
    a, b = Machine(clock, 0.5, 1.5), Machine(clock, 1.0)
    timers.update(a)
    timers.update(b)
    assert armed == [0.5]  # b's later deadline armed nothing new
    clock.advance(2.0)
    assert (a.fired, b.fired) == ([0.5, 1.5], [1.0])
    assert armed == [0.5, 1.0, 1.5]
    assert len(timers) == 0


def test_an_earlier_deadline_rearms_and_a_later_one_leaves_a_stale_entry() -> None:
    clock = VirtualClock()
    timers, armed = heap(clock)
    m = Machine(clock, 4.0)
    timers.update(m)
    m.deadlines = [2.0]  # e.g. a retransmission timer reset
    timers.update(m)
    assert armed == [4.0, 2.0]
    clock.advance(2.0)
    assert m.fired == [2.0]
    m.deadlines = [3.0]
    timers.update(m)
    clock.advance(5.0)
    assert m.fired == [2.0, 3.0]  # the entry for 4.0 was stale: no third call


def test_a_deadline_that_moved_later_fires_then_only() -> None:
    clock = VirtualClock()
    timers, armed = heap(clock)
    m = Machine(clock, 1.0)
    timers.update(m)
    m.deadlines = [5.0]  # a provisional reply restarted the timer
    clock.advance(4.9)
    assert m.fired == []
    assert armed == [1.0, 5.0]  # re-queued when the old deadline came
    clock.advance(0.2)
    assert m.fired == [5.0]


def test_close_cancels_the_handle() -> None:
    clock = VirtualClock()
    timers, _ = heap(clock)
    m = Machine(clock, 1.0)
    timers.update(m)
    timers.close()
    clock.advance(2.0)
    assert m.fired == [] and len(timers) == 0
