"""RFC 3261 §17 transaction state machines, sans-I/O.

Theory of operation
-------------------
Four machines -- INVITE client (Figure 5), non-INVITE client (Figure 6),
INVITE server (Figure 7) and non-INVITE server (Figure 8) -- each with the
``Accepted`` state of RFC 6026 so that 2xx retransmissions and late forked
2xx replies still meet their transaction (SER kept INVITE transactions
around in its wait state for the same reason).

A machine never touches a socket or a clock.  Inputs are method calls
carrying ``now`` (seconds, any monotonic origin); outputs are lists of
:class:`Action` objects (:class:`Send`, :class:`PassResponse`,
:class:`Timeout`, :class:`TransportError`, :class:`Terminated`) which the
I/O layer carries out.  A machine exposes :meth:`next_timer` (the earliest
deadline, or ``None``) and :meth:`handle_timer` which fires every due timer;
the I/O layer keeps one heap of deadlines for all transactions.

Transitions are data: ``CLIENT_INVITE``, ``CLIENT_NON_INVITE``,
``SERVER_INVITE`` and ``SERVER_NON_INVITE`` map ``(state, input)`` to
``(next state, effects)``, transcribed from the RFC figures.  A pair that is
missing from a table is a TU programming error (e.g. a second final reply)
and raises :class:`TransactionStateError`; every network and timer input is
present for every state (absorbing stale or stray input is explicit).

Timers (RFC 3261 Table 4) come from :class:`TimerConfig`; SER's names are
``fr_timer`` (B/F), ``fr_inv_timer`` (Timer C of §16.6 step 11, kept on the
INVITE client machine so that a branch owns exactly one timer set),
``wt_timer`` (D/I/J/K/L/M) and ``retr_timer1`` (ms) or ``retr_timer1p1`` (s) and ``retr_timer2`` (T1/T2).
Over reliable transports no retransmission timer is started and D/I/J/K
are zero, as the RFC says.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

__all__ = [
    "CLIENT_INVITE",
    "CLIENT_NON_INVITE",
    "MAGIC_COOKIE",
    "SERVER_INVITE",
    "SERVER_NON_INVITE",
    "Action",
    "ClientInvite",
    "ClientNonInvite",
    "ClientTransaction",
    "Input",
    "PassResponse",
    "Send",
    "ServerInvite",
    "ServerNonInvite",
    "ServerTransaction",
    "State",
    "Terminated",
    "Timeout",
    "TimerConfig",
    "TransactionStateError",
    "TransportError",
    "input_for_status",
]

#: RFC 3261 §8.1.1.7: branch values of RFC 3261 elements start with this.
MAGIC_COOKIE = "z9hG4bK"


class TransactionStateError(Exception):
    """The transaction user asked for something the machine forbids in its
    current state (e.g. a second final response)."""


# ---------------------------------------------------------------------------
# configuration


@dataclass(frozen=True, slots=True)
class TimerConfig:
    """RFC 3261 Table 4 timers, in seconds.  ``None`` means the RFC default
    derived from T1/T4.  ``timer_c=None`` disables Timer C; ``cap_invite``
    caps INVITE retransmission intervals at T2 as SER did (the RFC does not
    cap Timer A)."""

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0
    timer_b: float | None = None  # INVITE client: no reply at all (64*T1)
    timer_c: float | None = None  # INVITE client after a provisional (proxy §16.6)
    timer_d: float = 32.0  # INVITE client wait for final retransmissions
    timer_f: float | None = None  # non-INVITE client timeout (64*T1)
    timer_h: float | None = None  # INVITE server wait for ACK (64*T1)
    timer_i: float | None = None  # INVITE server ACK absorption (T4)
    timer_j: float | None = None  # non-INVITE server retransmissions (64*T1)
    timer_k: float | None = None  # non-INVITE client (T4)
    timer_l: float | None = None  # RFC 6026 INVITE server Accepted (64*T1)
    timer_m: float | None = None  # RFC 6026 INVITE client Accepted (64*T1)
    cap_invite: bool = False
    restart_c: bool = True  # restart Timer C on every provisional (restart_fr_on_each_reply)
    #: the effective values by timer name, worked out once (machines ask on every start)
    _values: dict[str, float] = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        values: dict[str, float] = {}
        for name in "ABCDEFGHIJKLM":
            v: float | None = getattr(self, "timer_" + name.lower(), None)
            if v is None:
                if name in "AEG":
                    v = self.t1
                elif name in "IK":
                    v = self.t4
                else:
                    v = 64 * self.t1  # B F H J L M (and C, unused when None)
            values[name] = v
        object.__setattr__(self, "_values", values)

    def value(self, name: str) -> float:
        """The effective value of Timer ``name`` (``"A"`` .. ``"M"``)."""
        return self._values[name]

    def interval(self, n: int, cap: bool = True) -> float:
        """The interval before retransmission ``n+1`` (n = 0 first):
        T1, 2*T1, 4*T1 ... capped at T2 when ``cap``."""
        v = self.t1 * (1 << min(n, 30))
        return min(v, self.t2) if cap else v


DEFAULT_TIMERS = TimerConfig()


# ---------------------------------------------------------------------------
# states, inputs, actions


class State(enum.Enum):
    # identity hash in C: the tables are hashed on every input
    __hash__ = object.__hash__

    CALLING = "Calling"
    TRYING = "Trying"
    PROCEEDING = "Proceeding"
    ACCEPTED = "Accepted"  # RFC 6026
    COMPLETED = "Completed"
    CONFIRMED = "Confirmed"
    TERMINATED = "Terminated"


class Input(enum.Enum):
    __hash__ = object.__hash__

    # from the network (client machines)
    PROVISIONAL = "1xx"
    SUCCESS = "2xx"
    FAILURE = "300-699"
    # from the network (server machines)
    REQUEST = "request retransmission"
    ACK = "ACK"
    TRANSPORT_ERROR = "transport error"
    # from the transaction user
    TU_PROVISIONAL = "TU 1xx"
    TU_SUCCESS = "TU 2xx"
    TU_FAILURE = "TU 300-699"
    TU_CANCEL = "TU cancel"
    # timers
    TIMER_A = "Timer A"
    TIMER_B = "Timer B"
    TIMER_C = "Timer C"
    TIMER_D = "Timer D"
    TIMER_E = "Timer E"
    TIMER_F = "Timer F"
    TIMER_G = "Timer G"
    TIMER_H = "Timer H"
    TIMER_I = "Timer I"
    TIMER_J = "Timer J"
    TIMER_K = "Timer K"
    TIMER_L = "Timer L"
    TIMER_M = "Timer M"


TIMER_INPUT = {name: Input["TIMER_" + name] for name in "ABCDEFGHIJKLM"}


def input_for_status(status: int, tu: bool = False) -> Input:
    if status < 200:
        return Input.TU_PROVISIONAL if tu else Input.PROVISIONAL
    if status < 300:
        return Input.TU_SUCCESS if tu else Input.SUCCESS
    return Input.TU_FAILURE if tu else Input.FAILURE


class Action:
    """Something the I/O layer must do."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class Send(Action):
    """Transmit ``data`` to the transaction's peer."""

    data: bytes
    retransmission: bool = False


