"""tm's reply selection and failure_route (RFC 3261 §16.7, SER's
``t_should_relay_response``).

A reply is matched to its branch by the ``branch`` we generated
(:meth:`ReplySelection.reply_hook`) and fed to that branch's client
machine; what the machine passes up goes through ``onreply_route`` and the
relay rules: 100 absorbed, other 1xx relayed while no final was sent, every
2xx relayed at once (an INVITE's other branches get CANCEL), negative
replies kept until every branch is final, then the best one (a 6xx, else
the lowest code) goes through ``failure_route`` (serial forking) or
upstream.  Timer B/C/F expiry, CANCEL of a branch that had no reply yet and
transport errors give the branch a local final reply (408, 487, 503) that
competes like a received one.  Local replies (``t_reply``, 100, 408 ...)
are built by :func:`sipexpress.sip.message.build_reply` through the core.
"""

from __future__ import annotations

import logging
import re
from typing import Final

from sipexpress.core.context import ReceiveInfo, RequestContext
from sipexpress.core.registry import RouteType
from sipexpress.modules.tm.cell import Branch, Phase, ProxyEvent, Transaction
from sipexpress.modules.tm.forking import REASON_ANSWERED, REPLY_PROCESSING, Forking
from sipexpress.sip.errors import SipParseError
from sipexpress.sip.message import SipMessage, build_reply
from sipexpress.sip.transaction import (
    Action,
    PassResponse,
    Send,
    Terminated,
    Timeout,
    TransactionStateError,
    TransportError,
)

log = logging.getLogger("sipexpress.tm")

_FORWARDED: Final = Phase.FORWARDED  # enum members as constants: faster than class lookups


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


class ReplySelection(Forking):
    """What the branches answer, and what goes upstream."""

    def transaction_id(self, msg: SipMessage) -> str | None:
        """The id of the transaction a message belongs to (log lines)."""
        if msg.is_request:
            t = self.lookup(msg)
            return t.id if t is not None else None
        bid = _top_branch(msg)
        br = self.client.get(bid) if bid is not None else None
        return br.trans.id if br is not None else None

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
                    self.core.drive(self._on_reply(br, a.status, a.msg), REPLY_PROCESSING)
            elif isinstance(a, Timeout):
                self._on_timeout(br, a.timer, now)
            elif isinstance(a, TransportError):
                self._local_final(br, 503, "Service Unavailable")
            elif isinstance(a, Terminated) and not br.alive:
                self.client.pop(br.id, None)
                self.maybe_free(t)
        if br.alive:
            self.timers.update(br)

    def tag_for(self, t: Transaction) -> str:
        if t.to_tag is None:
            t.to_tag = f"{self.to_tag_prefix:08x}-{t.hash_index:x}.{t.label:x}"
        return t.to_tag

    def reply_ctx(self, t: Transaction) -> RequestContext:
        ctx = RequestContext(self.core, t.request, t.rcv)
        ctx.routes = t.routes
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
            req = t.request
            if req.via1.rport == "":
                # RFC 3581 §4, before relay() fixes the request's Via
                rcv = t.rcv
                data = build_reply(req, 100, reason, received=rcv.src_ip, rport=rcv.src_port)
            else:
                data = build_reply(req, 100, reason)
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
                self._cancel_pending(t, REASON_ANSWERED)
        self.uas_actions(t, actions)
        return 1

    def _local_final(self, br: Branch, code: int, reason: str, complete: bool = True) -> None:
        if br.final:
            return
        br.final = True
        br.status = code
        br.local_reason = reason
        br.reply = None
        if complete:
            self.core.drive(self._check_all_final(br.trans), REPLY_PROCESSING)

    def _transport_error(self, br: Branch) -> None:
        """The connection for ``br`` could not be opened: RFC 3261 §16.9
        takes that as a 503 from the branch, at once, so failure_route can
        try the next destination without waiting for fr_timer."""
        if br.final or br.machine is None:
            return
        log.info("tm: %r: transport error towards %s:%d", br.trans, br.dst[1], br.dst[2])
        now = self.core.now()
        self._branch_actions(br, br.machine.transport_error(now), now)

    def _on_timeout(self, br: Branch, timer: str, now: float) -> None:
        t = br.trans
        if br.final:
            return
        if timer == "C":
            # fr_inv_timer with noisy_ctimer=0: the silent drop of SER 0.8.11
            # (long ringing allowed); otherwise RFC 3261 §16.8: CANCEL and 408
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
            self.core.drive(self._check_all_final(t), REPLY_PROCESSING)
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
        ctx.routes = t.routes
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
        if t.replicate:
            self._replicated(t, status)
            return
        if t.final_status and not (status < 300 and t.is_invite and t.final_status < 300):
            return
        data = _strip_top_via(msg)
        self.core.stats.fwd_replies += 1
        if self._respond(t, status, data, local=False) < 0 and status < 300:
            # e.g. a 2xx after we sent a negative final: still end to end
            self.send_upstream(t, data)

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
        if t.phase is not _FORWARDED or t.final_status:
            return  # in failure_route (it decides), freed, or answered
        if any(not br.final for br in t.branches):
            return
        if t.local:
            w = self.pick_winner(t)
            if w is not None:
                t.uac_reason = w.local_reason
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
            t.advance(ProxyEvent.FAILURE_ROUTE_START)
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
                t.advance(ProxyEvent.FAILURE_ROUTE_END)
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
            self.maybe_free(t)

    def _relay_winner(self, t: Transaction, winner: Branch) -> None:
        if t.final_status:
            return
        if t.replicate:
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
        t.uac_reply = msg
        self._completed(t, status)
        self.maybe_free(t)
