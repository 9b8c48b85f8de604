"""nathelper — phones behind NAT (SER 0.9's and Kamailio's ``nathelper``).

Script functions:

* ``nat_uac_test(flags)``: true when a test chosen by the flag bits says the
  sender is behind a NAT (1 Contact private, 2 Via host differs from the
  source, 4 Via host private, 8 SDP private, 16 Via port differs from the
  source port; Kamailio's 32 source private, 128 Contact port differs);
* ``fix_nated_contact()``: the first Contact's host:port := the source;
* ``fix_nated_register()``: a REGISTER's source (``sip:ip:port``) is saved
  as the binding's ``received`` by the next ``save`` (Kamailio's
  ``received_avp``); ``lookup`` then sends to it (``dst_uri``);
* ``add_rcv_param([1])``: ``;received="sip:ip:port"`` on every Contact
  (with 1: in the contact URI), which ``save`` stores the same way;
* ``fix_nated_sdp(flags[, ip])``: 1 add ``a=direction:active``, 2 c= := the
  source IP (or ip), 4 add ``a=nortpproxy:yes``, 8 o= := the source IP.

``force_rport()`` is a core action (:mod:`sipexpress.script.core_actions`).

Media relay, SER 0.9's spelling: ``force_rtp_proxy([flags[, ip]])`` and
``unforce_rtp_proxy()`` were nathelper's, configured by its ``rtpproxy_sock``
(with ``rtpproxy_disable``, ``rtpproxy_tout`` in seconds, ``rtpproxy_retr``,
``rtpproxy_disable_tout``).  They are kept here so that a SER 0.9 NAT
config loading only nathelper works unchanged, and mapped onto the
rtpengine module's implementation: with ``rtpproxy_sock`` set, nathelper
owns an rtpengine client (an :class:`RtpengineModule` instance of its own,
its parameters taken from the ``rtpproxy_*`` ones); without it, the
functions use the loaded ``rtpengine`` module's instances.  The socket
speaks rtpengine's ng protocol, not rtpproxy's: ``rtpproxy_sock`` must name
an rtpengine ng control socket (``udp:IP:PORT``).

Keep-alives (SER's ``natping_interval``): every interval each valid binding
of every usrloc table (all of them, or those with FL_NAT when
``ping_nated_only``) gets a ping from the socket its REGISTER came in on, to
its ``received`` address (else its contact): an OPTIONS request over UDP
(``natping_method``, Kamailio's ``sipping_method``; ``"null"``: SER 0.9's
default of four zero bytes), a CRLFCRLF
keep-alive (RFC 5626 §4.4.1) on the binding's TCP connection.  The NAT's
binding sees a packet at least every interval and stays open.  Replies to
the pings are absorbed here (a reply hook that only exists when pinging is
on).  Which pings go where is planned by :func:`plan_pings`, a pure
function of the bindings and the sockets; the timer only sends its result.

Nothing here runs per message unless the script calls a function.
"""

from __future__ import annotations

import ipaddress
import logging
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from sipexpress.core.context import Proto, RequestContext
from sipexpress.core.periodic import Periodic
from sipexpress.core.registry import ConfigError, FixupEnv, Module, Param, RouteType, ScriptFunction
from sipexpress.db.engine import DbError
from sipexpress.modules.usrloc.records import FL_NAT, Ucontact
from sipexpress.sip import nat
from sipexpress.sip.errors import SipError
from sipexpress.sip.message import SipMessage
from sipexpress.sip.uri import SipUri

if TYPE_CHECKING:
    from sipexpress.core.api import CoreAPI
    from sipexpress.modules.rtpengine.module import RtpengineModule

log = logging.getLogger("sipexpress.nathelper")

ANY_ROUTE = RouteType.ANY
REQ_REPLY = RouteType.REQUEST | RouteType.ONREPLY | RouteType.FAILURE | RouteType.BRANCH

#: what CRLF keep-alives are on a stream (RFC 5626 §4.4.1); SER 0.9's UDP ping
CRLF_PING = b"\r\n\r\n"
ZERO_PING = b"\x00\x00\x00\x00"


