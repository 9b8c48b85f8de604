"""tm's proxy layer (RFC 3261 §16) on a virtual clock, without sockets:
forking, reply selection, CANCEL, failure_route, timers, and the phase
table of a transaction."""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable

import pytest

from sipexpress.core.context import Proto, ReceiveInfo, RequestContext
from sipexpress.modules.tm.cell import TRANSITIONS, Phase, ProxyEvent, ProxyStateError, Transaction
from sipexpress.sip.message import SipMessage
from tests.unit.tm.conftest import UAC, Proxy, answer, invite

BOB = ("192.0.2.10", 5080)
CAROL = ("192.0.2.11", 5080)


def fork_to_bob_and_carol(proxy: Proxy) -> Callable[[RequestContext], Awaitable[int]]:
    async def route(ctx: RequestContext) -> int:
        ctx.append_branch(f"sip:carol@{CAROL[0]}:{CAROL[1]}")
        result: int = await proxy.script(ctx, "t_relay")
        return result

    return route


def sent_to(out: list[tuple[tuple[str, int], SipMessage]], dst: tuple[str, int]) -> list[SipMessage]:
    return [m for d, m in out if d == dst]


def only(msgs: list[SipMessage]) -> SipMessage:
    assert len(msgs) == 1, msgs
    return msgs[0]


def the_transaction(proxy: Proxy) -> Transaction:
    [t] = proxy.tm.layer.server.values()
    return t


async def test_forks_and_relays_the_lowest_negative_reply(proxy: Proxy) -> None:
    await proxy.start(fork_to_bob_and_carol(proxy))
    proxy.receive(invite(), UAC)
    out = proxy.wire.take()
    trying = only(sent_to(out, UAC))
    assert (trying.status, trying.reason) == (100, "trying -- your call is important to us")
    to_bob, to_carol = only(sent_to(out, BOB)), only(sent_to(out, CAROL))
    assert to_bob.ruri == "sip:bob@192.0.2.10:5080" and to_carol.ruri == f"sip:carol@{CAROL[0]}:{CAROL[1]}"
    assert to_bob.max_forwards == 69 and len(to_bob.vias) == 2
    assert to_bob.via1.branch != to_carol.via1.branch
    t = the_transaction(proxy)
    assert t.phase is Phase.FORWARDED

    proxy.receive(answer(to_bob, 486, "Busy Here"), BOB)
    out = proxy.wire.take()
    assert only(sent_to(out, BOB)).method == "ACK"  # hop by hop (RFC 3261 §17.1.1.3)
    assert sent_to(out, UAC) == []  # carol is still pending
    proxy.receive(answer(to_carol, 404, "Not Found", "c1"), CAROL)
    out = proxy.wire.take()
    ack = only(sent_to(out, CAROL))
    assert ack.method == "ACK" and ack.via1.branch == to_carol.via1.branch and ack.to.tag == "c1"
    final = only(sent_to(out, UAC))
    assert (final.status, final.to.tag) == (404, "c1")  # RFC 3261 §16.7 step 6: the lowest
    assert len(final.vias) == 1 and final.via1.branch == "z9hG4bKuac1"
    assert t.final_status == 404 and t.winner_status == 404


async def test_a_6xx_wins_and_cancels_the_other_branch(proxy: Proxy) -> None:
    await proxy.start(fork_to_bob_and_carol(proxy))
    proxy.receive(invite(), UAC)
    out = proxy.wire.take()
    to_bob, to_carol = only(sent_to(out, BOB)), only(sent_to(out, CAROL))
    proxy.receive(answer(to_carol, 180, "Ringing", "c1"), CAROL)
    assert only(sent_to(proxy.wire.take(), UAC)).status == 180
    proxy.receive(answer(to_bob, 603, "Decline"), BOB)
    out = proxy.wire.take()
    cancel = only(sent_to(out, CAROL))
    assert cancel.method == "CANCEL" and cancel.ruri == to_carol.ruri
    assert cancel.via1.branch == to_carol.via1.branch and cancel.cseq.num == 1
    assert sent_to(out, UAC) == []  # carol has not answered the INVITE yet
    proxy.receive(answer(cancel, 200, "OK", "c1"), CAROL)
    proxy.receive(answer(to_carol, 487, "Request Terminated", "c1"), CAROL)
    final = only(sent_to(proxy.wire.take(), UAC))
    assert final.status == 603


