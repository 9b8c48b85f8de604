"""The routing API: the request being routed and the core it runs in.

A :class:`RequestContext` is what every script action receives (SER's
``struct sip_msg`` plus the destination set, flags and receive info).  The
``ser.cfg`` compiler and Python routing scripts both act on it; so do module
functions.  :class:`CoreAPI` is the part of the running server that modules
may use: sending, replying, forwarding, timers, ``myself`` checks, hooks.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from sipexpress.core.registry import Module, RouteType
from sipexpress.sip.uri import SipUri

if TYPE_CHECKING:
    from sipexpress.sip.message import SipMessage


class Proto(enum.IntEnum):
    UDP = 1
    TCP = 2
    TLS = 3

    @property
    def token(self) -> str:
        """As written in a Via header: ``UDP``, ``TCP``, ``TLS``."""
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


class CoreAPI(Protocol):
    """What modules and script actions may use of the running server."""

    options: dict[str, Any]  # global options (ser.cfg), parsed
    routes: RouteTable

    def module(self, name: str) -> Module | None: ...

    def now(self) -> float: ...

    def call_later(self, delay: float, callback: Callable[[], Any]) -> Any: ...

    def spawn(self, coro: Awaitable[Any]) -> None:
        """Run a background task; exceptions are logged, never lost."""
        ...

    def is_myself(self, host: str, port: int | None = None, proto: Proto | None = None) -> bool: ...

    async def uri_destination(
        self, uri_text: str, proto: Proto | None, rproto: Proto, uri: SipUri | None = None
    ) -> tuple[Proto, str, int] | int:
        """RFC 3263 target of a SIP URI, or a SER error code."""
        ...

    def known_destination(
        self, uri_text: str, proto: Proto | None, rproto: Proto
    ) -> tuple[Proto, str, int] | None:
        """``uri_destination``'s kept answer for a numeric URI, if any."""
        ...

    def send(self, proto: Proto, ip: str, port: int, data: bytes, rcv: ReceiveInfo | None = None) -> bool:
        """Send bytes; for TCP reuse a connection to ip:port (or the one the
        request came on when ``rcv`` is given), opening one if needed."""
        ...

    def build_reply(
        self,
        ctx: RequestContext,
        code: int,
        reason: str,
        extra_headers: list[str] | None = None,
        body: bytes = b"",
        to_tag: str | None = None,
    ) -> bytes:
        """Build a reply to ``ctx.msg`` as SER's build_res_buf_from_sip_req."""
        ...

    def send_reply(
        self,
        ctx: RequestContext,
        code: int,
        reason: str,
        extra_headers: list[str] | None = None,
        body: bytes = b"",
    ) -> int:
        """Statelessly reply to the request (sl_send_reply); 1 or -1."""
        ...

    async def forward(
        self,
        ctx: RequestContext,
        host: str | None = None,
        port: int | None = None,
        proto: Proto | None = None,
    ) -> int:
        """Statelessly forward the request to host:port or, without host,
        to ``ctx.dst_uri``/the request URI (RFC 3263).  1 or negative."""
        ...

    async def run_route(self, kind: RouteType, name: str, ctx: RequestContext) -> int: ...
