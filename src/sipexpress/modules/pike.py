"""pike — flood detection per source address (SER 0.9 ``modules/pike``).

``pike_check_req()`` counts the request (or reply) against its source
address and is false while that address sends more than
``reqs_density_per_unit`` messages per ``sampling_time_unit`` seconds:
−2 the first time an address is found flooding (logged once, at WARNING),
−1 while it stays blocked, 1 otherwise.  An address is unblocked by the
first sampling unit in which it stays within the density (logged).  What
to do with a flooding source is the script's choice, as in SER::

    if (!pike_check_req()) { break; };   # drop it silently

Parameters: ``sampling_time_unit`` (2 s), ``reqs_density_per_unit`` (30),
``remove_latency`` (120 s: an address is forgotten that long after its
last message; it is no block duration).  The table of addresses is bounded
(``max_sources``, 65536 by default: about 16 MB); while it is full of
addresses still within ``remove_latency``, new ones are not tracked (and
pass), so a spoofed flood from everywhere cannot take memory.  SER 0.9
counted IPv4 prefixes as well (a tree); sipexpress counts whole addresses.

Management command ``pike_list``: the addresses currently blocked.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from sipexpress.core.registry import (
    ConfigError,
    MgmtCommand,
    MgmtReply,
    Module,
    Param,
    RouteType,
    ScriptFunction,
)

if TYPE_CHECKING:
    from sipexpress.core.api import CoreAPI
    from sipexpress.core.context import RequestContext

log = logging.getLogger("sipexpress.pike")

OK, BLOCKED, NEWLY_BLOCKED = 1, -1, -2


class _Source:
    __slots__ = ("blocked", "count", "last", "previous", "unit")

    def __init__(self, unit: int, now: float) -> None:
        self.unit = unit
        self.count = 0
        self.previous = 0
        self.blocked = False
        self.last = now


class PikeTable:
    """Sans-I/O counting: time is the ``now`` argument."""

    def __init__(self, unit: float, density: int, latency: float, max_sources: int) -> None:
        self.unit = unit
        self.density = density
        self.latency = latency
        self.max_sources = max_sources
        self.sources: dict[str, _Source] = {}
        self._next_sweep = 0.0

    def check(self, ip: str, now: float) -> int:
        unit = int(now // self.unit)
        src = self.sources.get(ip)
        if src is None:
            if len(self.sources) >= self.max_sources and not self._sweep(now):
                return OK  # full of live sources: new ones pass untracked
            src = self.sources[ip] = _Source(unit, now)
        elif unit != src.unit:
            src.previous = src.count if unit == src.unit + 1 else 0
            src.count = 0
            src.unit = unit
            if src.blocked and src.previous <= self.density:
                src.blocked = False
                log.warning("pike: %s is no longer flooding, unblocked", ip)
        src.count += 1
        src.last = now
        if now >= self._next_sweep:
            self._sweep(now)
        if src.blocked:
            return BLOCKED
        if src.count > self.density:
            src.blocked = True
            log.warning("pike: %s sends more than %d requests in %g s: blocked", ip, self.density, self.unit)
            return NEWLY_BLOCKED
        return OK

    def _sweep(self, now: float) -> bool:
        """Forget sources silent for ``latency``; True if any went."""
        self._next_sweep = now + max(self.unit, self.latency / 4)
        old = now - self.latency
        gone = [ip for ip, s in self.sources.items() if s.last < old]
        for ip in gone:
            del self.sources[ip]
        return bool(gone)

    def blocked(self) -> list[str]:
        return sorted(ip for ip, s in self.sources.items() if s.blocked)


class PikeModule(Module):
    name = "pike"
    params = (
        Param("sampling_time_unit", int, 2, "seconds of one sampling unit"),
        Param("reqs_density_per_unit", int, 30, "messages per unit allowed from one address"),
        Param("remove_latency", int, 120, "seconds an address is remembered after its last message"),
        Param("max_sources", int, 65536, "addresses tracked at once"),
    )

    def __init__(self, core: CoreAPI) -> None:
        super().__init__(core)
        self.table = PikeTable(2, 30, 120, 65536)

    async def start(self) -> None:
        v = self.values
        unit, density = int(v["sampling_time_unit"]), int(v["reqs_density_per_unit"])
        latency, size = int(v["remove_latency"]), int(v["max_sources"])
        if unit <= 0 or density <= 0 or latency <= 0 or size <= 0:
            raise ConfigError(
                "pike: sampling_time_unit, reqs_density_per_unit, remove_latency must be positive"
            )
        self.table = PikeTable(unit, density, max(latency, unit), size)

    def functions(self) -> Sequence[ScriptFunction]:
        return (
            ScriptFunction(
                "pike_check_req",
                self.pike_check_req,
                (0,),
                None,
                RouteType.REQUEST | RouteType.ONREPLY,
                False,
                "false (-1, -2 the first time) while the source address floods",
            ),
        )

    def commands(self) -> Sequence[MgmtCommand]:
        return (MgmtCommand("pike_list", self._pike_list, doc="Addresses pike blocks now."),)

    def pike_check_req(self, ctx: RequestContext) -> int:
        return self.table.check(ctx.rcv.src_ip, time.monotonic())

    async def _pike_list(self, params: list[str]) -> MgmtReply:
        ips = self.table.blocked()
        return MgmtReply(200, "ok", ips, "".join(ip + "\n" for ip in ips))