@dataclass(frozen=True, slots=True)
class PassResponse(Action):
    """Client machines: hand a response to the transaction user."""

    status: int
    msg: Any


@dataclass(frozen=True, slots=True)
class Timeout(Action):
    """``timer`` (B, C, F, H) expired; for a client the TU treats it as a
    408 (RFC 3261 §8.1.3.1, §16.7 step 2)."""

    timer: str


@dataclass(frozen=True, slots=True)
class TransportError(Action):
    """RFC 3261 §17.1.4/§17.2.4: the transport reported a failure."""


@dataclass(frozen=True, slots=True)
class Terminated(Action):
    """The machine reached Terminated; the I/O layer drops it."""


Transition = tuple[State, tuple[str, ...]]
Table = dict[tuple[State, Input], Transition]

S = State
I = Input  # noqa: E741 - table shorthand

_ABSORB: tuple[str, ...] = ()

# RFC 3261 Figure 5 + RFC 6026 Figure 3 (+ §16.6 Timer C, §9.1 CANCEL)
CLIENT_INVITE: Table = {
    (S.CALLING, I.TIMER_A): (S.CALLING, ("retransmit", "restart_a")),
    (S.CALLING, I.TIMER_B): (S.TERMINATED, ("report_timeout",)),
    (S.CALLING, I.PROVISIONAL): (S.PROCEEDING, ("stop_retransmit", "stop_b", "pass", "start_c")),
    (S.CALLING, I.SUCCESS): (S.ACCEPTED, ("stop_all", "pass", "start_m")),
    (S.CALLING, I.FAILURE): (S.COMPLETED, ("stop_all", "pass", "send_ack", "start_d")),
    (S.CALLING, I.TRANSPORT_ERROR): (S.TERMINATED, ("report_transport_error",)),
    (S.CALLING, I.TU_CANCEL): (S.CALLING, ("stop_retransmit", "start_cancel_guard")),
    (S.CALLING, I.TIMER_C): (S.CALLING, _ABSORB),
    (S.CALLING, I.TIMER_D): (S.CALLING, _ABSORB),
    (S.CALLING, I.TIMER_M): (S.CALLING, _ABSORB),
    (S.PROCEEDING, I.PROVISIONAL): (S.PROCEEDING, ("pass", "restart_c")),
    (S.PROCEEDING, I.SUCCESS): (S.ACCEPTED, ("stop_all", "pass", "start_m")),
    (S.PROCEEDING, I.FAILURE): (S.COMPLETED, ("stop_all", "pass", "send_ack", "start_d")),
    (S.PROCEEDING, I.TIMER_C): (S.PROCEEDING, ("report_timeout",)),
    (S.PROCEEDING, I.TIMER_B): (S.TERMINATED, ("report_timeout",)),  # cancel guard
    (S.PROCEEDING, I.TIMER_A): (S.PROCEEDING, _ABSORB),
    (S.PROCEEDING, I.TIMER_D): (S.PROCEEDING, _ABSORB),
    (S.PROCEEDING, I.TIMER_M): (S.PROCEEDING, _ABSORB),
    (S.PROCEEDING, I.TRANSPORT_ERROR): (S.TERMINATED, ("report_transport_error",)),
    (S.PROCEEDING, I.TU_CANCEL): (S.PROCEEDING, ("stop_c", "start_cancel_guard")),
    (S.COMPLETED, I.FAILURE): (S.COMPLETED, ("resend_ack",)),
    (S.COMPLETED, I.PROVISIONAL): (S.COMPLETED, _ABSORB),
    (S.COMPLETED, I.SUCCESS): (S.COMPLETED, _ABSORB),
    (S.COMPLETED, I.TIMER_D): (S.TERMINATED, _ABSORB),
    (S.COMPLETED, I.TRANSPORT_ERROR): (S.TERMINATED, _ABSORB),
    (S.COMPLETED, I.TU_CANCEL): (S.COMPLETED, _ABSORB),
    (S.ACCEPTED, I.SUCCESS): (S.ACCEPTED, ("pass",)),
    (S.ACCEPTED, I.PROVISIONAL): (S.ACCEPTED, _ABSORB),
    (S.ACCEPTED, I.FAILURE): (S.ACCEPTED, _ABSORB),
    (S.ACCEPTED, I.TIMER_M): (S.TERMINATED, _ABSORB),
    (S.ACCEPTED, I.TRANSPORT_ERROR): (S.ACCEPTED, _ABSORB),
    (S.ACCEPTED, I.TU_CANCEL): (S.ACCEPTED, _ABSORB),
    (S.TERMINATED, I.PROVISIONAL): (S.TERMINATED, _ABSORB),
    (S.TERMINATED, I.SUCCESS): (S.TERMINATED, _ABSORB),
    (S.TERMINATED, I.FAILURE): (S.TERMINATED, _ABSORB),
    (S.TERMINATED, I.TRANSPORT_ERROR): (S.TERMINATED, _ABSORB),
    (S.TERMINATED, I.TU_CANCEL): (S.TERMINATED, _ABSORB),
}

