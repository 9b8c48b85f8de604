"""``myself``: the addresses and names that are ours (SER's ``check_self``).

The listen sockets (as bound, or as configured before binding), their host
names (a ``listen`` name, reverse DNS, the host name when listening on
every interface), ``advertised_address`` and the ``alias`` entries.
``uri==myself`` in a script and loose routing ask :meth:`Myself.is_myself`
for every request: the answer is a set lookup.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from typing import TYPE_CHECKING

from sipexpress.core.context import Proto
from sipexpress.core.options import SocketSpec
from sipexpress.core.registry import ConfigError
from sipexpress.core.transport import local_addresses
from sipexpress.sip.forwarding import SIP_PORT, SIPS_PORT, normalize_host

if TYPE_CHECKING:
    from sipexpress.core.server import Core

log = logging.getLogger("sipexpress.core")


class Myself:
    """The sockets and names of one :class:`Core`."""

    def __init__(self, core: Core) -> None:
        self.core = core
        # (host, port, proto) of listen sockets and their names; built on first use
        self._socks: set[tuple[str, int, Proto]] | None = None
        self._hostport: set[tuple[str, int]] = set()
        self._aliases: dict[str, set[int]] = {}
        self._names_extra: list[tuple[str, int, Proto]] = []

    def reset(self) -> None:
        """The options changed: build again on next use."""
        self._socks = None

    def listen_specs(self) -> list[tuple[Proto, str, int]]:
        """The sockets to bind: ``listen`` entries expanded (no proto = UDP
        and TCP; no port = ``port``, ``tls_port_no`` for ``tls:``;
        0.0.0.0/:: = every local address)."""
        port = int(self.core.options.get("port") or SIP_PORT)
        tls_port = int(self.core.options.get("tls_port_no") or SIPS_PORT)
        specs: list[SocketSpec] = list(self.core.options.get("listen") or [])
        if not specs:
            specs = [SocketSpec(None, "0.0.0.0", port)]
        protos = [Proto.UDP] if self.core.options.get("disable_tcp") else [Proto.UDP, Proto.TCP]
        out: list[tuple[Proto, str, int]] = []
        local: list[str] | None = None
        for spec in specs:
            hosts: list[str]
            if spec.host in ("0.0.0.0", "::"):
                if local is None:
                    local = local_addresses()
                want_v6 = spec.host == "::"
                hosts = [a for a in local if (":" in a) == want_v6]
            elif spec.is_ip:
                hosts = [normalize_host(spec.host)]
            else:
                hosts = _resolve_now(spec.host)
                if not hosts:
                    raise ConfigError(f"listen: cannot resolve '{spec.host}'")
                self._names_extra.extend(
                    (spec.host.lower(), spec.port or (tls_port if p is Proto.TLS else port), p)
                    for p in ([spec.proto] if spec.proto else protos)
                )
            for p in [spec.proto] if spec.proto else protos:
                if p is Proto.TCP and self.core.options.get("disable_tcp"):
                    continue
                if p is Proto.TLS and self.core.options.get("disable_tls"):
                    log.warning("listen=%s: disable_tls is set, ignored", spec)
                    continue
                for h in hosts:
                    item = (p, h, spec.port or (tls_port if p is Proto.TLS else port))
                    if item not in out:
                        out.append(item)
        return out

    def build(self, sockets: list[tuple[Proto, str, int]] | None = None) -> None:
        if sockets is None:
            sockets = [(lst.proto, lst.ip, lst.port) for lst in self.core.udp_listeners]
            sockets += [(lst.proto, lst.ip, lst.port) for lst in self.core.stream_listeners()]
            if not sockets:
                try:
                    sockets = self.listen_specs()
                except ConfigError:
                    sockets = []
        socks: set[tuple[str, int, Proto]] = set()
        for proto, ip, port in sockets:
            socks.add((normalize_host(ip), port, proto))
            if ip.startswith("127.") or ip == "::1":
                socks.add(("localhost", port, proto))
        for name, port, proto in self._names_extra:
            socks.add((name, port, proto))
        adv = self.core.options.get("advertised_address")
        if adv:
            adv_port = int(self.core.options.get("advertised_port") or 0)
            for _, _, port in sockets or [(Proto.UDP, "", SIP_PORT)]:
                for p in (Proto.UDP, Proto.TCP, Proto.TLS):
                    socks.add((normalize_host(str(adv)), adv_port or port, p))
        self._socks = socks
        self._hostport = {(h, p) for h, p, _ in socks}
        aliases: dict[str, set[int]] = {}
        for spec in self.core.options.get("alias") or []:
            aliases.setdefault(normalize_host(spec.host), set()).add(spec.port)
        self._aliases = aliases

    def add_names(self, names: list[str]) -> None:
        """Extra host names of our sockets (reverse DNS, hostname)."""
        if self._socks is None:
            self.build()
        assert self._socks is not None
        extra = set()
        for name in names:
            for _, port, proto in list(self._socks):
                extra.add((name.lower(), port, proto))
        self._socks |= extra
        self._hostport |= {(h, p) for h, p, _ in extra}

    def is_myself(self, host: str, port: int | None = None, proto: Proto | None = None) -> bool:
        """SER's ``check_self``: host (name or IP, case-insensitive) and port
        of one of our sockets, or an ``alias`` (alias without port = any
        port).  A missing port means 5060 (5061 for TLS)."""
        if self._socks is None:
            self.build()
        h = normalize_host(host)
        p = port or (SIPS_PORT if proto is Proto.TLS else SIP_PORT)
        if proto is None:
            if (h, p) in self._hostport:
                return True
        elif (h, p, proto) in self._socks:  # type: ignore[operator]
            return True
        ports = self._aliases.get(h)
        return ports is not None and (0 in ports or p in ports)

    async def add_reverse_names(self) -> None:
        """SER adds the names of listen addresses (reverse DNS, host name)
        to ``myself``; bounded so a dead DNS cannot stall start-up."""
        loop = self.core.loop
        assert loop is not None
        names: set[str] = set()
        specs = self.core.options.get("listen") or []
        if not specs or any(sp.host in ("0.0.0.0", "::") for sp in specs):
            # listening on every interface: the host's own name is ours too
            with contextlib.suppress(OSError):
                names.add(socket.gethostname())
        ips = {lst.ip for lst in self.core.udp_listeners}
        ips |= {lst.ip for lst in self.core.stream_listeners()}

        def lookup() -> set[str]:
            found: set[str] = set()
            for ip in ips:
                try:
                    name, aliases, _ = socket.gethostbyaddr(ip)
                except (OSError, UnicodeError):
                    continue
                found.add(name)
                found.update(aliases)
            return found

        if self.core.options.get("rev_dns") or any(not ip.startswith("127.") for ip in ips):
            with contextlib.suppress(TimeoutError, OSError):
                names |= await asyncio.wait_for(loop.run_in_executor(None, lookup), 1.5)
        if names:
            self.add_names(sorted(names))


def _resolve_now(host: str) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_DGRAM)
    except (OSError, UnicodeError):
        return []
    return list(dict.fromkeys(str(i[4][0]) for i in infos))
