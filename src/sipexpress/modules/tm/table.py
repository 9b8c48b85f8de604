"""tm's transaction table: creating, matching and freeing transactions.

Two tables: server transactions by their RFC 3261 §17.2.3 key (or the RFC
2543 tuple), branches by the ``branch`` parameter we generated (replies are
matched to them in tm/replies.py), and one :class:`TimerHeap` for every
machine.  The core's pre-script hook (:meth:`TransactionTable.request_hook`)
absorbs request retransmissions and ACKs of negative replies.
"""

from __future__ import annotations

import logging
import os
import secrets
import zlib
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from sipexpress.core.context import ReceiveInfo, RequestContext
from sipexpress.modules.tm.cell import Branch, Phase, ProxyEvent, ServerKey, Transaction
from sipexpress.modules.tm.stats import TABLE_ENTRIES, TmStats
from sipexpress.modules.tm.timers import TimerHeap
from sipexpress.sip.errors import SipParseError
from sipexpress.sip.transaction import (
    MAGIC_COOKIE,
    Action,
    Send,
    State,
    Terminated,
    TimerConfig,
    TransportError,
)

if TYPE_CHECKING:
    from sipexpress.core.api import CoreAPI
    from sipexpress.sip.message import SipMessage

log = logging.getLogger("sipexpress.tm")

_NEGATIVE_DONE = (State.COMPLETED, State.CONFIRMED)
_FREED: Final = Phase.FREED  # enum members as constants: faster than class lookups
_FREE: Final = ProxyEvent.FREE


class TransactionTable(ABC):
    """The tables, the timers and the life cycle of transactions."""

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
        self.reseed()
        self.configure(params)

    def reseed(self) -> None:
        """The branch secret and To-tag prefix of this process (again in
        each worker process, which the configured main process forked:
        branches of two workers must never be equal)."""
        self._secret = secrets.token_hex(3)
        self.to_tag_prefix = zlib.crc32(f"tm-{os.getpid()}-{self._secret}".encode()) & 0xFFFFFFFF
        self._via_prefixes.clear()

    def configure(self, p: dict[str, Any]) -> None:
        # SER's retr_timer1p1 (seconds) when set, else T1 in milliseconds
        t1 = float(p.get("retr_timer1p1") or 0) or float(p.get("retr_timer1", 500)) / 1000
        t2 = float(p.get("retr_timer2", 4))
        fr = float(p.get("fr_timer", 30))
        fr_inv = float(p.get("fr_inv_timer", 120))
        wt = float(p.get("wt_timer", 5))
        self.ruri_matching = bool(p.get("ruri_matching", 1))
        self.via1_matching = bool(p.get("via1_matching", 1))
        self.noisy_ctimer = bool(p.get("noisy_ctimer", 1))
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

    # ------------------------------------------------------------------
    # core hook
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
                self.uas_actions(t, t.uas.receive_request(now, ack=True))
                return True
            return False  # ACK to 2xx: end to end, the script forwards it
        if t.uas.response is None and t.replicate:
            return False  # the script replies itself (e.g. save() + t_replicate)
        self.stats.retransmissions += 1
        self.uas_actions(t, t.uas.receive_request(now))
        return True

    def uas_actions(self, t: Transaction, actions: list[Action]) -> None:
        for a in actions:
            if isinstance(a, Send):
                self.send_upstream(t, a.data)
            elif isinstance(a, Terminated):
                self.maybe_free(t)
            elif isinstance(a, TransportError):
                log.info("tm: transport error replying to %s:%d", t.rcv.src_ip, t.rcv.src_port)
        if t.uas is not None and t.uas.state is not State.TERMINATED:
            self.timers.update(t)

    def send_upstream(self, t: Transaction, data: bytes) -> None:
        rcv = t.rcv
        self.core.send(rcv.proto, rcv.src_ip, rcv.src_port, data, rcv)

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
        if ctx.routes is not None:
            t.routes = ctx.routes
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

    def maybe_free(self, t: Transaction) -> None:
        """Out of the tables once every machine is done (and a local
        transaction has its answer)."""
        if t.phase is _FREED:
            return
        if t.uas is not None and t.uas.state is not State.TERMINATED:
            return
        if t.local and not t.final_status:
            return
        for br in t.branches:
            if br.alive:
                return
        t.advance(_FREE)
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
        self.maybe_free(t)

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
    # what forking and reply selection do (tm/forking.py, tm/replies.py)
    # ------------------------------------------------------------------
    @abstractmethod
    def _branch_actions(self, br: Branch, actions: list[Action], now: float) -> None:
        """Carry out what a branch's client machine asks for."""

    @abstractmethod
    def _cancel_actions(self, br: Branch, actions: list[Action]) -> None:
        """Carry out what a branch's CANCEL machine asks for."""

    @abstractmethod
    def _transport_error(self, br: Branch) -> None:
        """A branch's connection could not be opened (a 503 at once)."""

    @abstractmethod
    def _local_final(self, br: Branch, code: int, reason: str, complete: bool = True) -> None:
        """Give a branch a final status of our own (408, 487, 503)."""

    @abstractmethod
    async def _check_all_final(self, t: Transaction) -> None:
        """Every branch final: failure_route or the best reply upstream."""

    @abstractmethod
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
        """A stateful reply of our own upstream; 1, or -1 when too late."""
