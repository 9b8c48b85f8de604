"""What modules and script actions may use of the running server.

:class:`CoreAPI` is the whole contract: a module is given an object of this
type and uses nothing else of the core (no private names, no ``getattr``
probing).  :class:`sipexpress.core.server.Core` implements it; tests may
implement it in memory.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from sipexpress.core.context import Proto, ReceiveInfo, RequestContext, RouteTable
    from sipexpress.core.registry import Module, RouteType
    from sipexpress.core.resolver import Resolver
    from sipexpress.core.stats import Stats, StatsRegistry
    from sipexpress.core.workers import WorkerInfo
    from sipexpress.sip.message import SipMessage
    from sipexpress.sip.uri import SipUri

#: runs before the script; True = the request is consumed (sl's ACK filter,
#: tm's retransmission absorption)
RequestHook = Callable[["RequestContext"], bool]
#: runs for every reply before stateless forwarding; True = consumed (tm)
ReplyHook = Callable[["SipMessage", "ReceiveInfo"], bool]


class Listener(Protocol):
    """A local socket requests leave from (and that our Via names)."""

    @property
    def ip(self) -> str: ...

    @property
    def port(self) -> int: ...

    @property
    def via_port(self) -> int:
        """The port our Via names for requests sent from here (``port``,
        or a worker's private port: :mod:`sipexpress.core.workers`)."""
        ...

    @property
    def af(self) -> int: ...

    @property
    def via_host(self) -> str:
        """The address as a Via host (IPv6 in brackets)."""
        ...

    def sendto(self, data: bytes, ip: str, port: int) -> bool: ...


class CoreAPI(Protocol):
    """What modules and script actions may use of the running server."""

    options: dict[str, Any]  # global options (ser.cfg), parsed
    routes: RouteTable
    #: the loaded modules by name and by alias, in load order
    modules: dict[str, Module]
    stats: Stats
    #: every module's declared statistics (``stats.*``, ``/metrics``)
    statistics: StatsRegistry
    resolver: Resolver
    request_hooks: list[RequestHook]
    reply_hooks: list[ReplyHook]
    #: the prefix of our stateless To-tags (sl's ACK filter knows them by it)
    to_tag_prefix: str
    #: loop time of the last stateless reply >= 300 (sl's ACK filter)
    last_negative_reply: float
    #: this process's place among the worker processes (its bus to the
    #: others: usrloc replicates over it); None with one process
    worker: WorkerInfo | None
    #: connection tables of the WS/WSS listeners (empty: none configured)
    streams: dict[Proto, Any]

    # -- modules, routes, tasks ------------------------------------------
    def module(self, name: str) -> Module | None: ...

    async def run_route(self, kind: RouteType, name: str, ctx: RequestContext) -> int:
        """Run ``route[name]`` of that kind on ``ctx``: its result (1 for
        none, -1 when it does not exist)."""
        ...

    def now(self) -> float: ...

    def call_later(self, delay: float, callback: Callable[[], Any]) -> Any: ...

    def spawn(self, coro: Awaitable[Any]) -> None:
        """Run a background task; exceptions are logged, never lost."""
        ...

    def drive(self, coro: Coroutine[Any, Any, Any], what: str) -> None:
        """Run ``coro`` now, in a task only if it suspends; an exception is
        logged as "``what`` failed"."""
        ...

    # -- addresses -------------------------------------------------------
    def is_myself(self, host: str, port: int | None = None, proto: Proto | None = None) -> bool:
        """SER's ``check_self``: one of our sockets or an ``alias``."""
        ...

    def is_numeric(self, host: str) -> bool:
        """An IPv4 or IPv6 (bracketed or not) address, no name."""
        ...

    def pick_listener(self, ctx: RequestContext | None, proto: Proto, dip: str) -> Listener | None:
        """The socket a request to ``dip`` leaves from (``force_send_socket``,
        else the one it came in on, else the first of that protocol and
        family); None when there is none."""
        ...

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

    async def host_destination(
        self, host: str, port: int | None, proto: Proto
    ) -> tuple[Proto, str, int] | int:
        """An explicit next hop (``forward(host, port)``, ``t_relay_to``):
        the host resolved, the default port of ``proto``; or E_BAD_ADDRESS."""
        ...

    # -- sending ---------------------------------------------------------
    def send(
        self,
        proto: Proto,
        ip: str,
        port: int,
        data: bytes,
        rcv: ReceiveInfo | None = None,
        on_error: Callable[[], None] | None = None,
    ) -> bool:
        """Send bytes; for TCP reuse a connection to ip:port (or the one the
        request came on when ``rcv`` is given), opening one if needed;
        ``on_error`` is called when that connection cannot be opened."""
        ...

    def connected(self, proto: Proto, ip: str, port: int) -> bool:
        """An open connection of stream transport ``proto`` to ip:port."""
        ...

    def fix_top_via(self, ctx: RequestContext) -> None:
        """``received``/``rport`` on the request's top Via (RFC 3261
        §18.2.1, RFC 3581), once per message."""
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
        """A reply to ``ctx.msg`` as SER's build_res_buf_from_sip_req: the
        script's ``append_to_reply`` lines, 3xx Contact, Server, Warning."""
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
