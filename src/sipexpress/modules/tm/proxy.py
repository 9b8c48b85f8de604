"""The stateful proxy core (RFC 3261 §16) on top of the §17 machines.

Theory of operation
-------------------
A :class:`Transaction` is SER's ``struct cell``: one server machine (the
upstream side, ``uas``), the request as it was relayed (``request``), and
one :class:`Branch` per destination, each with an INVITE or non-INVITE
client machine (and, when cancelled, a CANCEL client machine).  The
:class:`TransactionLayer` owns two tables -- server transactions by their
RFC 3261 §17.2.3 key (or the RFC 2543 tuple), branches by the ``branch``
parameter we generated -- and one :class:`TimerHeap` for every machine.

Requests: the core's pre-script hook (:meth:`TransactionLayer.request_hook`)
absorbs retransmissions and ACKs of negative replies before the script
runs; ``t_relay`` creates the transaction, sends ``100`` for INVITE and
forks to the request URI and every branch of the destination set.

Replies (:meth:`TransactionLayer.reply_hook`) are fed to their branch's
client machine; what the machine passes up goes through
``onreply_route`` and the relay rules of SER's ``t_should_relay_response``:
100 absorbed, other 1xx relayed while no final was sent, every 2xx relayed
at once (an INVITE's other branches get CANCEL), negative replies kept
until every branch is final, then the best one (a 6xx, else the lowest
code) goes through ``failure_route`` (serial forking) or upstream.
Timer B/C/F expiry, CANCEL of a branch that had no reply yet and transport
errors give the branch a local final reply (408, 487, 503) that competes
like a received one.
"""

from __future__ import annotations

import logging
import math
import os
import re
import secrets
import zlib
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from sipexpress.core import errors
from sipexpress.core.context import Proto, ReceiveInfo, RequestContext
from sipexpress.core.registry import RouteType
from sipexpress.modules.tm.stats import TABLE_ENTRIES, TmStats
from sipexpress.modules.tm.timers import TimerHeap
from sipexpress.sip.errors import SipError, SipParseError
from sipexpress.sip.forwarding import build_ack, build_cancel, via_prefix
from sipexpress.sip.message import build_reply
from sipexpress.sip.transaction import (
    MAGIC_COOKIE,
    Action,
    ClientInvite,
    ClientNonInvite,
    PassResponse,
    Send,
    ServerInvite,
    ServerNonInvite,
    State,
    Terminated,
    Timeout,
    TimerConfig,
    TransactionStateError,
    TransportError,
)
from sipexpress.sip.uri import SipUri

if TYPE_CHECKING:
    from sipexpress.core.api import CoreAPI, Listener
    from sipexpress.sip.message import SipMessage

log = logging.getLogger("sipexpress.tm")

TRYING_REASON = "trying -- your call is important to us"
_REPLY_PROCESSING = "tm: reply processing"
_NEGATIVE_DONE = (State.COMPLETED, State.CONFIRMED)
_LR = re.compile(r";\s*lr(?:[;=>\s]|$)", re.IGNORECASE)

ServerKey = tuple[Any, ...]


# separators may hold a folded line end
_BRANCH = re.compile(rb";[ \t\r\n]*branch[ \t\r\n]*=[ \t\r\n]*([^;, \t\r\n]+)", re.IGNORECASE)


def _top_branch(msg: SipMessage) -> str | None:
    """The branch parameter of the top Via, from the raw line (the reply
    fast path: no decoding, no Via parsing)."""
    line = msg.first_field_line("via")
    if line is None:
        return None
    comma = line.find(b",")
    m = _BRANCH.search(line, line.find(b":") + 1, comma if comma > 0 else len(line))
    return m.group(1).decode("utf-8", "surrogateescape") if m is not None else None


def _strip_top_via(msg: SipMessage) -> bytes:
    """A received reply without its top Via (ours): the raw bytes with that
    line cut out when it holds a single value."""
    top = msg.first_field_line("via")
    if top is not None and b'"' not in top:
        first = top + b"\r\n"  # a bare-LF message takes the general way below
        raw = msg.serialize()
        i = raw.find(b"\n" + first) + 1  # at a line start
        if i > 0:
            comma = first.find(b",")
            if comma < 0:
                return raw[:i] + raw[i + len(first) :]
            # "Via: ours, theirs" (SIPp writes its Vias so): keep the rest
            colon = first.find(b":")
            rest = first[comma + 1 :].lstrip(b" \t")
            return raw[:i] + first[: colon + 1] + b" " + rest + raw[i + len(first) :]
    msg.remove_top_via()
    return msg.serialize()