# RFC 3261 Figure 6
CLIENT_NON_INVITE: Table = {
    (S.TRYING, I.TIMER_E): (S.TRYING, ("retransmit", "restart_e")),
    (S.TRYING, I.TIMER_F): (S.TERMINATED, ("report_timeout",)),
    (S.TRYING, I.PROVISIONAL): (S.PROCEEDING, ("pass",)),
    (S.TRYING, I.SUCCESS): (S.COMPLETED, ("stop_all", "pass", "start_k")),
    (S.TRYING, I.FAILURE): (S.COMPLETED, ("stop_all", "pass", "start_k")),
    (S.TRYING, I.TRANSPORT_ERROR): (S.TERMINATED, ("report_transport_error",)),
    (S.TRYING, I.TU_CANCEL): (S.TRYING, _ABSORB),
    (S.PROCEEDING, I.TIMER_E): (S.PROCEEDING, ("retransmit", "restart_e_t2")),
    (S.PROCEEDING, I.TIMER_F): (S.TERMINATED, ("report_timeout",)),
    (S.PROCEEDING, I.PROVISIONAL): (S.PROCEEDING, ("pass",)),
    (S.PROCEEDING, I.SUCCESS): (S.COMPLETED, ("stop_all", "pass", "start_k")),
    (S.PROCEEDING, I.FAILURE): (S.COMPLETED, ("stop_all", "pass", "start_k")),
    (S.PROCEEDING, I.TRANSPORT_ERROR): (S.TERMINATED, ("report_transport_error",)),
    (S.PROCEEDING, I.TU_CANCEL): (S.PROCEEDING, _ABSORB),
    (S.COMPLETED, I.PROVISIONAL): (S.COMPLETED, _ABSORB),
    (S.COMPLETED, I.SUCCESS): (S.COMPLETED, _ABSORB),
    (S.COMPLETED, I.FAILURE): (S.COMPLETED, _ABSORB),
    (S.COMPLETED, I.TIMER_K): (S.TERMINATED, _ABSORB),
    (S.COMPLETED, I.TRANSPORT_ERROR): (S.COMPLETED, _ABSORB),
    (S.COMPLETED, I.TU_CANCEL): (S.COMPLETED, _ABSORB),
    (S.TERMINATED, I.PROVISIONAL): (S.TERMINATED, _ABSORB),
    (S.TERMINATED, I.SUCCESS): (S.TERMINATED, _ABSORB),
    (S.TERMINATED, I.FAILURE): (S.TERMINATED, _ABSORB),
    (S.TERMINATED, I.TRANSPORT_ERROR): (S.TERMINATED, _ABSORB),
    (S.TERMINATED, I.TU_CANCEL): (S.TERMINATED, _ABSORB),
}