def _fixup_flags(args: Sequence[Any], env: FixupEnv) -> Sequence[Any]:
    try:
        n = int(str(args[0]).strip(), 0)
    except ValueError:
        raise ConfigError(f"nathelper: flags {args[0]!r} is not a number") from None
    if n < 0:
        raise ConfigError(f"nathelper: flags {n} is negative")
    return (n, *args[1:])


# -- keep-alive planning (pure) -------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ping:
    """One keep-alive to send: from local socket (proto, ip, port) to
    (dst_ip, dst_port); ``uri`` is the contact pinged (the OPTIONS' R-URI)."""

    proto: Proto
    local_ip: str
    local_port: int
    dst_ip: str
    dst_port: int
    uri: str


def _socket_of(c: Ucontact) -> tuple[Proto, str, int] | None:
    """``udp:1.2.3.4:5060`` (usrloc's socket column) -> its parts."""
    if not c.socket:
        return None
    proto, _, rest = c.socket.partition(":")
    host, _, port = rest.rpartition(":")
    try:
        return Proto[proto.upper()], host.strip("[]"), int(port)
    except (KeyError, ValueError):
        return None


def ping_target(c: Ucontact) -> tuple[Proto, str, int] | None:
    """Where a binding is reached: its ``received`` address if any (the
    NAT's public side), else its contact URI; None for names (a NAT
    keep-alive to a host name would ping whatever DNS says) and garbage."""
    try:
        uri = SipUri.parse(c.received or c.uri)
    except SipError:
        return None
    host = uri.host.strip("[]")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return None
    t = (uri.transport or "").lower()
    if t in ("ws", "wss"):
        return None  # a WebSocket connection keeps itself open (ws_keepalive_interval)
    proto = Proto.TCP if t == "tcp" else Proto.TLS if t == "tls" or uri.secure else Proto.UDP
    port = uri.port or (5061 if proto is Proto.TLS else 5060)
    return proto, host, port


def plan_pings(contacts: Iterable[Ucontact], now: float, nated_only: bool) -> list[Ping]:
    """The keep-alives of one round: one per valid binding (with FL_NAT
    when ``nated_only``) that was not registered through a Path,
    duplicates (several AORs behind one NAT binding) pinged once."""
    out: list[Ping] = []
    seen: set[tuple[Proto, str, int]] = set()
    for c in contacts:
        if not c.valid(now) or (nated_only and not c.flags & FL_NAT):
            continue
        if c.path:
            continue  # registered through an edge proxy: the NAT is the edge's (or the UA's, RFC 5626) to keep open
        target = ping_target(c)
        if target is None or target in seen:
            continue
        seen.add(target)
        sock = _socket_of(c)
        proto, ip, port = target
        local_ip, local_port = (sock[1], sock[2]) if sock is not None and sock[0] is proto else ("", 0)
        out.append(Ping(proto, local_ip, local_port, ip, port, c.uri))
    return out


