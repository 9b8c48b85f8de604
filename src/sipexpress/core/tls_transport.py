"""SIP over TLS: the TCP stream machinery with a TLS layer in between.

A :class:`TlsConnection` is a :class:`~sipexpress.core.transport.TcpConnection`
(same framing, limits, aliases, idle sweep, outbound queueing) whose bytes
pass through a :class:`~sipexpress.core.tls.TlsSession` first.  Until the
handshake is done, what the core sends waits in ``pending`` as it does for
a TCP connection still being opened, and a connection we opened can still
fail (a refused certificate is a 503 at once, as a refused connect is).

:class:`TlsManager` is a :class:`~sipexpress.core.transport.TcpManager` of
TLS connections with the two contexts.  It remembers the host name a
request to an address was meant for (:meth:`TlsManager.expect_name`, told
by the forwarding code when it resolves a ``sips:``/``transport=tls`` URI),
so that a connection to that address checks the certificate against that
name and sends it as SNI (RFC 5922 §7.2); an address reached by IP is
checked against the certificate's IP addresses.

Every failure — a certificate that is expired, for another host or from an
unknown CA, plain SIP on the TLS port, garbage, a handshake that does not
finish in ``tls_handshake_timeout`` — is one log line naming the peer, and
that connection is closed; nothing else is affected.  A client's failures
are logged as the TCP limits are, once per source address and reason every
:attr:`~sipexpress.core.transport.TcpManager.LOG_EVERY` seconds.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Any

from sipexpress.core.context import Proto
from sipexpress.core.tls import (
    TlsError,
    TlsSession,
    TlsSettings,
    client_context,
    server_context,
    server_hostname,
)
from sipexpress.core.transport import Receiver, TcpConnection, TcpLimits, TcpListener, TcpManager
from sipexpress.sip.cache import BoundedCache

log = logging.getLogger("sipexpress.transport")


class _TlsWriter(asyncio.Transport):
    """What a :class:`TlsConnection` writes SIP to once the handshake is
    done: encrypts, then writes to the socket's transport."""

    def __init__(self, raw: asyncio.Transport, session: TlsSession) -> None:
        super().__init__()
        self.raw = raw
        self.session = session

    def write(self, data: bytes | bytearray | memoryview) -> None:
        try:
            out = self.session.send(bytes(data))
        except TlsError as e:
            log.warning("tls send failed: %s", e)
            self.raw.close()
            return
        self.raw.write(out)

    def is_closing(self) -> bool:
        return self.raw.is_closing()

    def close(self) -> None:
        if not self.raw.is_closing():
            alert = self.session.close()
            if alert:
                self.raw.write(alert)
        self.raw.close()

    def abort(self) -> None:
        self.raw.abort()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.raw.get_extra_info(name, default)


class TlsConnection(TcpConnection):
    """One TLS connection (accepted or opened by us)."""

    proto = Proto.TLS
    manager: TlsManager

    def __init__(
        self, manager: TcpManager, listener: TcpListener | None, peer: tuple[str, int] | None
    ) -> None:
        super().__init__(manager, listener, peer)
        self.raw: asyncio.Transport | None = None
        self.session: TlsSession | None = None
        self.server_name: str | None = None  # what an opened connection checks the certificate against
        self._timer: asyncio.TimerHandle | None = None

    def __repr__(self) -> str:
        return f"<TlsConnection {self.peer}>"

    def _where(self) -> str:
        ip, port = self.peer or ("?", 0)
        where = f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
        if self.server_name and self.server_name != ip:
            where += f" ({self.server_name})"
        return where

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not self.setup(transport):
            return
        mgr = self.manager
        self.raw = transport  # type: ignore[assignment]
        server = self.listener is not None
        try:
            ctx = mgr.server_ctx if server else mgr.client_ctx
            if ctx is None:
                raise TlsError("no certificate to serve TLS with")
            self.session = TlsSession(ctx, server, None if server else self.server_name)
            hello = self.session.start()
        except (TlsError, ValueError, ssl.SSLError) as e:
            self._failed(str(e))
            return
        if hello:
            transport.write(hello)  # type: ignore[attr-defined]
        self._timer = mgr.loop.call_later(mgr.settings.handshake_timeout, self._handshake_expired)

    def _handshake_expired(self) -> None:
        self._timer = None
        if not self.closed and self.transport is None:
            self._failed(
                f"handshake not done within tls_handshake_timeout ({self.manager.settings.handshake_timeout:g} s)"
            )

    def data_received(self, data: bytes) -> None:
        session = self.session
        if session is None or self.closed:
            return
        try:
            plain, out = session.receive(data)
        except TlsError as e:
            self._failed(str(e))
            return
        if out and self.raw is not None:
            self.raw.write(out)
        if self.transport is None and session.established:
            self._handshake_done(session)
        if plain:
            super().data_received(plain)
        else:
            self.last_activity = self.manager.loop.time()

    def _handshake_done(self, session: TlsSession) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        assert self.raw is not None
        log.debug(
            "tls %s: %s %s, peer certificate %r",
            self._where(),
            session.obj.version(),
            (session.obj.cipher() or ("?",))[0],
            session.peer_name(),
        )
        self.transport = _TlsWriter(self.raw, session)
        self.stream_ready()

    def _failed(self, reason: str) -> None:
        """The handshake or the record layer failed: one log line, an alert
        if there is one, the connection closed (and, for one we were
        opening, the senders waiting on it told)."""
        raw, session = self.raw, self.session
        if session is not None and raw is not None and not raw.is_closing():
            alert = session.outgoing
            if alert:
                raw.write(alert)
        if self.listener is None and self.transport is None:
            self.manager.connect_failed(self, self._where(), reason)
        elif self.listener is not None and self.peer is not None:
            # a client's failures: logged once per source and reason a minute (scanners)
            self.manager.limit_hit(self.peer[0], f"{reason}; closing connection")
        else:
            log.warning("tls %s: %s; closing connection", self._where(), reason)
        self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.transport is None and self.listener is None and self.on_connect_error and not self.closed:
            self.manager.connect_failed(self, self._where(), "connection closed during the TLS handshake")
        super().connection_lost(exc)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.transport is None and self.raw is not None and not self.raw.is_closing():
            self.raw.close()  # still handshaking: nothing to say in TLS
        super().close()


class TlsManager(TcpManager):
    """The TLS connection table, with the server and client contexts."""

    conn_class = TlsConnection

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        receive: Receiver,
        settings: TlsSettings,
        max_size: int,
        connect_timeout: float,
        on_bad_stream: Any = None,
        limits: TcpLimits | None = None,
    ) -> None:
        super().__init__(
            loop, receive, max_size, (limits or TcpLimits()).lifetime, connect_timeout, on_bad_stream, limits
        )
        self.settings = settings
        self.server_ctx: ssl.SSLContext | None = server_context(settings) if settings.can_serve else None
        self.client_ctx = client_context(settings)
        #: (ip, port) -> the host name requests to it were sent to (bounded: names come from the wire)
        self.names: BoundedCache[tuple[str, int], str] = BoundedCache(1 << 20, 4096)

    def expect_name(self, ip: str, port: int, name: str) -> None:
        """Requests to ip:port are for host ``name``: a connection opened
        to it checks the certificate against that name (and sends SNI)."""
        self.names.put((ip, port), name.lower(), len(name) + len(ip))

    def outbound(self, ip: str, port: int) -> TcpConnection:
        conn = TlsConnection(self, None, (ip, port))
        conn.server_name = server_hostname(self.names.get((ip, port)), ip)
        return conn