# RFC 3261 Figure 7 + RFC 6026 Figure 5.  In Accepted a retransmitted INVITE
# gets the 2xx again (SER's behaviour; RFC 6026 would absorb it silently).
SERVER_INVITE: Table = {
    (S.PROCEEDING, I.REQUEST): (S.PROCEEDING, ("resend_response",)),
    (S.PROCEEDING, I.ACK): (S.PROCEEDING, _ABSORB),
    (S.PROCEEDING, I.TU_PROVISIONAL): (S.PROCEEDING, ("send_response",)),
    (S.PROCEEDING, I.TU_SUCCESS): (S.ACCEPTED, ("send_response", "start_l")),
    (S.PROCEEDING, I.TU_FAILURE): (S.COMPLETED, ("send_response", "start_g", "start_h")),
    (S.PROCEEDING, I.TRANSPORT_ERROR): (S.TERMINATED, ("report_transport_error",)),
    (S.COMPLETED, I.REQUEST): (S.COMPLETED, ("resend_response",)),
    (S.COMPLETED, I.ACK): (S.CONFIRMED, ("stop_all", "start_i")),
    (S.COMPLETED, I.TIMER_G): (S.COMPLETED, ("resend_response", "restart_g")),
    (S.COMPLETED, I.TIMER_H): (S.TERMINATED, ("report_timeout",)),
    (S.COMPLETED, I.TRANSPORT_ERROR): (S.TERMINATED, ("report_transport_error",)),
    (S.CONFIRMED, I.REQUEST): (S.CONFIRMED, _ABSORB),
    (S.CONFIRMED, I.ACK): (S.CONFIRMED, _ABSORB),
    (S.CONFIRMED, I.TIMER_I): (S.TERMINATED, _ABSORB),
    (S.CONFIRMED, I.TRANSPORT_ERROR): (S.CONFIRMED, _ABSORB),
    (S.ACCEPTED, I.REQUEST): (S.ACCEPTED, ("resend_response",)),
    (S.ACCEPTED, I.ACK): (S.ACCEPTED, _ABSORB),
    (S.ACCEPTED, I.TU_SUCCESS): (S.ACCEPTED, ("send_response",)),
    (S.ACCEPTED, I.TIMER_L): (S.TERMINATED, _ABSORB),
    (S.ACCEPTED, I.TRANSPORT_ERROR): (S.ACCEPTED, _ABSORB),
    (S.TERMINATED, I.REQUEST): (S.TERMINATED, _ABSORB),
    (S.TERMINATED, I.ACK): (S.TERMINATED, _ABSORB),
    (S.TERMINATED, I.TRANSPORT_ERROR): (S.TERMINATED, _ABSORB),
}

