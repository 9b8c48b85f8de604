"""The Core: listeners, the receive path, sending and stateless replies.

Theory of operation
-------------------
Every transport hands complete messages to :meth:`Core.receive` with a
:class:`ReceiveInfo`.  A request is parsed (lazily: start line and header
index), its top Via and the transaction-identifying headers are checked,
then the pre-script ``request_hooks`` may consume it (sl's ACK filter), and
``route[0]`` runs.  A route is an ``async def`` but most never suspend, so
the coroutine is driven by hand (:mod:`sipexpress.core.driver`); only a
route that really awaits something gets an asyncio Task.  A malformed
request gets a ``400`` (or the parser's more specific status) where a
reply is due -- never to ACK, never to a reply.

A reply goes to the ``reply_hooks`` (tm claims the replies of its
transactions) and otherwise is forwarded statelessly
(:mod:`sipexpress.core.forward`, which also does ``forward()``).

Stateless replies are built from the request's raw header lines by
:func:`sipexpress.sip.message.build_reply`.  What is ours is
:mod:`sipexpress.core.myself`; starting and stopping the modules and the
management layer is the runner's job (:mod:`sipexpress.core.runner`).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import dataclasses
import hashlib
import logging
import os
import platform
import re
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

from mypy_extensions import mypyc_attr

from sipexpress import __version__
from sipexpress.core.api import Listener, ReplyHook, RequestHook
from sipexpress.core.context import Proto, ReceiveInfo, RequestContext, RouteTable
from sipexpress.core.driver import CoroutineDriver
from sipexpress.core.forward import PROTO_BY_NAME, StatelessForwarder
from sipexpress.core.logging import handling, task_context
from sipexpress.core.myself import Myself
from sipexpress.core.options import normalize_options
from sipexpress.core.registry import ConfigError, MgmtCommand, Module, RouteType
from sipexpress.core.resolver import Resolver
from sipexpress.core.stats import (
    METHOD_INDEX,
    OTHER_METHOD,
    TIMING_MASK,
    Stats,
    StatsRegistry,
    core_statistics,
)
from sipexpress.core.transport import (
    TcpConnection,
    TcpLimits,
    TcpListener,
    TcpManager,
    UdpListener,
    bind_socket,
)
from sipexpress.sip.errors import SipParseError
from sipexpress.sip.forwarding import (
    SIP_PORT,
    SIPS_PORT,
    normalize_host,
    via_destination,
    via_host,
    via_with,
)
from sipexpress.sip.message import build_reply

if TYPE_CHECKING:
    from sipexpress.core.tls import TlsSettings
    from sipexpress.core.tls_transport import TlsManager
    from sipexpress.core.workers import WorkerInfo
    from sipexpress.sip.message import SipMessage

log = logging.getLogger("sipexpress.core")

SERVER_NAME = f"Sip EXpress router (sipexpress {__version__} ({platform.machine()}/{sys.platform}))"
SERVER_HEADER = f"Server: {SERVER_NAME}\r\n".encode()

_clock = time.perf_counter
_bisect = bisect.bisect_left
_METHOD_INDEX_get = METHOD_INDEX.get
# enum members as module constants: ``Proto.TCP`` is a slow class lookup
# on 3.11, and the receive/reply path compares protocols several times
_UDP: Final = Proto.UDP
_TCP: Final = Proto.TCP
_TLS: Final = Proto.TLS
_WS_PROTOS: Final = frozenset((Proto.WS, Proto.WSS))
#: messages kept while the modules start (more are dropped: UDP peers retransmit)
MAX_HELD: Final = 1000
#: the largest UDP payload over IPv4 (65535 - 20 IP - 8 UDP header bytes)
MAX_UDP_PAYLOAD: Final = 65507


def reply_too_large(reply: bytes) -> bytes | None:
    """What to send instead of a reply that fits no datagram: a 500 with
    the reply's transaction headers (Via, From, To, Call-ID, CSeq); None
    when even that is too large or the reply cannot be read."""
    try:
        msg = _parse(reply)
        lines = msg.raw_header_groups(("via", "from", "to", "call-id", "cseq"))
    except SipParseError:
        return None
    out = b"".join([b"SIP/2.0 500 Reply Too Large For UDP\r\n", *(b"".join(g) for g in lines)])
    out += b"Content-Length: 0\r\n\r\n"
    return out if len(out) <= MAX_UDP_PAYLOAD else None


_SERVER_TRAILER: Final = (SERVER_HEADER,)


def _log_failure(exc: Exception, what: str) -> None:
    log.error("%s failed: %r", what, exc, exc_info=exc)


# compiled with mypyc (sipexpress/_build.py); tests subclass it (a virtual clock)
@mypyc_attr(allow_interpreted_subclasses=True)
class Core:
    """The running server (implements :class:`~sipexpress.core.api.CoreAPI`)."""

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        self.cli_overrides: dict[str, Any] = {}
        self.options: dict[str, Any] = normalize_options(options or {})
        self.routes = RouteTable({}, {}, {}, {})
        self.modules: dict[str, Module] = {}
        self.module_list: list[Module] = []
        self.request_hooks: list[RequestHook] = []
        self.reply_hooks: list[ReplyHook] = []
        self.stats = Stats()
        self.statistics = StatsRegistry(lambda: self.module_list)
        self.statistics.add_group("core", core_statistics(self.stats))
        self.resolver = Resolver()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.udp_listeners: list[UdpListener] = []
        #: the UDP sockets requests leave from (the listeners, or with
        #: several workers each worker's private ones: core.workers)
        self.udp_out: list[UdpListener] = self.udp_listeners
        self.tcp: TcpManager | None = None
        #: this process's place among the workers; None: one process
        self.worker: WorkerInfo | None = None
        #: TLS connections; only when a ``listen=tls:`` socket is configured
        self.tls: TlsManager | None = None
        #: the WebSocket connection tables (WS, WSS), made for their listeners
        self.streams: dict[Proto, TcpManager] = {}
        self.last_negative_reply = -1e9  # loop time of the last sl reply >= 300
        self._tasks: set[asyncio.Task[Any]] = set()
        #: messages that arrive while the runner is still starting the
        #: modules: handled once it is done (SER initialises modules before
        #: its children read a socket); None when not starting
        self._held: list[tuple[bytes, ReceiveInfo]] | None = None
        self.myself = Myself(self)
        self.is_myself = self.myself.is_myself
        self.to_tag_prefix = hashlib.md5(f"sipexpress-sl-{os.getpid()}".encode()).hexdigest()
        self._tag_prefix_b = self.to_tag_prefix.encode()
        self._main_route: Callable[[RequestContext], Any] | None = None
        #: management commands of the program running the core (``reload``)
        self.mgmt_commands: list[MgmtCommand] = []
        self._route_driver: CoroutineDriver[RequestContext] = CoroutineDriver(self.spawn, self._route_failed)
        self.drive = CoroutineDriver(self.spawn, _log_failure).drive
        # stateless forwarding; its methods are the core's (no extra call per message)
        self.stateless = fwd = StatelessForwarder(self)
        self.forward = fwd.forward
        self.forward_reply = fwd.forward_reply
        self.uri_destination = fwd.uri_destination
        self.known_destination = fwd.known_destination
        self.host_destination = fwd.host_destination
        self.is_numeric = fwd.is_numeric

    # ------------------------------------------------------------------
    # configuration
    # ------------------------------------------------------------------
    def update_options(self, values: Mapping[str, Any]) -> None:
        """Merge global options (ser.cfg / routes.py ``OPTIONS``); command
        line overrides (``-l``, ``-p`` ...) always win."""
        opts = normalize_options(values, self.options)
        if self.cli_overrides:
            if "listen" in self.cli_overrides:
                opts["listen"] = []
            opts = normalize_options(self.cli_overrides, opts)
        self.options = opts
        self.myself.reset()

    def set_routes(self, routes: RouteTable) -> None:
        self.routes = routes
        self._main_route = routes.request.get("0")

    def load_module(self, name: str) -> Module:
        """Instantiate a module by export name (or return the loaded one)."""
        from sipexpress.modules import load_module_class, module_name_from_path

        key = module_name_from_path(name)
        existing = self.modules.get(key)
        if existing is not None:
            return existing
        cls = load_module_class(key)
        inst = cls(self)
        self.add_module(inst)
        return inst

    def add_module(self, inst: Module) -> None:
        if inst.name in self.modules:
            raise ConfigError(f"module '{inst.name}' loaded twice")
        self.modules[inst.name] = inst
        for alias in inst.aliases:
            self.modules.setdefault(alias, inst)
        self.module_list.append(inst)

    def set_modparam(self, module: str, param: str, value: Any) -> None:
        """``modparam``; ``module`` is matched exactly (the cfg compiler does
        SER's regex matching itself)."""
        inst = self.modules.get(module)
        if inst is None:
            raise ConfigError(f"modparam: module '{module}' is not loaded")
        inst.set_param(param, value)

    # ------------------------------------------------------------------
    # CoreAPI
    # ------------------------------------------------------------------
    def module(self, name: str) -> Module | None:
        return self.modules.get(name)

    def now(self) -> float:
        return self.loop.time() if self.loop is not None else time.monotonic()

    def call_later(self, delay: float, callback: Callable[[], Any]) -> asyncio.TimerHandle:
        loop = self.loop or asyncio.get_event_loop()
        return loop.call_later(delay, callback)

    def spawn(self, coro: Awaitable[Any]) -> None:
        loop = self.loop or asyncio.get_event_loop()
        task: asyncio.Task[Any] = loop.create_task(coro, context=task_context())  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            log.error("background task failed: %r", exc, exc_info=exc)

    async def run_route(self, kind: RouteType, name: str, ctx: RequestContext) -> int:
        routes = ctx.routes or self.routes  # those the message (or its transaction) started on
        if kind == RouteType.REQUEST:
            table = routes.request
        elif kind == RouteType.FAILURE:
            table = routes.failure
        elif kind == RouteType.ONREPLY:
            table = routes.onreply
        else:
            table = routes.branch
        fn = table.get(name)
        if fn is None:
            log.error("route %s[%s] does not exist", kind.name, name)
            return -1
        prev = ctx.route_type
        ctx.route_type = kind
        try:
            res: Any = fn(ctx)
            if res is not None and not isinstance(res, int):
                res = await res
        finally:
            ctx.route_type = prev
        return 1 if res is None else int(res)

    # ------------------------------------------------------------------
    # listeners (the runner opens and closes them)
    # ------------------------------------------------------------------
    async def open_listeners(self) -> None:
        """Bind the listeners and learn ``myself``; what arrives from now
        on is held until :meth:`release_held`."""
        self.loop = loop = asyncio.get_running_loop()
        self._held = []
        max_size = int(self.options.get("max_msg_size") or 65535)
        sockets = self.myself.listen_specs()
        if not sockets:
            raise ConfigError("no listen address to bind")
        self.tcp = TcpManager(
            loop,
            self.receive,
            max_size,
            float(self.options.get("tcp_connection_lifetime") or 120),
            float(self.options.get("tcp_connect_timeout") or 10),
            self._bad_stream,
            TcpLimits.from_options(self.options),
        )
        rcvbuf = int(self.options.get("maxbuffer") or 0)
        bound = self.worker.sockets if self.worker is not None else None
        try:
            for proto, ip, port in sockets:
                if proto is Proto.UDP:
                    sock = (
                        bound.listen[(proto, ip, port)]
                        if bound
                        else bind_socket(ip, port, socket.SOCK_DGRAM, rcvbuf)
                    )
                    lst = UdpListener(self.receive, ip, port, max_size)
                    await loop.create_datagram_endpoint(lambda lst=lst: lst, sock=sock)  # type: ignore[misc]
                    self.udp_listeners.append(lst)
                    if bound:
                        own = bound.private[(ip, port)]
                        out = UdpListener(self.receive, ip, own.getsockname()[1], max_size)
                        await loop.create_datagram_endpoint(lambda out=out: out, sock=own)  # type: ignore[misc]
                        lst.via_port = out.via_port = out.port
                        if self.udp_out is self.udp_listeners:
                            self.udp_out = []
                        self.udp_out.append(out)
                elif proto is Proto.TCP:
                    tl = TcpListener(self.tcp, ip, port)
                    await tl.start(sock=bound.listen[(proto, ip, port)] if bound else None)
                    self.tcp.listeners.append(tl)
                elif proto is Proto.TLS:
                    tls = self.tls or self._tls_manager(max_size)
                    tl = TcpListener(tls, ip, port)
                    await tl.start(sock=bound.listen[(proto, ip, port)] if bound else None)
                    tls.listeners.append(tl)
                else:
                    mgr = self._ws_manager(proto, max_size)
                    tl = TcpListener(mgr, ip, port)
                    await tl.start(sock=bound.listen[(proto, ip, port)] if bound else None)
                    mgr.listeners.append(tl)
        except OSError as e:
            self.close_listeners()
            raise ConfigError(
                f"cannot bind {proto.name.lower()}:{via_host(ip)}:{port}: {e.strerror}"
            ) from None
        self.tcp.start_sweeper()
        if self.tls is not None:
            self.tls.start_sweeper()
        for mgr in self.streams.values():
            mgr.start_sweeper()
        self.myself.build()
        await self.myself.add_reverse_names()
        for lst in self.udp_listeners:
            log.info("listening on udp:%s", lst.address)
        for tl in self.stream_listeners():
            log.info("listening on %s:%s", tl.proto.name.lower(), tl.address)
        self._main_route = self.routes.request.get("0")
        if self._main_route is None:
            log.warning("no request route: every request will be dropped")

    def _tls_manager(self, max_size: int) -> TlsManager:
        """The TLS connection table, made when the first TLS socket is
        (the ssl contexts are loaded once, here)."""
        from sipexpress.core.tls import TlsError
        from sipexpress.core.tls_transport import TlsManager

        assert self.loop is not None
        try:
            self.tls = TlsManager(
                self.loop,
                self.receive,
                self._tls_settings(),
                max_size,
                float(self.options.get("tcp_connect_timeout") or 10),
                self._bad_stream,
                TcpLimits.from_options(self.options),
            )
        except (TlsError, ValueError) as e:
            raise ConfigError(f"tls: {e}") from None
        if self.tls.server_ctx is None:
            raise ConfigError("listen=tls: needs tls_certificate (and tls_private_key)")
        if "tls" not in self.resolver.supported:  # NAPTR SIPS+D2T records become usable
            self.resolver.supported = (*self.resolver.supported, "tls")
        return self.tls

    def _tls_settings(self) -> TlsSettings:
        from sipexpress.core.tls import TlsError, TlsSettings

        try:
            return TlsSettings.from_options(self.options)
        except (TlsError, ValueError) as e:
            raise ConfigError(f"tls: {e}") from None

    def _ws_manager(self, proto: Proto, max_size: int) -> TcpManager:
        """The WS or WSS connection table (made for the first listener)."""
        from sipexpress.core.tls import TlsError
        from sipexpress.core.ws_transport import WsManager, WssManager

        mgr = self.streams.get(proto)
        if mgr is not None:
            return mgr
        assert self.loop is not None
        opts = self.options
        origin = opts.get("ws_origin")
        try:
            pattern = re.compile(str(origin), re.I) if origin else None
        except re.error as e:
            raise ConfigError(f"ws_origin: bad regular expression {origin!r}: {e}") from None
        limits = TcpLimits.from_options(opts)
        keepalive = float(opts.get("ws_keepalive_interval") or 60)
        if proto is Proto.WS:
            mgr = WsManager(self.loop, self.receive, max_size, limits, keepalive, pattern)
        else:
            # a browser asked for a certificate shows a picker (headless: the
            # handshake stalls): WSS asks only with tls_require_certificate
            settings = dataclasses.replace(self._tls_settings(), verify=False)
            try:
                wss = WssManager(self.loop, self.receive, settings, max_size, limits, keepalive, pattern)
            except (TlsError, ValueError) as e:
                raise ConfigError(f"wss: {e}") from None
            if wss.server_ctx is None:
                raise ConfigError("listen=wss: needs tls_certificate (and tls_private_key)")
            mgr = wss
        self.streams[proto] = mgr
        return mgr

    def stream_listeners(self) -> list[TcpListener]:
        """The listeners of TCP, TLS, WS and WSS."""
        out = list(self.tcp.listeners) if self.tcp is not None else []
        if self.tls is not None:
            out += self.tls.listeners
        for mgr in self.streams.values():
            out += mgr.listeners
        return out

    def connected(self, proto: Proto, ip: str, port: int) -> bool:
        """An open connection of stream transport ``proto`` to ip:port (here
        or, with several workers, in another one)."""
        mgr = self.tcp if proto is _TCP else self.tls if proto is _TLS else self.streams.get(proto)
        if mgr is None:
            return False
        if mgr.lookup(ip, port) is not None:
            return True
        return mgr.held_elsewhere is not None and mgr.held_elsewhere(ip, port)

    def release_held(self) -> None:
        """The modules are ready: handle what arrived while they started."""
        held, self._held = self._held, None
        if held:
            log.info("handling %d message(s) received while starting", len(held))
            for data, rcv in held:
                self.receive(data, rcv)

    def drop_held(self) -> None:
        """Stopping: nothing more is held."""
        self._held = None

    def close_listeners(self) -> None:
        for lst in self.udp_listeners:
            lst.close()
        if self.udp_out is not self.udp_listeners:
            for lst in self.udp_out:
                lst.close()
        if self.tcp is not None:
            self.tcp.close()
        if self.tls is not None:
            self.tls.close()
        for mgr in self.streams.values():
            mgr.close()

    async def cancel_tasks(self) -> None:
        """Cancel the background tasks (routes waiting on something, module
        work) and give them a moment to finish."""
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=2.0)

    # ------------------------------------------------------------------
    # receive path
    # ------------------------------------------------------------------
    def receive(self, data: bytes, rcv: ReceiveInfo) -> None:
        """Entry point of every transport: one complete message."""
        if self._held is not None:  # still starting: the modules are not ready
            if len(self._held) < MAX_HELD:
                self._held.append((data, rcv))
            return
        try:
            msg = _parse(data)
        except SipParseError as e:
            self._malformed(e, rcv)
            return
        except Exception:  # a parser bug must not take the server down
            log.exception("parser failed on a message from %s:%d", rcv.src_ip, rcv.src_port)
            return
        ctx: RequestContext | None = None
        stats = self.stats
        timed = -1  # METHOD_INDEX of a request whose processing time is observed
        started = 0.0
        previous, handling.msg = handling.msg, msg
        try:
            if msg.is_request:
                method = _METHOD_INDEX_get(msg.method, OTHER_METHOD)
                counts = stats.rcv_requests
                n = counts[method] + 1
                counts[method] = n
                if n & TIMING_MASK == 1:  # two clock readings cost ~2 % of a request: time a sample
                    timed = method
                    started = _clock()
                msg.validate()
                ctx = RequestContext(self, msg, rcv)
                ctx.routes = self.routes
                if rcv.proto is not _UDP:
                    if rcv.proto in _WS_PROTOS:
                        self._ws_alias(ctx)
                    else:
                        self._tcp_alias(msg, rcv)
                hooks = self.request_hooks
                if hooks:
                    for hook in hooks:
                        if hook(ctx):
                            return
                route = self._main_route
                if route is None:
                    return
                res = route(ctx)
                if res is not None and type(res) is not int:
                    self._route_driver.drive(res, ctx)
            else:
                stats.rcv_replies[msg.status // 100] += 1
                for rhook in self.reply_hooks:
                    if rhook(msg, rcv):
                        return
                self.forward_reply(msg, rcv)
        except SipParseError as e:
            if ctx is not None:
                self._route_parse_error(e, ctx)
            else:
                self._malformed(e, rcv, msg)
        except Exception:
            log.exception("error processing message from %s:%d", rcv.src_ip, rcv.src_port)
        finally:
            handling.msg = previous
            if timed >= 0:  # Histogram.observe inlined
                elapsed = _clock() - started
                hist = stats.request_time[timed]
                hist.counts[_bisect(hist.bounds, elapsed)] += 1
                hist.sum += elapsed

    def _route_failed(self, e: Exception, ctx: RequestContext) -> None:
        if isinstance(e, SipParseError):
            self._route_parse_error(e, ctx)
        else:
            rcv = ctx.rcv
            log.error("route failed for %s from %s:%d", ctx.msg.method, rcv.src_ip, rcv.src_port, exc_info=e)

    def _tcp_alias(self, msg: SipMessage, rcv: ReceiveInfo) -> None:
        """Remember the connection under the Via sent-by as well, so replies
        routed by Via (stateless or from tm) go back on it."""
        conn = rcv.transport
        if not isinstance(conn, TcpConnection):
            return
        via = msg.via1
        port = via.port or (SIPS_PORT if rcv.proto is _TLS else SIP_PORT)
        if port != rcv.src_port:
            conn.manager.add_alias(conn, rcv.src_ip, port)

    def _ws_alias(self, ctx: RequestContext) -> None:
        """A request from a WebSocket client (RFC 7118 §5): replies routed
        by Via find the connection by its source port (rport), and requests
        to the client's ``.invalid`` host (its Contact: in-dialog requests)
        by that host, which names the connection and nothing else."""
        ctx.force_rport = True
        conn = ctx.rcv.transport
        host = ctx.msg.via1.host.lower()
        if host.endswith(".invalid") and isinstance(conn, TcpConnection):
            conn.manager.add_alias(conn, host, 0)

    def force_tcp_alias(self, ctx: RequestContext) -> None:
        """``force_tcp_alias([port])``: the connection also serves the Via
        host's address with that port."""
        conn = ctx.rcv.transport
        port = int(ctx.data.pop("tcp_alias", 0) or 0)
        if isinstance(conn, TcpConnection) and port:
            conn.manager.add_alias(conn, ctx.rcv.src_ip, port)

    def _route_parse_error(self, e: SipParseError, ctx: RequestContext) -> None:
        """A header the route used is malformed: 400 unless it replied."""
        if ctx.replied:
            log.info(
                "malformed header in %s from %s:%d: %s", ctx.msg.method, ctx.rcv.src_ip, ctx.rcv.src_port, e
            )
            return
        self._malformed(e, ctx.rcv, ctx.msg)

    def _malformed(self, e: SipParseError, rcv: ReceiveInfo, msg: SipMessage | None = None) -> None:
        self.stats.bad_msgs += 1
        if msg is None:
            msg = e.msg
        if msg is None or not msg.is_request or msg.method == "ACK" or not _has_via(msg):
            log.info("dropping malformed message from %s:%d: %s", rcv.src_ip, rcv.src_port, e)
            return
        log.info("bad request from %s:%d: %s", rcv.src_ip, rcv.src_port, e)
        try:
            ctx = RequestContext(self, msg, rcv)
            data = self._build_reply(ctx, e.status, e.reason, None, b"", None, bad=True)
        except SipParseError as e2:
            log.info("cannot reply to malformed request from %s:%d: %s", rcv.src_ip, rcv.src_port, e2)
            return
        self.send(rcv.proto, rcv.src_ip, rcv.src_port, data, rcv)

    def _bad_stream(self, rcv: ReceiveInfo, exc: Exception, pending: bytes) -> None:
        """A TCP stream that cannot be framed (no/invalid Content-Length, too
        big): answer the request at its head with the framing error when its
        header block is complete, before the connection is closed."""
        end = pending.find(b"\r\n\r\n")
        if end < 0 or not isinstance(exc, SipParseError):
            self.stats.bad_msgs += 1
            return
        msg: SipMessage | None
        try:
            msg = _parse(pending[: end + 4])
        except SipParseError as e:
            msg = e.msg
        except Exception:
            msg = None
        if msg is None:
            self.stats.bad_msgs += 1
            return
        self._malformed(exc, rcv, msg)

    # ------------------------------------------------------------------
    # sending
    # ------------------------------------------------------------------
    def _udp_for(self, af: int) -> UdpListener | None:
        for lst in self.udp_out:
            if lst.af == af:
                return lst
        return None

    def send_udp(self, lst: UdpListener, data: bytes, ip: str, port: int) -> bool:
        if len(data) <= MAX_UDP_PAYLOAD:
            return lst.sendto(data, ip, port)
        return self._too_large_for_udp(lst, data, ip, port)

    def _too_large_for_udp(self, lst: UdpListener, data: bytes, ip: str, port: int) -> bool:
        """A message that fits no datagram.  A reply goes over TCP to the
        same address when we have TCP (every SIP element implements it,
        RFC 3261 §18; §18.2.2 sends a reply to the client's sent-by port),
        else a 500 saying so takes its place; both are logged, as is a
        request that cannot be sent."""
        if not data.startswith(b"SIP/2.0 "):
            log.error("udp: a %d-byte request to %s:%d fits no datagram; not sent", len(data), ip, port)
            return False
        if self.tcp is not None and self.tcp.listeners:
            log.warning("udp: a %d-byte reply to %s:%d fits no datagram; sent over TCP", len(data), ip, port)
            return self.tcp.send(ip, port, data)
        small = reply_too_large(data)
        if small is None:
            log.error("udp: a %d-byte reply to %s:%d fits no datagram; dropped", len(data), ip, port)
            return False
        log.error("udp: a %d-byte reply to %s:%d fits no datagram; sent a 500 instead", len(data), ip, port)
        return lst.sendto(small, ip, port)

    def send(
        self,
        proto: Proto,
        ip: str,
        port: int,
        data: bytes,
        rcv: ReceiveInfo | None = None,
        on_error: Callable[[], None] | None = None,
    ) -> bool:
        if proto is _UDP:
            lst = rcv.transport if rcv is not None and rcv.proto is _UDP else None
            af = socket.AF_INET6 if ":" in ip else socket.AF_INET
            if lst is None or lst.af != af:
                lst = self._udp_for(af)
                if lst is None:
                    log.error("no udp socket for %s", ip)
                    self.stats.send_failures += 1
                    return False
            ok: bool = self.send_udp(lst, data, ip, port)
        elif proto is _TCP or proto is _TLS:
            streams = self.tcp if proto is _TCP else self.tls
            if streams is None:
                log.error("cannot send to %s:%d: no %s socket", ip, port, proto.name.lower())
                self.stats.send_failures += 1
                return False
            conn = rcv.transport if rcv is not None and rcv.proto is proto else None
            if isinstance(conn, TcpConnection) and not conn.closed:
                ok = conn.send(data, on_error)
            else:
                ok = streams.send(ip, port, data, on_error)
        elif proto in self.streams:  # WS, WSS: the connection the client opened
            conn = rcv.transport if rcv is not None and rcv.proto is proto else None
            if isinstance(conn, TcpConnection) and not conn.closed:
                ok = conn.send(data)
            else:
                ok = self.streams[proto].send(ip, port, data)
        else:
            log.error("cannot send to %s:%d: %s is not supported", ip, port, proto.name)
            ok = False
        if not ok:
            self.stats.send_failures += 1
        return ok

    # ------------------------------------------------------------------
    # Via handling (RFC 3261 §18.2.1, RFC 3581)
    # ------------------------------------------------------------------
    def fix_top_via(self, ctx: RequestContext) -> None:
        """Add ``received=`` (Via host differs from the source IP) and
        ``rport=`` (Via asks for it or ``force_rport``) to the request's top
        Via, once per message."""
        if ctx.via_fixed:
            return
        ctx.via_fixed = True
        msg = ctx.msg
        rcv = ctx.rcv
        via = msg.via1
        host = via.host
        need_rport = via.rport == "" or (ctx.force_rport and via.rport != str(rcv.src_port))
        # RFC 3581 §4: with rport, received too, even when it equals sent-by
        need_received = need_rport or (host != rcv.src_ip and not self._same_ip(host, rcv.src_ip))
        if not need_received and not need_rport:
            return
        msg.set_top_via(
            via_with(via, rcv.src_ip if need_received else None, rcv.src_port if need_rport else None)
        )

    def _same_ip(self, host: str, ip: str) -> bool:
        if host == ip:
            return True
        return normalize_host(host) == normalize_host(ip)

    def pick_listener(self, ctx: RequestContext | None, proto: Proto, dip: str) -> Listener | None:
        """The local socket a request to ``dip`` leaves from (and that our
        Via names): ``force_send_socket``, else the one the request came in
        on (same protocol and family), else the first of that protocol and
        family (SER's ``get_send_socket`` without mhomed)."""
        af = socket.AF_INET6 if ":" in dip else socket.AF_INET
        if ctx is not None:
            forced = ctx.send_socket
            if forced is not None:
                fproto = getattr(forced, "proto", None)
                fhost = normalize_host(str(getattr(forced, "host", getattr(forced, "ip", ""))))
                fport = int(getattr(forced, "port", 0) or 0)
                if fproto in (None, proto):
                    for lst in self._listeners(proto):
                        if lst.ip == fhost and (not fport or lst.port == fport) and lst.af == af:
                            return lst
                log.warning("force_send_socket(%s): no such %s socket", forced, proto.name.lower())
            rcv = ctx.rcv
            if rcv.proto is proto and rcv.af == af:
                t: Listener | None = rcv.transport
                if proto is _UDP and t is not None:
                    return t
                for lst in self._listeners(proto):
                    if lst.ip == rcv.dst_ip and lst.port == rcv.dst_port:
                        return lst
        for lst in self._listeners(proto):
            if lst.af == af:
                return lst
        return None

    def _listeners(self, proto: Proto) -> Sequence[Listener]:
        if proto is _UDP:
            return self.udp_listeners
        if proto is _TCP and self.tcp is not None:
            return self.tcp.listeners
        if proto is _TLS and self.tls is not None:
            return self.tls.listeners
        mgr = self.streams.get(proto)
        return mgr.listeners if mgr is not None else ()

    # ------------------------------------------------------------------
    # stateless replies (SER's build_res_buf_from_sip_req)
    # ------------------------------------------------------------------
    def build_reply(
        self,
        ctx: RequestContext,
        code: int,
        reason: str,
        extra_headers: list[str] | None = None,
        body: bytes = b"",
        to_tag: str | None = None,
    ) -> bytes:
        return self._build_reply(ctx, code, reason, extra_headers, body, to_tag)

    def _build_reply(
        self,
        ctx: RequestContext,
        code: int,
        reason: str,
        extra_headers: list[str] | None,
        body: bytes,
        to_tag: str | None,
        bad: bool = False,
    ) -> bytes:
        # Via: the top one with received/rport, the rest as received
        if ctx.via_fixed:
            pass
        elif bad:
            with contextlib.suppress(SipParseError):
                self.fix_top_via(ctx)
        else:
            self.fix_top_via(ctx)
        headers: Sequence[str] = ctx.reply_headers
        if extra_headers:
            headers = [*headers, *extra_headers] if headers else extra_headers
        opts = self.options
        trailer: Sequence[bytes]
        if code < 300 or code >= 400:
            if opts["server_signature"] and not opts["sip_warning"]:
                trailer = _SERVER_TRAILER  # the common case: nothing to build
            else:
                trailer = self._trailer(ctx, None)
        else:
            trailer = self._trailer(ctx, self._dset_contact(ctx))
        return build_reply(
            ctx.msg,
            code,
            reason,
            to_tag=to_tag,
            tag_prefix=self._tag_prefix_b,
            headers=headers,
            trailer=trailer,
            body=body,
        )

    def _trailer(self, ctx: RequestContext, contact: bytes | None) -> list[bytes]:
        """The lines after the headers: 3xx Contact, Server, Warning."""
        out = [contact] if contact else []
        opts = self.options
        if opts["server_signature"]:
            out.append(SERVER_HEADER)
        if opts["sip_warning"]:
            out.append(self._warning(ctx))
        return out

    def _dset_contact(self, ctx: RequestContext) -> bytes | None:
        """``Contact:`` for 3xx: the RURI if rewritten, then the branches
        (SER's ``print_dset``)."""
        items: list[str] = []
        if ctx.new_uri is not None:
            items.append(_contact_uri(ctx.new_uri))
        for b in ctx.branches:
            if b.q >= 0:
                q = f"{b.q / 1000:.3f}".rstrip("0").rstrip(".") if b.q % 1000 else str(b.q // 1000)
                items.append(f"<{b.uri}>;q={q}")
            else:
                items.append(_contact_uri(b.uri))
        if not items:
            return None
        return ("Contact: " + ", ".join(items) + "\r\n").encode("utf-8", "surrogateescape")

    def _warning(self, ctx: RequestContext) -> bytes:
        rcv = ctx.rcv
        msg = ctx.msg
        try:
            via_cnt = len(msg.values("via"))
        except SipParseError:
            via_cnt = 0
        text = (
            f'Warning: 392 {via_host(rcv.dst_ip)}:{rcv.dst_port} "Noisy feedback tells: '
            f"pid={os.getpid()} req_src_ip={rcv.src_ip} req_src_port={rcv.src_port} "
            f'in_uri={msg.ruri} out_uri={ctx.ruri} via_cnt=={via_cnt}"\r\n'
        )
        return text.encode("utf-8", "surrogateescape")

    def send_reply(
        self,
        ctx: RequestContext,
        code: int,
        reason: str,
        extra_headers: list[str] | None = None,
        body: bytes = b"",
    ) -> int:
        msg = ctx.msg
        if not msg.is_request or msg.method == "ACK":
            return -1
        stats = self.stats
        try:
            data = self._build_reply(ctx, code, reason, extra_headers, body, None)
        except SipParseError as e:
            log.info("cannot build a reply: %s", e)
            stats.sl_failures += 1
            return -1
        rcv = ctx.rcv
        if rcv.proto is _TCP and "tcp_alias" in ctx.data:
            self.force_tcp_alias(ctx)
        if self.options["reply_to_via"]:
            proto = PROTO_BY_NAME.get(msg.via1.transport.upper(), rcv.proto)
            ip, port = via_destination(msg.via1)
            ok = self.send(proto, ip, port, data, rcv)
        elif rcv.proto is _UDP and rcv.transport is not None:
            ok = self.send_udp(rcv.transport, data, rcv.src_ip, rcv.src_port)  # the common case
        else:
            conn = rcv.transport
            if rcv.proto is not _UDP and (not isinstance(conn, TcpConnection) or conn.closed):
                # the connection is gone: RFC 3261 §18.2.2, to the Via sent-by
                ip, port = via_destination(msg.via1)
                ok = self.send(rcv.proto, ip or rcv.src_ip, port, data)
            else:
                ok = self.send(rcv.proto, rcv.src_ip, rcv.src_port, data, rcv)
        if not ok:
            stats.sl_failures += 1
            return -1
        stats.sl_replies[code] += 1
        if code >= 200:
            ctx.replied = True  # a later parse error must not add a 400
        if code >= 300 and self.loop is not None:
            self.last_negative_reply = self.loop.time()
        return 1


def _contact_uri(uri: str) -> str:
    """A bare URI as SER printed it, unless it holds characters that would
    be read as header parameters or a list separator (RFC 3261 §20.10)."""
    return f"<{uri}>" if any(c in uri for c in ";?,") else uri


def _has_via(msg: SipMessage) -> bool:
    """A reply needs the request's Via (RFC 3261 §8.2.6.2)."""
    try:
        return bool(msg.raw_header_lines("via"))
    except SipParseError:
        return False


def _parse(data: bytes) -> SipMessage:
    from sipexpress.sip.message import SipMessage

    global _parse  # bind the real parser on first use
    _parse = SipMessage.parse
    return SipMessage.parse(data)