async def test_fr_timer_on_the_virtual_clock(proxy: Proxy) -> None:
    proxy.tm.set_param("fr_timer", 10)

    async def relay(ctx: RequestContext) -> int:
        result: int = await proxy.script(ctx, "t_relay")
        return result

    await proxy.start(relay)
    proxy.receive(invite(), UAC)
    proxy.wire.take()
    proxy.clock.advance(9.99)
    # INVITE retransmissions: T1 = retr_timer1 = 0.5 s, doubling (RFC 3261 §17.1.1.2)
    assert [round(when, 3) for when, dst, _ in proxy.wire.sent if dst == BOB] == [0.5, 1.5, 3.5, 7.5]
    assert [m for _, dst, m in proxy.wire.sent if dst == UAC] == []
    proxy.wire.sent.clear()
    proxy.clock.advance(0.02)  # Timer B = fr_timer: a local 408 goes upstream
    final = only(sent_to(proxy.wire.take(), UAC))
    assert (final.status, final.reason) == (408, "Request Timeout")
    assert the_transaction(proxy).final_status == 408


async def test_failure_route_forks_serially(proxy: Proxy) -> None:
    phases: list[Phase] = []

    async def request(ctx: RequestContext) -> int:
        proxy.script(ctx, "t_on_failure", "1")
        result: int = await proxy.script(ctx, "t_relay")
        return result

    async def failure(ctx: RequestContext) -> int:
        t = ctx.transaction
        assert isinstance(t, Transaction)
        phases.append(t.phase)
        ctx.set_ruri(f"sip:carol@{CAROL[0]}:{CAROL[1]}")
        result: int = await proxy.script(ctx, "t_relay")
        return result

    await proxy.start(request, {"1": failure})
    proxy.receive(invite(), UAC)
    to_bob = only(sent_to(proxy.wire.take(), BOB))
    proxy.receive(answer(to_bob, 486, "Busy Here"), BOB)
    out = proxy.wire.take()
    assert phases == [Phase.FAILURE_ROUTE]
    to_carol = only(sent_to(out, CAROL))
    assert to_carol.method == "INVITE" and to_carol.ruri == f"sip:carol@{CAROL[0]}:{CAROL[1]}"
    assert sent_to(out, UAC) == []  # the 486 is not relayed: a new branch is out
    t = the_transaction(proxy)
    assert t.phase is Phase.FORWARDED and len(t.branches) == 2
    proxy.receive(answer(to_carol, 200, "OK", "c1"), CAROL)
    final = only(sent_to(proxy.wire.take(), UAC))
    assert (final.status, final.to.tag) == (200, "c1")


async def test_cancel_from_upstream_before_any_reply(proxy: Proxy) -> None:
    await proxy.start(fork_to_bob_and_carol(proxy))
    proxy.receive(invite(), UAC)
    proxy.wire.take()
    cancel = invite().replace(b"INVITE sip", b"CANCEL sip", 1).replace(b"1 INVITE", b"1 CANCEL")
    proxy.receive(cancel, UAC)
    out = proxy.wire.take()
    # neither branch answered: no CANCEL downstream (RFC 3261 §9.1), each gets a local 487
    assert sent_to(out, BOB) == [] and sent_to(out, CAROL) == []
    replies = sorted((m.status, m.cseq.method) for m in sent_to(out, UAC))
    assert replies == [(200, "CANCEL"), (487, "INVITE")]


def test_phase_table_allows_exactly_its_transitions(proxy: Proxy) -> None:
    request = SipMessage.parse(invite())
    rcv = ReceiveInfo(Proto.UDP, UAC[0], UAC[1], "127.0.0.1", 5060, 2, proxy.wire)  # type: ignore[arg-type]
    for phase, event in itertools.product(Phase, ProxyEvent):
        t = Transaction(proxy.tm.layer, request, rcv, None, 0, 1)
        t.phase = phase
        expected = TRANSITIONS.get((phase, event))
        if expected is None:
            with pytest.raises(ProxyStateError):
                t.advance(event)
            assert t.phase is phase
        else:
            t.advance(event)
            assert t.phase is expected


def test_phase_table_reaches_every_phase_and_ends_freed() -> None:
    reached = {Phase.TRYING} | set(TRANSITIONS.values())
    assert reached == set(Phase)
    assert {nxt for (p, _), nxt in TRANSITIONS.items() if p is Phase.FREED} == {Phase.FREED}
