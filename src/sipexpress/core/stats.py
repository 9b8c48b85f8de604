"""Core statistics: plain integer counters behind a small interface.

One worker process means plain attributes are enough; modules keep their
own counters (``sl_stats``, ``t_stats``) and may read these.  The interface
(``incr``/``get``/``snapshot``) is what a shared-memory or multi-process
implementation would have to provide.
"""

from __future__ import annotations

from collections import Counter


class Stats:
    """Counters of the core.  Hot-path counters are attributes (no dict
    lookups); everything else goes through :meth:`incr`."""

    __slots__ = (
        "bad_msgs",
        "dropped",
        "extra",
        "fwd_replies",
        "fwd_requests",
        "rcv_replies",
        "rcv_requests",
        "send_failures",
        "sl_failures",
        "sl_replies",
    )

    def __init__(self) -> None:
        self.rcv_requests = 0
        self.rcv_replies = 0
        self.fwd_requests = 0
        self.fwd_replies = 0
        self.bad_msgs = 0
        self.dropped = 0
        self.send_failures = 0
        # stateless replies by status code (sl_stats reads these)
        self.sl_replies: Counter[int] = Counter()
        self.sl_failures = 0
        self.extra: Counter[str] = Counter()

    def incr(self, name: str, n: int = 1) -> None:
        if name in self.__slots__ and name not in ("sl_replies", "extra"):
            setattr(self, name, getattr(self, name) + n)
        else:
            self.extra[name] += n

    def get(self, name: str) -> int:
        if name in self.__slots__ and name not in ("sl_replies", "extra"):
            value: int = getattr(self, name)
            return value
        return self.extra[name]

    def snapshot(self) -> dict[str, int]:
        out = {name: getattr(self, name) for name in self.__slots__ if name not in ("sl_replies", "extra")}
        out.update(self.extra)
        for code, n in sorted(self.sl_replies.items()):
            out[f"sl_{code}"] = n
        return out