class Branch:
    """One outgoing leg (SER's ``struct ua_client``)."""

    __slots__ = (
        "cancel",
        "cancel_pending",
        "data",
        "dst",
        "final",
        "id",
        "index",
        "last_status",
        "local_reason",
        "machine",
        "reply",
        "sched",
        "status",
        "trans",
        "uri",
        "via",
    )

    def __init__(self, trans: Transaction, index: int, uri: str, bid: str) -> None:
        self.trans = trans
        self.index = index
        self.uri = uri
        self.id = bid  # our branch parameter
        self.via = ""  # our Via header value
        self.data = b""
        self.dst: tuple[Proto, str, int] = (Proto.UDP, "", 0)
        self.machine: ClientInvite | ClientNonInvite | None = None
        self.cancel: ClientNonInvite | None = None
        self.cancel_pending = False  # cancelled before any reply: CANCEL on the first 1xx
        self.last_status = 0  # last status received (0 = nothing yet)
        self.status = 0  # final status of the branch (received or local), 0 = pending
        self.final = False
        self.reply: SipMessage | None = None  # the final reply received
        self.local_reason = ""
        self.sched = math.inf

    def next_timer(self) -> float | None:
        a = self.machine.next_timer() if self.machine is not None else None
        b = self.cancel.next_timer() if self.cancel is not None else None
        if a is None:
            return b
        if b is None:
            return a
        return min(a, b)

    def on_timer(self, now: float) -> None:
        if self.machine is None and self.cancel is None:
            return  # freed
        layer = self.trans.layer
        if self.machine is not None:
            layer._branch_actions(self, self.machine.handle_timer(now), now)
        if self.cancel is not None:
            layer._cancel_actions(self, self.cancel.handle_timer(now))

    @property
    def alive(self) -> bool:
        return (self.machine is not None and self.machine.state is not State.TERMINATED) or (
            self.cancel is not None and self.cancel.state is not State.TERMINATED
        )


class Transaction:
    """SER's ``struct cell``: the server side plus the branches."""

    __slots__ = (
        "branches",
        "ctx_data",
        "deleted",
        "dst_at_relay",
        "failure_running",
        "final_status",
        "flags",
        "guard",
        "hash_index",
        "is_invite",
        "key",
        "label",
        "layer",
        "legacy_negative",
        "local",
        "method",
        "noisy",
        "on_failure",
        "on_reply",
        "rcv",
        "relayed",
        "replied_locally",
        "request",
        "ruri_at_relay",
        "sched",
        "send_socket",
        "started",
        "to_tag",
        "uac_future",
        "uas",
        "waiting",
        "winner_status",
    )

    def __init__(
        self,
        layer: TransactionLayer,
        request: SipMessage,
        rcv: ReceiveInfo,
        key: ServerKey | None,
        hash_index: int,
        label: int,
        local: bool = False,
    ) -> None:
        self.layer = layer
        self.started = layer.core.now()
        self.request = request
        self.rcv = rcv
        self.key = key
        self.hash_index = hash_index
        self.label = label
        self.method = request.method
        self.is_invite = request.method == "INVITE"
        reliable = rcv.proto is not Proto.UDP
        self.uas: ServerInvite | ServerNonInvite | None = None
        if not local:
            cfg = layer.server_timers
            self.uas = ServerInvite(reliable, cfg) if self.is_invite else ServerNonInvite(reliable, cfg)
        self.local = local
        self.branches: list[Branch] = []
        self.flags = 0
        self.on_failure: str | None = None
        self.legacy_negative = False  # armed by t_on_negative (2003 reply_route semantics)
        self.on_reply: str | None = None
        self.noisy = False  # acc marks transactions it wants a 408 for
        self.final_status = 0  # final status sent upstream (0 = none yet)
        self.winner_status = 0
        self.relayed = False  # t_relay forwarded at least once
        self.replied_locally = False
        self.failure_running = False
        self.ruri_at_relay = request.ruri
        self.dst_at_relay: str | None = None
        self.to_tag: str | None = None
        self.send_socket: Any = None
        self.ctx_data: dict[str, Any] = {}
        self.uac_future: Any = None
        self.waiting = False
        self.deleted = False
        self.guard = math.inf  # t_newtran without a reply: give up then
        self.sched = math.inf

    def __repr__(self) -> str:
        return f"<Transaction {self.hash_index}:{self.label} {self.method} final={self.final_status}>"

    # timer protocol (server side)
    def next_timer(self) -> float | None:
        t = self.uas.next_timer() if self.uas is not None else None
        if self.guard < math.inf and not self.final_status and not self.relayed:
            return self.guard if t is None else min(t, self.guard)
        return t

    def on_timer(self, now: float) -> None:
        if now >= self.guard and not self.final_status and not self.relayed:
            log.info("tm: %r created by t_newtran got no reply: released", self)
            self.guard = math.inf
            self.layer.release(self)
            return
        if self.uas is not None:
            self.layer._uas_actions(self, self.uas.handle_timer(now))

    @property
    def id(self) -> str:
        """``hash:label`` as SER printed transaction identifiers."""
        return f"{self.hash_index}:{self.label}"

    @property
    def last_status(self) -> int:
        """The last status sent upstream."""
        return self.uas.last_status if self.uas is not None else self.final_status


