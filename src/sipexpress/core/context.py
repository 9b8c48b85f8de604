"""The routing API: the request being routed and the core it runs in.

A :class:`RequestContext` is what every script action receives (SER's
``struct sip_msg`` plus the destination set, flags and receive info).  The
``ser.cfg`` compiler and Python routing scripts both act on it; so do module
functions.  What they may use of the running server is
:class:`sipexpress.core.api.CoreAPI`.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sipexpress.core.registry import RouteType
from sipexpress.sip.forwarding import decrement_max_forwards
from sipexpress.sip.uri import SipUri

if TYPE_CHECKING:
    from sipexpress.core.api import CoreAPI
    from sipexpress.sip.message import SipMessage


class Proto(enum.IntEnum):
    UDP = 1
    TCP = 2
    TLS = 3
    WS = 4  # SIP over WebSocket (RFC 7118)
    WSS = 5  # ... over secure WebSocket

    @property
    def token(self) -> str:
        """As written in a Via header: ``UDP``, ``TCP``, ``TLS``, ``WS``, ``WSS``."""
        return self.name


@dataclass(frozen=True, slots=True)
class ReceiveInfo:
    """Where a message came from and which local socket took it."""

    proto: Proto
    src_ip: str
    src_port: int
    dst_ip: str
    dst_port: int
    af: int = 2  # socket.AF_INET; 10 for AF_INET6
    # The transport object the message arrived on: a UDP listener or a TCP
    # connection.  Replies to a TCP request go back on the same connection.
    transport: Any = None


@dataclass(slots=True)
class Branch:
    """One entry of the destination set besides the request URI."""

    uri: str
    q: int = -1  # thousandths, -1 = unspecified (SER's q representation)
    dst_uri: str | None = None  # next hop override (e.g. NAT received address)
    flags: int = 0
    path: str | None = None  # RFC 3327 Path of the binding: the branch's route set


class RequestContext:
    """A message being routed.  In request and failure routes ``msg`` is a
    request; in ``onreply_route`` it is a reply."""

    __slots__ = (
        "_parsed_ruri",
        "branches",
        "core",
        "credentials",
        "data",
        "dst_uri",
        "flags",
        "force_rport",
        "msg",
        "new_uri",
        "rcv",
        "replied",
        "reply_headers",
        "route_type",
        "routes",
        "send_socket",
        "transaction",
        "via_fixed",
    )

    def __init__(
        self,
        core: CoreAPI,
        msg: SipMessage,
        rcv: ReceiveInfo,
        route_type: RouteType = RouteType.REQUEST,
    ) -> None:
        self.core = core
        self.msg = msg
        self.rcv = rcv
        self.route_type = route_type
        # the routes this message started on (None: the core's current
        # ones): a reload swaps the core's, not those of messages and
        # transactions already in them
        self.routes: RouteTable | None = None
        self.new_uri: str | None = None  # SER's new_uri: set by rewrite*/lookup
        self.dst_uri: str | None = None  # next hop override for the request URI
        self.branches: list[Branch] = []
        self.flags = 0
        self.transaction: Any = None  # set by tm
        self.reply_headers: list[str] = []  # append_to_reply(): full lines with CRLF
        self.credentials: Any = None  # set by auth after a successful authorize
        self.force_rport = False
        self.send_socket: Any = None  # force_send_socket()
        self.data: dict[str, Any] = {}  # per-message scratch space for modules
        self._parsed_ruri: SipUri | None = None
        # the core's own marks: top Via got received/rport (once per
        # message); a final stateless reply went out (a later parse error
        # must not add a 400)
        self.via_fixed = False
        self.replied = False

    # -- request URI ------------------------------------------------------
    @property
    def ruri(self) -> str:
        """The current request URI (rewritten if a rewrite action ran)."""
        return self.new_uri if self.new_uri is not None else self.msg.ruri

    @property
    def original_ruri(self) -> str:
        return self.msg.ruri

    def set_ruri(self, uri: str) -> None:
        self.new_uri = uri
        self._parsed_ruri = None

    def revert_uri(self) -> None:
        self.new_uri = None
        self.dst_uri = None
        self._parsed_ruri = None

    @property
    def parsed_ruri(self) -> SipUri:
        """The current request URI, parsed (cached until the next rewrite).
        Raises the parser's error for a malformed URI."""
        if self._parsed_ruri is None:
            self._parsed_ruri = SipUri.parse(self.ruri)
        return self._parsed_ruri

    def decrement_max_forwards(self) -> bool:
        """RFC 3261 §16.6 step 3, once per request (maxfwd's
        ``mf_process_maxfwd_header`` may have done it): False when no hop
        is left, which the caller answers with 483."""
        data = self.data
        if data.get("maxfwd"):
            return True
        if not decrement_max_forwards(self.msg):
            return False
        data["maxfwd"] = True
        return True

    # -- flags (1..31, SER's setflag/resetflag/isflagset) -----------------
    def setflag(self, n: int) -> None:
        self.flags |= 1 << n

    def resetflag(self, n: int) -> None:
        self.flags &= ~(1 << n)

    def isflagset(self, n: int) -> bool:
        return bool(self.flags & (1 << n))

    # -- destination set ---------------------------------------------------
    def append_branch(self, uri: str | None = None, q: int = -1) -> bool:
        """Add a destination; default is the current request URI.  At most
        11 extra branches, as SER's MAX_BRANCHES=12 allowed."""
        if len(self.branches) >= 11:
            return False
        self.branches.append(Branch(uri if uri is not None else self.ruri, q))
        return True

    def clear_branches(self) -> None:
        self.branches.clear()


RouteFn = Callable[[RequestContext], Awaitable[int]]


@dataclass(slots=True)
class RouteTable:
    """Compiled routes.  Keys are route numbers or names as strings
    (``"0"`` is the main request route; ``"1"``, ``"name"`` ...)."""

    request: dict[str, RouteFn]
    failure: dict[str, RouteFn]
    onreply: dict[str, RouteFn]
    branch: dict[str, RouteFn]
