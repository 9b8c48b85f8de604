"""SIP over WebSocket (RFC 7118): ``listen=ws:`` and ``listen=wss:``.

A :class:`WsConnection` is a :class:`~sipexpress.core.transport.TcpConnection`
(same table, limits, slowloris deadline, idle sweep) whose framer is the
sans-I/O :class:`~sipexpress.sip.websocket.WsFramer`: the HTTP upgrade,
then one SIP message per WebSocket message.  A :class:`WssConnection` is
the same over TLS: a :class:`~sipexpress.core.tls_transport.TlsConnection`
below the WebSocket (its handshake, certificates and log lines).

The managers only accept connections (``accept_only``): a browser is
reached over the connection it opened, keyed by its source address like
any TCP connection; sending to an address whose connection is gone fails at
once (tm answers 503, the registrar's ``lookup`` skips such contacts).
An idle connection is pinged after ``ws_keepalive_interval`` seconds and
closed when the ping gets no answer within as long again.  An upgrade
without the ``sip`` subprotocol, or from an ``Origin`` that ``ws_origin``
does not match, is refused; an oversized or broken frame closes that
connection; each with one log line.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable

from sipexpress.core.context import Proto
from sipexpress.core.tls import TlsSettings
from sipexpress.core.tls_transport import TlsConnection, TlsManager
from sipexpress.core.transport import Receiver, TcpConnection, TcpLimits, TcpListener, TcpManager
from sipexpress.sip.websocket import WsFramer

log = logging.getLogger("sipexpress.transport")


class WsConnection(TcpConnection):
    """One accepted SIP-over-WebSocket connection."""

    proto = Proto.WS
    framer: WsFramer | None  # type: ignore[assignment]

    def __init__(
        self, manager: TcpManager, listener: TcpListener | None, peer: tuple[str, int] | None
    ) -> None:
        super().__init__(manager, listener, peer)
        self.pinged = False  # a keep-alive ping is out, unanswered

    def new_framer(self) -> WsFramer:
        origin: re.Pattern[str] | None = getattr(self.manager, "ws_origin", None)
        return WsFramer(self.manager.max_size, origin)

    def data_received(self, data: bytes) -> None:
        now = self.last_activity = self.manager.loop.time()
        self.pinged = False
        framer = self.framer
        if self.closed or framer is None:
            return
        frames = framer.feed(data)
        out = framer.take_output()
        if out and self.transport is not None:
            self.transport.write(out)
        if framer.closed:
            rcv = self.rcv
            if framer.error and rcv is not None:
                log.warning(
                    "%s %s:%d: %s; closing connection",
                    self.manager.name,
                    rcv.src_ip,
                    rcv.src_port,
                    framer.error,
                )
            self.close()
            return
        self.deliver(frames, now)

    def send(self, data: bytes, on_error: Callable[[], None] | None = None) -> bool:
        framer = self.framer
        wrapped = framer.frame(data) if framer is not None else None
        return wrapped is not None and super().send(wrapped)

    def idle(self) -> None:
        """Idle: pinged once (RFC 6455 §5.5.2); closed when that ping got
        no answer either."""
        framer = self.framer
        if self.pinged or framer is None or self.transport is None or not framer.open:
            super().idle()
            return
        self.pinged = True
        self.last_activity = self.manager.loop.time()
        self.transport.write(framer.ping())

    def close(self) -> None:
        if not self.closed and self.transport is not None and self.framer is not None:
            out = self.framer.close()
            if out:
                self.transport.write(out)
        super().close()


class WssConnection(TlsConnection, WsConnection):
    """SIP over secure WebSocket: TLS decrypts first and encrypts last
    (its ``data_received`` hands plaintext on; what is written after the
    handshake goes through its TLS writer)."""

    proto = Proto.WSS


def _keepalive_limits(limits: TcpLimits | None, keepalive: float) -> TcpLimits:
    """The TCP limits with ``ws_keepalive_interval`` as the idle time."""
    base = limits or TcpLimits()
    return TcpLimits(base.max_connections, base.per_source, base.msg_read_timeout, keepalive)


class WsManager(TcpManager):
    """The WS connection table."""

    conn_class = WsConnection
    accept_only = True

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        receive: Receiver,
        max_size: int,
        limits: TcpLimits | None = None,
        keepalive: float = 60.0,
        ws_origin: re.Pattern[str] | None = None,
    ) -> None:
        lim = _keepalive_limits(limits, keepalive)
        super().__init__(loop, receive, max_size, lim.lifetime, 0.0, None, lim)
        self.ws_origin = ws_origin


class WssManager(TlsManager):
    """The WSS connection table: TLS settings as ``listen=tls:``'s."""

    conn_class = WssConnection
    accept_only = True

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        receive: Receiver,
        settings: TlsSettings,
        max_size: int,
        limits: TcpLimits | None = None,
        keepalive: float = 60.0,
        ws_origin: re.Pattern[str] | None = None,
    ) -> None:
        super().__init__(loop, receive, settings, max_size, 0.0, None, _keepalive_limits(limits, keepalive))
        self.ws_origin = ws_origin
