"""Stateless forwarding: SER's ``forward()`` and ``forward_reply``.

A request (:meth:`StatelessForwarder.forward`) gets ``received``/``rport``
on the previous hop's Via (RFC 3261 §18.2.1, RFC 3581), one hop less in
Max-Forwards (``483`` at zero), our Via with a branch that is a hash of the
incoming branch (RFC 3261 §16.11) so retransmissions keep it, and goes to
the request URI / ``ctx.dst_uri`` located per RFC 3263, or to an explicit
host:port.  Numeric URIs need no DNS: their destination is kept
(:meth:`uri_destination`, which tm asks too).

A reply (:meth:`forward_reply`) loses our top Via and goes to the next
Via's ``received``/``rport`` or sent-by.
"""

from __future__ import annotations

import ipaddress
import logging
from typing import TYPE_CHECKING, Final

from sipexpress.core import errors
from sipexpress.core.context import Proto, ReceiveInfo, RequestContext
from sipexpress.sip.cache import BoundedCache
from sipexpress.sip.errors import SipError, SipParseError
from sipexpress.sip.forwarding import (
    default_port,
    normalize_host,
    stateless_branch,
    via_destination,
    via_prefix,
)
from sipexpress.sip.uri import SipUri

if TYPE_CHECKING:
    from sipexpress.core.api import Listener
    from sipexpress.core.server import Core
    from sipexpress.sip.message import SipMessage

log = logging.getLogger("sipexpress.core")

PROTO_BY_NAME: Final = {p.name: p for p in Proto}
_WS_TRANSPORTS: Final = frozenset(("ws", "wss"))
# enum members as module constants: ``Proto.TCP`` is a slow class lookup on 3.11
_UDP: Final = Proto.UDP
_TCP: Final = Proto.TCP
_TLS: Final = Proto.TLS
#: entries of the numeric-host and URI-destination caches before they are emptied