# RFC 3261 Figure 8
SERVER_NON_INVITE: Table = {
    (S.TRYING, I.REQUEST): (S.TRYING, _ABSORB),
    (S.TRYING, I.ACK): (S.TRYING, _ABSORB),
    (S.TRYING, I.TU_PROVISIONAL): (S.PROCEEDING, ("send_response",)),
    (S.TRYING, I.TU_SUCCESS): (S.COMPLETED, ("send_response", "start_j")),
    (S.TRYING, I.TU_FAILURE): (S.COMPLETED, ("send_response", "start_j")),
    (S.TRYING, I.TRANSPORT_ERROR): (S.TERMINATED, ("report_transport_error",)),
    (S.PROCEEDING, I.REQUEST): (S.PROCEEDING, ("resend_response",)),
    (S.PROCEEDING, I.ACK): (S.PROCEEDING, _ABSORB),
    (S.PROCEEDING, I.TU_PROVISIONAL): (S.PROCEEDING, ("send_response",)),
    (S.PROCEEDING, I.TU_SUCCESS): (S.COMPLETED, ("send_response", "start_j")),
    (S.PROCEEDING, I.TU_FAILURE): (S.COMPLETED, ("send_response", "start_j")),
    (S.PROCEEDING, I.TRANSPORT_ERROR): (S.TERMINATED, ("report_transport_error",)),
    (S.COMPLETED, I.REQUEST): (S.COMPLETED, ("resend_response",)),
    (S.COMPLETED, I.ACK): (S.COMPLETED, _ABSORB),
    (S.COMPLETED, I.TIMER_J): (S.TERMINATED, _ABSORB),
    (S.COMPLETED, I.TRANSPORT_ERROR): (S.TERMINATED, _ABSORB),
    (S.TERMINATED, I.REQUEST): (S.TERMINATED, _ABSORB),
    (S.TERMINATED, I.ACK): (S.TERMINATED, _ABSORB),
    (S.TERMINATED, I.TRANSPORT_ERROR): (S.TERMINATED, _ABSORB),
}

del S, I

NETWORK_INPUTS = {
    "client": (Input.PROVISIONAL, Input.SUCCESS, Input.FAILURE, Input.TRANSPORT_ERROR),
    "server": (Input.REQUEST, Input.ACK, Input.TRANSPORT_ERROR),
}


# ---------------------------------------------------------------------------
# the machines


class _Machine:
    """Common machinery: a state, named timers with absolute deadlines, and
    the table-driven dispatch.  ``reliable`` is True over TCP/TLS/SCTP."""

    TABLE: ClassVar[Table] = {}
    INITIAL: ClassVar[State] = State.TERMINATED
    # TABLE with effect names resolved to functions, once per class
    _COMPILED: ClassVar[
        dict[tuple[State, Input], tuple[State, tuple[Callable[[Any, float], None], ...]]]
    ] = {}

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        cls._COMPILED = {
            key: (nxt, tuple(getattr(cls, "_e_" + e) for e in effects))
            for key, (nxt, effects) in cls.TABLE.items()
        }

    __slots__ = (
        "_actions",
        "_last_timer",
        "_msg",
        "_status",
        "config",
        "reliable",
        "retransmits",
        "state",
        "timers",
    )

    def __init__(self, reliable: bool = False, config: TimerConfig = DEFAULT_TIMERS) -> None:
        self.state = self.INITIAL
        self.reliable = reliable
        self.config = config
        self.timers: dict[str, float] = {}  # timer name ("A".."M") -> deadline
        self.retransmits = 0
        self._actions: list[Action] = []
        self._status = 0
        self._msg: Any = None
        self._last_timer = ""

    # -- timers -------------------------------------------------------------
    def next_timer(self) -> float | None:
        """The earliest pending deadline, or None."""
        t = self.timers
        if not t:
            return None
        return min(t.values())

    def handle_timer(self, now: float) -> list[Action]:
        """Fire every timer whose deadline is ``<= now``, earliest first."""
        out: list[Action] = []
        timers = self.timers
        while timers:
            name = min(timers, key=timers.__getitem__)
            deadline = timers[name]
            if deadline > now:
                break
            del timers[name]
            self._last_timer = name
            out += self._fire(TIMER_INPUT[name], now)
        return out

    def terminate(self) -> list[Action]:
        """The TU abandons the transaction outright (SER's ``put_on_wait``
        without a reply, e.g. the silent fr_inv_timer drop): no more timers,
        no more output.  Not a transition of the RFC figures."""
        if self.state is State.TERMINATED:
            return []
        self.state = State.TERMINATED
        self.timers.clear()
        return [Terminated()]

    def _start(self, name: str, now: float, delay: float) -> None:
        self.timers[name] = now + delay

    # -- dispatch -------------------------------------------------------------
    def _fire(self, inp: Input, now: float, status: int = 0, msg: Any = None) -> list[Action]:
        try:
            nxt, effects = self._COMPILED[(self.state, inp)]
        except KeyError:
            if inp.name.startswith("TIMER_"):
                return []  # a timer that no longer applies (stale deadline)
            raise TransactionStateError(
                f"{type(self).__name__}: {inp.value} in state {self.state.value}"
            ) from None
        prev = self.state
        self.state = nxt
        actions: list[Action] = []
        self._actions = actions
        self._status = status
        self._msg = msg
        for eff in effects:
            eff(self, now)
        if nxt is State.TERMINATED and prev is not State.TERMINATED:
            self.timers.clear()
            actions.append(Terminated())
        self._msg = None
        return actions

    # -- shared effects ---------------------------------------------------------
    def _e_stop_all(self, now: float) -> None:
        self.timers.clear()

    def _e_report_timeout(self, now: float) -> None:
        self._actions.append(Timeout(self._last_timer))

    def _e_report_transport_error(self, now: float) -> None:
        self._actions.append(TransportError())


