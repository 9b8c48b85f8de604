"""Transactions and branches of the stateful proxy, and the phases of a
transaction as a table (RFC 3261 §16 on top of the §17 machines).

Theory of operation
-------------------
A :class:`Transaction` is SER's ``struct cell``: one server machine (the
upstream side, ``uas``), the request as it was relayed (``request``), and
one :class:`Branch` per destination, each with an INVITE or non-INVITE
client machine (and, when cancelled, a CANCEL client machine).

Where the §17 machines track each side's messages, :class:`Phase` tracks
what the proxy does with the transaction as a whole::

    TRYING --RELAY--> FORWARDED --FAILURE_ROUTE_START--> FAILURE_ROUTE
                        ^  |                               |  |
                        |  +-RELAY (more branches)          |  +-RELAY (serial forking)
                        +------FAILURE_ROUTE_END-----------+
    TRYING / FORWARDED / FAILURE_ROUTE --FREE--> FREED

``TRYING``: created (``t_newtran``, ``t_relay``), nothing forwarded yet;
the script may still reply or relay.  ``FORWARDED``: branches are out and
the replies decide (tm/replies.py).  ``FAILURE_ROUTE``: every branch is
final and ``failure_route`` runs; it may add branches.  ``FREED``: out of
the tables.  :data:`TRANSITIONS` is the whole table; any other event is a
:class:`ProxyStateError`.  The final status sent upstream is data
(``final_status``), not a phase: a reply may go upstream in any phase.
"""

from __future__ import annotations

import enum
import logging
import math
from typing import TYPE_CHECKING, Any, Final

from sipexpress.core.context import Proto, ReceiveInfo, RouteTable
from sipexpress.sip.transaction import (
    ClientInvite,
    ClientNonInvite,
    ServerInvite,
    ServerNonInvite,
    State,
)

if TYPE_CHECKING:
    from sipexpress.modules.tm.table import TransactionTable
    from sipexpress.sip.message import SipMessage

log = logging.getLogger("sipexpress.tm")

ServerKey = tuple[Any, ...]


class Phase(enum.Enum):
    TRYING = "trying"
    FORWARDED = "forwarded"
    FAILURE_ROUTE = "failure_route"
    FREED = "freed"

    # members are singletons: the identity hash, not Enum's (a Python call
    # hashing the name) -- every transaction looks its phases up
    __hash__ = object.__hash__


class ProxyEvent(enum.Enum):
    RELAY = "relay"  # branches sent (t_relay, serial forking, a local request)
    FAILURE_ROUTE_START = "failure_route_start"
    FAILURE_ROUTE_END = "failure_route_end"
    FREE = "free"  # every machine done (or t_release): out of the tables

    __hash__ = object.__hash__  # as Phase's


class ProxyStateError(Exception):
    """An event the phase table does not allow (a tm bug, not bad input)."""


_P = Phase
_E = ProxyEvent
# members as module constants: ``Phase.TRYING`` is a slow class lookup on 3.11
_TRYING: Final = Phase.TRYING
#: (phase, event) -> next phase; anything missing is an error
TRANSITIONS: Final[dict[tuple[Phase, ProxyEvent], Phase]] = {
    (_P.TRYING, _E.RELAY): _P.FORWARDED,
    (_P.TRYING, _E.FREE): _P.FREED,
    (_P.FORWARDED, _E.RELAY): _P.FORWARDED,
    (_P.FORWARDED, _E.FAILURE_ROUTE_START): _P.FAILURE_ROUTE,
    (_P.FORWARDED, _E.FREE): _P.FREED,
    (_P.FAILURE_ROUTE, _E.RELAY): _P.FAILURE_ROUTE,
    (_P.FAILURE_ROUTE, _E.FAILURE_ROUTE_END): _P.FORWARDED,
    (_P.FAILURE_ROUTE, _E.FREE): _P.FREED,
    # t_release inside failure_route: the route still ends
    (_P.FREED, _E.FAILURE_ROUTE_END): _P.FREED,
}


class Branch:
    """One outgoing leg (SER's ``struct ua_client``)."""

    __slots__ = (
        "cancel",
        "cancel_pending",
        "cancel_reason",
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
        self.cancel_reason = b""  # a Reason header line for its CANCEL (RFC 3326)
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
        "cancelled",
        "ctx_data",
        "dst_at_relay",
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
        "phase",
        "rcv",
        "replicate",
        "replied_locally",
        "request",
        "routes",
        "ruri_at_relay",
        "sched",
        "send_socket",
        "started",
        "to_tag",
        "uac_future",
        "uac_reason",
        "uac_reply",
        "uas",
        "waiting",
        "winner_status",
    )

    def __init__(
        self,
        layer: TransactionTable,
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
        # failure and reply routes run in the version of the script the
        # transaction started on, even after a reload
        self.routes: RouteTable = layer.core.routes
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
        self.phase = _TRYING
        self.final_status = 0  # final status sent upstream (0 = none yet)
        self.winner_status = 0
        self.replied_locally = False
        self.cancelled = False  # CANCEL received: no new branches (RFC 3261 §16.10)
        self.replicate = False  # t_replicate: replies are not relayed upstream
        self.ruri_at_relay = request.ruri
        self.dst_at_relay: str | None = None
        self.to_tag: str | None = None
        self.send_socket: Any = None
        #: what the script set that its failure_route must see again
        #: (advertised_address/_port)
        self.ctx_data: dict[str, Any] = {}
        self.uac_future: Any = None
        self.uac_reply: SipMessage | None = None  # a local transaction's final reply
        self.uac_reason = ""  # and its reason when it was generated here (408, 503)
        self.waiting = False  # entered the wait state (first final reply sent upstream)
        self.guard = math.inf  # t_newtran without a reply: give up then
        self.sched = math.inf

    def __repr__(self) -> str:
        return f"<Transaction {self.hash_index}:{self.label} {self.method} final={self.final_status}>"

    def advance(self, event: ProxyEvent) -> None:
        """The next phase after ``event`` (:data:`TRANSITIONS`); an event
        the table does not allow in this phase raises
        :class:`ProxyStateError`."""
        phase = TRANSITIONS.get((self.phase, event))
        if phase is None:
            raise ProxyStateError(f"tm: {event.name} not allowed in phase {self.phase.name} of {self!r}")
        self.phase = phase

    @property
    def relayed(self) -> bool:
        """``t_relay`` (or a local request) sent branches already."""
        return self.phase is not _TRYING

    # timer protocol (server side)
    def next_timer(self) -> float | None:
        t = self.uas.next_timer() if self.uas is not None else None
        if self.guard < math.inf and not self.final_status and self.phase is _TRYING:
            return self.guard if t is None else min(t, self.guard)
        return t

    def on_timer(self, now: float) -> None:
        if now >= self.guard and not self.final_status and self.phase is _TRYING:
            log.info("tm: %r created by t_newtran got no reply: released", self)
            self.guard = math.inf
            self.layer.release(self)
            return
        if self.uas is not None:
            self.layer.uas_actions(self, self.uas.handle_timer(now))

    @property
    def id(self) -> str:
        """``hash:label`` as SER printed transaction identifiers."""
        return f"{self.hash_index}:{self.label}"

    @property
    def last_status(self) -> int:
        """The last status sent upstream."""
        return self.uas.last_status if self.uas is not None else self.final_status
