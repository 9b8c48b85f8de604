"""tm counters and the FIFO text of ``t_stats`` and ``t_hash`` (fifo.md §6.1)."""

from __future__ import annotations

from array import array

TABLE_ENTRIES = 65536  # SER's TABLE_ENTRIES (1 << 16)
CLEANUP_EOL = "      \n"


class TmStats:
    __slots__ = (
        "completed",
        "deleted",
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

    def completion(self, status: int) -> None:
        cls = status // 100
        if 2 <= cls <= 6:
            self.completed[cls] += 1

    @property
    def current(self) -> int:
        return self.total - self.deleted

    def as_dict(self) -> dict[str, int]:
        c = self.completed
        return {
            "current": self.current,
            "waiting": self.waiting,
            "total": self.total,
            "local": self.local,
            "replied_locally": self.replied_locally,
            "6xx": c[6],
            "5xx": c[5],
            "4xx": c[4],
            "3xx": c[3],
            "2xx": c[2],
            "retransmissions": self.retransmissions,
        }

    def t_stats_text(self) -> str:
        """The lines after ``200 ok`` exactly as SER's ``t_stats`` printed them."""
        c = self.completed
        return (
            f"Current: {self.current} ({self.waiting} waiting) Total: {self.total} ({self.local} local)"
            + CLEANUP_EOL
            + f"Replied localy: {self.replied_locally}"
            + CLEANUP_EOL
            + f"Completion status 6xx: {c[6]}, 5xx: {c[5]}, 4xx: {c[4]}, 3xx: {c[3]},2xx: {c[2]}"
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
