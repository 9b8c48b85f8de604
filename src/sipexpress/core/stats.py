"""Statistics: the core's counters and the registry every interface reads.

Counting costs one attribute or list-slot increment on the hot path; the
names, kinds and labels live in declarations (:class:`Statistic`) that are
read only when somebody asks.  Each module declares its statistics next to
its functions and parameters (``Module.statistics()``); the core declares
the ``core`` group here.  :class:`StatsRegistry` gathers the groups and
answers Kamailio's ``stats.get_statistics`` / ``stats.reset_statistics``,
SER's ``sl_stats``/``t_stats``/``ul_stats`` and ``/metrics`` (built from
:meth:`StatsRegistry.snapshot` by :mod:`sipexpress.core.metrics`).

Reset keeps a baseline per counter and histogram instead of zeroing the
modules' attributes: the modules need not know about resets, and every
reader (SER's commands included) sees the same reset value.  Gauges are
levels and are never reset (Kamailio's ``STAT_NO_RESET``).
"""

from __future__ import annotations

import os
import resource
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from sipexpress.core.registry import Statistic, StatKind

T = TypeVar("T")

# Request methods counted one by one; anything else is OTHER, so that a
# peer inventing methods cannot grow the table (or a Prometheus label set).
METHODS = (
    "INVITE",
    "ACK",
    "BYE",
    "CANCEL",
    "OPTIONS",
    "REGISTER",
    "INFO",
    "PRACK",
    "UPDATE",
    "SUBSCRIBE",
    "NOTIFY",
    "MESSAGE",
    "REFER",
    "PUBLISH",
    "OTHER",
)
METHOD_INDEX = {m: i for i, m in enumerate(METHODS[:-1])}
OTHER_METHOD = len(METHODS) - 1
# status classes: index status // 100 of a seven-slot list (0 unused)
CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx", "6xx")

# seconds; the route of a stateless OPTIONS takes some 20 µs, a database
# lookup milliseconds
REQUEST_TIME_BOUNDS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5)
# the receive path times one request in 16 of each method (n & TIMING_MASK == 1)
TIMING_MASK = 15
# a transaction lasts from the request until its final reply went upstream
TRANSACTION_TIME_BOUNDS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 180.0)