class StatelessForwarder:
    """Forwarding without state for one :class:`Core`, with its caches."""

    def __init__(self, core: Core) -> None:
        self.core = core
        # both keyed by text from the wire: bounded in bytes
        self._numeric: BoundedCache[str, bool] = BoundedCache(1 << 20, 1024)
        #: (URI, proto, in-proto) -> (proto, ip, port): uri_destination() for numeric hosts
        self._uri_dest: BoundedCache[tuple[str, Proto | None, Proto], tuple[Proto, str, int]] = BoundedCache(
            2 << 20, 2048
        )

    def is_numeric(self, host: str) -> bool:
        r = self._numeric.get(host)
        if r is None:
            try:
                ipaddress.ip_address(host.strip("[]"))
                r = True
            except ValueError:
                r = False
            self._numeric.put(host, r, len(host))
        return r

    # ------------------------------------------------------------------
    # requests
    # ------------------------------------------------------------------
    async def forward(
        self,
        ctx: RequestContext,
        host: str | None = None,
        port: int | None = None,
        proto: Proto | None = None,
    ) -> int:
        msg = ctx.msg
        if not msg.is_request:
            return self.forward_reply(msg, ctx.rcv)
        if not ctx.decrement_max_forwards():
            if msg.method != "ACK":
                self.core.send_reply(ctx, 483, "Too Many Hops")
            ctx.data[errors.SER_ERROR_KEY] = errors.E_BAD_REQ
            return -1
        # where to
        rproto = ctx.rcv.proto
        if host is None:
            uri_text = ctx.dst_uri or ctx.ruri
            known = self._uri_dest.get((uri_text, proto, rproto))
            if known is not None:
                return self._forward_to(ctx, *known)
            try:
                uri = SipUri.parse(uri_text) if ctx.dst_uri else ctx.parsed_ruri
            except SipParseError as e:
                log.error("forward: bad URI %r: %s", uri_text, e)
                ctx.data[errors.SER_ERROR_KEY] = errors.E_BAD_URI
                return errors.E_BAD_URI
            dest = await self.uri_destination(uri_text, proto, rproto, uri)
            if isinstance(dest, int):
                if dest == errors.E_BAD_ADDRESS:
                    log.error("forward: cannot resolve %s", uri.maddr or uri.host)
                ctx.data[errors.SER_ERROR_KEY] = dest
                return dest
            return self._forward_to(ctx, *dest)
        hop = await self.host_destination(host, port, proto or rproto)
        if isinstance(hop, int):
            log.error("forward: cannot resolve %s", host)
            ctx.data[errors.SER_ERROR_KEY] = hop
            return hop
        return self._forward_to(ctx, *hop)

    async def host_destination(
        self, host: str, port: int | None, proto: Proto
    ) -> tuple[Proto, str, int] | int:
        if self.is_numeric(host):
            ip = normalize_host(host)
        else:
            addrs = await self.core.resolver.resolve_host(host)
            if not addrs:
                return errors.E_BAD_ADDRESS
            ip = addrs[0]
        dport = port or default_port(proto.name)
        if proto is _TLS and self.core.tls is not None and not self.is_numeric(host):
            self.core.tls.expect_name(ip, dport, host)
        return proto, ip, dport

    def known_destination(
        self, uri_text: str, proto: Proto | None, rproto: Proto
    ) -> tuple[Proto, str, int] | None:
        return self._uri_dest.get((uri_text, proto, rproto))

    async def uri_destination(
        self, uri_text: str, proto: Proto | None, rproto: Proto, uri: SipUri | None = None
    ) -> tuple[Proto, str, int] | int:
        """RFC 3263 (``locate``): the first target ``(proto, ip, port)`` of a
        SIP/SIPS URI, sent with ``proto`` if given (else the URI's transport,
        else as RFC 3263 §4.1 and SER's get_proto choose: UDP for a numeric
        ``sip:`` host, whatever the request came over); ``E_BAD_URI`` or
        ``E_BAD_ADDRESS`` when there is none.  Numeric hosts involve no DNS:
        their answer is kept (forward() and tm ask for every request)."""
        key = (uri_text, proto, rproto)
        dest = self._uri_dest.get(key)
        if dest is not None:
            return dest
        if uri is None:
            try:
                uri = SipUri.parse(uri_text)
            except (SipParseError, SipError):
                return errors.E_BAD_URI
        if uri.scheme not in ("sip", "sips"):
            return errors.E_BAD_URI
        thost = uri.maddr or uri.host
        numeric = self.is_numeric(thost)
        transport = uri.transport
        if transport is None and proto is not None:
            transport = proto.name.lower()
        if transport in _WS_TRANSPORTS and thost.lower().endswith(".invalid"):
            return self._ws_client(thost.lower())
        targets = await self.core.resolver.locate(thost, uri.port, transport, uri.scheme == "sips")
        if not targets:
            return errors.E_BAD_ADDRESS
        t = targets[0]
        dest = PROTO_BY_NAME.get(t.proto.upper(), Proto.UDP), t.ip.strip("[]"), t.port
        if numeric:
            self._uri_dest.put(key, dest, len(key[0]) + len(dest[1]))
        elif dest[0] is _TLS and self.core.tls is not None:
            # the certificate is checked against the URI's host (RFC 5922 §7.2)
            self.core.tls.expect_name(dest[1], dest[2], thost)
        return dest

    def _ws_client(self, host: str) -> tuple[Proto, str, int]:
        """A WebSocket client's own ``.invalid`` host (RFC 7118 §5; its
        ``transport=ws`` stands for WSS too): the connection it names; when
        there is none, sending fails at once."""
        streams = self.core.streams
        for proto in streams:
            if streams[proto].lookup(host, 0) is not None:
                return proto, host, 0
        return next(iter(streams), Proto.WS), host, 0

    def _forward_to(self, ctx: RequestContext, dproto: Proto, dip: str, dport: int) -> int:
        core = self.core
        lst = core.pick_listener(ctx, dproto, dip)
        if lst is None:
            log.error("forward: no %s socket to send to %s", dproto.name.lower(), dip)
            ctx.data[errors.SER_ERROR_KEY] = errors.E_NO_SOCKET
            return errors.E_NO_SOCKET
        if dproto is _TCP and "tcp_alias" in ctx.data:
            core.force_tcp_alias(ctx)
        if not lst.sendto(self.build_forward(ctx, dproto, lst), dip, dport):
            core.stats.send_failures += 1
            ctx.data[errors.SER_ERROR_KEY] = errors.E_SEND
            return errors.E_SEND
        core.stats.fwd_requests += 1
        return 1

    def build_forward(self, ctx: RequestContext, proto: Proto, lst: Listener) -> bytes:
        """The request as it leaves from listener ``lst``: received/rport on
        the previous Via, our Via on top, the new request URI.  ``ctx.msg``
        is left as it was apart from the previous hop's Via and
        Max-Forwards."""
        msg = ctx.msg
        core = self.core
        core.fix_top_via(ctx)
        out_uri = ctx.ruri
        data = ctx.data
        options = core.options
        adv = data.get("advertised_address") or options.get("advertised_address")
        via = via_prefix(
            proto.name,
            lst.via_host,
            lst.port,
            adv,
            data.get("advertised_port") or options.get("advertised_port"),
        )
        via += stateless_branch(msg, out_uri)
        double_rr = data.get("rr_double")
        if double_rr is not None:
            msg = double_rr.for_branch(msg, proto, str(adv) if adv else lst.via_host, lst.port) or msg
        return msg.serialize_with_via(via, out_uri)

    # ------------------------------------------------------------------
    # replies
    # ------------------------------------------------------------------
    def forward_reply(self, msg: SipMessage, rcv: ReceiveInfo) -> int:
        """SER's ``forward_reply``: drop our Via, send to the next one."""
        core = self.core
        vias = msg.vias
        if core.options.get("check_via"):
            v1 = vias[0]
            proto = PROTO_BY_NAME.get(v1.transport.upper())
            if not core.is_myself(v1.host, v1.port, proto):
                log.info("forward_reply: host in first via != me: %s", v1.sent_by)
                core.stats.dropped += 1
                return -1
        if len(vias) < 2:
            log.info("forward_reply: no 2nd via found in reply from %s:%d", rcv.src_ip, rcv.src_port)
            core.stats.dropped += 1
            return -1
        via2 = vias[1]
        proto = PROTO_BY_NAME.get(via2.transport.upper())
        if proto is None:
            log.info("forward_reply: unsupported transport %s", via2.transport)
            return -1
        ip, port = via_destination(via2)
        if not self.is_numeric(ip):
            # a host name in Via without received=: SER resolved it here
            core.spawn(self._forward_reply_resolve(msg, ip, port, proto))
            return 1
        msg.remove_top_via()
        if not core.send(proto, ip, port, msg.serialize()):
            return errors.E_SEND
        core.stats.fwd_replies += 1
        return 1

    async def _forward_reply_resolve(self, msg: SipMessage, host: str, port: int, proto: Proto) -> None:
        core = self.core
        addrs = await core.resolver.resolve_host(host)
        if not addrs:
            log.info("forward_reply: cannot resolve %s", host)
            return
        msg.remove_top_via()
        if core.send(proto, addrs[0], port, msg.serialize()):
            core.stats.fwd_replies += 1
