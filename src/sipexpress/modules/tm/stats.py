"""tm counters, their declaration, and the FIFO text of ``t_stats`` and
``t_hash`` (fifo.md §6.1)."""

from __future__ import annotations

from array import array
from collections.abc import Callable
from typing import Any

from sipexpress.core.registry import Statistic, StatKind
from sipexpress.core.stats import TRANSACTION_TIME_BOUNDS, Histogram, T, by_class

TABLE_ENTRIES = 65536  # SER's TABLE_ENTRIES (1 << 16)
CLEANUP_EOL = "      \n"


def final_classes(values: list[T]) -> dict[str, T]:
    """``2xx``…``6xx`` of a list indexed by status class."""
    out = by_class(values)
    del out["1xx"]
    return out


class TmStats:
    __slots__ = (
        "completed",
        "deleted",
        "duration",
        "hash_cur",
        "hash_total",
        "local",
        "replied_locally",
        "retransmissions",
        "total",
        "waiting",
    )

    def __init__(self) -> None:
        self.total = 0
        self.local = 0
        self.deleted = 0
        self.waiting = 0  # entered wait state (final reply sent), deleted ones included
        self.replied_locally = 0
        self.retransmissions = 0  # request retransmissions absorbed
        self.completed = [0, 0, 0, 0, 0, 0, 0]  # index = status class (2..6 used)
        self.duration = [Histogram(TRANSACTION_TIME_BOUNDS) for _ in range(7)]  # by final status class
        self.hash_cur = array("l", bytes(8 * TABLE_ENTRIES))
        self.hash_total = array("l", bytes(8 * TABLE_ENTRIES))

    def created(self, slot: int, local: bool) -> None:
        self.total += 1
        if local:
            self.local += 1
        self.hash_cur[slot] += 1
        self.hash_total[slot] += 1

    def freed(self, slot: int, waited: bool) -> None:
        self.deleted += 1
        self.hash_cur[slot] -= 1
        if waited:
            self.waiting -= 1  # SER: waiting = in wait state - deleted

    def completion(self, status: int, seconds: float) -> None:
        cls = status // 100
        if 2 <= cls <= 6:
            self.completed[cls] += 1
            self.duration[cls].observe(seconds)

    @property
    def current(self) -> int:
        return self.total - self.deleted

    @staticmethod
    def t_stats_data(stat: Callable[[str], Any]) -> dict[str, int]:
        """``t_stats``'s JSON-RPC result, from the registry's values."""
        data = {name: stat(name) for name in ("current", "waiting", "total", "local", "replied_locally")}
        replies = stat("replies")
        data.update((cls, replies[cls]) for cls in ("6xx", "5xx", "4xx", "3xx", "2xx"))
        data["retransmissions"] = stat("retransmissions")
        return data

    def statistics(self) -> tuple[Statistic, ...]:
        """tm's declaration (``TmModule.statistics``)."""
        c, g, h = StatKind.COUNTER, StatKind.GAUGE, StatKind.HISTOGRAM
        return (
            Statistic("current", lambda: self.current, "transactions in memory", g),
            Statistic("waiting", lambda: self.waiting, "transactions in wait state (final reply sent)", g),
            Statistic("total", lambda: self.total, "transactions created", c),
            Statistic("local", lambda: self.local, "transactions created by the server itself (UAC)", c),
            Statistic(
                "replied_locally", lambda: self.replied_locally, "transactions the server replied to", c
            ),
            Statistic("retransmissions", lambda: self.retransmissions, "request retransmissions absorbed", c),
            Statistic(
                "replies", lambda: final_classes(self.completed), "final replies sent upstream", c, "class"
            ),
            Statistic(
                "transaction_duration_seconds",
                lambda: final_classes(self.duration),
                "time from the request until its final reply went upstream",
                h,
                "class",
            ),
        )

    @staticmethod
    def t_stats_text(stat: Callable[[str], Any]) -> str:
        """The lines after ``200 ok`` exactly as SER's ``t_stats`` printed
        them, from the registry's values (``stat(name)``)."""
        c = stat("replies")
        return (
            f"Current: {stat('current')} ({stat('waiting')} waiting) Total: {stat('total')} ({stat('local')} local)"
            + CLEANUP_EOL
            + f"Replied localy: {stat('replied_locally')}"
            + CLEANUP_EOL
            + f"Completion status 6xx: {c['6xx']}, 5xx: {c['5xx']}, 4xx: {c['4xx']}, 3xx: {c['3xx']},2xx: {c['2xx']}"
            + CLEANUP_EOL
        )

    def t_hash_text(self) -> str:
        cur = self.hash_cur
        tot = self.hash_total
        lines = ["\tcurrent\ttotal\n"]
        lines += [f"{i}.\t{cur[i]}\t{tot[i]}\n" for i in range(TABLE_ENTRIES)]
        return "".join(lines)

    def t_hash_data(self) -> list[dict[str, int]]:
        cur = self.hash_cur
        tot = self.hash_total
        return [{"slot": i, "current": cur[i], "total": tot[i]} for i in range(TABLE_ENTRIES) if tot[i]]