class Histogram:
    """Counts per bucket (``counts[i]`` for ``bounds[i-1] < v <= bounds[i]``,
    the last slot for values above every bound) and the sum.  One bisect on
    the precomputed bounds per observation."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def as_dict(self) -> dict[str, Any]:
        return {"bounds": list(self.bounds), "counts": list(self.counts), "sum": self.sum}


class Stats:
    """Counters of the core, counted by the receive and forward paths."""

    __slots__ = (
        "bad_msgs",
        "dropped",
        "dropped_requests",
        "fwd_replies",
        "fwd_requests",
        "rcv_replies",
        "rcv_requests",
        "request_time",
        "send_failures",
        "sl_failures",
        "sl_replies",
    )

    def __init__(self) -> None:
        self.rcv_requests = [0] * len(METHODS)  # by METHOD_INDEX
        self.rcv_replies = [0] * 7  # by status class
        # by METHOD_INDEX: the 1st, 17th, 33rd ... request of each method
        self.request_time = [Histogram(REQUEST_TIME_BOUNDS) for _ in METHODS]
        self.fwd_requests = 0
        self.fwd_replies = 0
        self.bad_msgs = 0
        self.dropped = 0
        self.dropped_requests = 0  # by the script's drop (Kamailio's drop_requests)
        self.send_failures = 0
        # stateless replies by status code (sl_stats reads these)
        self.sl_replies: Counter[int] = Counter()
        self.sl_failures = 0


def by_method(values: Sequence[Any]) -> dict[str, Any]:
    return dict(zip(METHODS, values, strict=True))


def by_class(values: Sequence[T]) -> dict[str, T]:
    """A seven-slot list indexed by status class, labelled ``1xx``…``6xx``."""
    return {label: values[i] for i, label in enumerate(CLASSES, 1)}


def codes_by_class(counts: Mapping[int, int]) -> dict[str, int]:
    out = dict.fromkeys(CLASSES, 0)
    for code, n in counts.items():
        if 100 <= code <= 699:
            out[CLASSES[code // 100 - 1]] += n
    return out


_PAGE = os.sysconf("SC_PAGE_SIZE")


def cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def resident_memory_bytes() -> int:
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except OSError:  # not Linux: the peak is the best there is
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def core_statistics(stats: Stats) -> tuple[Statistic, ...]:
    """The ``core`` group."""
    c, g, h = StatKind.COUNTER, StatKind.GAUGE, StatKind.HISTOGRAM
    return (
        Statistic(
            "received_requests", lambda: by_method(stats.rcv_requests), "requests received", c, "method"
        ),
        Statistic("received_replies", lambda: by_class(stats.rcv_replies), "replies received", c, "class"),
        Statistic("forwarded_requests", lambda: stats.fwd_requests, "requests forwarded", c),
        Statistic("forwarded_replies", lambda: stats.fwd_replies, "replies forwarded", c),
        Statistic(
            "dropped_requests", lambda: stats.dropped_requests, "requests dropped by the script (drop)", c
        ),
        Statistic("dropped_replies", lambda: stats.dropped, "replies dropped (no Via to send them to)", c),
        Statistic("bad_messages", lambda: stats.bad_msgs, "messages that failed to parse", c),
        Statistic("send_failures", lambda: stats.send_failures, "messages that could not be sent", c),
        Statistic(
            "request_processing_seconds",
            lambda: by_method(stats.request_time),
            "time the route took for a request (until it first waits for I/O); one request in 16 is timed",
            h,
            "method",
        ),
        Statistic("cpu_seconds", cpu_seconds, "CPU time used by the server (user + system)", c),
        Statistic("resident_memory_bytes", resident_memory_bytes, "resident set size", g),
    )


Value = Any  # a number, a Histogram, or a mapping of label value to either


def _minus(value: Value, base: Value) -> Value:
    if isinstance(value, Histogram):
        out = Histogram(value.bounds)
        out.counts = [a - b for a, b in zip(value.counts, base.counts, strict=True)]
        out.sum = value.sum - base.sum
        return out
    if isinstance(value, Mapping):
        return {k: _minus(v, base[k]) if k in base else v for k, v in value.items()}
    return value - base


def _plus(value: Value, other: Value) -> Value:
    if isinstance(value, Histogram) and isinstance(other, Histogram):
        out = Histogram(value.bounds)
        out.counts = [a + b for a, b in zip(value.counts, other.counts, strict=True)]
        out.sum = value.sum + other.sum
        return out
    if isinstance(value, Mapping) and isinstance(other, Mapping):
        out_map = dict(value)
        for k, v in other.items():
            out_map[k] = _plus(out_map[k], v) if k in out_map else v
        return out_map
    if isinstance(other, int | float) and isinstance(value, int | float):
        return value + other
    return value


def _copy(value: Value) -> Value:
    if isinstance(value, Histogram):
        out = Histogram(value.bounds)
        out.counts = list(value.counts)
        out.sum = value.sum
        return out
    if isinstance(value, Mapping):
        return {k: _copy(v) for k, v in value.items()}
    return value


class UnknownStatistic(LookupError):
    """``stats.get_statistics`` of a name or group nobody declared."""


class StatsRegistry:
    """Every declared statistic, by group: the groups added with
    :meth:`add_group` (``core``, ``mgmt``), then one per module, named after
    it.  ``modules`` is called on every query, so modules loaded later are
    seen; a module's declarations are asked for once."""

    def __init__(self, modules: Callable[[], Iterable[Any]] = tuple) -> None:
        self._modules = modules
        self._fixed: dict[str, tuple[Statistic, ...]] = {}
        # id(module) -> (module, its declarations); the module is kept so its id stays its own
        self._declared: dict[int, tuple[Any, tuple[Statistic, ...]]] = {}
        self._base: dict[tuple[str, str], Value] = {}
        #: the other worker processes' values (:meth:`raw_values`), added to
        #: ours; refreshed by worker 0 before a management command runs
        self.remote: list[dict[tuple[str, str], Value]] = []
        #: groups whose state every worker holds whole (replicated): not summed
        self.replicated: set[str] = {"usrloc"}

    def add_group(self, name: str, stats: Iterable[Statistic]) -> None:
        self._fixed[name] = tuple(stats)

    def declared(self, module: Any) -> tuple[Statistic, ...]:
        known = self._declared.get(id(module))
        if known is None:
            known = self._declared[id(module)] = (module, tuple(module.statistics()))
        return known[1]

    def groups(self) -> list[tuple[str, tuple[Statistic, ...]]]:
        out = list(self._fixed.items())
        for module in self._modules():
            decl = self.declared(module)
            if decl:
                out.append((module.name, decl))
        return out

    def select(self, spec: str) -> list[tuple[str, Statistic]]:
        """Kamailio's selector: ``all``, ``group:`` or a statistic name
        (``name`` alone, or ``group:name``).  Raises :class:`UnknownStatistic`."""
        spec = spec.strip()
        every = [(g, s) for g, decl in self.groups() for s in decl]
        if spec in ("", "all"):
            return every
        group, sep, name = spec.rpartition(":")
        if not sep:
            found = [(g, s) for g, s in every if s.name == name]
        elif not name:
            found = [(g, s) for g, s in every if g == group]
        else:
            found = [(g, s) for g, s in every if g == group and s.name == name]
        if not found:
            raise UnknownStatistic(spec)
        return found

    def _read(self, group: str, stat: Statistic) -> Value:
        value = stat.read()
        if self.remote and group not in self.replicated:
            key = (group, stat.name)
            for values in self.remote:
                other = values.get(key)
                if other is not None:
                    value = _plus(value, other)
        return value

    def raw_values(self) -> dict[tuple[str, str], Value]:
        """This process's own values (what worker 0 asks the others for)."""
        return {(g, s.name): s.read() for g, decl in self.groups() for s in decl}

    def value(self, group: str, stat: Statistic) -> Value:
        value = self._read(group, stat)
        base = self._base.get((group, stat.name))
        return value if base is None else _minus(value, base)

    def module_value(self, module: Any, name: str) -> Value:
        """A module's statistic (what its own SER commands print)."""
        for s in self.declared(module):
            if s.name == name:
                return self.value(module.name, s)
        raise UnknownStatistic(f"{module.name}:{name}")

    def reset(self, spec: str) -> int:
        """Start the selected counters and histograms from zero; the number
        reset (gauges are levels and are left alone)."""
        n = 0
        for g, s in self.select(spec):
            if s.kind is not StatKind.GAUGE:
                self._base[(g, s.name)] = _copy(self._read(g, s))
                n += 1
        return n

    def lines(self, spec: str) -> list[str]:
        """``stats.get_statistics``: ``group:name = value`` as Kamailio
        prints them; a labelled statistic also gives one line per label
        value (``core:received_requests_invite``), a histogram its count
        and sum.  Such a line can be asked for by its own name too."""
        try:
            return self._lines(self.select(spec))
        except UnknownStatistic:
            group, sep, name = spec.strip().rpartition(":")
            if not name:
                raise
            lines = self._lines(self.select(f"{group}:" if sep else "all"))
            found = [x for x in lines if x.partition(" = ")[0].partition(":")[2] == name]
            if not found:
                raise
            return found

    def _lines(self, selected: list[tuple[str, Statistic]]) -> list[str]:
        out: list[str] = []
        for g, s in selected:
            v = self.value(g, s)
            if s.kind is StatKind.HISTOGRAM:
                parts = v.items() if isinstance(v, Mapping) else [("", v)]
                for label, hist in parts:
                    stem = f"{g}:{s.name}" + (f"_{label.lower()}" if label else "")
                    if hist.count or not label:
                        out += [f"{stem}_count = {hist.count}", f"{stem}_sum = {_number(hist.sum)}"]
            elif isinstance(v, Mapping):
                out.append(f"{g}:{s.name} = {_number(sum(v.values()))}")
                out += [f"{g}:{s.name}_{k.lower()} = {_number(n)}" for k, n in v.items()]
            else:
                out.append(f"{g}:{s.name} = {_number(v)}")
        return out

    def snapshot(self) -> list[dict[str, Any]]:
        """Every statistic with its value, JSON-ready (``stats.snapshot``;
        ``/metrics`` is built from it, in ser and in a separate serweb)."""
        out = []
        for g, s in self.select("all"):
            v = self.value(g, s)
            if isinstance(v, Histogram):
                v = v.as_dict()
            elif isinstance(v, Mapping):
                v = {k: x.as_dict() if isinstance(x, Histogram) else x for k, x in v.items()}
            out.append(
                {"group": g, "name": s.name, "kind": s.kind.value, "doc": s.doc, "label": s.label, "value": v}
            )
        return out


def _number(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:.6f}"
