"""UDP and TCP transports: thin asyncio adapters around the sans-I/O parser.

* :class:`UdpListener` — one bound datagram socket; every datagram is a
  message handed to ``core.receive(data, rcv)``.
* :class:`TcpListener` — a bound stream socket; accepted connections become
  :class:`TcpConnection` objects that split the byte stream into messages
  with the parser's ``StreamFramer``.
* :class:`TcpManager` — the connection table keyed by the peer's
  ``(ip, port)`` (plus aliases: the Via sent-by of requests received on the
  connection, so that replies routed by Via find the connection the request
  came on), outbound connects with write buffering until connected, and the
  sweep that enforces :class:`TcpLimits`.

:class:`TcpLimits` keeps one client from taking every descriptor:
``tcp_max_connections`` in all, ``tcp_max_connections_per_source`` per
client address (accepted connections beyond either are reset at once),
``tcp_msg_read_timeout`` seconds to complete a message once its first byte
has come (slowloris), ``tcp_connection_lifetime`` seconds of idleness.
Each limit hit is logged once per source address per
:attr:`TcpManager.LOG_EVERY` seconds, so a flood cannot flood the log.

TLS (:mod:`sipexpress.core.tls_transport`) is the same stream machinery
with :class:`~sipexpress.core.tls.TlsSession` between the socket and the
framer: a :class:`TcpManager` whose ``conn_class`` is a TLS connection.
SIP over WebSocket (:mod:`sipexpress.core.ws_transport`) is too: its
connections have another framer (``new_framer``), ping when idle
(``idle``), and its managers only accept connections (``accept_only``).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import socket
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sipexpress.core.context import Proto, ReceiveInfo

if TYPE_CHECKING:
    from sipexpress.sip.message import StreamFramer
    from sipexpress.sip.websocket import WsFramer

log = logging.getLogger("sipexpress.transport")

Receiver = Callable[[bytes, ReceiveInfo], None]


def family_of(ip: str) -> int:
    return socket.AF_INET6 if ":" in ip else socket.AF_INET


def local_addresses() -> list[str]:
    """IPv4 and (global/loopback) IPv6 addresses of this host's interfaces."""
    v4: list[str] = []
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _idx, name in socket.if_nameindex():
            try:
                req = struct.pack("256s", name.encode()[:15])
                res = fcntl.ioctl(s.fileno(), 0x8915, req)  # SIOCGIFADDR
            except OSError:
                continue
            v4.append(socket.inet_ntoa(res[20:24]))
    v6: list[str] = []
    try:
        with open("/proc/net/if_inet6") as f:
            for line in f:
                parts = line.split()
                if len(parts) < 6:
                    continue
                scope = int(parts[3], 16)
                if scope not in (0x00, 0x10):  # global or host (loopback); no link-local
                    continue
                raw = bytes.fromhex(parts[0])
                v6.append(socket.inet_ntop(socket.AF_INET6, raw))
    except OSError:
        pass
    if not v4:
        v4 = ["127.0.0.1"]
    return list(dict.fromkeys(v4 + v6))