class ClientTransaction(_Machine):
    """Base of the client machines.  ``request`` is the serialized request;
    ``build_ack(response_msg) -> bytes`` builds the hop-by-hop ACK for a
    non-2xx final response to an INVITE (RFC 3261 §17.1.1.3)."""

    __slots__ = ("ack", "build_ack", "request")

    def __init__(
        self,
        request: bytes,
        reliable: bool = False,
        config: TimerConfig = DEFAULT_TIMERS,
        build_ack: Callable[[Any], bytes] | None = None,
    ) -> None:
        super().__init__(reliable, config)
        self.request = request
        self.build_ack = build_ack
        self.ack: bytes | None = None

    def start(self, now: float) -> list[Action]:
        """Send the request and arm the initial timers (§17.1.1.2, §17.1.2.2)."""
        raise NotImplementedError

    def receive_response(self, status: int, now: float, msg: Any = None) -> list[Action]:
        return self._fire(input_for_status(status), now, status, msg)

    def transport_error(self, now: float) -> list[Action]:
        return self._fire(Input.TRANSPORT_ERROR, now)

    def cancel(self, now: float) -> list[Action]:
        """The TU is cancelling this branch (§9.1): stop retransmitting and
        give the INVITE 64*T1 to complete after the CANCEL."""
        return self._fire(Input.TU_CANCEL, now)

    # effects
    def _e_retransmit(self, now: float) -> None:
        self._actions.append(Send(self.request, True))
        self.retransmits += 1

    def _e_pass(self, now: float) -> None:
        self._actions.append(PassResponse(self._status, self._msg))

    def _e_stop_retransmit(self, now: float) -> None:
        self.timers.pop("A", None)
        self.timers.pop("E", None)


class ClientInvite(ClientTransaction):
    """RFC 3261 §17.1.1 (Figure 5) with RFC 6026 Accepted."""

    TABLE = CLIENT_INVITE
    INITIAL = State.CALLING
    __slots__ = ()

    def start(self, now: float) -> list[Action]:
        c = self.config
        if not self.reliable:
            self._start("A", now, c.interval(0, c.cap_invite))
        self._start("B", now, c.value("B"))
        return [Send(self.request)]

    def _e_restart_a(self, now: float) -> None:
        c = self.config
        self._start("A", now, c.interval(self.retransmits, c.cap_invite))

    def _e_stop_b(self, now: float) -> None:
        self.timers.pop("B", None)

    def _e_start_c(self, now: float) -> None:
        if self.config.timer_c is not None:
            self._start("C", now, self.config.timer_c)

    def _e_restart_c(self, now: float) -> None:
        if self.config.restart_c and "C" in self.timers and self.config.timer_c is not None:
            self._start("C", now, self.config.timer_c)

    def _e_stop_c(self, now: float) -> None:
        self.timers.pop("C", None)

    def _e_start_cancel_guard(self, now: float) -> None:
        # §9.1: without a final reply 64*T1 after the CANCEL, give up.
        guard = now + 64 * self.config.t1
        self.timers.pop("C", None)
        b = self.timers.get("B")
        self.timers["B"] = guard if b is None else min(b, guard)

    def _e_send_ack(self, now: float) -> None:
        if self.build_ack is not None:
            self.ack = self.build_ack(self._msg)
        if self.ack is not None:
            self._actions.append(Send(self.ack))

    def _e_resend_ack(self, now: float) -> None:
        if self.ack is not None:
            self._actions.append(Send(self.ack, True))

    def _e_start_d(self, now: float) -> None:
        self._start("D", now, 0.0 if self.reliable else self.config.value("D"))

    def _e_start_m(self, now: float) -> None:
        self._start("M", now, self.config.value("M"))


