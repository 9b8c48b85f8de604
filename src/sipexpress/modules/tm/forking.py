"""tm's forking and CANCEL (RFC 3261 §16.6-16.7, §16.10, §9.1).

``t_relay`` sends the request to the request URI and every branch of the
destination set (later, from ``failure_route``, to the new branches only):
one hop less in Max-Forwards, our Via with a branch of our own per leg,
the next hop located per RFC 3263 or taken from a loose Route.  A CANCEL
(or a 2xx/6xx on another branch) cancels the pending branches: a CANCEL
where a provisional reply came, else the branch just stops (RFC 3261
§9.1).  The messages come from the sans-I/O toolkit
(:mod:`sipexpress.sip.forwarding`).
"""

from __future__ import annotations

import logging
import re
from functools import partial
from typing import TYPE_CHECKING, Final

from sipexpress.core import errors
from sipexpress.core.context import Proto, RequestContext
from sipexpress.modules.tm.cell import Branch, Phase, ProxyEvent, Transaction
from sipexpress.modules.tm.table import TransactionTable
from sipexpress.sip.errors import SipError, SipParseError
from sipexpress.sip.forwarding import build_ack, build_cancel, via_prefix
from sipexpress.sip.transaction import (
    MAGIC_COOKIE,
    Action,
    ClientInvite,
    ClientNonInvite,
    Send,
    Terminated,
)
from sipexpress.sip.uri import SipUri

if TYPE_CHECKING:
    from sipexpress.core.api import Listener
    from sipexpress.sip.message import SipMessage

log = logging.getLogger("sipexpress.tm")

#: what tm's coroutines are called in the log when they fail
REPLY_PROCESSING = "tm: reply processing"
# RFC 3326 on the CANCELs after a 2xx: phones show "answered elsewhere"
REASON_ANSWERED = b'Reason: SIP;cause=200;text="Call completed elsewhere"\r\n'
_TRYING: Final = Phase.TRYING  # enum members as constants: faster than class lookups
_RELAY: Final = ProxyEvent.RELAY
_LR = re.compile(r";\s*lr(?:[;=>\s]|$)", re.IGNORECASE)


class Forking(TransactionTable):
    """Relaying a transaction to its branches, and cancelling them."""

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
        first = t.phase is _TRYING
        targets: list[tuple[str, str | None, str | None]] = []
        if first and t.cancelled:
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
            for k in ("advertised_address", "advertised_port", "rr_double"):
                if k in ctx.data:
                    t.ctx_data[k] = ctx.data[k]
            targets.append((ctx.ruri, ctx.dst_uri, ctx.data.get("path")))
            targets += [(b.uri, b.dst_uri, b.path) for b in ctx.branches]
        else:
            if t.cancelled:
                ctx.branches = []
                log.info("tm: %r was cancelled: no new branches", t)
                return errors.E_UNSPEC
            targets += [(b.uri, b.dst_uri, b.path) for b in ctx.branches]
            if not targets and ctx.new_uri is not None and ctx.new_uri != t.ruri_at_relay:
                targets.append((ctx.ruri, ctx.dst_uri, ctx.data.get("path")))
            t.flags = ctx.flags
        ctx.branches = []
        if not targets:
            return errors.E_NO_DESTINATION
        t.advance(_RELAY)
        route_hop = self._route_hop(t.request) if t.request.has_header("route") else None
        sent = 0
        err = errors.E_BUG
        for uri, dst, path in targets:
            r = await self.add_branch(t, uri, dst or route_hop, host, port, proto, ctx, path)
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

    async def add_branch(
        self,
        t: Transaction,
        uri: str,
        next_hop: str | None,
        host: str | None,
        port: int | None,
        proto: Proto | None,
        ctx: RequestContext | None,
        path: str | None = None,
    ) -> int:
        """Send one branch of ``t`` to ``uri`` (via ``next_hop`` when set);
        ``path``: the binding's RFC 3327 Path, put on top of the branch's
        Route set."""
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
        out = t.request
        if path:
            out = out.copy()
            out.insert_header("Route", path, first=True)
        double_rr = t.ctx_data.get("rr_double")
        if double_rr is not None:
            adv = t.ctx_data.get("advertised_address") or core.options.get("advertised_address")
            out = double_rr.for_branch(out, dproto, str(adv) if adv else lst.via_host, lst.port) or out
        br.data = out.serialize_with_via(br.via, uri)
        reliable = dproto is not Proto.UDP
        if t.is_invite:
            br.machine = ClientInvite(br.data, reliable, self.client_timers, partial(self._ack_for, br))
        else:
            br.machine = ClientNonInvite(br.data, reliable, self.client_timers)
        t.branches.append(br)
        self.client[bid] = br
        now = core.now()
        actions = br.machine.start(now)
        # only a connection being opened can fail later (UDP fails at once or never)
        on_error = None if dproto is Proto.UDP else partial(self._transport_error, br)
        ok = core.send(dproto, dip, dport, br.data, on_error=on_error)
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
            prefix = via_prefix(dproto.name, lst.via_host, lst.via_port, adv, adv_port)
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
        data = build_cancel(br.trans.request, br.uri, br.via, br.cancel_reason)
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

    def _cancel_pending(self, t: Transaction, reason: bytes = b"") -> None:
        """RFC 3261 §16.7 step 10: CANCEL every other pending branch;
        ``reason`` a Reason header line (RFC 3326) for those CANCELs."""
        now = self.core.now()
        for br in t.branches:
            if not br.final:
                br.cancel_reason = reason
                self._cancel_branch(br, now, local_487=False)

    def cancel_transaction(self, t: Transaction) -> int:
        """CANCEL received for ``t``: returns how many branches were still
        pending."""
        now = self.core.now()
        pending = 0
        t.cancelled = True  # RFC 3261 §16.10: no new branches from now on
        for br in t.branches:
            if not br.final:
                pending += 1
                self._cancel_branch(br, now)
        if pending:
            self.core.drive(self._check_all_final(t), REPLY_PROCESSING)
        return pending

    def _cancel_actions(self, br: Branch, actions: list[Action]) -> None:
        for a in actions:
            if isinstance(a, Send):
                proto, ip, port = br.dst
                self.core.send(proto, ip, port, a.data)
            elif isinstance(a, Terminated) and not br.alive:
                self.client.pop(br.id, None)
                self.maybe_free(br.trans)
        if br.alive:
            self.timers.update(br)
