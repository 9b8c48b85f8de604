"""A binding registered through an edge proxy (RFC 3327 Path) reached with
stateless ``forward()``: as SER/Kamailio do, the request goes to the first
Path URI with the Path as its top Route headers (as t_relay does)."""

from __future__ import annotations

import socket
import uuid

import pytest

from tests.support import SerProcess, udp_exchange

pytestmark = pytest.mark.interop

SCRIPT = """
from sipexpress.script.pyroute import forward, lookup, save, sl_send_reply

OPTIONS = {{"listen": "udp:{host}:{port}"}}
MODULES = ["sl", "usrloc", "registrar"]
MODPARAMS = [("registrar", "use_path", 1)]

async def request_route(ctx):
    if ctx.msg.method == "REGISTER":
        await save(ctx, "location")
        return 0
    if await lookup(ctx, "location") < 0:
        sl_send_reply(ctx, 404, "Not Found")
        return 0
    await forward(ctx)
    return 0
"""


def test_lookup_forward_routes_through_path(ser_factory) -> None:  # type: ignore[no-untyped-def]
    sp: SerProcess = ser_factory(SCRIPT, suffix=".py")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as edge:
        edge.bind(("127.0.0.1", 0))
        edge.settimeout(5)
        edge_port = edge.getsockname()[1]
        path = f"<sip:e1@127.0.0.1:{edge_port};lr>, <sip:e2@127.0.0.2:5999;lr>"
        reg = (
            f"REGISTER sip:{sp.host}:{sp.port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{edge_port};branch=z9hG4bK{uuid.uuid4().hex[:12]}\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:pat@{sp.host}>;tag=r1\r\n"
            f"To: <sip:pat@{sp.host}>\r\n"
            "Call-ID: path-fwd@test\r\n"
            "CSeq: 1 REGISTER\r\n"
            "Supported: path\r\n"
            f"Path: {path}\r\n"
            "Contact: <sip:pat@192.168.1.20:5062>\r\n"
            "Expires: 600\r\n"
            "Content-Length: 0\r\n\r\n"
        ).encode()
        r = udp_exchange(reg, sp.host, sp.port)
        assert r is not None and r.startswith(b"SIP/2.0 200"), r
        msg = (
            f"MESSAGE sip:pat@{sp.host}:{sp.port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK{uuid.uuid4().hex[:12]}\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:probe@{sp.host}>;tag=p\r\n"
            f"To: <sip:pat@{sp.host}>\r\n"
            "Call-ID: path-fwd-msg@test\r\n"
            "CSeq: 1 MESSAGE\r\n"
            "Content-Length: 0\r\n\r\n"
        ).encode()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as caller:
            caller.sendto(msg, (sp.host, sp.port))
            got = edge.recv(65535).decode()  # the edge: the first Path URI is the next hop
    lines = got.split("\r\n")
    assert lines[0] == "MESSAGE sip:pat@192.168.1.20:5062 SIP/2.0", got
    routes = [ln.partition(":")[2].strip() for ln in lines if ln.lower().startswith("route:")]
    assert routes and ", ".join(routes) == path, got
