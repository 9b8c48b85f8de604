"""SIP over WebSocket (RFC 7118), the pure part: the server side of one
connection, from the HTTP upgrade to the closing handshake.

Theory of operation: :class:`WsFramer` has the interface of the TCP
:class:`~sipexpress.sip.message.StreamFramer` -- ``feed(bytes)`` returns the
complete SIP messages, ``buffered`` says a message is unfinished -- plus what
a WebSocket needs besides: bytes to write back (``take_output()``: the
``101 Switching Protocols`` or a refusal, pongs, close frames),
``frame(sip)`` to wrap a message we send, ``ping()`` for keep-alives, and
``closed``/``error`` when the connection must end (``error`` is the reason
to log).  The WebSocket protocol itself is :mod:`wsproto`'s (sans-I/O too);
this module adds RFC 7118's rules:

* the upgrade must offer the ``sip`` subprotocol (else ``400``) and, when an
  Origin policy is set, carry a matching ``Origin`` (else ``403``);
* one SIP message per WebSocket message (fragmented frames are joined), text
  or binary; whitespace-only messages (CRLF keep-alives some clients send)
  are skipped;
* a message longer than ``max_size`` closes the connection with 1009, a
  frame that breaks RFC 6455 with 1002 (wsproto's verdict), bad UTF-8 in a
  text frame with 1007.

Nothing here does I/O.
"""

from __future__ import annotations

import contextlib
import re

from wsproto import WSConnection
from wsproto.connection import ConnectionState, ConnectionType
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    RejectConnection,
    Request,
    TextMessage,
)
from wsproto.frame_protocol import CloseReason
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

SUBPROTOCOL = "sip"
_NORMAL_CLOSE = (CloseReason.NORMAL_CLOSURE, CloseReason.GOING_AWAY, CloseReason.NO_STATUS_RCVD)


class WsFramer:
    """The server side of one SIP-over-WebSocket connection."""

    __slots__ = (
        "_conn",
        "_out",
        "_parts",
        "_size",
        "closed",
        "error",
        "max_size",
        "open",
        "origin",
        "peer_origin",
    )

    def __init__(self, max_size: int, origin: re.Pattern[str] | None = None) -> None:
        self.max_size = max_size
        #: Origin policy: a handshake's Origin must match (``search``); None: any
        self.origin = origin
        self._conn = WSConnection(ConnectionType.SERVER)
        self._out = bytearray()
        self._parts: list[bytes] = []  # the unfinished message's fragments
        self._size = 0
        #: the handshake is done: SIP messages may be sent
        self.open = False
        #: the connection must be closed (after writing ``take_output()``)
        self.closed = False
        #: why, when it is an error worth a log line
        self.error: str | None = None
        self.peer_origin: str | None = None

    @property
    def buffered(self) -> bool:
        """An unfinished handshake or message is waiting for more bytes."""
        return not self.open or bool(self._parts)

    def take_output(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def feed(self, data: bytes) -> list[bytes]:
        """The complete SIP messages in ``data``."""
        if self.closed:
            return []
        conn = self._conn
        try:
            conn.receive_data(data)
            return self._events()
        except RemoteProtocolError as e:  # a handshake that is no WebSocket upgrade
            hint = e.event_hint if isinstance(e.event_hint, RejectConnection) else RejectConnection()
            self._fail(f"bad WebSocket handshake: {e}", hint)
        except LocalProtocolError as e:
            self._fail(f"WebSocket protocol error: {e}")
        return []

    def _events(self) -> list[bytes]:
        msgs: list[bytes] = []
        for event in self._conn.events():
            if isinstance(event, (TextMessage, BytesMessage)):
                data = event.data.encode() if isinstance(event, TextMessage) else event.data
                self._size += len(data)
                if self._size > self.max_size:
                    self._close(
                        CloseReason.MESSAGE_TOO_BIG,
                        f"WebSocket message longer than max_msg_size ({self.max_size} bytes)",
                    )
                    break
                if not event.message_finished:
                    self._parts.append(bytes(data))
                    continue
                if self._parts:
                    self._parts.append(bytes(data))
                    data = b"".join(self._parts)
                    self._parts.clear()
                self._size = 0
                if data.strip():
                    msgs.append(bytes(data))
            elif isinstance(event, Ping):
                self._send(event.response())
            elif isinstance(event, Request):
                self._handshake(event)
            elif isinstance(event, CloseConnection):
                self._closed_by_peer(event)
                break
            if self.closed:
                break
        return msgs

    def _handshake(self, req: Request) -> None:
        origin = next((v.decode("latin-1") for k, v in req.extra_headers if k.lower() == b"origin"), None)
        self.peer_origin = origin
        if SUBPROTOCOL not in [p.lower() for p in req.subprotocols]:
            offered = ", ".join(req.subprotocols) or "none"
            self._fail(
                f"WebSocket upgrade without the 'sip' subprotocol (offered: {offered})", RejectConnection(400)
            )
            return
        if self.origin is not None and (origin is None or not self.origin.search(origin)):
            self._fail(f"WebSocket upgrade from Origin {origin!r} refused (ws_origin)", RejectConnection(403))
            return
        proto = next(p for p in req.subprotocols if p.lower() == SUBPROTOCOL)
        self._send(AcceptConnection(subprotocol=proto))
        self.open = True

    def _closed_by_peer(self, event: CloseConnection) -> None:
        state = self._conn.state
        if state is ConnectionState.REMOTE_CLOSING:  # the peer's close frame
            if event.code not in _NORMAL_CLOSE:
                self.error = f"WebSocket closed by the peer: {event.code} {event.reason or ''}".rstrip()
            self._send(event.response())
        elif state is ConnectionState.OPEN:  # wsproto found a frame breaking RFC 6455
            self._close(event.code, f"bad WebSocket frame: {event.reason or event.code}")
        self.closed = True

    def _close(self, code: int, why: str) -> None:
        """Close from our side because of ``why`` (logged)."""
        self.error = why
        if self._conn.state is ConnectionState.OPEN:
            self._send(CloseConnection(code=code, reason=why[:100]))
        self.closed = True

    def _fail(self, why: str, reject: RejectConnection | None = None) -> None:
        self.error = why
        if reject is not None and self._conn.state is ConnectionState.CONNECTING:
            self._send(reject)
        self.closed = True

    def _send(self, event: Event) -> None:
        # LocalProtocolError: the state does not allow it any more (closing)
        with contextlib.suppress(LocalProtocolError):
            self._out += self._conn.send(event)

    # -- sending ---------------------------------------------------------------
    def frame(self, sip: bytes) -> bytes | None:
        """``sip`` as one WebSocket message: text when it is UTF-8 (RFC 7118
        §5.1), else binary; None when the connection cannot carry it."""
        if not self.open or self.closed:
            return None
        try:
            event: Event = TextMessage(sip.decode("utf-8"))
        except UnicodeDecodeError:
            event = BytesMessage(sip)
        try:
            return self._conn.send(event)
        except LocalProtocolError:
            return None

    def ping(self, payload: bytes = b"") -> bytes:
        if not self.open or self.closed:
            return b""
        try:
            return self._conn.send(Ping(payload))
        except LocalProtocolError:
            return b""

    def close(self, code: int = CloseReason.GOING_AWAY) -> bytes:
        """A close frame to end the connection from our side."""
        if self.open and self._conn.state is ConnectionState.OPEN:
            self._send(CloseConnection(code=code))
        self.closed = True
        return self.take_output()
