"""RFC 3261 §17 machines driven by a virtual clock: exact timer values."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sipexpress.sip import transaction as tx
from sipexpress.sip.transaction import (
    ClientInvite,
    ClientNonInvite,
    Input,
    PassResponse,
    Send,
    ServerInvite,
    ServerNonInvite,
    State,
    Terminated,
    Timeout,
    TimerConfig,
    TransactionStateError,
)

REQ = b"INVITE sip:b@x SIP/2.0\r\n\r\n"


def run_clock(m: tx._Machine, until: float) -> list[tuple[float, tx.Action]]:
    """Advance a virtual clock from timer to timer up to ``until``."""
    out: list[tuple[float, tx.Action]] = []
    while True:
        t = m.next_timer()
        if t is None or t > until:
            return out
        out += [(t, a) for a in m.handle_timer(t)]


def test_invite_client_timer_a_doubles_uncapped_until_timer_b() -> None:
    m = ClientInvite(REQ)
    assert m.start(0.0) == [Send(REQ)]
    events = run_clock(m, 100.0)
    sends = [t for t, a in events if isinstance(a, Send)]
    # Timer A: 0.5, then 1, 2, 4, 8, 16 ... (RFC: no T2 cap for INVITE)
    assert sends == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert (32.0, Timeout("B")) in events
    assert m.state is State.TERMINATED
    assert isinstance(events[-1][1], Terminated)


def test_invite_client_capped_like_ser() -> None:
    cfg = TimerConfig(t1=1.0, t2=4.0, timer_b=30.0, cap_invite=True)
    m = ClientInvite(REQ, config=cfg)
    m.start(0.0)
    sends = [t for t, a in run_clock(m, 30.0) if isinstance(a, Send)]
    assert sends == [1, 3, 7, 11, 15, 19, 23, 27]


def test_invite_client_reliable_no_retransmission() -> None:
    m = ClientInvite(REQ, reliable=True)
    m.start(0.0)
    assert m.timers == {"B": 32.0}


def test_invite_client_provisional_then_timer_c_and_cancel_guard() -> None:
    cfg = TimerConfig(timer_c=180.0)
    m = ClientInvite(REQ, config=cfg)
    m.start(0.0)
    acts = m.receive_response(180, 0.2, "r180")
    assert acts == [PassResponse(180, "r180")]
    assert m.state is State.PROCEEDING
    assert m.timers == {"C": 180.2}
    m.receive_response(183, 10.0)
    assert m.timers == {"C": 190.0}  # restarted on every provisional
    assert m.handle_timer(190.0) == [Timeout("C")]
    assert m.state is State.PROCEEDING
    m.cancel(190.0)
    assert m.timers == {"B": 190.0 + 32.0}
    # the 487 arrives
    acked: list[object] = []

    def build_ack(r: object) -> bytes:
        acked.append(r)
        return b"ACK"

    m.build_ack = build_ack
    acts = m.receive_response(487, 191.0, "r487")
    assert acts == [PassResponse(487, "r487"), Send(b"ACK")]
    assert acked == ["r487"]
    assert m.state is State.COMPLETED
    assert m.timers == {"D": 191.0 + 32.0}
    # retransmitted 487: ACK again, not passed up
    assert m.receive_response(487, 192.0) == [Send(b"ACK", True)]
    assert m.handle_timer(223.0) == [Terminated()]


def test_invite_client_2xx_accepted_passes_every_2xx() -> None:
    m = ClientInvite(REQ)
    m.start(0.0)
    assert m.receive_response(200, 1.0, "a") == [PassResponse(200, "a")]
    assert m.state is State.ACCEPTED
    assert m.receive_response(200, 2.0, "b") == [PassResponse(200, "b")]
    assert m.timers == {"M": 1.0 + 32.0}
    assert m.handle_timer(33.0) == [Terminated()]


def test_invite_client_cancel_before_provisional_stops_retransmission() -> None:
    m = ClientInvite(REQ)
    m.start(0.0)
    m.cancel(0.1)
    assert "A" not in m.timers
    assert m.timers["B"] == 32.0


def test_non_invite_client_timer_e_capped_and_proceeding_t2() -> None:
    m = ClientNonInvite(b"OPTIONS")
    m.start(0.0)
    ev = run_clock(m, 9.0)
    assert [t for t, a in ev if isinstance(a, Send)] == [0.5, 1.5, 3.5, 7.5]
    m.receive_response(100, 9.0)
    assert m.state is State.PROCEEDING
    ev = run_clock(m, 20.0)
    # Timer E continues; in Proceeding it is T2
    assert [t for t, a in ev if isinstance(a, Send)] == [11.5, 15.5, 19.5]
    assert m.receive_response(200, 20.0, "ok") == [PassResponse(200, "ok")]
    assert m.timers == {"K": 25.0}
    assert m.receive_response(200, 21.0) == []
    assert m.handle_timer(25.0) == [Terminated()]


def test_non_invite_client_timer_f_and_reliable_k_zero() -> None:
    m = ClientNonInvite(b"OPTIONS", reliable=True)
    m.start(0.0)
    assert m.timers == {"F": 32.0}
    assert m.handle_timer(32.0) == [Timeout("F"), Terminated()]
    m2 = ClientNonInvite(b"OPTIONS", reliable=True)
    m2.start(0.0)
    m2.receive_response(404, 1.0)
    assert m2.timers == {"K": 1.0}


def test_transport_error() -> None:
    m = ClientNonInvite(b"OPTIONS")
    m.start(0.0)
    assert m.transport_error(0.1) == [tx.TransportError(), Terminated()]


def test_invite_server_negative_g_h_ack_i() -> None:
    m = ServerInvite()
    assert m.state is State.PROCEEDING
    assert m.receive_request(0.0) == []  # nothing sent yet: absorbed
    assert m.respond(100, b"100", 0.0) == [Send(b"100")]
    assert m.receive_request(0.3) == [Send(b"100", True)]
    assert m.respond(486, b"486", 1.0) == [Send(b"486")]
    assert m.timers == {"G": 1.5, "H": 33.0}
    ev = run_clock(m, 12.0)
    assert [t for t, a in ev if isinstance(a, Send)] == [1.5, 2.5, 4.5, 8.5]  # G capped at T2
    assert m.receive_request(12.0) == [Send(b"486", True)]
    assert m.receive_request(12.1, ack=True) == []
    assert m.state is State.CONFIRMED
    assert m.timers == {"I": 17.1}
    assert m.handle_timer(17.1) == [Terminated()]
    with pytest.raises(TransactionStateError):
        m.respond(200, b"200", 18.0)


def test_invite_server_timer_h_without_ack() -> None:
    m = ServerInvite(config=TimerConfig(t1=0.5))
    m.respond(404, b"404", 0.0)
    ev = run_clock(m, 40.0)
    assert (32.0, Timeout("H")) in ev
    assert m.state is State.TERMINATED


def test_invite_server_accepted_resends_2xx_and_more_2xx() -> None:
    m = ServerInvite(config=TimerConfig(timer_l=5.0))
    m.respond(200, b"200a", 0.0)
    assert m.state is State.ACCEPTED
    assert m.receive_request(1.0) == [Send(b"200a", True)]
    assert m.respond(200, b"200b", 2.0) == [Send(b"200b")]
    with pytest.raises(TransactionStateError):
        m.respond(486, b"486", 2.0)
    assert m.handle_timer(5.0) == [Terminated()]


def test_non_invite_server() -> None:
    m = ServerNonInvite()
    assert m.receive_request(0.0) == []
    m.respond(180, b"180", 0.0)
    assert m.state is State.PROCEEDING
    assert m.receive_request(0.1) == [Send(b"180", True)]
    m.respond(200, b"200", 1.0)
    assert m.timers == {"J": 33.0}
    assert m.receive_request(2.0) == [Send(b"200", True)]
    with pytest.raises(TransactionStateError):
        m.respond(200, b"200", 3.0)
    r = ServerNonInvite(reliable=True)
    r.respond(200, b"200", 1.0)
    assert r.handle_timer(1.0) == [Terminated()]


MACHINES = {
    "client": [(ClientInvite, tx.CLIENT_INVITE), (ClientNonInvite, tx.CLIENT_NON_INVITE)],
    "server": [(ServerInvite, tx.SERVER_INVITE), (ServerNonInvite, tx.SERVER_NON_INVITE)],
}


def test_tables_cover_every_network_input() -> None:
    """Every (state, network input) pair is explicit in the tables."""
    for side, machines in MACHINES.items():
        for _cls, table in machines:
            states = {s for s, _ in table} | {n for n, _ in table.values()}
            for s in states:
                for inp in tx.NETWORK_INPUTS[side]:
                    assert (s, inp) in table, (table is tx.CLIENT_INVITE, s, inp)


CLIENT_INPUTS = st.lists(
    st.tuples(
        st.sampled_from(["resp", "timer", "cancel", "error"]),
        st.sampled_from([100, 180, 200, 302, 486, 503, 603]),
        st.floats(0.0, 5.0),
    ),
    max_size=30,
)


@settings(deadline=None)
@given(st.booleans(), st.booleans(), CLIENT_INPUTS)
def test_client_machines_never_crash(
    invite: bool, reliable: bool, steps: list[tuple[str, int, float]]
) -> None:
    """Any sequence of network, timer and cancel inputs: no exception,
    at most one Terminated, and no final response is passed up twice unless
    it is a 2xx to an INVITE (forking)."""
    cls = ClientInvite if invite else ClientNonInvite
    m = cls(REQ, reliable=reliable, config=TimerConfig(timer_c=60.0), build_ack=lambda r: b"ACK")
    now = 0.0
    acts = m.start(now)
    for kind, status, dt in steps:
        now += dt
        if kind == "resp":
            acts += m.receive_response(status, now)
        elif kind == "timer":
            t = m.next_timer()
            if t is not None:
                now = max(now, t)
                acts += m.handle_timer(now)
        elif kind == "cancel":
            acts += m.cancel(now)
        else:
            acts += m.transport_error(now)
    assert sum(isinstance(a, Terminated) for a in acts) <= 1
    finals = [a.status for a in acts if isinstance(a, PassResponse) and a.status >= 200]
    non2xx = [s for s in finals if s >= 300]
    assert len(non2xx) <= 1
    if not invite:
        assert len(finals) <= 1
    if non2xx:
        assert all(s >= 300 for s in finals)
    if m.state is State.TERMINATED:
        assert m.next_timer() is None


@settings(deadline=None)
@given(
    st.booleans(),
    st.lists(
        st.tuples(st.sampled_from(["req", "ack", "timer", "resp", "error"]), st.integers(100, 699)),
        max_size=30,
    ),
)
def test_server_machines_tu_errors_only(invite: bool, steps: list[tuple[str, int]]) -> None:
    """Network and timer inputs never raise; TU responses raise only
    TransactionStateError, and only after a final response."""
    m = ServerInvite() if invite else ServerNonInvite()
    now = 0.0
    final_sent = False
    for kind, status in steps:
        now += 0.5
        if kind == "req":
            m.receive_request(now)
        elif kind == "ack":
            m.receive_request(now, ack=True)
        elif kind == "error":
            m.transport_error(now)
        elif kind == "timer":
            t = m.next_timer()
            if t is not None:
                m.handle_timer(t)
                now = t
        else:
            try:
                m.respond(status, b"x", now)
            except TransactionStateError:
                assert final_sent or m.state is State.TERMINATED
            else:
                if status >= 200:
                    final_sent = True
    # the state tells whether a final response went out (or the transport failed)
    provisional = m.state in (State.TRYING, State.PROCEEDING)
    assert provisional != final_sent or m.state is State.TERMINATED, (m.state, final_sent)


ALL_MACHINES = [
    lambda: ClientInvite(REQ, build_ack=lambda r: b"ACK"),
    lambda: ClientNonInvite(REQ),
    ServerInvite,
    ServerNonInvite,
]


@settings(deadline=None)
@given(st.sampled_from(range(4)), st.sampled_from(list(State)), st.sampled_from(list(Input)), st.booleans())
def test_every_state_input_pair(which: int, state: State, inp: Input, reliable: bool) -> None:
    """(state, input) from the whole product: network and timer inputs never
    raise; a TU input missing from the table raises TransactionStateError;
    the result state is the table's."""
    m = ALL_MACHINES[which]()
    client = isinstance(m, tx.ClientTransaction)
    applicable = set(tx.NETWORK_INPUTS["client" if client else "server"]) | {
        i for i in Input if i.name.startswith("TIMER_")
    }
    applicable |= {Input.TU_CANCEL} if client else {Input.TU_PROVISIONAL, Input.TU_SUCCESS, Input.TU_FAILURE}
    states = {s0 for s0, _ in m.TABLE} | {nxt for nxt, _ in m.TABLE.values()}
    if inp not in applicable or state not in states:
        return
    m.reliable = reliable
    m.state = state
    key = (state, inp)
    tu = inp.name.startswith("TU_") and inp is not Input.TU_CANCEL
    if tu and key not in m.TABLE:
        with pytest.raises(TransactionStateError):
            m._fire(inp, 1.0, 200, b"x")
        return
    acts = m._fire(inp, 1.0, 486 if inp is Input.FAILURE else 200, b"x")
    if key in m.TABLE:
        assert m.state is m.TABLE[key][0]
    else:
        assert m.state is state and acts == []