def bind_socket(ip: str, port: int, kind: int, rcvbuf: int = 0, reuse_port: bool = False) -> socket.socket:
    """A bound non-blocking socket; ``reuse_port`` (SO_REUSEPORT) lets the
    worker processes bind one each to the same address
    (:mod:`sipexpress.core.workers`)."""
    af = family_of(ip)
    sock = socket.socket(af, kind)
    try:
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if kind == socket.SOCK_STREAM:
            # TIME_WAIT only; on UDP SO_REUSEADDR would let two servers share
            # a port silently
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if af == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if rcvbuf and kind == socket.SOCK_DGRAM:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.bind((ip, port))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class UdpListener(asyncio.DatagramProtocol):
    """A bound UDP socket.  ``ip``/``port`` are what Via and ``myself`` use."""

    proto = Proto.UDP

    def __init__(self, receive: Receiver, ip: str, port: int, max_size: int) -> None:
        self.receive = receive
        self.ip = ip
        self.port = port
        #: the port our Via names for requests sent from here: a worker's
        #: private socket when there are several workers (core.workers)
        self.via_port = port
        self.af = family_of(ip)
        self.max_size = max_size
        self.via_host = f"[{ip}]" if self.af == socket.AF_INET6 else ip
        self.transport: asyncio.DatagramTransport | None = None
        self._sendto: Callable[..., None] | None = None
        self._rcv_cache: dict[Any, ReceiveInfo] = {}

    def __repr__(self) -> str:
        return f"<UdpListener {self.address}>"

    @property
    def address(self) -> str:
        return f"[{self.ip}]:{self.port}" if self.af == socket.AF_INET6 else f"{self.ip}:{self.port}"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's UDPTransport does not subclass asyncio.DatagramTransport
        self.transport = transport  # type: ignore[assignment]
        self._sendto = transport.sendto  # type: ignore[attr-defined]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if len(data) > self.max_size:
            log.warning("dropping %d-byte datagram from %s:%s: too big", len(data), addr[0], addr[1])
            return
        # ReceiveInfo is immutable: one per source address, reused
        rcv = self._rcv_cache.get(addr)
        if rcv is None:
            if len(self._rcv_cache) > 4096:
                self._rcv_cache.clear()
            rcv = ReceiveInfo(Proto.UDP, addr[0], addr[1], self.ip, self.port, self.af, self)
            self._rcv_cache[addr] = rcv
        self.receive(data, rcv)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable and the like: SER logs and carries on
        log.debug("udp %s: %s", self.address, exc)

    def sendto(self, data: bytes, ip: str, port: int) -> bool:
        if self._sendto is None:
            return False
        try:
            self._sendto(data, (ip, port))
        except (OSError, RuntimeError, ValueError) as e:
            log.error("udp send to %s:%d failed: %s", ip, port, e)
            return False
        return True

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


@dataclass(frozen=True, slots=True)
class TcpLimits:
    max_connections: int = 2048  # Kamailio's tcp_max_connections default
    per_source: int = 128
    msg_read_timeout: float = 20.0  # Kamailio's tcp_msg_read_timeout default
    lifetime: float = 120.0

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> TcpLimits:
        d = cls()
        return cls(
            int(options.get("tcp_max_connections") or d.max_connections),
            int(options.get("tcp_max_connections_per_source") or d.per_source),
            float(options.get("tcp_msg_read_timeout") or d.msg_read_timeout),
            float(options.get("tcp_connection_lifetime") or d.lifetime),
        )