class ClientNonInvite(ClientTransaction):
    """RFC 3261 §17.1.2 (Figure 6)."""

    TABLE = CLIENT_NON_INVITE
    INITIAL = State.TRYING
    __slots__ = ()

    def start(self, now: float) -> list[Action]:
        if not self.reliable:
            self._start("E", now, self.config.interval(0))
        self._start("F", now, self.config.value("F"))
        return [Send(self.request)]

    def _e_restart_e(self, now: float) -> None:
        self._start("E", now, self.config.interval(self.retransmits))

    def _e_restart_e_t2(self, now: float) -> None:
        self._start("E", now, self.config.t2)

    def _e_start_k(self, now: float) -> None:
        self._start("K", now, 0.0 if self.reliable else self.config.value("K"))


class ServerTransaction(_Machine):
    """Base of the server machines.  Created when a new request arrives;
    the TU answers with :meth:`respond`."""

    __slots__ = ("last_status", "response")

    def __init__(self, reliable: bool = False, config: TimerConfig = DEFAULT_TIMERS) -> None:
        super().__init__(reliable, config)
        self.response: bytes | None = None  # the last response sent
        self.last_status = 0

    def receive_request(self, now: float, ack: bool = False) -> list[Action]:
        """A retransmission of the request (or, ``ack=True``, an ACK)."""
        return self._fire(Input.ACK if ack else Input.REQUEST, now)

    def respond(self, status: int, data: bytes, now: float) -> list[Action]:
        """The TU sends a response; raises TransactionStateError if the
        state does not allow it."""
        return self._fire(input_for_status(status, tu=True), now, status, data)

    def transport_error(self, now: float) -> list[Action]:
        return self._fire(Input.TRANSPORT_ERROR, now)

    def _e_send_response(self, now: float) -> None:
        self.response = self._msg
        self.last_status = self._status
        self._actions.append(Send(self._msg))

    def _e_resend_response(self, now: float) -> None:
        if self.response is not None:
            self._actions.append(Send(self.response, True))
            self.retransmits += 1


class ServerInvite(ServerTransaction):
    """RFC 3261 §17.2.1 (Figure 7) with RFC 6026 Accepted."""

    TABLE = SERVER_INVITE
    INITIAL = State.PROCEEDING
    __slots__ = ("g_count",)

    def __init__(self, reliable: bool = False, config: TimerConfig = DEFAULT_TIMERS) -> None:
        super().__init__(reliable, config)
        self.g_count = 0

    def _e_start_g(self, now: float) -> None:
        if not self.reliable:
            self.g_count = 0
            self._start("G", now, self.config.interval(0))

    def _e_restart_g(self, now: float) -> None:
        self.g_count += 1
        self._start("G", now, self.config.interval(self.g_count))

    def _e_start_h(self, now: float) -> None:
        self._start("H", now, self.config.value("H"))

    def _e_start_i(self, now: float) -> None:
        self._start("I", now, 0.0 if self.reliable else self.config.value("I"))

    def _e_start_l(self, now: float) -> None:
        self._start("L", now, self.config.value("L"))


class ServerNonInvite(ServerTransaction):
    """RFC 3261 §17.2.2 (Figure 8)."""

    TABLE = SERVER_NON_INVITE
    INITIAL = State.TRYING
    __slots__ = ()

    def _e_start_j(self, now: float) -> None:
        self._start("J", now, 0.0 if self.reliable else self.config.value("J"))