class TransactionLayer:
    """Transaction tables, the proxy logic and the timers of one server."""

    def __init__(self, core: CoreAPI, params: dict[str, Any]) -> None:
        self.core = core
        self.params = params
        self.stats = TmStats()
        self.server: dict[ServerKey, Transaction] = {}
        self.client: dict[str, Branch] = {}
        self.timers = TimerHeap(core.now, core.call_later)
        self.on_complete: list[Callable[[Transaction, int], None]] = []
        # run when a transaction is created from a request (acc marks flagged INVITEs noisy)
        self.on_create: list[Callable[[Transaction], None]] = []
        self._label = 0
        self._via_prefixes: dict[tuple[Any, ...], str] = {}
        self._secret = secrets.token_hex(3)
        self.to_tag_prefix = zlib.crc32(f"tm-{os.getpid()}-{self._secret}".encode()) & 0xFFFFFFFF
        self.configure(params)

    def configure(self, p: dict[str, Any]) -> None:
        t1 = float(p.get("retr_timer1p1", 1))
        t2 = float(p.get("retr_timer2", 4))
        fr = float(p.get("fr_timer", 30))
        fr_inv = float(p.get("fr_inv_timer", 120))
        wt = float(p.get("wt_timer", 5))
        self.ruri_matching = bool(p.get("ruri_matching", 1))
        self.via1_matching = bool(p.get("via1_matching", 1))
        self.noisy_ctimer = bool(p.get("noisy_ctimer", 0))
        self.client_timers = TimerConfig(
            t1=t1,
            t2=t2,
            t4=wt,
            timer_b=fr,
            timer_c=fr_inv,
            timer_d=wt,
            timer_f=fr,
            timer_k=wt,
            timer_m=wt,
            cap_invite=True,
            restart_c=bool(p.get("restart_fr_on_each_reply", 1)),
        )
        self.cancel_timers = TimerConfig(t1=t1, t2=t2, t4=wt, timer_f=fr, timer_k=wt)
        self.server_timers = TimerConfig(t1=t1, t2=t2, t4=wt, timer_h=fr, timer_i=wt, timer_j=wt, timer_l=wt)

    # ------------------------------------------------------------------
    # keys and lookup
    # ------------------------------------------------------------------
    def server_key(self, msg: SipMessage, method: str | None = None) -> ServerKey:
        """RFC 3261 §17.2.3 (branch, sent-by, method; ACK -> INVITE) or, for
        RFC 2543 requests, Call-ID, From tag, CSeq number, method and -- per
        ``ruri_matching``/``via1_matching`` -- the Request-URI and top Via."""
        m = method or msg.method
        if m == "ACK":
            m = "INVITE"
        via = msg.via1
        branch = via.branch
        if branch is not None and len(branch) > 7 and branch.startswith(MAGIC_COOKIE):
            return (branch, via.host, via.port, m)
        return (
            msg.call_id,
            msg.from_.params.get("tag"),
            msg.cseq.num,
            m,
            msg.ruri if self.ruri_matching else None,
            str(via) if self.via1_matching else None,
        )

    def key_for(self, ctx: RequestContext) -> ServerKey:
        key: ServerKey | None = ctx.data.get("tm_key")
        if key is None:
            key = self.server_key(ctx.msg)
            ctx.data["tm_key"] = key
        return key

    def lookup(self, msg: SipMessage, method: str | None = None) -> Transaction | None:
        """The transaction of a request (``method="INVITE"`` for the INVITE a
        CANCEL or ACK refers to)."""
        try:
            return self.server.get(self.server_key(msg, method))
        except SipParseError:
            return None

    def transaction_id(self, msg: SipMessage) -> str | None:
        """The id of the transaction a message belongs to (log lines)."""
        if msg.is_request:
            t = self.lookup(msg)
            return t.id if t is not None else None
        bid = _top_branch(msg)
        br = self.client.get(bid) if bid is not None else None
        return br.trans.id if br is not None else None

    # ------------------------------------------------------------------
    # core hooks
    # ------------------------------------------------------------------
    def request_hook(self, ctx: RequestContext) -> bool:
        """Before the script: absorb request retransmissions (re-sending the
        last reply) and ACKs to our negative INVITE replies."""
        if not self.server:
            return False
        msg = ctx.msg
        key = self.key_for(ctx)
        t = self.server.get(key)
        if t is None or t.uas is None:
            return False
        now = self.core.now()
        if msg.method == "ACK":
            if t.uas.state in _NEGATIVE_DONE:
                self._uas_actions(t, t.uas.receive_request(now, ack=True))
                return True
            return False  # ACK to 2xx: end to end, the script forwards it
        if t.uas.response is None and t.ctx_data.get("replicate"):
            return False  # the script replies itself (e.g. save() + t_replicate)
        self.stats.retransmissions += 1
        self._uas_actions(t, t.uas.receive_request(now))
        return True

    def reply_hook(self, msg: SipMessage, rcv: ReceiveInfo) -> bool:
        """A reply from downstream: ours if its top Via branch is."""
        bid = _top_branch(msg)
        if bid is None:
            return False
        br = self.client.get(bid)
        if br is None:
            return False
        try:
            is_cancel = msg.cseq.method == "CANCEL"
        except SipParseError:
            return True
        now = self.core.now()
        if is_cancel:
            if br.cancel is not None:
                self._cancel_actions(br, br.cancel.receive_response(msg.status, now, msg))
            return True
        m = br.machine
        if m is None:
            return True
        self._branch_actions(br, m.receive_response(msg.status, now, msg), now)
        return True

    # ------------------------------------------------------------------
    # action execution
    # ------------------------------------------------------------------
    def _uas_actions(self, t: Transaction, actions: list[Action]) -> None:
        for a in actions:
            if isinstance(a, Send):
                self._send_upstream(t, a.data)
            elif isinstance(a, Terminated):
                self._maybe_free(t)
            elif isinstance(a, TransportError):
                log.info("tm: transport error replying to %s:%d", t.rcv.src_ip, t.rcv.src_port)
        if t.uas is not None and t.uas.state is not State.TERMINATED:
            self.timers.update(t)

    def _send_upstream(self, t: Transaction, data: bytes) -> None:
        rcv = t.rcv
        self.core.send(rcv.proto, rcv.src_ip, rcv.src_port, data, rcv)

    def _branch_actions(self, br: Branch, actions: list[Action], now: float) -> None:
        t = br.trans
        for a in actions:
            if isinstance(a, Send):
                proto, ip, port = br.dst
                if not self.core.send(proto, ip, port, a.data) and not a.retransmission and br.machine:
                    self._branch_actions(br, br.machine.transport_error(now), now)
                    return
            elif isinstance(a, PassResponse):
                if t.on_reply is None and a.status < 300:
                    self._on_reply_sync(br, a.status, a.msg)  # nothing to await
                else:
                    self.core.drive(self._on_reply(br, a.status, a.msg), _REPLY_PROCESSING)
            elif isinstance(a, Timeout):
                self._on_timeout(br, a.timer, now)
            elif isinstance(a, TransportError):
                self._local_final(br, 503, "Service Unavailable")
            elif isinstance(a, Terminated) and not br.alive:
                self.client.pop(br.id, None)
                self._maybe_free(t)
        if br.alive:
            self.timers.update(br)

    def _cancel_actions(self, br: Branch, actions: list[Action]) -> None:
        for a in actions:
            if isinstance(a, Send):
                proto, ip, port = br.dst
                self.core.send(proto, ip, port, a.data)
            elif isinstance(a, Terminated) and not br.alive:
                self.client.pop(br.id, None)
                self._maybe_free(br.trans)
        if br.alive:
            self.timers.update(br)

    # ------------------------------------------------------------------
    # transaction life cycle
    # ------------------------------------------------------------------
    def create(self, ctx: RequestContext, key: ServerKey | None = None) -> Transaction:
        msg = ctx.msg
        if key is None:
            key = self.key_for(ctx)
        slot = zlib.crc32(f"{msg.call_id}{msg.cseq.num}".encode("utf-8", "surrogateescape")) & (
            TABLE_ENTRIES - 1
        )
        self._label += 1
        t = Transaction(self, msg, ctx.rcv, key, slot, self._label)
        t.flags = ctx.flags
        data = ctx.data
        if "tm_on_failure" in data:
            t.on_failure = data.pop("tm_on_failure") or None
            t.legacy_negative = bool(data.pop("tm_legacy", False))
        if "tm_on_reply" in data:
            t.on_reply = data.pop("tm_on_reply") or None
        self.server[key] = t
        self.stats.created(slot, False)
        ctx.transaction = t
        for cb in self.on_create:
            cb(t)
        return t

    def create_local(self, msg: SipMessage, rcv: ReceiveInfo) -> Transaction:
        slot = zlib.crc32(f"{msg.call_id}{msg.cseq.num}".encode("utf-8", "surrogateescape")) & (
            TABLE_ENTRIES - 1
        )
        self._label += 1
        t = Transaction(self, msg, rcv, None, slot, self._label, local=True)
        self.stats.created(slot, True)
        return t

    def _maybe_free(self, t: Transaction) -> None:
        if t.deleted:
            return
        if t.uas is not None and t.uas.state is not State.TERMINATED:
            return
        if t.local and not t.final_status:
            return
        for br in t.branches:
            if br.alive:
                return
        t.deleted = True
        if t.key is not None and self.server.get(t.key) is t:
            del self.server[t.key]
        for br in t.branches:
            self.client.pop(br.id, None)
            br.cancel = None
            br.machine = None  # its build_ack refers back to the branch
            br.reply = None
        t.branches = []  # no reference cycles left: freed without the GC
        self.stats.freed(t.hash_index, t.waiting)

    def arm_guard(self, t: Transaction) -> None:
        """A transaction the script handles itself (``t_newtran``): release
        it if neither a reply nor a relay happens within fr_inv_timer."""
        t.guard = self.core.now() + self.client_timers.value("C")
        self.timers.update(t)

    def release(self, t: Transaction) -> None:
        """``t_release``: stop everything and let the transaction go."""
        if t.uas is not None:
            for _ in t.uas.terminate():
                pass
        for br in t.branches:
            if br.machine is not None:
                br.machine.terminate()
            if br.cancel is not None:
                br.cancel.terminate()
        self._maybe_free(t)

    def _completed(self, t: Transaction, status: int) -> None:
        """The final status went upstream (first final only)."""
        t.final_status = status
        t.waiting = True
        self.stats.waiting += 1
        self.stats.completion(status, self.core.now() - t.started)
        for cb in self.on_complete:
            try:
                cb(t, status)
            except Exception:
                log.exception("tm: completion callback failed")
        fut = t.uac_future
        if fut is not None and not fut.done():
            fut.set_result(status)

    # ------------------------------------------------------------------
    # replying upstream
    # ------------------------------------------------------------------
    def tag_for(self, t: Transaction) -> str:
        if t.to_tag is None:
            t.to_tag = f"{self.to_tag_prefix:08x}-{t.hash_index:x}.{t.label:x}"
        return t.to_tag

    def reply_ctx(self, t: Transaction) -> RequestContext:
        ctx = RequestContext(self.core, t.request, t.rcv)
        ctx.transaction = t
        ctx.flags = t.flags
        ctx.data.update(t.ctx_data)
        return ctx

    def send_local_reply(
        self,
        t: Transaction,
        code: int,
        reason: str,
        ctx: RequestContext | None = None,
        extra_headers: list[str] | None = None,
        body: bytes = b"",
        local: bool = True,
    ) -> int:
        """A stateful reply built by us (``t_reply``, ``100``, local 408/487/500).
        Returns 1, or -1 when the state does not allow it."""
        if t.uas is None:
            return -1
        if ctx is None:
            ctx = self.reply_ctx(t)
        if code == 100:
            data = build_reply(t.request, 100, reason)
        else:
            data = self.core.build_reply(ctx, code, reason, extra_headers, body, self.tag_for(t))
        return self._respond(t, code, data, local)

    def _respond(self, t: Transaction, code: int, data: bytes, local: bool) -> int:
        uas = t.uas
        if uas is None:
            return -1
        try:
            actions = uas.respond(code, data, self.core.now())
        except TransactionStateError as e:
            log.debug("tm: %s", e)
            return -1
        first_final = code >= 200 and not t.final_status
        if first_final:
            if local:
                t.replied_locally = True
                self.stats.replied_locally += 1
            self._completed(t, code)
            if code < 300 and t.is_invite:
                self._cancel_pending(t)
        self._uas_actions(t, actions)
        return 1

    # ------------------------------------------------------------------
    # forwarding
    # ------------------------------------------------------------------
    async def relay(
        self,
        ctx: RequestContext,
        t: Transaction,
        host: str | None = None,
        port: int | None = None,
        proto: Proto | None = None,
    ) -> int:
        """Fork ``t`` to the destination set of ``ctx`` (the request URI and
        branches on the first relay; only the new branches from a
        failure_route).  Returns 1 when at least one branch went out, else a
        SER error code."""
        msg = ctx.msg
        first = not t.relayed
        targets: list[tuple[str, str | None]] = []
        if first and t.ctx_data.get("cancelled"):
            # CANCELled while the script was still working on the INVITE
            self.send_local_reply(t, 487, "Request Terminated", ctx)
            return 0
        if first:
            if not ctx.decrement_max_forwards():
                self.send_local_reply(t, 483, "Too Many Hops", ctx)
                return 0
            self.core.fix_top_via(ctx)
            t.request = msg
            t.ruri_at_relay = ctx.ruri
            t.dst_at_relay = ctx.dst_uri
            t.flags = ctx.flags
            t.send_socket = ctx.send_socket
            for k in ("advertised_address", "advertised_port"):
                if k in ctx.data:
                    t.ctx_data[k] = ctx.data[k]
            targets.append((ctx.ruri, ctx.dst_uri))
            targets += [(b.uri, b.dst_uri) for b in ctx.branches]
        else:
            if t.ctx_data.get("cancelled"):
                ctx.branches = []
                log.info("tm: %r was cancelled: no new branches", t)
                return errors.E_UNSPEC
            targets += [(b.uri, b.dst_uri) for b in ctx.branches]
            if not targets and ctx.new_uri is not None and ctx.new_uri != t.ruri_at_relay:
                targets.append((ctx.ruri, ctx.dst_uri))
            t.flags = ctx.flags
        ctx.branches = []
        if not targets:
            return errors.E_NO_DESTINATION
        t.relayed = True
        route_hop = self._route_hop(t.request) if t.request.has_header("route") else None
        sent = 0
        err = errors.E_BUG
        for uri, dst in targets:
            r = await self._add_branch(t, uri, dst or route_hop, host, port, proto, ctx)
            if r > 0:
                sent += 1
            else:
                err = r
        if sent == 0:
            return err
        return 1

    def _route_hop(self, msg: SipMessage) -> str | None:
        """Loose routing (RFC 3261 §16.12): the next hop is the top Route
        URI when it has ``;lr`` and is not ourselves (the rr module's
        ``loose_route`` normally removes our own entry and sets dst_uri)."""
        try:
            routes = msg.routes
        except SipParseError:
            return None
        if not routes or not _LR.search(routes[0].uri):
            return None
        uri = routes[0].uri
        try:
            u = SipUri.parse(uri)
        except (SipParseError, SipError):
            return None
        if self.core.is_myself(u.host, u.port):
            return None
        return uri

    async def _resolve(
        self, uri_text: str, host: str | None, port: int | None, proto: Proto | None, rproto: Proto
    ) -> tuple[Proto, str, int] | int:
        if host is not None:
            return await self.core.host_destination(host, port, proto or rproto)
        return await self.core.uri_destination(uri_text, proto, rproto)

    async def _add_branch(
        self,
        t: Transaction,
        uri: str,
        next_hop: str | None,
        host: str | None,
        port: int | None,
        proto: Proto | None,
        ctx: RequestContext | None,
    ) -> int:
        rproto = t.rcv.proto
        dest: tuple[Proto, str, int] | int | None = None
        if host is None:
            dest = self.core.known_destination(next_hop or uri, proto, rproto)
        if dest is None:
            dest = await self._resolve(next_hop or uri, host, port, proto, rproto)
        if isinstance(dest, int):
            log.info("tm: cannot resolve next hop for %s", next_hop or uri)
            return dest
        dproto, dip, dport = dest
        core = self.core
        lst = core.pick_listener(ctx, dproto, dip)
        if lst is None:
            return errors.E_NO_SOCKET
        idx = len(t.branches)
        bid = f"{MAGIC_COOKIE}{self._secret}{t.hash_index:x}.{t.label:x}.{idx}"
        br = Branch(t, idx, uri, bid)
        br.via = self._via_prefix(t, dproto, lst) + bid
        br.dst = (dproto, dip, dport)
        br.data = t.request.serialize_with_via(br.via, uri)
        reliable = dproto is not Proto.UDP
        if t.is_invite:
            br.machine = ClientInvite(br.data, reliable, self.client_timers, partial(self._ack_for, br))
        else:
            br.machine = ClientNonInvite(br.data, reliable, self.client_timers)
        t.branches.append(br)
        self.client[bid] = br
        now = core.now()
        actions = br.machine.start(now)
        ok = core.send(dproto, dip, dport, br.data)
        if not ok:
            br.machine.terminate()
            self.client.pop(bid, None)
            br.final = True
            br.status = 503
            br.local_reason = "Service Unavailable"
            return errors.E_SEND
        core.stats.fwd_requests += 1
        for a in actions:
            if not isinstance(a, Send):
                self._branch_actions(br, [a], now)
        self.timers.update(br)
        return 1

    def _via_prefix(self, t: Transaction, dproto: Proto, lst: Listener) -> str:
        """``SIP/2.0/UDP host:port;branch=`` for a branch leaving from
        ``lst`` (advertised_address/port honoured; cached per listener)."""
        opts = self.core.options
        adv = t.ctx_data.get("advertised_address") or opts.get("advertised_address")
        adv_port = t.ctx_data.get("advertised_port") or opts.get("advertised_port")
        key = (dproto, lst, adv, adv_port)
        prefix = self._via_prefixes.get(key)
        if prefix is None:
            prefix = via_prefix(dproto.name, lst.via_host, lst.port, adv, adv_port)
            if len(self._via_prefixes) >= 256:
                self._via_prefixes.clear()
            self._via_prefixes[key] = prefix
        return prefix

    @staticmethod
    def _ack_for(br: Branch, reply: SipMessage | None) -> bytes:
        return build_ack(br.trans.request, br.uri, br.via, reply)

    def _send_cancel(self, br: Branch, now: float) -> None:
        if br.cancel is not None or br.machine is None:
            return
        data = build_cancel(br.trans.request, br.uri, br.via)
        br.cancel = ClientNonInvite(data, br.dst[0] is not Proto.UDP, self.cancel_timers)
        self._cancel_actions(br, br.cancel.start(now))

    def _cancel_branch(self, br: Branch, now: float, local_487: bool = True) -> bool:
        """Cancel one pending branch: CANCEL if it had a provisional reply,
        else stop it and, with ``local_487``, give it a local 487.  True if
        a CANCEL went out."""
        if br.final or br.machine is None:
            return False
        m = br.machine
        if br.last_status >= 100:
            self._send_cancel(br, now)
            self._branch_actions(br, m.cancel(now), now)
            return True
        br.cancel_pending = True
        self._branch_actions(br, m.cancel(now), now)
        if local_487:
            self._local_final(br, 487, "Request Terminated", complete=False)
        return False

    def _cancel_pending(self, t: Transaction) -> None:
        """RFC 3261 §16.7 step 10: CANCEL every other pending branch."""
        now = self.core.now()
        for br in t.branches:
            if not br.final:
                self._cancel_branch(br, now, local_487=False)

    def cancel_transaction(self, t: Transaction) -> int:
        """CANCEL received for ``t``: returns how many branches were still
        pending."""
        now = self.core.now()
        pending = 0
        t.ctx_data["cancelled"] = True  # RFC 3261 §16.10: no new branches from now on
        for br in t.branches:
            if not br.final:
                pending += 1
                self._cancel_branch(br, now)
        if pending:
            self.core.drive(self._check_all_final(t), _REPLY_PROCESSING)
        return pending

    # ------------------------------------------------------------------
    # replies from branches
    # ------------------------------------------------------------------
    def _local_final(self, br: Branch, code: int, reason: str, complete: bool = True) -> None:
        if br.final:
            return
        br.final = True
        br.status = code
        br.local_reason = reason
        br.reply = None
        if complete:
            self.core.drive(self._check_all_final(br.trans), _REPLY_PROCESSING)

    def _on_timeout(self, br: Branch, timer: str, now: float) -> None:
        t = br.trans
        if br.final:
            return
        if timer == "C":
            # fr_inv_timer: the silent drop of SER 0.8.11 (long ringing allowed)
            if (
                t.is_invite
                and len(t.branches) == 1
                and t.on_failure is None
                and not self.noisy_ctimer
                and not t.noisy
                and not t.local
            ):
                log.debug("tm: fr_inv_timer on %r: discarded silently", t)
                br.final = True
                br.status = 408
                self.release(t)
                return
            self._local_final(br, 408, "Request Timeout", complete=False)
            if br.machine is not None:
                self._send_cancel(br, now)
                self._branch_actions(br, br.machine.cancel(now), now)
            self.core.drive(self._check_all_final(t), _REPLY_PROCESSING)
            return
        self._local_final(br, 408, "Request Timeout")

    async def _on_reply(self, br: Branch, status: int, msg: SipMessage) -> None:
        t = br.trans
        if t.on_reply is not None:
            await self._run_onreply(t, msg, t.on_reply)
        if self._on_reply_sync(br, status, msg):
            await self._check_all_final(t)

    def _on_reply_sync(self, br: Branch, status: int, msg: SipMessage) -> bool:
        """The relay rules; True when a negative final reply was recorded
        and the caller must check whether every branch is final."""
        t = br.trans
        br.last_status = status
        if status < 200:
            if br.cancel_pending:
                # CANCELled before it answered (RFC 3261 §9.1): cancel now
                self._send_cancel(br, self.core.now())
            if status == 100 or t.final_status or br.final or t.local:
                return False
            self._relay_reply(t, msg, status)
            return False
        if br.final:
            # already given a local final (e.g. 408 after fr_inv_timer, 487 on
            # CANCEL): a late reply; a 2xx is still relayed end to end.
            if status < 300 and t.is_invite:
                self._relay_reply(t, msg, status)
            return False
        br.final = True
        br.status = status
        br.reply = msg
        if status < 300:
            if t.local:
                self._uac_done(t, status, msg)
            else:
                self._relay_reply(t, msg, status)
            return False
        if status >= 600 and t.is_invite:
            self._cancel_pending(t)
        return True

    async def _run_onreply(self, t: Transaction, msg: SipMessage, route: str) -> None:
        rcv = t.rcv
        ctx = RequestContext(self.core, msg, rcv, RouteType.ONREPLY)
        ctx.transaction = t
        ctx.flags = t.flags
        try:
            await self.core.run_route(RouteType.ONREPLY, route, ctx)
        except Exception:
            log.exception("tm: onreply_route[%s] failed", route)
        t.flags = ctx.flags

    def _relay_reply(self, t: Transaction, msg: SipMessage, status: int) -> None:
        """Relay a downstream reply upstream: our Via off, through the
        server machine (so it is retransmitted as needed)."""
        if t.uas is None:
            return
        if t.ctx_data.get("replicate"):
            self._replicated(t, status)
            return
        if t.final_status and not (status < 300 and t.is_invite and t.final_status < 300):
            return
        data = _strip_top_via(msg)
        self.core.stats.fwd_replies += 1
        if self._respond(t, status, data, local=False) < 0 and status < 300:
            # e.g. a 2xx after we sent a negative final: still end to end
            self._send_upstream(t, data)

    def pick_winner(self, t: Transaction) -> Branch | None:
        """RFC 3261 §16.7 step 6: a 6xx if there is one, else the lowest
        status code among the branches' final replies."""
        best: Branch | None = None
        for br in t.branches:
            if not br.final:
                continue
            if best is None:
                best = br
                continue
            b6 = best.status >= 600
            c6 = br.status >= 600
            if (c6 and not b6) or (c6 == b6 and br.status < best.status):
                best = br
        return best

    async def _check_all_final(self, t: Transaction) -> None:
        if t.failure_running or t.final_status or t.deleted:
            return
        if any(not br.final for br in t.branches):
            return
        if t.local:
            w = self.pick_winner(t)
            if w is not None:
                t.ctx_data["reason"] = w.local_reason
                self._uac_done(t, w.status, w.reply)
            return
        winner = self.pick_winner(t)
        if winner is None:
            return
        t.winner_status = winner.status
        if t.on_failure is not None:
            route = t.on_failure
            t.on_failure = None
            legacy = t.legacy_negative
            n_before = len(t.branches)
            t.failure_running = True
            try:
                ctx = self.reply_ctx(t)
                ctx.route_type = RouteType.FAILURE
                if t.ruri_at_relay != t.request.ruri:
                    ctx.new_uri = t.ruri_at_relay
                try:
                    await self.core.run_route(RouteType.FAILURE, route, ctx)
                except Exception:
                    log.exception("tm: failure_route[%s] failed", route)
                t.flags = ctx.flags
                if legacy and ctx.branches and len(t.branches) == n_before and not t.final_status:
                    # 2003 reply_route: new branches were relayed after the block
                    await self.relay(ctx, t)
            finally:
                t.failure_running = False
            if t.final_status:
                return
            if len(t.branches) > n_before:
                # serial forking: wait for the new branches (they may all
                # have failed at once already)
                if any(not br.final for br in t.branches):
                    return
                await self._check_all_final(t)
                return
            winner = self.pick_winner(t) or winner
        self._relay_winner(t, winner)

    def _replicated(self, t: Transaction, status: int) -> None:
        """``t_replicate``: replies stop here; the transaction ends with the
        first final one (unless the script replied itself)."""
        if status < 200 or t.final_status or t.uas is None:
            return
        if t.uas.response is None:
            t.final_status = status
            t.uas.terminate()
            self._maybe_free(t)

    def _relay_winner(self, t: Transaction, winner: Branch) -> None:
        if t.final_status:
            return
        if t.ctx_data.get("replicate"):
            self._replicated(t, winner.status)
            return
        if winner.reply is not None:
            self._relay_reply(t, winner.reply, winner.status)
        else:
            self.send_local_reply(t, winner.status, winner.local_reason or "Request Timeout")

    # ------------------------------------------------------------------
    # local (UAC) transactions
    # ------------------------------------------------------------------
    def _uac_done(self, t: Transaction, status: int, msg: SipMessage | None) -> None:
        if t.final_status:
            return
        t.ctx_data["reply"] = msg
        self._completed(t, status)
        self._maybe_free(t)