class TcpConnection(asyncio.Protocol):
    """One stream connection (accepted or opened by us): TCP, and the base
    of the TLS one."""

    proto = Proto.TCP

    def __init__(
        self, manager: TcpManager, listener: TcpListener | None, peer: tuple[str, int] | None
    ) -> None:
        self.manager = manager
        self.listener = listener
        self.peer = peer  # (ip, port) of the other end, known early for outbound
        self.transport: asyncio.Transport | None = None
        self.rcv: ReceiveInfo | None = None
        self.framer: StreamFramer | WsFramer | None = None
        self.keys: list[tuple[str, int]] = []
        self.pending: list[bytes] = []
        # told when the connection we are opening cannot be made (RFC 3261
        # §16.9: a transport error is a 503 at once, not a timeout)
        self.on_connect_error: list[Callable[[], None]] = []
        self.closed = False
        self.counted = False  # an accepted connection counted against the limits
        self.last_activity = manager.loop.time()
        self.msg_started: float | None = None  # first byte of an unfinished message

    def __repr__(self) -> str:
        return f"<TcpConnection {self.peer}>"

    @property
    def ip(self) -> str:
        return self.rcv.dst_ip if self.rcv else ""

    @property
    def port(self) -> int:
        return self.rcv.dst_port if self.rcv else 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.setup(transport):
            self.transport = transport  # type: ignore[assignment]
            self.stream_ready()

    def setup(self, transport: asyncio.BaseTransport) -> bool:
        """Admit, name and register a connection the socket layer made;
        False when it was refused (and aborted)."""
        peer = transport.get_extra_info("peername")
        sockname = transport.get_extra_info("sockname")
        ip, port = str(peer[0]), int(peer[1])
        self.peer = (ip, port)
        if self.listener is not None:
            if not self.manager.admit(ip):
                self.closed = True
                transport.abort()  # type: ignore[attr-defined]
                return False
            self.counted = True
        # the "local socket" of a connection is the listener it belongs to
        # (what Via advertises); outbound ones borrow a listener of the family
        lst = self.listener or self.manager.listener_for(family_of(ip))
        if lst is not None:
            dst_ip, dst_port = lst.ip, lst.port
        else:
            dst_ip, dst_port = str(sockname[0]), int(sockname[1])
        self.rcv = ReceiveInfo(self.proto, ip, port, dst_ip, dst_port, family_of(ip), self)
        self.framer = self.new_framer()
        self.manager.register(self, (ip, port))
        with contextlib.suppress(OSError, AttributeError):
            sock = transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return True

    def stream_ready(self) -> None:
        """``self.transport`` carries SIP from now on: what waited for it
        is written, and opening it can no longer fail."""
        self.on_connect_error.clear()
        if self.pending:
            for chunk in self.pending:
                self.transport.write(chunk)  # type: ignore[union-attr]
            self.pending.clear()

    def data_received(self, data: bytes) -> None:
        now = self.last_activity = self.manager.loop.time()
        if self.closed:
            return
        assert self.framer is not None and self.rcv is not None
        try:
            frames = self.framer.feed(data)
        except Exception as e:  # SipParseError: the stream cannot be resynchronised
            log.warning(
                "%s %s:%d: %s; closing connection", self.manager.name, self.rcv.src_ip, self.rcv.src_port, e
            )
            # the unframable message is at the start of the framer's buffer
            pending = bytes(getattr(self.framer, "_buf", b""))
            self.manager.core_bad_stream(self.rcv, e, pending)
            self.close()
            return
        framer = self.framer  # a StreamFramer (WsConnection has its own data_received)
        if framer.pings:  # type: ignore[union-attr]  # RFC 5626 §3.5.1: a CRLF pong for each ping
            self.transport.write(b"\r\n" * framer.pings)  # type: ignore[union-attr]
            framer.pings = 0  # type: ignore[union-attr]
        self.deliver(frames, now)

    def new_framer(self) -> StreamFramer | WsFramer:
        """What splits the stream into SIP messages."""
        from sipexpress.sip.message import StreamFramer

        return StreamFramer(max_size=self.manager.max_size)

    def deliver(self, frames: list[bytes], now: float) -> None:
        """Hand complete messages to the core; note when an unfinished one
        started (``tcp_msg_read_timeout``)."""
        assert self.framer is not None and self.rcv is not None
        if not self.framer.buffered:
            self.msg_started = None
        elif frames or self.msg_started is None:
            self.msg_started = now
        receive = self.manager.receive
        for frame in frames:
            receive(frame, self.rcv)

    def idle(self) -> None:
        """Idle for the manager's lifetime (``tcp_connection_lifetime``): closed."""
        log.debug("closing idle %s connection %s", self.manager.name, self.peer)
        self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.manager.unregister(self)

    def send(self, data: bytes, on_error: Callable[[], None] | None = None) -> bool:
        """Write ``data``; while the connection is still being opened it
        waits, and ``on_error`` is called if the connection then fails."""
        if self.closed:
            return False
        self.last_activity = self.manager.loop.time()
        if self.transport is None:
            self.pending.append(data)
            if on_error is not None:
                self.on_connect_error.append(on_error)
            return True
        if self.transport.is_closing():
            return False
        self.transport.write(data)
        return True

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.close()
        self.closed = True
        self.manager.unregister(self)


class TcpListener:
    """A bound stream socket of a :class:`TcpManager` (TCP or TLS)."""

    def __init__(self, manager: TcpManager, ip: str, port: int) -> None:
        self.proto = manager.conn_class.proto
        self.manager = manager
        self.ip = ip
        self.port = port
        self.via_port = port
        self.af = family_of(ip)
        self.via_host = f"[{ip}]" if self.af == socket.AF_INET6 else ip
        self.server: asyncio.AbstractServer | None = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.address}>"

    @property
    def address(self) -> str:
        return f"[{self.ip}]:{self.port}" if self.af == socket.AF_INET6 else f"{self.ip}:{self.port}"

    def sendto(self, data: bytes, ip: str, port: int) -> bool:
        """A request leaving from this listener's address: on the
        connection to ip:port, opened if needed."""
        return self.manager.send(ip, port, data)

    async def start(self, backlog: int = 1024, sock: socket.socket | None = None) -> None:
        """Listen (on ``sock`` when the socket was bound already: workers)."""
        if sock is None:
            sock = bind_socket(self.ip, self.port, socket.SOCK_STREAM)
        self.server = await self.manager.loop.create_server(
            lambda: self.manager.conn_class(self.manager, self, None), sock=sock, backlog=backlog
        )

    def close(self) -> None:
        if self.server is not None:
            self.server.close()


