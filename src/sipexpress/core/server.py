"""The Core: listeners, the receive path, stateless forwarding and replies.

Theory of operation
-------------------
Every transport hands complete messages to :meth:`Core.receive` with a
:class:`ReceiveInfo`.  A request is parsed (lazily: start line and header
index), its top Via and the transaction-identifying headers are checked,
then the pre-script ``request_hooks`` may consume it (sl's ACK filter), and
``route[0]`` runs.  A route is an ``async def`` but most never suspend, so
the coroutine is driven by hand (:meth:`Core._drive`); only a route that
really awaits something gets an asyncio Task.  A malformed request gets a
``400`` (or the parser's more specific status) where a reply is due —
never to ACK, never to a reply.

A reply goes to the ``reply_hooks`` (tm claims the replies of its
transactions) and otherwise is forwarded statelessly: our top Via removed,
sent to the next Via's ``received``/``rport`` or sent-by (SER's
``forward_reply``).

Stateless forwarding (:meth:`Core.forward`) adds ``received``/``rport`` to
the previous hop's Via (RFC 3261 §18.2.1, RFC 3581), decrements
Max-Forwards (``483`` at zero), adds our Via with a branch that is a hash
of the incoming branch (RFC 3261 §16.11) so retransmissions keep it, and
sends to the request URI / ``ctx.dst_uri`` located per RFC 3263, or to an
explicit host:port.

Replies are built from the request's raw header lines (SER's
``build_res_buf_from_sip_req``), without re-parsing them.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import ipaddress
import logging
import os
import platform
import socket
import sys
import time
import types
import zlib
from collections.abc import Awaitable, Callable, Coroutine, Generator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

from sipexpress import __version__
from sipexpress.core import errors
from sipexpress.core.context import Proto, ReceiveInfo, RequestContext, RouteTable
from sipexpress.core.options import SIP_PORT, SIPS_PORT, SocketSpec, normalize_options
from sipexpress.core.registry import ConfigError, MgmtCommand, Module, RouteType
from sipexpress.core.resolver import Resolver
from sipexpress.core.stats import Stats
from sipexpress.core.transport import (
    TcpConnection,
    TcpListener,
    TcpManager,
    UdpListener,
    bind_socket,
    local_addresses,
)
from sipexpress.sip.errors import SipError, SipParseError
from sipexpress.sip.uri import SipUri

if TYPE_CHECKING:
    from sipexpress.sip.message import SipMessage

log = logging.getLogger("sipexpress.core")

SERVER_NAME = f"Sip EXpress router (sipexpress {__version__} ({platform.machine()}/{sys.platform}))"
SERVER_HEADER = f"Server: {SERVER_NAME}\r\n".encode()
ACK_FILTER_WINDOW = 2.0  # seconds sl filters ACKs to its negative replies

_COROUTINE: Final = types.CoroutineType

RequestHook = Callable[[RequestContext], bool]
ReplyHook = Callable[["SipMessage", ReceiveInfo], bool]

_PROTO_BY_NAME = {"UDP": Proto.UDP, "TCP": Proto.TCP, "TLS": Proto.TLS}
# enum members as module constants: ``Proto.TCP`` is a slow class lookup
# on 3.11, and the receive/reply path compares protocols several times
_UDP: Final = Proto.UDP
_TCP: Final = Proto.TCP
#: messages kept while the modules start (more are dropped: UDP peers retransmit)
MAX_HELD: Final = 1000
#: gc.set_threshold() while the server runs (see Core.start)
GC_THRESHOLDS: Final = (50_000, 20, 100)
#: the request's header fields a reply copies (RFC 3261 §8.2.6.2)
_REPLY_COPY: Final = ("via", "from", "to", "call-id", "cseq")
#: and Record-Route for 18x/2xx (RFC 3261 §12.1.1)
_REPLY_COPY_RR: Final = ("via", "record-route", "from", "to", "call-id", "cseq")


def _norm_host(host: str) -> str:
    """Lower-case, brackets stripped, IPv6 in compressed form."""
    h = host.lower()
    if h.startswith("["):
        h = h[1:-1] if h.endswith("]") else h[1:]
    if ":" in h:
        with contextlib.suppress(ValueError):
            h = ipaddress.ip_address(h).compressed
    return h


def _via_host(ip: str) -> str:
    return f"[{ip}]" if ":" in ip else ip


class Resume:
    """Awaitable that hands a started coroutine over to a Task: it re-yields
    whatever the coroutine is blocked on and forwards what the Task sends."""

    __slots__ = ("coro", "first")

    def __init__(self, coro: Coroutine[Any, Any, Any], first: Any) -> None:
        self.coro = coro
        self.first = first

    def __await__(self) -> Generator[Any, Any, Any]:
        value = self.first
        coro = self.coro
        while True:
            try:
                sent = yield value
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:
                try:
                    value = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    value = coro.send(sent)
                except StopIteration as stop:
                    return stop.value


class Core:
    """The running server (implements :class:`~sipexpress.core.context.CoreAPI`)."""

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        self.cli_overrides: dict[str, Any] = {}
        self.options: dict[str, Any] = normalize_options(options or {})
        self.routes = RouteTable({}, {}, {}, {})
        self.modules: dict[str, Module] = {}
        self.module_list: list[Module] = []
        self.request_hooks: list[RequestHook] = []
        self.reply_hooks: list[ReplyHook] = []
        self.stats = Stats()
        self.resolver = Resolver()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.udp_listeners: list[UdpListener] = []
        self.tcp: TcpManager | None = None
        self.started_at = time.time()
        self.last_negative_reply = -1e9  # loop time of the last sl reply >= 300
        self.mgmt: Any = None  # the management layer (FIFO/JSON-RPC), if started
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stop_event: asyncio.Event | None = None
        self._running = False
        #: messages that arrive while start() is still starting the modules:
        #: handled once it is done (SER initialises modules before its
        #: children read a socket); None when not starting
        self._held: list[tuple[bytes, ReceiveInfo]] | None = None
        # myself: (host, port, proto) of listen sockets and their names
        self._my_socks: set[tuple[str, int, Proto]] | None = None
        self._my_hostport: set[tuple[str, int]] = set()
        self._my_aliases: dict[str, set[int]] = {}
        self._my_names_extra: list[tuple[str, int, Proto]] = []
        self._numeric: dict[str, bool] = {}
        #: (URI, proto, in-proto) -> (proto, ip, port): uri_destination() for numeric hosts
        self._uri_dest: dict[tuple[str, Proto | None, Proto], tuple[Proto, str, int]] = {}
        self.to_tag_prefix = hashlib.md5(f"sipexpress-sl-{os.getpid()}".encode()).hexdigest()
        self._tag_prefix_b = self.to_tag_prefix.encode()
        self._main_route: Callable[[RequestContext], Any] | None = None
        #: management commands of the program running the core (``reload``)
        self.mgmt_commands: list[MgmtCommand] = []
        self._status_lines: dict[tuple[int, str], bytes] = {}

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
        self._my_socks = None

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
        task: asyncio.Task[Any] = loop.create_task(coro)  # type: ignore[arg-type]
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
    # myself
    # ------------------------------------------------------------------
    def listen_specs(self) -> list[tuple[Proto, str, int]]:
        """The sockets to bind: ``listen`` entries expanded (no proto = UDP
        and TCP; no port = ``port``; 0.0.0.0/:: = every local address)."""
        port = int(self.options.get("port") or SIP_PORT)
        specs: list[SocketSpec] = list(self.options.get("listen") or [])
        if not specs:
            specs = [SocketSpec(None, "0.0.0.0", port)]
        protos = [Proto.UDP] if self.options.get("disable_tcp") else [Proto.UDP, Proto.TCP]
        out: list[tuple[Proto, str, int]] = []
        local: list[str] | None = None
        for spec in specs:
            hosts: list[str]
            if spec.host in ("0.0.0.0", "::"):
                if local is None:
                    local = local_addresses()
                want_v6 = spec.host == "::"
                hosts = [a for a in local if (":" in a) == want_v6]
            elif spec.is_ip:
                hosts = [_norm_host(spec.host)]
            else:
                hosts = _resolve_now(spec.host)
                if not hosts:
                    raise ConfigError(f"listen: cannot resolve '{spec.host}'")
                self._my_names_extra.extend(
                    (spec.host.lower(), spec.port or port, p)
                    for p in ([spec.proto] if spec.proto else protos)
                )
            for p in [spec.proto] if spec.proto else protos:
                if p is Proto.TLS:
                    log.warning("listen=%s: TLS is not supported, ignored", spec)
                    continue
                if p is Proto.TCP and self.options.get("disable_tcp"):
                    continue
                for h in hosts:
                    item = (p, h, spec.port or port)
                    if item not in out:
                        out.append(item)
        return out

    def _build_myself(self, sockets: list[tuple[Proto, str, int]] | None = None) -> None:
        if sockets is None:
            sockets = [(lst.proto, lst.ip, lst.port) for lst in self.udp_listeners]
            if self.tcp is not None:
                sockets += [(lst.proto, lst.ip, lst.port) for lst in self.tcp.listeners]
            if not sockets:
                try:
                    sockets = self.listen_specs()
                except ConfigError:
                    sockets = []
        socks: set[tuple[str, int, Proto]] = set()
        for proto, ip, port in sockets:
            socks.add((_norm_host(ip), port, proto))
            if ip.startswith("127.") or ip == "::1":
                socks.add(("localhost", port, proto))
        for name, port, proto in self._my_names_extra:
            socks.add((name, port, proto))
        adv = self.options.get("advertised_address")
        if adv:
            adv_port = int(self.options.get("advertised_port") or 0)
            for _, _, port in sockets or [(Proto.UDP, "", SIP_PORT)]:
                for p in (Proto.UDP, Proto.TCP):
                    socks.add((_norm_host(str(adv)), adv_port or port, p))
        self._my_socks = socks
        self._my_hostport = {(h, p) for h, p, _ in socks}
        aliases: dict[str, set[int]] = {}
        for spec in self.options.get("alias") or []:
            aliases.setdefault(_norm_host(spec.host), set()).add(spec.port)
        self._my_aliases = aliases

    def add_myself_names(self, names: list[str]) -> None:
        """Extra host names of our sockets (reverse DNS, hostname)."""
        if self._my_socks is None:
            self._build_myself()
        assert self._my_socks is not None
        extra = set()
        for name in names:
            for _, port, proto in list(self._my_socks):
                extra.add((name.lower(), port, proto))
        self._my_socks |= extra
        self._my_hostport |= {(h, p) for h, p, _ in extra}

    def is_myself(self, host: str, port: int | None = None, proto: Proto | None = None) -> bool:
        """SER's ``check_self``: host (name or IP, case-insensitive) and port
        of one of our sockets, or an ``alias`` (alias without port = any
        port).  A missing port means 5060 (5061 for TLS)."""
        if self._my_socks is None:
            self._build_myself()
        h = _norm_host(host)
        p = port or (SIPS_PORT if proto is Proto.TLS else SIP_PORT)
        if proto is None:
            if (h, p) in self._my_hostport:
                return True
        elif (h, p, proto) in self._my_socks:  # type: ignore[operator]
            return True
        ports = self._my_aliases.get(h)
        return ports is not None and (0 in ports or p in ports)

    # ------------------------------------------------------------------
    # life cycle
    # ------------------------------------------------------------------
    async def start(self) -> None:
        """Bind the listeners, start the modules and the management layer."""
        self.loop = loop = asyncio.get_running_loop()
        if self._stop_event is None:
            self._stop_event = asyncio.Event()
        self._held = []
        max_size = int(self.options.get("max_msg_size") or 65535)
        sockets = self.listen_specs()
        if not sockets:
            raise ConfigError("no listen address to bind")
        self.tcp = TcpManager(
            loop,
            self.receive,
            max_size,
            float(self.options.get("tcp_connection_lifetime") or 120),
            float(self.options.get("tcp_connect_timeout") or 10),
            self._bad_stream,
        )
        rcvbuf = int(self.options.get("maxbuffer") or 0)
        try:
            for proto, ip, port in sockets:
                if proto is Proto.UDP:
                    sock = bind_socket(ip, port, socket.SOCK_DGRAM, rcvbuf)
                    lst = UdpListener(self.receive, ip, port, max_size)
                    await loop.create_datagram_endpoint(lambda lst=lst: lst, sock=sock)  # type: ignore[misc]
                    self.udp_listeners.append(lst)
                elif proto is Proto.TCP:
                    tl = TcpListener(self.tcp, ip, port)
                    await tl.start()
                    self.tcp.listeners.append(tl)
        except OSError as e:
            self._close_listeners()
            raise ConfigError(
                f"cannot bind {proto.name.lower()}:{_via_host(ip)}:{port}: {e.strerror}"
            ) from None
        self.tcp.start_sweeper()
        self._build_myself()
        await self._add_reverse_names()
        for lst in self.udp_listeners:
            log.info("listening on udp:%s", lst.address)
        for tl in self.tcp.listeners:
            log.info("listening on tcp:%s", tl.address)
        self._main_route = self.routes.request.get("0")
        if self._main_route is None:
            log.warning("no request route: every request will be dropped")
        children = int(self.options.get("children") or 1)
        if children > 1:
            log.info("children=%d: sipexpress runs one asyncio worker; using 1", children)
        for m in self.module_list:
            for dep in m.depends:
                if dep not in self.modules:
                    raise ConfigError(f"module '{m.name}' needs module '{dep}'")
        for m in self.module_list:
            await m.start()
        await self._start_mgmt()
        # --- web interface hook (sipexpress.web, option web_listen): uvicorn in this loop ---
        if self.options.get("web_listen"):
            from sipexpress.web import start_in_core

            self._tasks.add(await start_in_core(self))
        # everything allocated so far lives as long as the server: keep it out
        # of the collector's way (fewer, cheaper collections on the hot path)
        gc.collect()
        gc.freeze()
        # Under load tm keeps tens of thousands of container objects alive
        # for the wait timer; with the default thresholds (700, 10, 10) the
        # collector keeps walking them (~10 % of the CPU at 1000 calls/s,
        # bench/README.md).  Transactions are freed by reference counting,
        # so collect young objects rarely and old ones almost never.
        gc.set_threshold(*GC_THRESHOLDS)
        self._running = True
        held, self._held = self._held, None
        if held:
            log.info("handling %d message(s) received while starting", len(held))
            for data, rcv in held:
                self.receive(data, rcv)

    async def _add_reverse_names(self) -> None:
        """SER adds the names of listen addresses (reverse DNS, host name)
        to ``myself``; bounded so a dead DNS cannot stall start-up."""
        assert self.loop is not None
        names: set[str] = set()
        specs = self.options.get("listen") or []
        if not specs or any(sp.host in ("0.0.0.0", "::") for sp in specs):
            # listening on every interface: the host's own name is ours too
            with contextlib.suppress(OSError):
                names.add(socket.gethostname())
        ips = {lst.ip for lst in self.udp_listeners}
        if self.tcp is not None:
            ips |= {lst.ip for lst in self.tcp.listeners}

        def lookup() -> set[str]:
            found: set[str] = set()
            for ip in ips:
                try:
                    name, aliases, _ = socket.gethostbyaddr(ip)
                except (OSError, UnicodeError):
                    continue
                found.add(name)
                found.update(aliases)
            return found

        if self.options.get("rev_dns") or any(not ip.startswith("127.") for ip in ips):
            with contextlib.suppress(TimeoutError, OSError):
                names |= await asyncio.wait_for(self.loop.run_in_executor(None, lookup), 1.5)
        if names:
            self.add_myself_names(sorted(names))

    async def _start_mgmt(self) -> None:
        """Start the management layer (FIFO, JSON-RPC) when it is present."""
        try:
            import sipexpress.mgmt as mgmt
        except ImportError:
            if self.options.get("fifo"):
                log.warning("fifo=%s set but the management layer is not available", self.options["fifo"])
            return
        start = getattr(mgmt, "start", None)
        if start is None:
            return
        try:
            self.mgmt = await start(self)
        except Exception as e:
            raise ConfigError(f"management interface: {e}") from e

    def process_table(self) -> list[tuple[int, str]]:
        """Rows of the ``ps`` management command (SER's descriptions); all
        roles live in this one process."""
        pid = os.getpid()
        rows = [(pid, "attendant")]
        for lst in self.udp_listeners:
            rows.append((pid, f"receiver child=0 sock= {lst.address}"))
        if self.tcp is not None and self.tcp.listeners:
            rows.append((pid, "tcp main process"))
            rows.append((pid, "tcp receiver"))
        if self.mgmt is not None and getattr(self.mgmt, "fifo", None) is not None:
            rows.append((pid, "fifo server"))
        if self.mgmt is not None and getattr(self.mgmt, "unix", None) is not None:
            rows.append((pid, "unix domain socket server"))
        rows.append((pid, "timer"))
        return rows

    def _close_listeners(self) -> None:
        for lst in self.udp_listeners:
            lst.close()
        if self.tcp is not None:
            self.tcp.close()

    async def stop(self) -> None:
        """Stop modules (reverse order), the management layer, listeners."""
        self._running = False
        self._held = None
        if self.mgmt is not None:
            import sipexpress.mgmt as mgmt

            try:
                if getattr(mgmt, "current", lambda: None)() is self.mgmt:
                    await mgmt.stop()
                else:
                    await self.mgmt.stop()
            except Exception:
                log.exception("stopping the management layer failed")
            self.mgmt = None
        for m in reversed(self.module_list):
            try:
                await m.stop()
            except Exception:
                log.exception("module %s: stop() failed", m.name)
        self._close_listeners()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=2.0)

    def request_stop(self, reason: str = "stop requested") -> None:
        if self._stop_event is not None:
            if not self._stop_event.is_set():
                log.log(25, "stopping: %s", reason)
            self._stop_event.set()

    async def serve(self, ready: Callable[[], None] | None = None) -> int:
        """Start, run until SIGTERM/SIGINT (or :meth:`request_stop`), stop."""
        import signal

        # handlers first: a SIGTERM while modules start still shuts down
        # cleanly (usrloc's write-back flush, the FIFO file removed)
        self._stop_event = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig, why in ((signal.SIGTERM, "SIGTERM received"), (signal.SIGINT, "SIGINT received (Ctrl-C)")):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.request_stop, why)
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        assert self.loop is not None and self._stop_event is not None
        log.log(25, "sipexpress %s started (pid %d)", __version__, os.getpid())
        if ready is not None:
            ready()
        try:
            await self._stop_event.wait()
        finally:
            log.log(25, "shutting down")
            await self.stop()
        return 0

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
        try:
            if msg.is_request:
                self.stats.rcv_requests += 1
                msg.validate()
                ctx = RequestContext(self, msg, rcv)
                ctx.routes = self.routes
                if rcv.proto is _TCP:
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
                if type(res) is _COROUTINE:
                    # _drive inlined: most routes finish without suspending
                    try:
                        first = res.send(None)
                    except StopIteration:
                        return
                    except SipParseError as e:
                        self._route_parse_error(e, ctx)
                        return
                    except Exception:
                        log.exception("route failed for %s from %s:%d", msg.method, rcv.src_ip, rcv.src_port)
                        return
                    self._suspend(res, first, ctx)
                elif type(res) is not int and res is not None:
                    self._drive(res, ctx)
            else:
                self.stats.rcv_replies += 1
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

    def _drive(self, coro: Any, ctx: RequestContext) -> None:
        """Run a route coroutine eagerly; hand it to a Task only if it
        really suspends."""
        try:
            first = coro.send(None)
        except StopIteration:
            return
        except SipParseError as e:
            self._route_parse_error(e, ctx)
            return
        except Exception:
            log.exception("route failed for %s from %s:%d", ctx.msg.method, ctx.rcv.src_ip, ctx.rcv.src_port)
            return
        self._suspend(coro, first, ctx)

    def _suspend(self, coro: Any, first: Any, ctx: RequestContext) -> None:
        """The route awaits something: a Task carries on from ``first``."""
        assert self.loop is not None
        task = self.loop.create_task(self._resume(coro, first, ctx))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _resume(self, coro: Coroutine[Any, Any, Any], first: Any, ctx: RequestContext) -> None:
        try:
            await Resume(coro, first)
        except SipParseError as e:
            self._route_parse_error(e, ctx)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("route failed for %s from %s:%d", ctx.msg.method, ctx.rcv.src_ip, ctx.rcv.src_port)

    def _tcp_alias(self, msg: SipMessage, rcv: ReceiveInfo) -> None:
        """Remember the connection under the Via sent-by as well, so replies
        routed by Via (stateless or from tm) go back on it."""
        conn = rcv.transport
        if not isinstance(conn, TcpConnection) or self.tcp is None:
            return
        via = msg.via1
        port = via.port or SIP_PORT
        if port != rcv.src_port:
            self.tcp.add_alias(conn, rcv.src_ip, port)

    def _force_tcp_alias(self, ctx: RequestContext) -> None:
        """``force_tcp_alias([port])``: the connection also serves the Via
        host's address with that port."""
        conn = ctx.rcv.transport
        port = int(ctx.data.pop("tcp_alias", 0) or 0)
        if isinstance(conn, TcpConnection) and self.tcp is not None and port:
            self.tcp.add_alias(conn, ctx.rcv.src_ip, port)

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
        for lst in self.udp_listeners:
            if lst.af == af:
                return lst
        return None

    def send(self, proto: Proto, ip: str, port: int, data: bytes, rcv: ReceiveInfo | None = None) -> bool:
        if proto is _UDP:
            lst = rcv.transport if rcv is not None and rcv.proto is _UDP else None
            af = socket.AF_INET6 if ":" in ip else socket.AF_INET
            if lst is None or lst.af != af:
                lst = self._udp_for(af)
                if lst is None:
                    log.error("no udp socket for %s", ip)
                    self.stats.send_failures += 1
                    return False
            ok: bool = lst.sendto(data, ip, port)
        elif proto is _TCP:
            if self.tcp is None:
                return False
            conn = rcv.transport if rcv is not None and rcv.proto is _TCP else None
            if isinstance(conn, TcpConnection) and not conn.closed:
                ok = conn.send(data)
            else:
                ok = self.tcp.send(ip, port, data)
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
        need_received = host != rcv.src_ip and not self._same_ip(host, rcv.src_ip)
        need_rport = via.rport == "" or (ctx.force_rport and via.rport != str(rcv.src_port))
        if not need_received and not need_rport:
            return
        msg.set_top_via(
            via_with(via, rcv.src_ip if need_received else None, rcv.src_port if need_rport else None)
        )

    def _same_ip(self, host: str, ip: str) -> bool:
        if host == ip:
            return True
        return _norm_host(host) == _norm_host(ip)

    def stateless_branch(self, msg: SipMessage, out_uri: str) -> str:
        """RFC 3261 §16.11: a branch computed from what identifies the
        incoming request (its RFC 3261 branch, else the §8.1.1 tuple) and the
        outgoing URI, so a retransmission is forwarded with the same branch
        and CANCEL/ACK match the INVITE."""
        via = msg.via1
        branch = via.branch
        if branch and branch.startswith("z9hG4bK"):
            key = f"{branch}\0{via.sent_by}\0{out_uri}"
        else:
            key = (
                f"{msg.header('to') or ''}\0{msg.header('from') or ''}\0{msg.call_id}\0"
                f"{msg.cseq.num}\0{via.sent_by}\0{branch}\0{msg.ruri}\0{out_uri}"
            )
        return "z9hG4bK" + hashlib.md5(key.encode("utf-8", "surrogateescape")).hexdigest()[:16] + "0"

    # ------------------------------------------------------------------
    # stateless forwarding
    # ------------------------------------------------------------------
    async def forward(
        self,
        ctx: RequestContext,
        host: str | None = None,
        port: int | None = None,
        proto: Proto | None = None,
    ) -> int:
        msg = ctx.msg
        if not msg.is_request:
            return self.forward_reply(msg, ctx.rcv)
        # Max-Forwards (RFC 3261 §16.6 step 3); maxfwd marks ctx.data["maxfwd"]
        if not ctx.data.get("maxfwd"):
            mf = msg.max_forwards
            if mf is not None:
                if mf <= 0:
                    if msg.method != "ACK":
                        self.send_reply(ctx, 483, "Too Many Hops")
                    ctx.data[errors.SER_ERROR_KEY] = errors.E_BAD_REQ
                    return -1
                msg.replace_header("Max-Forwards", str(mf - 1))
            ctx.data["maxfwd"] = True
        # where to
        rproto = ctx.rcv.proto
        if host is None:
            uri_text = ctx.dst_uri or ctx.ruri
            known = self._uri_dest.get((uri_text, proto, rproto))
            if known is not None:
                return self._forward_to(ctx, *known)
            try:
                uri = SipUri.parse(uri_text) if ctx.dst_uri else ctx.parsed_ruri
            except SipParseError as e:
                log.error("forward: bad URI %r: %s", uri_text, e)
                ctx.data[errors.SER_ERROR_KEY] = errors.E_BAD_URI
                return errors.E_BAD_URI
            dest = await self.uri_destination(uri_text, proto, rproto, uri)
            if isinstance(dest, int):
                if dest == errors.E_BAD_ADDRESS:
                    log.error("forward: cannot resolve %s", uri.maddr or uri.host)
                ctx.data[errors.SER_ERROR_KEY] = dest
                return dest
            return self._forward_to(ctx, *dest)
        dproto = proto or rproto
        if self._is_numeric(host):
            dip = _norm_host(host)
        else:
            addrs = await self.resolver.resolve_host(host)
            if not addrs:
                log.error("forward: cannot resolve %s", host)
                ctx.data[errors.SER_ERROR_KEY] = errors.E_BAD_ADDRESS
                return errors.E_BAD_ADDRESS
            dip = addrs[0]
        dport = port or (SIPS_PORT if dproto is Proto.TLS else SIP_PORT)
        return self._forward_to(ctx, dproto, dip, dport)

    def known_destination(
        self, uri_text: str, proto: Proto | None, rproto: Proto
    ) -> tuple[Proto, str, int] | None:
        """What :meth:`uri_destination` gave for this numeric URI before."""
        return self._uri_dest.get((uri_text, proto, rproto))

    async def uri_destination(
        self, uri_text: str, proto: Proto | None, rproto: Proto, uri: SipUri | None = None
    ) -> tuple[Proto, str, int] | int:
        """RFC 3263 (``locate``): the first target ``(proto, ip, port)`` of a
        SIP/SIPS URI, sent with ``proto`` if given (else the URI's transport,
        else ``rproto`` for a numeric ``sip:`` host); ``E_BAD_URI`` or
        ``E_BAD_ADDRESS`` when there is none.  Numeric hosts involve no DNS:
        their answer is kept (forward() and tm ask for every request)."""
        key = (uri_text, proto, rproto)
        dest = self._uri_dest.get(key)
        if dest is not None:
            return dest
        if uri is None:
            try:
                uri = SipUri.parse(uri_text)
            except (SipParseError, SipError):
                return errors.E_BAD_URI
        if uri.scheme not in ("sip", "sips"):
            return errors.E_BAD_URI
        thost = uri.maddr or uri.host
        numeric = self._is_numeric(thost)
        transport = uri.transport
        if transport is None and proto is not None:
            transport = proto.name.lower()
        if transport is None and uri.scheme == "sip" and numeric:
            transport = rproto.name.lower()
        targets = await self.resolver.locate(thost, uri.port, transport, uri.scheme == "sips")
        if not targets:
            return errors.E_BAD_ADDRESS
        t = targets[0]
        dest = _PROTO_BY_NAME.get(t.proto.upper(), Proto.UDP), t.ip.strip("[]"), t.port
        if numeric:
            if len(self._uri_dest) >= 4096:
                self._uri_dest.clear()
            self._uri_dest[key] = dest
        return dest

    def _forward_to(self, ctx: RequestContext, dproto: Proto, dip: str, dport: int) -> int:
        lst = self.pick_listener(ctx, dproto, dip)
        if lst is None:
            log.error("forward: no %s socket to send to %s", dproto.name.lower(), dip)
            ctx.data[errors.SER_ERROR_KEY] = errors.E_NO_SOCKET
            return errors.E_NO_SOCKET
        if dproto is _TCP and "tcp_alias" in ctx.data:
            self._force_tcp_alias(ctx)
        data = self.build_forward(ctx, dproto, lst)
        if dproto is _UDP:
            ok = lst.sendto(data, dip, dport)
        elif self.tcp is not None:
            ok = self.tcp.send(dip, dport, data)
        else:
            ok = False
        if not ok:
            self.stats.send_failures += 1
            ctx.data[errors.SER_ERROR_KEY] = errors.E_SEND
            return errors.E_SEND
        self.stats.fwd_requests += 1
        return 1

    def _is_numeric(self, host: str) -> bool:
        r = self._numeric.get(host)
        if r is None:
            try:
                ipaddress.ip_address(host.strip("[]"))
                r = True
            except ValueError:
                r = False
            if len(self._numeric) > 4096:
                self._numeric.clear()
            self._numeric[host] = r
        return r

    def pick_listener(self, ctx: RequestContext | None, proto: Proto, dip: str) -> Any:
        """The local socket a request to ``dip`` leaves from (and that our
        Via names): ``force_send_socket``, else the one the request came in
        on (same protocol and family), else the first of that protocol and
        family (SER's ``get_send_socket`` without mhomed)."""
        af = socket.AF_INET6 if ":" in dip else socket.AF_INET
        if ctx is not None:
            forced = ctx.send_socket
            if forced is not None:
                fproto = getattr(forced, "proto", None)
                fhost = _norm_host(str(getattr(forced, "host", getattr(forced, "ip", ""))))
                fport = int(getattr(forced, "port", 0) or 0)
                if fproto in (None, proto):
                    for lst in self._listeners(proto):
                        if lst.ip == fhost and (not fport or lst.port == fport) and lst.af == af:
                            return lst
                log.warning("force_send_socket(%s): no such %s socket", forced, proto.name.lower())
            rcv = ctx.rcv
            if rcv.proto is proto and rcv.af == af:
                t = rcv.transport
                if proto is _UDP and t is not None:
                    return t
                for lst in self._listeners(proto):
                    if lst.ip == rcv.dst_ip and lst.port == rcv.dst_port:
                        return lst
        for lst in self._listeners(proto):
            if lst.af == af:
                return lst
        return None

    def _listeners(self, proto: Proto) -> Sequence[Any]:
        if proto is _UDP:
            return self.udp_listeners
        if proto is _TCP and self.tcp is not None:
            return self.tcp.listeners
        return ()

    def build_forward(self, ctx: RequestContext, proto: Proto, lst: Any) -> bytes:
        """The request as it leaves from listener ``lst``: received/rport on
        the previous Via, our Via on top, the new request URI.  ``ctx.msg``
        is left as it was apart from the previous hop's Via and
        Max-Forwards."""
        msg = ctx.msg
        self.fix_top_via(ctx)
        out_uri = ctx.ruri
        data = ctx.data
        adv = data.get("advertised_address") or self.options.get("advertised_address")
        adv_port = data.get("advertised_port") or self.options.get("advertised_port")
        host = _via_host(str(adv)) if adv else lst.via_host
        via = (
            f"SIP/2.0/{proto.name} {host}:{adv_port or lst.port};branch={self.stateless_branch(msg, out_uri)}"
        )
        return msg.serialize_with_via(via, out_uri)

    def forward_reply(self, msg: SipMessage, rcv: ReceiveInfo) -> int:
        """SER's ``forward_reply``: drop our Via, send to the next one."""
        vias = msg.vias
        if self.options.get("check_via"):
            v1 = vias[0]
            proto = _PROTO_BY_NAME.get(v1.transport.upper())
            if not self.is_myself(v1.host, v1.port, proto):
                log.info("forward_reply: host in first via != me: %s", v1.sent_by)
                self.stats.dropped += 1
                return -1
        if len(vias) < 2:
            log.info("forward_reply: no 2nd via found in reply from %s:%d", rcv.src_ip, rcv.src_port)
            self.stats.dropped += 1
            return -1
        via2 = vias[1]
        proto = _PROTO_BY_NAME.get(via2.transport.upper())
        if proto is None:
            log.info("forward_reply: unsupported transport %s", via2.transport)
            return -1
        ip, port = via_destination(via2, proto)
        if not self._is_numeric(ip):
            # a host name in Via without received=: SER resolved it here
            self.spawn(self._forward_reply_resolve(msg, ip, port, proto))
            return 1
        msg.remove_top_via()
        data = msg.serialize()
        if not self.send(proto, _norm_host(ip), port, data):
            return errors.E_SEND
        self.stats.fwd_replies += 1
        return 1

    async def _forward_reply_resolve(self, msg: SipMessage, host: str, port: int, proto: Proto) -> None:
        addrs = await self.resolver.resolve_host(host)
        if not addrs:
            log.info("forward_reply: cannot resolve %s", host)
            return
        msg.remove_top_via()
        if self.send(proto, addrs[0], port, msg.serialize()):
            self.stats.fwd_replies += 1

    # ------------------------------------------------------------------
    # stateless replies (SER's build_res_buf_from_sip_req)
    # ------------------------------------------------------------------
    def make_to_tag(self, msg: SipMessage) -> str:
        """Our To-tag for a reply to ``msg``: a per-server constant (sl's ACK
        filter recognises it) plus a CRC of what identifies the request (top
        Via, From, Call-ID, CSeq as received), so retransmissions get the
        same tag."""
        rhl = msg.raw_header_lines
        lines = rhl("via")[:1] + rhl("from") + rhl("call-id") + rhl("cseq")
        return self._tag_from_lines(lines)

    def _tag_from_lines(self, lines: list[bytes]) -> str:
        crc = 0
        for line in lines:  # the CRC of their concatenation, without building it
            crc = zlib.crc32(line, crc)
        return f"{self.to_tag_prefix}-{crc:08x}"

    def _tag_param(
        self, vias: list[bytes], froms: list[bytes], callids: list[bytes], cseqs: list[bytes]
    ) -> bytes:
        """``;tag=`` + :meth:`_tag_from_lines` of the top Via, From, Call-ID
        and CSeq lines, as bytes (the reply path's common case: one line each)."""
        crc32 = zlib.crc32
        if len(froms) == 1 and len(callids) == 1 and len(cseqs) == 1:
            crc = crc32(cseqs[0], crc32(callids[0], crc32(froms[0], crc32(vias[0]) if vias else 0)))
        else:
            crc = 0
            for line in vias[:1] + froms + callids + cseqs:
                crc = crc32(line, crc)
        return b";tag=%s-%08x" % (self._tag_prefix_b, crc)

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
        msg = ctx.msg
        status = self._status_lines.get((code, reason))
        if status is None:
            status = b"SIP/2.0 %d %s\r\n" % (code, reason.encode("utf-8", "surrogateescape"))
            if len(self._status_lines) < 256:
                self._status_lines[(code, reason)] = status
        # Via: the top one with received/rport, the rest as received
        if ctx.via_fixed:
            pass
        elif bad:
            with contextlib.suppress(SipParseError):
                self.fix_top_via(ctx)
        else:
            self.fix_top_via(ctx)
        if 180 <= code < 300:
            vias, rr_lines, from_lines, to_lines, callid_lines, cseq_lines = msg.raw_header_groups(
                _REPLY_COPY_RR
            )
            out: list[bytes] = [status, *vias, *rr_lines, *from_lines]
        else:
            vias, from_lines, to_lines, callid_lines, cseq_lines = msg.raw_header_groups(_REPLY_COPY)
            out = [status, *vias, *from_lines]
        if code >= 180 and to_lines:
            try:
                has_tag = msg.to.tag is not None
            except SipParseError:
                has_tag = True  # a broken To: copy it as it is
            if not has_tag:
                param = (
                    b";tag=" + to_tag.encode()
                    if to_tag
                    else self._tag_param(vias, from_lines, callid_lines, cseq_lines)
                )
                to_lines = [to_lines[0].rstrip(b"\r\n") + param + b"\r\n"]
        out += to_lines
        out += callid_lines
        out += cseq_lines
        if ctx.reply_headers:
            for line in ctx.reply_headers:
                out.append(line.encode("utf-8", "surrogateescape"))
        if extra_headers:
            for line in extra_headers:
                if not line.endswith("\r\n"):
                    line = line.rstrip("\r\n") + "\r\n"
                out.append(line.encode("utf-8", "surrogateescape"))
        if 300 <= code < 400:
            contact = self._dset_contact(ctx)
            if contact:
                out.append(contact)
        opts = self.options
        if opts["server_signature"]:
            out.append(SERVER_HEADER)
        if opts["sip_warning"]:
            out.append(self._warning(ctx))
        if body:
            out.append(b"Content-Length: %d\r\n\r\n" % len(body))
            out.append(body)
        else:
            out.append(b"Content-Length: 0\r\n\r\n")
        return b"".join(out)

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
            f'Warning: 392 {_via_host(rcv.dst_ip)}:{rcv.dst_port} "Noisy feedback tells: '
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
            self._force_tcp_alias(ctx)
        if self.options["reply_to_via"]:
            proto = _PROTO_BY_NAME.get(msg.via1.transport.upper(), rcv.proto)
            ip, port = via_destination(msg.via1, proto)
            ok = self.send(proto, ip, port, data, rcv)
        elif rcv.proto is _UDP and rcv.transport is not None:
            ok = rcv.transport.sendto(data, rcv.src_ip, rcv.src_port)  # the common case
        else:
            conn = rcv.transport
            if rcv.proto is _TCP and (not isinstance(conn, TcpConnection) or conn.closed):
                # the connection is gone: RFC 3261 §18.2.2, to the Via sent-by
                ip, port = via_destination(msg.via1, _TCP)
                ok = self.send(_TCP, ip or rcv.src_ip, port, data)
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


def via_with(via: Any, received: str | None, rport: int | None) -> str:
    """The Via header value with ``received``/``rport`` set."""
    params = dict(via.params)
    if received is not None:
        params["received"] = received
    if rport is not None:
        params["rport"] = str(rport)
    text = f"{getattr(via, 'protocol', 'SIP/2.0')}/{via.transport} {via.sent_by}"
    return text + "".join(f";{k}" if v is None or v == "" else f";{k}={v}" for k, v in params.items())


def via_destination(via: Any, proto: Proto) -> tuple[str, int]:
    """Where a reply goes according to a Via (RFC 3261 §18.2.2, RFC 3581):
    ``received`` (else the sent-by host) and ``rport`` (else the sent-by
    port, else 5060/5061)."""
    ip = via.received or via.host
    rport = via.rport
    if rport:
        try:
            return _norm_host(ip), int(rport)
        except ValueError:
            pass
    return _norm_host(ip), via.port or (SIPS_PORT if proto is Proto.TLS else SIP_PORT)


def _has_via(msg: SipMessage) -> bool:
    """A reply needs the request's Via (RFC 3261 §8.2.6.2)."""
    try:
        return bool(msg.raw_header_lines("via"))
    except SipParseError:
        return False


def _resolve_now(host: str) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_DGRAM)
    except (OSError, UnicodeError):
        return []
    return list(dict.fromkeys(str(i[4][0]) for i in infos))


def _parse(data: bytes) -> SipMessage:
    from sipexpress.sip.message import SipMessage

    global _parse  # bind the real parser on first use
    _parse = SipMessage.parse
    return SipMessage.parse(data)
