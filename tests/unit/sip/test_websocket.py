"""The sans-I/O SIP-over-WebSocket framer (RFC 7118) against wsproto's
client side: the upgrade, one SIP message per WebSocket message, control
frames, limits and refusals."""

from __future__ import annotations

import re

from wsproto import WSConnection
from wsproto.connection import ConnectionType
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    Pong,
    RejectConnection,
    Request,
    TextMessage,
)

from sipexpress.sip.websocket import WsFramer

OPTIONS = b"OPTIONS sip:x SIP/2.0\r\nContent-Length: 0\r\n\r\n"


def pair(
    max_size: int = 4096,
    protocols: tuple[str, ...] = ("sip",),
    origin: str | None = None,
    policy: str | None = None,
) -> tuple[WSConnection, WsFramer, list[object]]:
    client = WSConnection(ConnectionType.CLIENT)
    framer = WsFramer(max_size, re.compile(policy) if policy else None)
    headers = [(b"Origin", origin.encode())] if origin else []
    assert (
        framer.feed(
            client.send(Request(host="x", target="/", subprotocols=list(protocols), extra_headers=headers))
        )
        == []
    )
    client.receive_data(framer.take_output())
    return client, framer, list(client.events())


def test_upgrade_and_one_message_per_frame() -> None:
    client, framer, events = pair()
    assert isinstance(events[0], AcceptConnection) and events[0].subprotocol == "sip"
    assert framer.open and not framer.buffered
    two = client.send(TextMessage(OPTIONS.decode())) + client.send(BytesMessage(OPTIONS))
    assert framer.feed(two) == [OPTIONS, OPTIONS]


def test_fragments_are_joined_and_keepalives_skipped() -> None:
    client, framer, _ = pair()
    assert framer.feed(client.send(TextMessage(OPTIONS[:10].decode(), message_finished=False))) == []
    assert framer.buffered
    assert framer.feed(client.send(TextMessage(OPTIONS[10:].decode()))) == [OPTIONS]
    assert framer.feed(client.send(TextMessage("\r\n\r\n"))) == []
    assert not framer.buffered


def test_ping_is_answered_and_ours_is_a_frame() -> None:
    client, framer, _ = pair()
    framer.feed(client.send(Ping(b"p")))
    client.receive_data(framer.take_output() + framer.ping(b"q"))
    assert list(client.events()) == [Pong(b"p"), Ping(b"q")]


def test_send_text_or_binary() -> None:
    client, framer, _ = pair()
    client.receive_data((framer.frame(OPTIONS) or b"") + (framer.frame(b"\xff\xfe") or b""))
    events = list(client.events())
    assert events == [TextMessage(OPTIONS.decode()), BytesMessage(b"\xff\xfe")]


def test_refusals() -> None:
    _, framer, events = pair(protocols=("chat",))
    assert isinstance(events[0], RejectConnection) and events[0].status_code == 400
    assert framer.closed and framer.error == "WebSocket upgrade without the 'sip' subprotocol (offered: chat)"
    _, framer, events = pair(origin="https://evil", policy="^https://good$")
    assert isinstance(events[0], RejectConnection) and events[0].status_code == 403
    _, framer, events = pair(origin="https://good", policy="^https://good$")
    assert isinstance(events[0], AcceptConnection)
    framer = WsFramer(4096)
    assert framer.feed(b"OPTIONS sip:x SIP/2.0\r\n\r\n") == []
    assert framer.closed and framer.error is not None and framer.error.startswith("bad WebSocket handshake")
    assert framer.take_output().startswith(b"HTTP/1.1 400 ")
    assert framer.frame(OPTIONS) is None  # nothing is sent on a refused connection


def test_oversized_and_broken_frames_close() -> None:
    client, framer, _ = pair(max_size=100)
    assert framer.feed(client.send(BytesMessage(b"x" * 60, message_finished=False))) == []
    assert framer.feed(client.send(BytesMessage(b"x" * 60))) == []
    assert framer.closed and framer.error == "WebSocket message longer than max_msg_size (100 bytes)"
    client.receive_data(framer.take_output())
    assert [e.code for e in client.events() if isinstance(e, CloseConnection)] == [1009]
    client, framer, _ = pair()
    assert framer.feed(b"\x81\x83abc\xfe\xfe\xfe") == []  # a masked text frame that is no UTF-8
    assert framer.closed and framer.error is not None and framer.error.startswith("bad WebSocket frame")
    client.receive_data(framer.take_output())
    assert [e.code for e in client.events() if isinstance(e, CloseConnection)] == [1007]


def test_peer_close_is_answered_without_error() -> None:
    client, framer, _ = pair()
    framer.feed(client.send(CloseConnection(1000)))
    assert framer.closed and framer.error is None
    client.receive_data(framer.take_output())
    assert [e.code for e in client.events() if isinstance(e, CloseConnection)] == [1000]