class TcpManager:
    """A stream connection table (SER's ``tcpconn`` hash by ip:port +
    aliases): one for TCP, one for TLS (``conn_class``)."""

    LOG_EVERY = 60.0
    #: the connections this manager makes (a TLS manager's are TLS ones)
    conn_class: type[TcpConnection] = TcpConnection
    #: only connections the peers open (WebSocket): sending to an address
    #: without one fails at once
    accept_only = False

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        receive: Receiver,
        max_size: int,
        lifetime: float,
        connect_timeout: float,
        on_bad_stream: Callable[[ReceiveInfo, Exception, bytes], None] | None = None,
        limits: TcpLimits | None = None,
    ) -> None:
        self.loop = loop
        self.receive = receive
        self.max_size = max_size
        self.limits = limits or TcpLimits(lifetime=lifetime)
        self.lifetime = self.limits.lifetime
        self.connect_timeout = connect_timeout
        self.accepted = 0
        self.per_source: dict[str, int] = {}
        self._logged: dict[tuple[str, str], float] = {}
        self.listeners: list[TcpListener] = []
        self.by_addr: dict[tuple[str, int], TcpConnection] = {}
        self.connections: set[TcpConnection] = set()
        self._on_bad_stream = on_bad_stream
        self._sweeper: asyncio.TimerHandle | None = None
        self._connects: set[asyncio.Task[Any]] = set()
        #: with several workers: told the peer addresses this worker's
        #: connections serve (``announce(keys, present)``) and asked which
        #: worker holds a connection this one lacks (``hand_off``)
        self.announce: Callable[[list[tuple[str, int]], bool], None] | None = None
        self.hand_off: Callable[[str, int, bytes], bool] | None = None
        self.held_elsewhere: Callable[[str, int], bool] | None = None
        #: the transport's name in log lines
        self.name = self.conn_class.proto.name.lower()

    # -- table ---------------------------------------------------------------
    def listener_for(self, af: int) -> TcpListener | None:
        for lst in self.listeners:
            if lst.af == af:
                return lst
        return self.listeners[0] if self.listeners else None

    def admit(self, ip: str) -> bool:
        """Count a new accepted connection from ``ip``, or refuse it (logged)."""
        lim = self.limits
        if self.accepted >= lim.max_connections:
            self.limit_hit(ip, f"tcp_max_connections ({lim.max_connections}) reached; refusing connections")
            return False
        if self.per_source.get(ip, 0) >= lim.per_source:
            self.limit_hit(ip, f"more than tcp_max_connections_per_source ({lim.per_source}); refusing")
            return False
        self.accepted += 1
        self.per_source[ip] = self.per_source.get(ip, 0) + 1
        return True

    def limit_hit(self, ip: str, what: str) -> None:
        """Log a limit hit by ``ip``: once per source and limit every LOG_EVERY s."""
        key = (ip, what)
        now = self.loop.time()
        last = self._logged.get(key)
        if last is not None and now - last < self.LOG_EVERY:
            return
        if len(self._logged) > 4096:
            self._logged = {k: t for k, t in self._logged.items() if now - t < self.LOG_EVERY}
        self._logged[key] = now
        log.warning("%s from %s: %s", self.name, ip, what)

    def register(self, conn: TcpConnection, key: tuple[str, int]) -> None:
        self.connections.add(conn)
        self.by_addr[key] = conn
        if key not in conn.keys:
            conn.keys.append(key)
            if self.announce is not None:
                self.announce([key], True)

    def add_alias(self, conn: TcpConnection, ip: str, port: int) -> None:
        """Make ``conn`` the connection for ``ip:port`` as well (a Via sent-by
        of a request received on it), unless another live one owns it."""
        key = (ip, port)
        cur = self.by_addr.get(key)
        if cur is conn or (cur is not None and not cur.closed):
            return
        self.by_addr[key] = conn
        conn.keys.append(key)
        if self.announce is not None:
            self.announce([key], True)

    def unregister(self, conn: TcpConnection) -> None:
        if conn.counted and conn.peer is not None:
            conn.counted = False
            self.accepted -= 1
            ip = conn.peer[0]
            left = self.per_source.get(ip, 1) - 1
            if left > 0:
                self.per_source[ip] = left
            else:
                self.per_source.pop(ip, None)
        self.connections.discard(conn)
        for key in conn.keys:
            if self.by_addr.get(key) is conn:
                del self.by_addr[key]
        if self.announce is not None and conn.keys:
            self.announce(list(conn.keys), False)
        conn.keys.clear()

    def lookup(self, ip: str, port: int) -> TcpConnection | None:
        conn = self.by_addr.get((ip, port))
        if conn is not None and conn.closed:
            return None
        return conn

    def core_bad_stream(self, rcv: ReceiveInfo, exc: Exception, pending: bytes) -> None:
        if self._on_bad_stream is not None:
            self._on_bad_stream(rcv, exc, pending)

    # -- sending -------------------------------------------------------------
    def send(self, ip: str, port: int, data: bytes, on_error: Callable[[], None] | None = None) -> bool:
        """Send on the connection to ip:port, opening one if there is none;
        ``on_error`` is called if opening it fails."""
        conn = self.lookup(ip, port)
        if conn is not None:
            return conn.send(data, on_error)
        if self.hand_off is not None and self.hand_off(ip, port, data):
            return True  # another worker holds the connection and writes it
        if self.accept_only:
            log.info("%s: no connection from %s:%d (any more); not sent", self.name, ip, port)
            return False
        conn = self.outbound(ip, port)
        self.register(conn, (ip, port))
        conn.send(data, on_error)
        task = self.loop.create_task(self._connect(conn, ip, port))
        self._connects.add(task)
        task.add_done_callback(self._connects.discard)
        return True

    def outbound(self, ip: str, port: int) -> TcpConnection:
        """A connection to be opened to ip:port."""
        return self.conn_class(self, None, (ip, port))

    async def _connect(self, conn: TcpConnection, ip: str, port: int) -> None:
        try:
            await asyncio.wait_for(
                self.loop.create_connection(lambda: conn, ip, port), timeout=self.connect_timeout
            )
        except (OSError, TimeoutError) as e:
            self.connect_failed(conn, f"{ip}:{port}", str(e) or type(e).__name__)

    def connect_failed(self, conn: TcpConnection, where: str, reason: str) -> None:
        """Opening ``conn`` failed: logged, forgotten, and whoever was
        waiting to send on it told (a 503 at once from tm)."""
        log.error("%s connect to %s failed: %s", self.name, where, reason)
        conn.closed = True
        self.unregister(conn)
        failed, conn.on_connect_error = conn.on_connect_error, []
        conn.pending.clear()
        for notify in failed:
            try:
                notify()
            except Exception:
                log.exception("%s connect to %s: error while reporting the failure", self.name, where)

    # -- life cycle ------------------------------------------------------------
    def start_sweeper(self) -> None:
        lim = self.limits
        interval = max(0.2, min(10.0, lim.lifetime / 4, lim.msg_read_timeout / 4))

        def sweep() -> None:
            now = self.loop.time()
            idle, unfinished = now - lim.lifetime, now - lim.msg_read_timeout
            for conn in list(self.connections):
                if conn.msg_started is not None and conn.msg_started < unfinished:
                    ip = conn.peer[0] if conn.peer else "?"
                    self.limit_hit(
                        ip,
                        f"message not complete within tcp_msg_read_timeout ({lim.msg_read_timeout:g} s); closing",
                    )
                    conn.close()
                elif conn.last_activity < idle:
                    conn.idle()
            self._sweeper = self.loop.call_later(interval, sweep)

        self._sweeper = self.loop.call_later(interval, sweep)

    def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        for lst in self.listeners:
            lst.close()
        for conn in list(self.connections):
            conn.close()
        for task in list(self._connects):
            task.cancel()
