"""RFC 3263 resolution, the I/O part (dnspython for NAPTR/SRV, the system
resolver for A/AAAA so that ``/etc/hosts`` works).

The pure decisions live in :mod:`sipexpress.sip.locate`; this module asks
the questions it names and caches answers by their TTL (60 s for system
resolver answers, which carry none).  Numeric hosts and ``localhost`` never
touch DNS.  With explicit ``nameservers`` every question (A/AAAA too) goes
to them instead of the system resolver.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from typing import Any

from sipexpress.sip.cache import BoundedCache
from sipexpress.sip.locate import (
    DEFAULT_PORT,
    NaptrRecord,
    SrvRecord,
    Target,
    is_numeric,
    order_naptr,
    order_srv,
    plan,
    strip_brackets,
)

log = logging.getLogger("sipexpress.resolver")

_HOSTS_TTL = 60.0
_NEGATIVE_TTL = 10.0


class Resolver:
    def __init__(
        self,
        timeout: float = 3.0,
        supported: tuple[str, ...] = ("udp", "tcp"),
        nameservers: list[str] | None = None,
        dns_port: int = 53,
    ) -> None:
        self.timeout = timeout
        self.supported = supported
        self.nameservers = nameservers  # None: from /etc/resolv.conf
        self.dns_port = dns_port
        self._dns: Any = None
        # names come from the wire (Via, Request-URI): bounded in bytes
        self._cache: BoundedCache[tuple[str, str], tuple[float, Any]] = BoundedCache(4 << 20, 4096)

    def _cached(self, kind: str, name: str) -> Any:
        hit = self._cache.get((kind, name))
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        return None

    def _store(self, kind: str, name: str, value: Any, ttl: float) -> None:
        entries = len(value) if isinstance(value, list | tuple) else 1
        self._cache.put((kind, name), (time.monotonic() + ttl, value), len(name) + 128 * entries)

    def _resolver(self) -> Any:
        if self._dns is None:
            import dns.asyncresolver

            if self.nameservers is not None:
                r = dns.asyncresolver.Resolver(configure=False)
                r.nameservers = list(self.nameservers)
            else:
                try:
                    r = dns.asyncresolver.Resolver()
                except Exception:  # no resolv.conf: no DNS at all
                    r = dns.asyncresolver.Resolver(configure=False)
                    r.nameservers = ["127.0.0.1"]
            r.port = self.dns_port
            r.lifetime = self.timeout
            self._dns = r
        return self._dns

    async def resolve_host(self, host: str) -> list[str]:
        """A/AAAA addresses of a host name (IPv4 first); [] if none."""
        h = strip_brackets(host)
        if is_numeric(h):
            return [h]
        if h.lower() == "localhost":
            return ["127.0.0.1"]
        cached = self._cached("A", h)
        if cached is not None:
            return list(cached)
        if self.nameservers is not None:
            # explicitly configured name servers answer A/AAAA too
            found = [str(r.address) for t in ("A", "AAAA") for r in await self._query(h, t)]
            self._store("A", h, found, _HOSTS_TTL if found else _NEGATIVE_TTL)
            return found
        loop = asyncio.get_running_loop()
        try:
            infos = await asyncio.wait_for(
                loop.getaddrinfo(h, None, type=socket.SOCK_DGRAM), timeout=self.timeout
            )
        except (OSError, TimeoutError, UnicodeError) as e:
            log.info("cannot resolve %s: %s", h, e)
            self._store("A", h, [], _NEGATIVE_TTL)
            return []
        v4 = [str(i[4][0]) for i in infos if i[0] == socket.AF_INET]
        v6 = [str(i[4][0]) for i in infos if i[0] == socket.AF_INET6]
        addrs = list(dict.fromkeys(v4 + v6))
        self._store("A", h, addrs, _HOSTS_TTL)
        return addrs

    async def _query(self, name: str, rdtype: str) -> list[Any]:
        cached = self._cached(rdtype, name)
        if cached is not None:
            return list(cached)
        import dns.exception
        import dns.resolver

        try:
            answer = await self._resolver().resolve(name, rdtype, raise_on_no_answer=False)
        except (dns.exception.DNSException, OSError) as e:
            log.debug("%s %s: %s", rdtype, name, e)
            self._store(rdtype, name, [], _NEGATIVE_TTL)
            return []
        records = list(answer) if answer.rrset is not None else []
        ttl = float(answer.rrset.ttl) if answer.rrset is not None else _NEGATIVE_TTL
        self._store(rdtype, name, records, max(ttl, 1.0))
        return records

    async def _srv(self, name: str) -> list[SrvRecord]:
        rrs = await self._query(name, "SRV")
        return order_srv(SrvRecord(r.priority, r.weight, r.port, str(r.target).rstrip(".")) for r in rrs)

    async def _targets_from_srv(self, names: list[tuple[str, str]]) -> list[Target]:
        out: list[Target] = []
        for srv_name, proto in names:
            for rec in await self._srv(srv_name):
                for ip in await self.resolve_host(rec.target):
                    out.append(Target(proto, ip, rec.port))
            if out:
                return out
        return out

    async def locate(
        self,
        host: str,
        port: int | None = None,
        transport: str | None = None,
        secure: bool = False,
    ) -> list[Target]:
        """RFC 3263 §4: the ordered targets for a URI's host/port/transport."""
        p = plan(host, port, transport, secure, self.supported)
        if p.targets:
            return list(p.targets)
        if p.a_host is not None:
            proto = p.proto or "udp"
            return [Target(proto, ip, p.port or 5060) for ip in await self.resolve_host(p.a_host)]
        if p.naptr_host is not None:
            rrs = await self._query(p.naptr_host, "NAPTR")
            naptrs = [
                NaptrRecord(
                    r.order,
                    r.preference,
                    r.flags.decode() if isinstance(r.flags, bytes) else str(r.flags),
                    r.service.decode() if isinstance(r.service, bytes) else str(r.service),
                    str(r.replacement),
                )
                for r in rrs
            ]
            ordered = order_naptr(naptrs, self.supported, secure)
            if ordered:
                found = await self._targets_from_srv(ordered)
                if found:
                    return found
        if p.srv_names:
            found = await self._targets_from_srv(list(p.srv_names))
            if found:
                return found
        proto = p.proto or ("tls" if secure else "udp")
        return [Target(proto, ip, DEFAULT_PORT.get(proto, 5060)) for ip in await self.resolve_host(p.host)]