def options_ping(p: Ping, from_uri: str, method: str, callid: str, proto: Proto) -> bytes:
    """The OPTIONS (``sipping_method``) a keep-alive sends (Kamailio's
    sipping): a request the phone answers, so both directions of the NAT
    binding see traffic."""
    branch = "z9hG4bK" + secrets.token_hex(8)
    host = nat.hostport(p.local_ip or "0.0.0.0", p.local_port or 5060)
    return (
        f"{method} {p.uri} SIP/2.0\r\n"
        f"Via: SIP/2.0/{proto.token} {host};branch={branch}\r\n"
        f"From: <{from_uri}>;tag={secrets.token_hex(6)}\r\n"
        f"To: <{p.uri}>\r\n"
        f"Call-ID: {callid}\r\n"
        f"CSeq: 1 {method}\r\n"
        "Max-Forwards: 70\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


# -- the module ---------------------------------------------------------------------


class NathelperModule(Module):
    name = "nathelper"
    params: ClassVar[tuple[Param, ...]] = (
        Param("natping_interval", int, 0, "seconds between NAT keep-alives to registered contacts; 0 off"),
        Param("ping_nated_only", int, 0, "1: ping only contacts saved with the NAT flag (FL_NAT)"),
        Param(
            "natping_method",
            str,
            "OPTIONS",
            'request method of the UDP keep-alive; "null": 4 zero bytes (SER 0.9\'s default)',
        ),
        Param("sipping_method", str, "", "Kamailio's name for natping_method"),
        Param("sipping_from", str, "", "From URI of the keep-alives (default sip:pinger@<socket address>)"),
        Param(
            "append_sdp_oldmediaip", int, 1, "fix_nated_sdp(2) records each replaced address (a=oldmediaip)"
        ),
        Param(
            "received_avp", int, 42, "accepted for SER/Kamailio configs (save() reads fix_nated_register's)"
        ),
        Param(
            "rtpproxy_sock",
            str,
            "",
            "SER 0.9: the media relay of force_rtp_proxy: an rtpengine ng socket 'udp:IP:PORT' (not rtpproxy's)",
        ),
        Param("rtpproxy_disable", int, 0, "SER 0.9: 1 force_rtp_proxy/unforce_rtp_proxy are false"),
        Param("rtpproxy_tout", int, 1, "SER 0.9: seconds to wait for the relay's reply before sending again"),
        Param("rtpproxy_retr", int, 5, "SER 0.9: times a command is sent to the relay"),
        Param("rtpproxy_disable_tout", int, 60, "SER 0.9: seconds a relay that did not answer is skipped"),
    )
    counters = (
        ("natping_sent", "NAT keep-alives sent"),
        ("natping_replies", "replies to the keep-alives received (and absorbed)"),
    )

    def __init__(self, core: CoreAPI) -> None:
        super().__init__(core)
        self.natping_sent = 0
        self.natping_replies = 0
        self._pinger: Periodic | None = None
        self._callid_prefix = f"nhping-{secrets.token_hex(6)}-"
        self._seq = 0
        # the media relay of force_rtp_proxy (an rtpengine module instance:
        # ours when rtpproxy_sock is set, else the loaded one), set at start
        self._relay: RtpengineModule | None = None
        self._own_relay = False

    def functions(self) -> Sequence[ScriptFunction]:
        return (
            ScriptFunction(
                "nat_uac_test",
                self.nat_uac_test,
                (1,),
                _fixup_flags,
                ANY_ROUTE,
                doc="true when a test chosen by the flag bits finds the sender behind a NAT",
            ),
            ScriptFunction(
                "fix_nated_contact",
                self.fix_nated_contact,
                (0,),
                None,
                REQ_REPLY,
                doc="first Contact's host:port := the packet's source",
            ),
            ScriptFunction(
                "fix_nated_register",
                self.fix_nated_register,
                (0,),
                None,
                RouteType.REQUEST,
                doc="save() stores the REGISTER's source as the binding's received address",
            ),
            ScriptFunction(
                "add_rcv_param",
                self.add_rcv_param,
                (0, 1),
                _fixup_add_rcv,
                RouteType.REQUEST,
                doc='add ;received="sip:src" to each Contact (1: to the contact URI)',
            ),
            ScriptFunction(
                "fix_nated_sdp",
                self.fix_nated_sdp,
                (1, 2),
                _fixup_flags,
                REQ_REPLY,
                doc="1 a=direction:active, 2 c= := source IP, 4 a=nortpproxy:yes, 8 o= := source IP",
            ),
            ScriptFunction(
                "force_rtp_proxy",
                self.force_rtp_proxy,
                (0, 1, 2),
                _fixup_force_rtp_proxy,
                ANY_ROUTE,
                True,
                "SER 0.9: the SDP through the media relay (rtpengine): offer in requests, answer in replies",
            ),
            ScriptFunction(
                "unforce_rtp_proxy",
                self.unforce_rtp_proxy,
                (0,),
                _fixup_unforce_rtp_proxy,
                ANY_ROUTE,
                True,
                "SER 0.9: end the call's session in the media relay (rtpengine)",
            ),
        )

    # -- script functions ------------------------------------------------------
    def nat_uac_test(self, ctx: RequestContext, flags: int) -> int:
        rcv = ctx.rcv
        return 1 if nat.nat_uac_test(ctx.msg, rcv.src_ip, rcv.src_port, flags, rcv.proto.token) else -1

    def fix_nated_contact(self, ctx: RequestContext) -> int:
        rcv = ctx.rcv
        value = nat.fixed_contact_value(ctx.msg, rcv.src_ip, rcv.src_port)
        if value is None:
            return -1
        ctx.msg.replace_header("Contact", value)
        return 1

    def fix_nated_register(self, ctx: RequestContext) -> int:
        if not ctx.msg.is_request or ctx.msg.method != "REGISTER":
            return -1
        rcv = ctx.rcv
        ctx.data["received"] = nat.received_uri(rcv.src_ip, rcv.src_port, rcv.proto.token)
        return 1

    def add_rcv_param(self, ctx: RequestContext, in_uri: bool = False) -> int:
        rcv = ctx.rcv
        if in_uri and rcv.proto is not Proto.UDP:
            return -1  # a URI parameter carries no transport (Kamailio: UDP only)
        received = nat.received_uri(rcv.src_ip, rcv.src_port, rcv.proto.token)
        value = nat.received_param_value(ctx.msg, received, in_uri)
        if value is None:
            return -1
        ctx.msg.replace_header("Contact", value)
        return 1

    def fix_nated_sdp(self, ctx: RequestContext, flags: int, ip: str | None = None) -> int:
        msg = ctx.msg
        try:
            body = msg.body
        except SipError:
            return -1
        if not body:
            return -1
        fixed = nat.fix_sdp(body, flags, ip or ctx.rcv.src_ip, bool(self.values["append_sdp_oldmediaip"]))
        if fixed is None:
            return -1
        new_body, changed = fixed
        if not changed:
            return 2  # Kamailio: nothing needed changing
        msg.set_body(new_body)
        return 1

    # -- media relay (SER 0.9's rtpproxy functions on rtpengine) ---------------------
    async def force_rtp_proxy(self, ctx: RequestContext, flags: Any, lookup: bool, force: bool) -> int:
        relay = self._media_relay("force_rtp_proxy")
        return -1 if relay is None else await relay.force_rtp_proxy(ctx, flags, lookup, force)

    async def unforce_rtp_proxy(self, ctx: RequestContext, flags: Any) -> int:
        relay = self._media_relay("unforce_rtp_proxy")
        return -1 if relay is None else await relay.delete(ctx, flags)

    def _media_relay(self, fn: str) -> RtpengineModule | None:
        if self._relay is None:
            if self.values["rtpproxy_disable"]:
                return None
            from sipexpress.modules.rtpengine.module import RtpengineModule

            relay = self.core.module("rtpengine")
            if not isinstance(relay, RtpengineModule):
                log.error(
                    'nathelper: %s: no media relay: set modparam("nathelper", "rtpproxy_sock", '
                    '"udp:IP:PORT") to an rtpengine ng socket, or load the rtpengine module',
                    fn,
                )
                return None
            self._relay = relay
        return self._relay

    async def _start_relay(self) -> None:
        sock = str(self.values["rtpproxy_sock"]).strip()
        if not sock or self.values["rtpproxy_disable"]:
            return
        for n in ("rtpproxy_tout", "rtpproxy_retr"):
            if int(self.values[n]) < 1:
                raise ConfigError(f"nathelper: {n} must be at least 1")
        # imported only here: nothing of the relay is loaded when unused
        from sipexpress.modules.rtpengine.module import RtpengineModule

        relay = RtpengineModule(self.core)
        relay.set_param("rtpengine_sock", sock)
        relay.set_param("rtpengine_tout_ms", int(self.values["rtpproxy_tout"]) * 1000)
        relay.set_param("rtpengine_retr", int(self.values["rtpproxy_retr"]))
        relay.set_param("rtpengine_disable_tout", int(self.values["rtpproxy_disable_tout"]))
        try:
            await relay.start()
        except ConfigError as e:
            raise ConfigError(
                f"nathelper: rtpproxy_sock {sock!r} (an rtpengine ng socket, udp:IP:PORT): {e}"
            ) from None
        self._relay, self._own_relay = relay, True

    # -- keep-alives --------------------------------------------------------------
    async def start(self) -> None:
        await self._start_relay()
        interval = int(self.values["natping_interval"])
        if interval < 0:
            raise ConfigError(f"nathelper: natping_interval {interval} is negative")
        if interval == 0:
            return
        if self.values["sipping_method"]:
            self.values["natping_method"] = self.values["sipping_method"]
        method = str(self.values["natping_method"]).upper()
        self.values["natping_method"] = "" if method == "NULL" else method
        if method and any(not ch.isalpha() for ch in method):
            raise ConfigError(f"nathelper: natping_method {method!r} is not a method name")
        if self.values["natping_method"]:
            self.core.reply_hooks.append(self._absorb_reply)
        worker = self.core.worker
        if worker is not None and worker.index != 0:
            return  # every worker holds every binding (usrloc replicates): worker 0 pings
        self._pinger = Periodic("nathelper: keep-alive round", interval, self.ping_round)
        self._pinger.start()

    async def stop(self) -> None:
        if self._own_relay and self._relay is not None:
            await self._relay.stop()
        if self._pinger is not None:
            await self._pinger.stop()

    async def _contacts(self, now: float, nated_only: bool) -> list[Ucontact]:
        """The bindings to ping, of every usrloc table: from memory, or with
        db_mode 3 from the store (only the NAT-flagged ones when
        ``ping_nated_only``)."""
        ul = self.core.module("usrloc")
        out: list[Ucontact] = []
        for d in list(getattr(ul, "domains", {}).values()):
            try:
                out += await d.flagged(now, FL_NAT if nated_only else 0)
            except DbError as e:
                log.error("nathelper: keep-alives: cannot read usrloc table '%s': %s", d.name, e)
        return out

    async def ping_round(self) -> int:
        """Send one round of keep-alives; how many went out."""
        ul = self.core.module("usrloc")
        now = float(ul.clock()) if ul is not None and hasattr(ul, "clock") else self.core.now()
        nated_only = bool(self.values["ping_nated_only"])
        pings = plan_pings(await self._contacts(now, nated_only), now, nated_only)
        sent = 0
        for p in pings:
            if self._send(p):
                sent += 1
        self.natping_sent += sent
        return sent

    def _udp_listener(self, p: Ping) -> Any:
        family_v6 = ":" in p.dst_ip
        fallback = None
        for lst in getattr(self.core, "udp_listeners", ()):
            if (":" in lst.ip) != family_v6:
                continue
            if lst.ip == p.local_ip and lst.port == p.local_port:
                return lst
            fallback = fallback or lst
        return fallback

    def _send(self, p: Ping) -> bool:
        if p.proto is Proto.UDP:
            lst = self._udp_listener(p)
            if lst is None:
                return False
            method = str(self.values["natping_method"])
            if not method:
                return bool(lst.sendto(ZERO_PING, p.dst_ip, p.dst_port))
            self._seq += 1
            from_uri = str(self.values["sipping_from"]) or f"sip:pinger@{nat.hostport(lst.ip, lst.port)}"
            sent = Ping(p.proto, lst.ip, lst.port, p.dst_ip, p.dst_port, p.uri)
            data = options_ping(sent, from_uri, method, f"{self._callid_prefix}{self._seq}", p.proto)
            return bool(lst.sendto(data, p.dst_ip, p.dst_port))
        # a stream: only on the binding's open connection (opening one from
        # here would not reach a phone behind a NAT anyway)
        tcp = getattr(self.core, "tcp", None)
        conn = tcp.lookup(p.dst_ip, p.dst_port) if tcp is not None else None
        if conn is None:
            return False
        return bool(conn.send(CRLF_PING))

    def _absorb_reply(self, msg: SipMessage, rcv: Any) -> bool:
        try:
            ours = msg.call_id.startswith(self._callid_prefix)
        except SipError:
            return False
        if ours:
            self.natping_replies += 1
        return ours


def _fixup_force_rtp_proxy(args: Sequence[Any], env: FixupEnv) -> Sequence[Any]:
    from sipexpress.modules.rtpengine.module import fixup_rtpproxy

    return fixup_rtpproxy(args, env)


def _fixup_unforce_rtp_proxy(args: Sequence[Any], env: FixupEnv) -> Sequence[Any]:
    from sipexpress.modules.rtpengine.module import fixup_flags

    return fixup_flags(args, env)


def _fixup_add_rcv(args: Sequence[Any], env: FixupEnv) -> Sequence[Any]:
    if not args:
        return ()
    v = str(args[0]).strip()
    if v not in ("0", "1"):
        raise ConfigError(f"add_rcv_param: flag {args[0]!r} must be 0 or 1")
    return (v == "1",)


__all__ = ["NathelperModule", "Ping", "options_ping", "ping_target", "plan_pings"]
