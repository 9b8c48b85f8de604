"""rtpengine -- media relay through rtpengine (Kamailio's ``rtpengine``
module; SER 0.9's ``force_rtp_proxy()`` spelling on top).

``rtpengine_offer/answer/delete/manage([flags])`` send the SDP of the
message being routed (a request in request/branch/failure routes, a reply
in ``onreply_route``) to an rtpengine instance over its ng protocol and put
the SDP it returns (its own address and ports) in place of the body.  The
reply path is the script's: call ``rtpengine_answer()`` or
``rtpengine_manage()`` in the ``onreply_route`` armed by ``t_on_reply``,
as Kamailio's users do, and ``force_rtp_proxy()`` there as SER 0.9's did.

A body that is not ``application/sdp`` (or none) is left untouched and the
function is false, with a log line, without asking rtpengine (Kamailio's
"can't extract body").  An SDP that rtpengine cannot parse (no ``c=``, a
broken ``m=`` line) comes back as an ng ``error``: false, the body left
untouched, rtpengine's reason in the log.  When no instance answers within
``rtpengine_tout_ms`` x ``rtpengine_retr`` each, the function is false
after that time (the script decides: typically a 503) and an error line
names the instances tried; an instance that did not answer is skipped for
``rtpengine_disable_tout`` seconds.

Nothing here runs per message unless the script calls these functions: the
control socket is opened at start only when instances are configured.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import re
import socket
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from sipexpress.core.context import RequestContext
from sipexpress.core.registry import (
    ConfigError,
    Fixup,
    FixupEnv,
    Handler,
    MgmtCommand,
    MgmtError,
    MgmtReply,
    Module,
    Param,
    RouteType,
    ScriptFunction,
)
from sipexpress.modules.rtpengine.bencode import Encodable, Value
from sipexpress.modules.rtpengine.ng import (
    Exchange,
    Flags,
    NgError,
    Node,
    NodeSet,
    Outcome,
    build_command,
    parse_flags,
    parse_sockets,
    text,
)
from sipexpress.modules.tm.cell import Transaction
from sipexpress.sip.errors import SipParseError
from sipexpress.sip.message import SipMessage

if TYPE_CHECKING:
    from sipexpress.core.api import CoreAPI

log = logging.getLogger("sipexpress.rtpengine")

_ANY = RouteType.ANY  # Kamailio's ANY_ROUTE

#: SER 0.9 nathelper's force_rtp_proxy() letters -> rtpengine flags
#: (``l`` and ``f`` are read by force_rtp_proxy itself)
RTPPROXY_LETTERS: dict[str, str] = {
    "a": "asymmetric",
    "i": "direction=internal",
    "e": "direction=external",
    "r": "trust-address",
    "l": "",
    "f": "",
}


#: the mark of an SDP a relay has already handled (SER 0.9's nathelper)
NORTPPROXY = re.compile(rb"(?m)^a=nortpproxy:yes\r?$")


def _fixup_flags(args: Sequence[Any], env: FixupEnv) -> Sequence[Any]:
    try:
        return (parse_flags(str(args[0]) if args else ""),)
    except NgError as e:
        raise ConfigError(str(e)) from None


def _fixup_rtpproxy(args: Sequence[Any], env: FixupEnv) -> Sequence[Any]:
    letters = str(args[0]) if args else ""
    words = []
    for c in letters:
        if c not in RTPPROXY_LETTERS:
            raise ConfigError(f"force_rtp_proxy: unknown flag {c!r} (known: {''.join(RTPPROXY_LETTERS)})")
        if RTPPROXY_LETTERS[c]:
            words.append(RTPPROXY_LETTERS[c])
    if len(args) > 1 and str(args[1]):
        words.append(f"media-address={args[1]}")
    return (parse_flags(" ".join(words)), "l" in letters, "f" in letters)


def sdp_body(msg: SipMessage) -> bytes | None:
    """The body when it is an SDP (Content-Type ``application/sdp``), else
    None."""
    ctype = msg.header("content-type")
    if ctype is None or ctype.split(";", 1)[0].strip().lower() != "application/sdp":
        return None
    body = msg.body
    return body or None


class _Control(asyncio.DatagramProtocol):
    """The ng control socket: replies go to the exchange of their cookie."""

    def __init__(self, module: RtpengineModule) -> None:
        self.module = module

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self.module.datagram(data, (str(addr[0]), int(addr[1])))

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable of a dead instance: its timeout decides
        log.debug("rtpengine: control socket: %s", exc)


class RtpengineModule(Module):
    name = "rtpengine"
    params = (
        Param(
            "rtpengine_sock",
            str,
            "",
            "rtpengine instances: 'udp:IP:PORT[=WEIGHT] ...' (space or ';' separated; "
            "repeated modparams add instances)",
        ),
        Param("rtpengine_tout_ms", int, 1000, "wait this long for a reply before sending again (ms)"),
        Param("rtpengine_retr", int, 5, "send a command this many times to one instance before the next"),
        Param("rtpengine_disable_tout", int, 60, "skip an instance that did not answer for this long (s)"),
    )
    counters: ClassVar[tuple[tuple[str, str], ...]] = (
        ("offers", "offer commands answered"),
        ("answers", "answer commands answered"),
        ("deletes", "delete commands answered"),
        ("errors", "commands rtpengine answered with an error"),
        ("timeouts", "instances that did not answer a command (then disabled)"),
        ("unavailable", "commands for which no instance answered"),
    )

    def __init__(self, core: CoreAPI) -> None:
        super().__init__(core)
        self.offers = self.answers = self.deletes = 0
        self.errors = self.timeouts = self.unavailable = 0
        self._socks: list[str] = []
        self.nodes = NodeSet([], 60.0)
        self._transports: dict[int, asyncio.DatagramTransport] = {}
        self._addr: dict[str, tuple[int, tuple[str, int]]] = {}  # url -> (family, sockaddr)
        self._pending: dict[str, tuple[Exchange, asyncio.Future[None]]] = {}
        self._cookies = itertools.count(1)
        self._cookie_prefix = f"{os.getpid()}_"

    def set_param(self, name: str, value: Any) -> None:
        super().set_param(name, value)
        if name == "rtpengine_sock":  # Kamailio takes the modparam several times
            self._socks.append(str(value))

    # -- life cycle -------------------------------------------------------
    async def start(self) -> None:
        try:
            nodes = parse_sockets(" ".join(self._socks))
        except NgError as e:
            raise ConfigError(str(e)) from None
        for n in ("rtpengine_tout_ms", "rtpengine_retr"):
            if int(self.values[n]) < 1:
                raise ConfigError(f"rtpengine: {n} must be at least 1")
        self.nodes = NodeSet(nodes, float(self.values["rtpengine_disable_tout"]))
        if not nodes:
            log.warning("rtpengine: no rtpengine_sock configured; the rtpengine functions will be false")
            return
        loop = asyncio.get_running_loop()
        for node in nodes:
            try:
                infos = await loop.getaddrinfo(node.host, node.port, type=socket.SOCK_DGRAM)
            except OSError as e:
                raise ConfigError(f"rtpengine: cannot resolve {node.url}: {e}") from None
            family, _, _, _, sockaddr = infos[0]
            self._addr[node.url] = (int(family), (str(sockaddr[0]), int(sockaddr[1])))
            if family not in self._transports:
                local = ("::", 0) if family == socket.AF_INET6 else ("0.0.0.0", 0)
                transport, _ = await loop.create_datagram_endpoint(
                    lambda: _Control(self), local_addr=local, family=family
                )
                self._transports[int(family)] = transport
        log.info("rtpengine: instances %s", ", ".join(f"{n.url} (weight {n.weight})" for n in nodes))

    async def stop(self) -> None:
        for _ex, fut in self._pending.values():
            if not fut.done():
                fut.set_result(None)
        for t in self._transports.values():
            t.close()
        self._transports.clear()

    # -- the ng exchange --------------------------------------------------
    def datagram(self, data: bytes, addr: tuple[str, int]) -> None:
        sp = data.find(b" ")
        entry = self._pending.get(data[:sp].decode("ascii", "replace")) if sp > 0 else None
        if entry is None:
            return  # a late reply to a command given up on, or noise
        ex, fut = entry
        if ex.receive(addr, data) and not fut.done():
            fut.set_result(None)

    def _flush(self, ex: Exchange) -> None:
        for s in ex.datagrams():
            family, sockaddr = self._addr[s.node.url]
            self._transports[family].sendto(s.data, sockaddr)

    async def command(
        self, call_id: str, cmd: dict[str, Encodable], nodes: NodeSet | None = None
    ) -> dict[bytes, Value] | None:
        """Send one command (with failover among ``nodes``, by default the
        configured ones); the reply dictionary, or None when no instance
        answered (logged)."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        cookie = f"{self._cookie_prefix}{next(self._cookies)}"
        ex = Exchange(
            nodes or self.nodes,
            call_id,
            cookie,
            cmd,
            started,
            timeout=int(self.values["rtpengine_tout_ms"]) / 1000.0,
            retries=int(self.values["rtpengine_retr"]),
        )
        fut: asyncio.Future[None] = loop.create_future()
        self._pending[cookie] = (ex, fut)
        try:
            self._flush(ex)
            while not ex.done:
                deadline = ex.timer()
                assert deadline is not None
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(fut), max(0.0, deadline - loop.time()))
                if fut.done() and not ex.done:
                    break  # stopping
                before = len(ex.tried)
                ex.handle_timer(loop.time())
                for n in ex.tried[before:]:
                    self.timeouts += 1
                    log.error(
                        "rtpengine: %s did not answer %s for Call-ID %s; disabled for %s s",
                        n.url,
                        cmd["command"],
                        call_id,
                        self.values["rtpengine_disable_tout"],
                    )
                self._flush(ex)
        finally:
            self._pending.pop(cookie, None)
        if ex.outcome is not Outcome.ANSWERED or ex.reply is None:
            self.unavailable += 1
            tried = ", ".join(n.url for n in ex.tried) or "none enabled"
            log.error(
                "rtpengine: no rtpengine instance answered %s for Call-ID %s after %.2f s (tried: %s)",
                cmd["command"],
                call_id,
                loop.time() - started,
                tried,
            )
            return None
        return ex.reply

    # -- script functions -------------------------------------------------
    def functions(self) -> Sequence[ScriptFunction]:
        def f(
            name: str,
            handler: Handler,
            doc: str,
            fixup: Fixup = _fixup_flags,
            arities: tuple[int, ...] = (0, 1),
        ) -> ScriptFunction:
            return ScriptFunction(name, handler, arities, fixup, _ANY, True, doc)

        return (
            f(
                "rtpengine_offer",
                self.offer,
                "send the SDP to rtpengine as an offer, put its answer in the body",
            ),
            f(
                "rtpengine_answer",
                self.answer,
                "send the SDP to rtpengine as an answer, put its answer in the body",
            ),
            f("rtpengine_delete", self.delete, "end the call's media session in rtpengine"),
            f("rtpengine_manage", self.manage, "offer, answer or delete as the message calls for"),
            f(
                "force_rtp_proxy",
                self.force_rtp_proxy,
                "SER 0.9: offer in requests, answer in replies (flags a i e r l f; second argument: media address)",
                _fixup_rtpproxy,
                (0, 1, 2),
            ),
            f("unforce_rtp_proxy", self.delete, "SER 0.9: end the media session", _fixup_flags, (0,)),
        )

    async def offer(self, ctx: RequestContext, flags: Flags) -> int:
        return await self._sdp_command(ctx, "offer", flags)

    async def answer(self, ctx: RequestContext, flags: Flags) -> int:
        return await self._sdp_command(ctx, "answer", flags)

    async def force_rtp_proxy(self, ctx: RequestContext, flags: Flags, lookup: bool, force: bool) -> int:
        """SER 0.9: an SDP marked ``a=nortpproxy:yes`` (by another relay, or
        ``fix_nated_sdp`` bit 4) is left alone (false) unless ``f``."""
        command = "answer" if lookup or not ctx.msg.is_request else "offer"
        body = sdp_body(ctx.msg)
        if not force and body is not None and NORTPPROXY.search(body):
            log.warning(
                "rtpengine: force_rtp_proxy: the SDP is marked a=nortpproxy:yes; left alone ('f' forces)"
            )
            return -1
        return await self._sdp_command(ctx, command, flags)

    async def manage(self, ctx: RequestContext, flags: Flags) -> int:
        """Kamailio's rtpengine_manage: BYE/CANCEL and negative replies
        delete; an INVITE's or UPDATE's SDP is an offer (in failure_route:
        delete); an ACK's SDP an answer; a reply's SDP an answer, or an
        offer when the INVITE had none (late offer).  A message without a
        body is true with nothing done (Kamailio's is false), so that a
        script can refuse a call when the relay fails; a body that is not
        SDP is false, as in offer/answer."""
        msg = ctx.msg
        if msg.is_request:
            method = msg.method
            if method in ("BYE", "CANCEL"):
                return await self.delete(ctx, flags)
            if not msg.body:
                return 1  # nothing to relay (a late offer comes in the reply)
            if method == "INVITE":
                if ctx.route_type is RouteType.FAILURE:
                    return await self.delete(ctx, flags)
                return await self.offer(ctx, flags)
            if method == "UPDATE":
                return await self.offer(ctx, flags)
            if method == "ACK":
                return await self.answer(ctx, flags)
            return -1
        if msg.status >= 300:
            return await self.delete(ctx, flags)
        if not msg.body:
            return 1
        t = ctx.transaction
        request = t.request if isinstance(t, Transaction) else None
        if request is None or request.method == "UPDATE" or sdp_body(request) is not None:
            return await self.answer(ctx, flags)
        return await self.offer(ctx, flags)

    async def delete(self, ctx: RequestContext, flags: Flags) -> int:
        cmd = self._command(ctx, "delete", flags, None)
        if cmd is None:
            return -1
        reply = await self._ask(ctx, cmd)
        self.nodes.forget(str(cmd["call-id"]))
        if reply is None:
            return -1
        self.deletes += 1
        return 1

    async def _sdp_command(self, ctx: RequestContext, command: str, flags: Flags) -> int:
        msg = ctx.msg
        sdp = sdp_body(msg)
        if sdp is None:
            log.error(
                "rtpengine: %s: the %s has no SDP body (Content-Type %r); left untouched",
                command,
                "request" if msg.is_request else "reply",
                msg.header("content-type"),
            )
            return -1
        cmd = self._command(ctx, command, flags, sdp)
        if cmd is None:
            return -1
        reply = await self._ask(ctx, cmd)
        if reply is None:
            return -1
        new = reply.get(b"sdp")
        if not isinstance(new, bytes) or not new:
            log.error("rtpengine: %s for Call-ID %s: the reply holds no SDP", command, cmd["call-id"])
            self.errors += 1
            return -1
        msg.set_body(new)
        if command == "offer":
            self.offers += 1
        else:
            self.answers += 1
        return 1

    def _command(
        self, ctx: RequestContext, command: str, flags: Flags, sdp: bytes | None
    ) -> dict[str, Encodable] | None:
        msg = ctx.msg
        try:
            call_id = msg.call_id
            from_tag = msg.from_.params.get("tag")
            to_tag = msg.to.params.get("tag")
            via_branch = self._via_branch(msg, flags.via_branch) if flags.via_branch else None
        except SipParseError as e:
            log.error("rtpengine: %s: cannot read the message's dialog headers: %s", command, e.reason)
            return None
        received = None
        if msg.is_request:  # an onreply_route's receive info is the request's
            rcv = ctx.rcv
            received = ("IP6" if rcv.af == socket.AF_INET6 else "IP4", rcv.src_ip)
        return build_command(
            command,
            flags,
            call_id=call_id,
            from_tag=from_tag,
            to_tag=to_tag,
            sdp=sdp,
            via_branch=via_branch,
            received_from=received,
        )

    @staticmethod
    def _via_branch(msg: SipMessage, which: str) -> str | None:
        """Kamailio's via-branch=1|2|auto: the branch of the first or the
        second Via (auto: the first in requests, the second -- the one
        before ours -- in replies)."""
        n = 0 if which == "1" or (which.startswith("auto") and msg.is_request) else 1
        vias = msg.vias
        return vias[n].branch if len(vias) > n else None

    async def _ask(self, ctx: RequestContext, cmd: dict[str, Encodable]) -> dict[bytes, Value] | None:
        call_id = str(cmd["call-id"])
        reply = await self.command(call_id, cmd)
        if reply is None:
            return None
        result = text(reply, "result")
        if result != "ok":
            self.errors += 1
            reason = text(reply, "error-reason") or f"result {result!r}"
            log.error("rtpengine: %s for Call-ID %s failed: %s", cmd["command"], call_id, reason)
            return None
        return reply

    # -- management -------------------------------------------------------
    def commands(self) -> Sequence[MgmtCommand]:
        return (
            MgmtCommand(
                "rtpengine.show",
                self._mgmt_show,
                "the rtpengine instances: url, weight, disabled, seconds until rechecked",
            ),
            MgmtCommand(
                "rtpengine.enable",
                self._mgmt_enable,
                "enable (1) or disable (0) an instance",
                "url 0|1",
            ),
            MgmtCommand("rtpengine.ping", self._mgmt_ping, "ping every instance (ng ping)"),
        )

    def _node_rows(self) -> list[dict[str, Any]]:
        now = self.core.now()
        return [
            {
                "url": n.url,
                "weight": n.weight,
                "disabled": 0 if n.enabled(now) else 1,
                "admin_disabled": 1 if n.disabled_by_admin else 0,
                "recheck_in": max(0, round(n.disabled_until - now)),
            }
            for n in self.nodes.nodes
        ]

    async def _mgmt_show(self, params: list[str]) -> MgmtReply:
        rows = self._node_rows()
        lines = "".join(
            f"{r['url']} weight={r['weight']} disabled={r['disabled']} recheck_in={r['recheck_in']}\n"
            for r in rows
        )
        return MgmtReply(data=rows, text=lines)

    async def _mgmt_enable(self, params: list[str]) -> MgmtReply:
        if len(params) != 2 or params[1] not in ("0", "1"):
            raise MgmtError(400, "usage: rtpengine.enable url 0|1")
        node = self.nodes.find(params[0])
        if node is None:
            raise MgmtError(404, f"no rtpengine instance {params[0]}")
        node.disabled_by_admin = params[1] == "0"
        node.disabled_until = 0.0
        return MgmtReply()

    async def _mgmt_ping(self, params: list[str]) -> MgmtReply:
        rows = []
        for node in self.nodes.nodes:
            reply = await self._ping(node)
            rows.append({"url": node.url, "answered": reply})
        lines = "".join(f"{r['url']} {'pong' if r['answered'] else 'no answer'}\n" for r in rows)
        return MgmtReply(data=rows, text=lines)

    async def _ping(self, node: Node) -> bool:
        """One ng ping to this instance alone; its state follows the answer."""
        one = NodeSet([Node(node.url, node.host, node.port)], self.nodes.disable_timeout)
        reply = await self.command(f"ping-{node.url}", {"command": "ping"}, one)
        now = self.core.now()
        if reply is not None and text(reply, "result") == "pong":
            node.disabled_until = 0.0
            return True
        self.nodes.failed(node, now)
        return False
