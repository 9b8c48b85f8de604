"""Server monitoring for serweb's live dashboard: ser's statistics registry
(``stats.snapshot`` over JSON-RPC) sampled in the app's loop, the last hour
kept here in the server, turned into per-second rates for the charts.

What each sample keeps (cumulative counters as read, levels as they are):
INVITEs received (calls/s), accepted REGISTERs and registered contacts,
transactions in flight (tm's current minus those only waiting to absorb
retransmissions), final replies by class (tm's and the stateless ones),
CPU seconds and resident memory of ser.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sipexpress.core.periodic import Periodic
from sipexpress.core.stats import CLASSES, codes_by_class
from sipexpress.web.serclient import SerClient, SerError

log = logging.getLogger("sipexpress.web.monitor")
HOUR = 3600.0
FINAL_CLASSES = CLASSES[1:]  # 2xx .. 6xx


@dataclass(frozen=True, slots=True)
class Sample:
    t: float
    invites: int
    registrations: int  # accepted REGISTERs (cumulative)
    contacts: int  # registered contacts, all tables
    in_flight: int
    replies: tuple[int, ...]  # final replies sent, by FINAL_CLASSES (cumulative)
    cpu: float  # CPU seconds used by ser
    memory: int  # resident bytes


def sample_from(snapshot: list[dict[str, Any]], now: float) -> Sample:
    """One sample from a ``stats.snapshot`` result (modules that are not
    loaded count zero)."""
    v: dict[str, Any] = {f"{s['group']}:{s['name']}": s["value"] for s in snapshot}

    def total(name: str) -> int:
        value = v.get(name, 0)
        return int(sum(value.values())) if isinstance(value, Mapping) else int(value)

    tm: Mapping[str, int] = v.get("tm:replies") or {}
    sl = codes_by_class({int(code): n for code, n in (v.get("sl:replies") or {}).items()})
    return Sample(
        t=now,
        invites=int((v.get("core:received_requests") or {}).get("INVITE", 0)),
        registrations=total("registrar:accepted_registrations"),
        contacts=total("usrloc:contacts"),
        in_flight=max(0, total("tm:current") - total("tm:waiting")),
        replies=tuple(int(tm.get(c, 0)) + sl[c] for c in FINAL_CLASSES),
        cpu=float(v.get("core:cpu_seconds", 0.0)),
        memory=int(v.get("core:resident_memory_bytes", 0)),
    )


class Monitor:
    def __init__(self, ser: SerClient, interval: float) -> None:
        self.ser = ser
        self.interval = max(0.2, interval)
        self.samples: deque[Sample] = deque()
        self._sampler = Periodic("monitor: stats sample", self.interval, self._sample_quietly, at_start=True)

    def start(self) -> None:
        self._sampler.start()

    async def stop(self) -> None:
        await self._sampler.stop()

    async def sample(self) -> None:
        snapshot = await self.ser.call("stats.snapshot")
        now = time.time()
        self.samples.append(sample_from(snapshot if isinstance(snapshot, list) else [], now))
        while self.samples and self.samples[0].t < now - HOUR:
            self.samples.popleft()

    async def _sample_quietly(self) -> None:
        try:
            await self.sample()
        except SerError as e:  # ser stopped or restarting: the chart shows the gap
            log.debug("monitor: %s", e)

    def series(self) -> dict[str, list[float]]:
        """Columns for the charts, one row per pair of samples: time (Unix
        seconds), calls/s, registrations/s, contacts, transactions in
        flight, replies/s by class, CPU %, memory (MB).  A counter that went
        down (``stats.reset_statistics``) gives 0 for that interval."""
        cols: dict[str, list[float]] = {
            k: []
            for k in ("t", "calls", "registrations", "contacts", "in_flight", *FINAL_CLASSES, "cpu", "memory")
        }
        for a, b in itertools.pairwise(self.samples):
            dt = b.t - a.t
            if dt <= 0:
                continue

            def rate(x: float, y: float, dt: float = dt) -> float:
                return round(max(0.0, y - x) / dt, 3)

            cols["t"].append(round(b.t, 3))
            cols["calls"].append(rate(a.invites, b.invites))
            cols["registrations"].append(rate(a.registrations, b.registrations))
            cols["contacts"].append(b.contacts)
            cols["in_flight"].append(b.in_flight)
            for cls, x, y in zip(FINAL_CLASSES, a.replies, b.replies, strict=True):
                cols[cls].append(rate(x, y))
            cols["cpu"].append(round(100 * rate(a.cpu, b.cpu), 1))
            cols["memory"].append(round(b.memory / 1e6, 1))
        return cols
