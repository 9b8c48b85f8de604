"""The ``tm`` module declaration: parameters, script functions, FIFO
commands and the Python API other modules use (``core.module("tm")``)."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sipexpress.core import errors
from sipexpress.core.context import Proto, ReceiveInfo, RequestContext
from sipexpress.core.logging import transaction_of
from sipexpress.core.registry import (
    ConfigError,
    FixupEnv,
    MgmtCommand,
    MgmtReply,
    Module,
    Param,
    RouteType,
    ScriptFunction,
    Statistic,
)
from sipexpress.modules.tm.cell import ProxyEvent, Transaction
from sipexpress.modules.tm.proxy import TRYING_REASON, TransactionLayer
from sipexpress.modules.tm.stats import TmStats
from sipexpress.sip.errors import SipParseError
from sipexpress.sip.transaction import State

if TYPE_CHECKING:
    from sipexpress.core.api import CoreAPI
    from sipexpress.sip.message import SipMessage

R = RouteType.REQUEST
F = RouteType.FAILURE
O = RouteType.ONREPLY  # noqa: E741

_NEGATIVE_DONE = (State.COMPLETED, State.CONFIRMED)


@dataclass(slots=True)
class UacResult:
    """The outcome of a local (UAC) transaction: the final status, its
    reason, and the reply itself when one was received (``None`` for a
    locally generated 408/503)."""

    status: int
    reason: str
    reply: SipMessage | None
    transaction: Transaction | None = None


def _int_arg(v: Any, what: str) -> int:
    try:
        return int(str(v).strip(), 0)
    except ValueError:
        raise ConfigError(f"{what}: '{v}' is not a number") from None


def _fix_reply(args: Sequence[Any], env: FixupEnv) -> Sequence[Any]:
    code = _int_arg(args[0], "t_reply code")
    # RFC 3261's extension-code is any 3DIGIT; SER accepted every one
    if not 100 <= code <= 999:
        raise ConfigError(f"t_reply: invalid status code {code} (three digits, 100-999)")
    return (code, str(args[1]))


def _fix_hostport(args: Sequence[Any], env: FixupEnv) -> Sequence[Any]:
    return (str(args[0]), _int_arg(args[1], "port"))


def _fix_route(args: Sequence[Any], env: FixupEnv) -> Sequence[Any]:
    name = str(args[0]).strip()
    return ("" if name == "0" else name,)


def _fix_regex(args: Sequence[Any], env: FixupEnv) -> Sequence[Any]:
    try:
        return (re.compile(str(args[0])),)
    except re.error as e:
        raise ConfigError(f"t_check_status: bad regular expression '{args[0]}': {e}") from None


class TmModule(Module):
    name = "tm"
    params = (
        Param("fr_timer", int, 30, "seconds to wait for a final reply (INVITE: for any reply)"),
        Param("fr_inv_timer", int, 120, "seconds to wait for a final reply to an INVITE after a provisional"),
        Param("wt_timer", int, 5, "seconds a completed transaction stays to absorb retransmissions"),
        Param("delete_timer", int, 2, "accepted for compatibility"),
        Param("retr_timer1", int, 500, "T1 in milliseconds: first retransmission interval (RFC 3261: 500)"),
        Param("retr_timer1p1", int, 0, "T1 in seconds, as SER 0.9 (1); 0: retr_timer1 applies"),
        Param("retr_timer1p2", int, 2, "second retransmission interval"),
        Param("retr_timer1p3", int, 4, "third retransmission interval"),
        Param("retr_timer2", int, 4, "retransmission interval cap (T2)"),
        Param(
            "noisy_ctimer",
            int,
            1,
            "1: on fr_inv_timer CANCEL and 408 (RFC 3261 §16.8 Timer C); 0: drop a single ringing branch silently (SER)",
        ),
        Param("ruri_matching", int, 1, "RFC 2543 matching compares the Request-URI"),
        Param("via1_matching", int, 1, "RFC 2543 matching compares the top Via"),
        Param("uac_from", str, "sip:foo@foo.bar", "unused"),
        Param("unix_tx_timeout", int, 2, "accepted for compatibility"),
        Param("restart_fr_on_each_reply", int, 1, "restart fr_inv_timer on every provisional"),
        Param("fr_timer_avp", str, "callee_fr_timer", "accepted for compatibility"),
        Param("fr_inv_timer_avp", str, "callee_fr_inv_timer", "accepted for compatibility"),
        Param("tw_append", str, "", "accepted for compatibility"),
        Param("pass_provisional_replies", int, 0, "accepted for compatibility"),
        Param("var_timers", int, 1, "accepted for compatibility"),
    )

    def __init__(self, core: CoreAPI) -> None:
        super().__init__(core)
        self._layer: TransactionLayer | None = None

    # ------------------------------------------------------------------
    @property
    def layer(self) -> TransactionLayer:
        if self._layer is None:
            self._layer = TransactionLayer(self.core, self.values)
        return self._layer

    async def start(self) -> None:
        layer = self.layer
        layer.configure(self.values)
        core = self.core
        if core.worker is not None:
            layer.reseed()
        core.request_hooks.append(layer.request_hook)
        core.reply_hooks.append(layer.reply_hook)
        transaction_of.append(layer.transaction_id)

    async def stop(self) -> None:
        if self._layer is not None:
            self._layer.timers.close()
            with contextlib.suppress(ValueError):
                transaction_of.remove(self._layer.transaction_id)

    # -- Python API ------------------------------------------------------
    @property
    def on_complete(self) -> list[Callable[[Transaction, int], None]]:
        """Callbacks ``(trans, code)`` run once when a transaction sends its
        final reply upstream (acc).  ``trans.request``, ``trans.flags``,
        ``trans.replied_locally`` and ``trans.noisy`` are available."""
        return self.layer.on_complete

    def lookup_request(self, msg: SipMessage) -> Transaction | None:
        return self.layer.lookup(msg)

    def t_newtran(self, ctx: RequestContext) -> int:
        return self._t_newtran(ctx)

    def t_reply(
        self,
        ctx: RequestContext,
        code: int,
        reason: str,
        extra_headers: list[str] | None = None,
        body: bytes = b"",
    ) -> int:
        """Statefully reply to ``ctx.msg`` (creating the transaction if
        needed, as registrar/auth/exec users want)."""
        if ctx.msg.method == "ACK":
            return -1
        t = ctx.transaction
        if t is None:
            r = self._newtran(ctx)
            if r <= 0:
                return -1 if r < 0 else 1
            t = ctx.transaction
        t.flags = ctx.flags
        return self.layer.send_local_reply(t, code, reason, ctx, extra_headers, body)

    async def request(
        self,
        method: str,
        ruri: str,
        headers: Sequence[tuple[str, str]] = (),
        body: bytes = b"",
        content_type: str | None = None,
        next_hop: str | None = None,
        raw: bytes | None = None,
    ) -> UacResult:
        """Send a request as a UAC and wait for its final reply.

        Either ``raw`` (a complete request without our Via) or method, URI
        and ``headers``; From/To/Call-ID/CSeq/Max-Forwards get defaults when
        missing.  ``next_hop`` (a URI) overrides where it is sent.  INVITE
        gets an ACK for a negative final reply; the ACK of a 2xx is the
        caller's (dialog) business."""
        import asyncio
        import secrets

        from sipexpress.sip.message import SipMessage, build_request

        layer = self.layer
        if raw is not None:
            msg = SipMessage.parse(raw)
            ruri = msg.ruri
        else:
            have = {n.lower() for n, _ in headers}
            hdrs = list(headers)
            if "from" not in have and "f" not in have:
                hdrs.append(("From", f"<{self.values['uac_from']}>;tag={secrets.token_hex(6)}"))
            if "to" not in have and "t" not in have:
                hdrs.append(("To", f"<{ruri}>"))
            if "call-id" not in have and "i" not in have:
                hdrs.append(("Call-ID", f"{secrets.token_hex(10)}@sipexpress"))
            if "cseq" not in have:
                hdrs.append(("CSeq", f"1 {method}"))
            if "max-forwards" not in have:
                hdrs.append(("Max-Forwards", "70"))
            msg = build_request(method, ruri, hdrs, body, content_type)
        rcv = ReceiveInfo(Proto.UDP, "127.0.0.1", 0, "127.0.0.1", 0)
        t = layer.create_local(msg, rcv)
        loop = asyncio.get_running_loop()
        t.uac_future = fut = loop.create_future()
        t.advance(ProxyEvent.RELAY)
        r = await layer.add_branch(t, ruri, next_hop, None, None, None, None)
        if r <= 0:
            code, reason = errors.err2reason_phrase(r, "TM")
            t.final_status = code
            layer.maybe_free(t)
            return UacResult(code, reason, None, t)
        status: int = await fut
        reply = t.uac_reply
        reason = reply.reason if reply is not None else (t.uac_reason or "Request Timeout")
        return UacResult(status, reason, reply, t)

    # -- script functions -------------------------------------------------
    def functions(self) -> Sequence[ScriptFunction]:
        return (
            ScriptFunction("t_relay", self._t_relay, (0,), None, R | F, True, "statefully forward"),
            ScriptFunction(
                "t_relay_to_udp",
                self._t_relay_udp,
                (2,),
                _fix_hostport,
                R | F,
                True,
                "relay to host:port/udp",
            ),
            ScriptFunction(
                "t_relay_to_tcp",
                self._t_relay_tcp,
                (2,),
                _fix_hostport,
                R | F,
                True,
                "relay to host:port/tcp",
            ),
            ScriptFunction(
                "t_relay_to_tls",
                self._t_relay_tls,
                (2,),
                _fix_hostport,
                R | F,
                True,
                "relay to host:port/tls",
            ),
            ScriptFunction(
                "t_forward_nonack", self._t_relay_to, (2,), _fix_hostport, R | F, True, "forward to host:port"
            ),
            ScriptFunction(
                "t_forward_nonack_udp", self._t_relay_udp, (2,), _fix_hostport, R | F, True, "forward via udp"
            ),
            ScriptFunction(
                "t_forward_nonack_tcp", self._t_relay_tcp, (2,), _fix_hostport, R | F, True, "forward via tcp"
            ),
            ScriptFunction(
                "t_forward_nonack_uri", self._t_relay, (0,), None, R | F, True, "forward to the RURI"
            ),
            ScriptFunction(
                "t_replicate", self._t_replicate, (2,), _fix_hostport, R, True, "send a copy statefully"
            ),
            ScriptFunction(
                "t_replicate_udp", self._t_replicate_udp, (2,), _fix_hostport, R, True, "t_replicate via udp"
            ),
            ScriptFunction(
                "t_replicate_tcp", self._t_replicate_tcp, (2,), _fix_hostport, R, True, "t_replicate via tcp"
            ),
            ScriptFunction("t_newtran", self._t_newtran, (0,), None, R, False, "create a transaction"),
            ScriptFunction("t_reply", self._t_reply, (2,), _fix_reply, R | F, False, "stateful reply"),
            ScriptFunction("t_release", self._t_release, (0,), None, R, False, "release the transaction"),
            ScriptFunction(
                "t_on_failure", self._t_on_failure, (1,), _fix_route, R | F | O, False, "arm failure_route"
            ),
            ScriptFunction(
                "t_on_negative",
                self._t_on_negative,
                (1,),
                _fix_route,
                R | F | O,
                False,
                "arm reply_route (2003)",
            ),
            ScriptFunction(
                "t_on_reply", self._t_on_reply, (1,), _fix_route, R | F | O, False, "arm onreply_route"
            ),
            ScriptFunction(
                "t_check_status", self._t_check_status, (1,), _fix_regex, R | F | O, False, "match the status"
            ),
            ScriptFunction(
                "t_lookup_request", self._t_lookup_request, (0,), None, R, False, "transaction exists?"
            ),
            ScriptFunction(
                "t_check_trans", self._t_lookup_request, (0,), None, R, False, "transaction exists?"
            ),
            ScriptFunction(
                "t_retransmit_reply", self._t_retransmit_reply, (0,), None, R, False, "resend last reply"
            ),
        )

    def commands(self) -> Sequence[MgmtCommand]:
        from sipexpress.uac.t_uac_dlg import t_uac_dlg_command

        return (
            MgmtCommand("t_stats", self._cmd_t_stats, "transaction statistics"),
            MgmtCommand("t_hash", self._cmd_t_hash, "transaction hash table occupancy"),
            t_uac_dlg_command(self),
        )

    def statistics(self) -> Sequence[Statistic]:
        return self.layer.stats.statistics()

    async def _cmd_t_stats(self, params: list[str]) -> MgmtReply:
        return MgmtReply(
            200, "ok", TmStats.t_stats_data(self.statistic), TmStats.t_stats_text(self.statistic)
        )

    async def _cmd_t_hash(self, params: list[str]) -> MgmtReply:
        st = self.layer.stats
        return MgmtReply(200, "ok", st.t_hash_data(), st.t_hash_text())

    # -- handlers -----------------------------------------------------------
    def _newtran(self, ctx: RequestContext) -> int:
        if ctx.transaction is not None:
            return errors.E_SCRIPT
        layer = self.layer
        msg = ctx.msg
        try:
            key = layer.key_for(ctx)
        except SipParseError:
            ctx.data[errors.SER_ERROR_KEY] = errors.E_BAD_VIA
            return errors.E_BAD_VIA
        t = layer.server.get(key)
        now = self.core.now()
        if msg.method == "ACK":
            if t is not None and t.uas is not None and t.uas.state in _NEGATIVE_DONE:
                layer.uas_actions(t, t.uas.receive_request(now, ack=True))
                return 0
            return 1
        if t is not None:
            if t.uas is not None:
                layer.stats.retransmissions += 1
                layer.uas_actions(t, t.uas.receive_request(now))
            return 0
        layer.create(ctx, key)
        return 1

    def _t_newtran(self, ctx: RequestContext) -> int:
        r = self._newtran(ctx)
        if r > 0 and ctx.transaction is not None:
            self.layer.arm_guard(ctx.transaction)
        return r

    async def _t_relay(self, ctx: RequestContext) -> int:
        return await self._relay(ctx, None, None, None)

    async def _t_relay_to(self, ctx: RequestContext, host: str, port: int) -> int:
        return await self._relay(ctx, host, port, None)

    async def _t_relay_udp(self, ctx: RequestContext, host: str, port: int) -> int:
        return await self._relay(ctx, host, port, Proto.UDP)

    async def _t_relay_tcp(self, ctx: RequestContext, host: str, port: int) -> int:
        return await self._relay(ctx, host, port, Proto.TCP)

    async def _t_relay_tls(self, ctx: RequestContext, host: str, port: int) -> int:
        return await self._relay(ctx, host, port, Proto.TLS)

    async def _relay(
        self, ctx: RequestContext, host: str | None, port: int | None, proto: Proto | None
    ) -> int:
        layer = self.layer
        if ctx.route_type == RouteType.FAILURE:
            t = ctx.transaction
            if t is None:
                return -1
            r = await layer.relay(ctx, t, host, port, proto)
            return 1 if r > 0 else -1
        msg = ctx.msg
        if msg.method == "ACK":
            try:
                key = layer.key_for(ctx)
            except SipParseError:
                return errors.E_BAD_VIA
            t = layer.server.get(key)
            if t is not None and t.uas is not None and t.uas.state in _NEGATIVE_DONE:
                layer.uas_actions(t, t.uas.receive_request(self.core.now(), ack=True))
                return 1
            return await self.core.forward(ctx, host, port, proto)
        t = ctx.transaction
        if t is None:
            r = self._newtran(ctx)
            if r == 0:
                return 1  # a retransmission, absorbed
            if r < 0:
                return r
            t = ctx.transaction
        if t.relayed:
            return errors.E_SCRIPT
        if msg.method == "CANCEL":
            inv = layer.lookup(msg, "INVITE")
            if inv is not None and not inv.local:
                pending = sum(1 for br in inv.branches if not br.final)
                reason = "canceling" if pending else "ok -- no more pending branches"
                layer.send_local_reply(t, 200, reason, ctx, local=True)
                layer.cancel_transaction(inv)
                return 1
        elif t.is_invite and t.uas is not None and not t.uas.last_status:
            layer.send_local_reply(t, 100, TRYING_REASON, ctx, local=False)
        r = await layer.relay(ctx, t, host, port, proto)
        if r > 0:
            return 1
        if r == 0:
            return 0
        ctx.data[errors.SER_ERROR_KEY] = r
        code, reason = errors.err2reason_phrase(r, "TM")
        if layer.send_local_reply(t, code, reason, ctx) > 0:
            return 0
        return r

    async def _t_replicate(
        self, ctx: RequestContext, host: str, port: int, proto: Proto | None = None
    ) -> int:
        """SER's t_replicate: a stateful copy to host:port whose replies are
        not relayed upstream (replicate.cfg copies REGISTERs to a backup)."""
        if ctx.msg.method in ("ACK", "CANCEL"):
            return -1
        t = ctx.transaction
        if t is None:
            r = self._newtran(ctx)
            if r == 0:
                return 1
            if r < 0:
                return r
            t = ctx.transaction
        if t.relayed:
            return errors.E_SCRIPT
        t.replicate = True
        r = await self.layer.relay(ctx, t, host, port, proto)
        return 1 if r > 0 else (r or -1)

    async def _t_replicate_udp(self, ctx: RequestContext, host: str, port: int) -> int:
        return await self._t_replicate(ctx, host, port, Proto.UDP)

    async def _t_replicate_tcp(self, ctx: RequestContext, host: str, port: int) -> int:
        return await self._t_replicate(ctx, host, port, Proto.TCP)

    def _t_reply(self, ctx: RequestContext, code: int, reason: str) -> int:
        t = ctx.transaction
        if t is None or ctx.msg.method == "ACK":
            return -1
        t.flags = ctx.flags
        return self.layer.send_local_reply(t, code, reason, ctx)

    def _t_release(self, ctx: RequestContext) -> int:
        t = ctx.transaction
        if t is None:
            return -1
        self.layer.release(t)
        return 1

    def _arm(self, ctx: RequestContext, attr: str, name: str, legacy: bool = False) -> int:
        t = ctx.transaction
        if t is not None:
            setattr(t, attr, name or None)
            if attr == "on_failure":
                t.legacy_negative = legacy
        else:
            ctx.data["tm_" + attr] = name
            if legacy:
                ctx.data["tm_legacy"] = True
        return 1

    def _t_on_failure(self, ctx: RequestContext, name: str) -> int:
        return self._arm(ctx, "on_failure", name)

    def _t_on_negative(self, ctx: RequestContext, name: str) -> int:
        return self._arm(ctx, "on_failure", name, legacy=True)

    def _t_on_reply(self, ctx: RequestContext, name: str) -> int:
        return self._arm(ctx, "on_reply", name)

    def _t_check_status(self, ctx: RequestContext, regex: re.Pattern[str]) -> int:
        msg = ctx.msg
        t = ctx.transaction
        if not msg.is_request:
            status = msg.status
        elif t is None:
            return -1
        elif ctx.route_type == RouteType.FAILURE:
            status = t.winner_status
        else:
            status = t.last_status
        return 1 if regex.search(str(status)) else -1

    def _t_lookup_request(self, ctx: RequestContext) -> int:
        msg = ctx.msg
        t = self.layer.lookup(msg)
        if t is None and msg.method == "CANCEL":
            t = self.layer.lookup(msg, "INVITE")  # t_check_trans: the CANCELled INVITE
        return 1 if t is not None else -1

    def _t_retransmit_reply(self, ctx: RequestContext) -> int:
        t = ctx.transaction or self.layer.lookup(ctx.msg)
        if t is None or t.uas is None or t.uas.response is None:
            return -1
        self.layer.send_upstream(t, t.uas.response)
        return 1
