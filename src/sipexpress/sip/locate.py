"""RFC 3263 server location, the pure part: which DNS questions to ask for a
SIP URI and how to order the answers.

Theory of operation: :func:`plan` looks at the URI alone (RFC 3263 §4.1,
§4.2) and says what is already known — a numeric host, an explicit port, an
explicit transport — and what must be looked up next (NAPTR, SRV or
A/AAAA).  The I/O layer (``sipexpress.core.resolver``) performs the queries
and feeds the records to :func:`order_naptr` (§4.1: by order, then
preference, only transports we support) and :func:`order_srv` (RFC 2782:
priority, then weighted random by weight).  Nothing here does I/O; the
random source is an argument so tests are deterministic.
"""

from __future__ import annotations

import functools
import ipaddress
import random as _random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

#: NAPTR service field -> transport (RFC 3263 §4.1)
NAPTR_SERVICES = {"SIP+D2U": "udp", "SIP+D2T": "tcp", "SIPS+D2T": "tls"}
#: transport -> SRV prefix (RFC 3263 §4.1)
SRV_PREFIX = {"udp": "_sip._udp.", "tcp": "_sip._tcp.", "tls": "_sips._tcp."}
DEFAULT_PORT = {"udp": 5060, "tcp": 5060, "tls": 5061}


@dataclass(frozen=True, slots=True)
class Target:
    """One place to send to: transport (``udp``/``tcp``/``tls``), IP, port."""

    proto: str
    ip: str
    port: int


@dataclass(frozen=True, slots=True)
class Plan:
    """What :func:`plan` decided for a URI.

    * ``targets`` non-empty: done, no DNS needed (numeric host).
    * ``a_host``: resolve this name with A/AAAA and use ``port``/``proto``.
    * ``srv_names``: try these SRV names in order (transport per name),
      falling back to A/AAAA of ``host`` on the default port.
    * ``naptr_host``: ask NAPTR first (then SRV, then A/AAAA).
    """

    host: str
    proto: str | None
    port: int | None
    targets: tuple[Target, ...] = ()
    a_host: str | None = None
    srv_names: tuple[tuple[str, str], ...] = ()
    naptr_host: str | None = None


def strip_brackets(host: str) -> str:
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


@functools.lru_cache(maxsize=4096)
def is_numeric(host: str) -> bool:
    # cached: every forward to a numeric URI asks again (ipaddress is slow)
    try:
        ipaddress.ip_address(strip_brackets(host))
    except ValueError:
        return False
    return True


def plan(
    host: str,
    port: int | None = None,
    transport: str | None = None,
    secure: bool = False,
    supported: Sequence[str] = ("udp", "tcp"),
) -> Plan:
    """RFC 3263 §4.1/§4.2 for a URI's (maddr or) host, port, transport
    parameter and scheme (``secure`` for sips)."""
    h = strip_brackets(host).lower()
    proto = transport.lower() if transport else None
    if secure and proto in (None, "tcp"):
        proto = "tls"
    if is_numeric(h) or h == "localhost":
        p = proto or "udp"
        ip = h if h != "localhost" else "127.0.0.1"
        return Plan(h, p, port, targets=(Target(p, ip, port or DEFAULT_PORT.get(p, 5060)),))
    if port is not None:
        return Plan(h, proto or "udp", port, a_host=h)
    if proto is not None:
        return Plan(h, proto, None, srv_names=((SRV_PREFIX.get(proto, "_sip._udp.") + h, proto),))
    names = tuple(
        (SRV_PREFIX[p] + h, p) for p in (("tls",) if secure else tuple(supported)) if p in SRV_PREFIX
    )
    return Plan(h, None, None, srv_names=names, naptr_host=h)


@dataclass(frozen=True, slots=True)
class NaptrRecord:
    order: int
    preference: int
    flags: str
    service: str
    replacement: str


@dataclass(frozen=True, slots=True)
class SrvRecord:
    priority: int
    weight: int
    port: int
    target: str


def order_naptr(
    records: Iterable[NaptrRecord], supported: Sequence[str] = ("udp", "tcp"), secure: bool = False
) -> list[tuple[str, str]]:
    """NAPTR records -> ``[(srv_name, proto)]`` by order then preference,
    keeping only ``s``-flag records for transports we support."""
    out: list[tuple[str, str]] = []
    for r in sorted(records, key=lambda r: (r.order, r.preference)):
        proto = NAPTR_SERVICES.get(r.service.upper())
        if proto is None or proto not in supported or r.flags.lower() != "s":
            continue
        if secure and proto != "tls":
            continue
        out.append((r.replacement.rstrip("."), proto))
    return out


def order_srv(records: Iterable[SrvRecord], rand: Callable[[], float] = _random.random) -> list[SrvRecord]:
    """RFC 2782 ordering: ascending priority; within a priority, a weighted
    random permutation (weight-0 records first in the running sum so they
    get a small chance, as the RFC describes)."""
    by_prio: dict[int, list[SrvRecord]] = {}
    for r in records:
        if r.target in (".", ""):
            continue  # "service decidedly not available"
        by_prio.setdefault(r.priority, []).append(r)
    out: list[SrvRecord] = []
    for prio in sorted(by_prio):
        group = sorted(by_prio[prio], key=lambda r: r.weight)
        while group:
            total = sum(r.weight for r in group)
            pick = rand() * total
            running = 0
            chosen = group[0]
            for r in group:
                running += r.weight
                if running >= pick and (r.weight > 0 or total == 0):
                    chosen = r
                    break
            out.append(chosen)
            group.remove(chosen)
    return out
