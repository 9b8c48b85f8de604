"""The registrar's Path (RFC 3327) and Outbound (RFC 5626) handling, in a
real Core over UDP on loopback; the flow tokens; the stream framer's CRLF
pings; the keep-alive planner."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from sipexpress.core.context import Proto
from sipexpress.modules.nathelper import Ping, plan_pings
from sipexpress.modules.usrloc.records import FL_NAT, Ucontact
from sipexpress.sip.message import StreamFramer
from sipexpress.sip.outbound import Flow, FlowTokens
from tests.unit.usrloc.harness import Harness

EDGE = "<sip:tok@198.51.100.1:5060;lr;ob;received=sip:203.0.113.7:4000>"
INSTANCE = '+sip.instance="<urn:uuid:00000000-0000-1000-8000-000000000001>"'


@pytest.fixture
async def h() -> AsyncIterator[Harness]:
    hh = Harness()
    await hh.start(reg={"use_path": 1, "outbound_mode": 1})
    yield hh
    await hh.stop()


async def test_path_is_stored_echoed_and_routes_the_lookup(h: Harness) -> None:
    extra = f"Supported: path\r\nPath: {EDGE}, <sip:core.example.org;lr>"
    r = await h.send(h.register("alice", ["<sip:alice@192.168.1.2:5060>"], 600, extra=extra))
    assert r.status == 200
    assert r.header("path") == f"{EDGE}, <sip:core.example.org;lr>"  # RFC 3327 §5.3
    c = h.table().records["alice"].contacts[0]
    assert c.path == f"{EDGE}, <sip:core.example.org;lr>"
    await h.send(h.invite("alice"))
    rc, ruri, dst, _ = h.lookups[-1]
    assert rc == 1 and ruri == "sip:alice@192.168.1.2:5060"
    assert dst == "sip:tok@198.51.100.1:5060;lr;ob;received=sip:203.0.113.7:4000"  # the first Path hop


async def test_path_use_received(h: Harness) -> None:
    h.core.set_modparam("registrar", "path_use_received", 1)
    extra = f"Supported: path\r\nPath: {EDGE.replace('sip:203', 'sip%3A203')}"
    await h.send(h.register("bob", ["<sip:bob@192.168.1.3>"], 600, extra=extra))
    await h.send(h.invite("bob"))
    assert h.lookups[-1][2] == "sip:203.0.113.7:4000"


async def test_path_without_supported_path_is_refused_in_mode_2(h: Harness) -> None:
    r = await h.send(h.register("carol", ["<sip:carol@192.168.1.4>"], 600, extra=f"Path: {EDGE}"))
    assert r.status == 420 and r.header("unsupported") == "path"
    assert "carol" not in h.table().records
    h.core.set_modparam("registrar", "path_mode", 1)  # stored, not echoed
    r = await h.send(h.register("carol", ["<sip:carol@192.168.1.4>"], 600, extra=f"Path: {EDGE}"))
    assert r.status == 200 and r.header("path") is None
    assert h.table().records["carol"].contacts[0].path == EDGE


async def test_outbound_reg_id_replaces_the_flow_of_the_same_instance(h: Harness) -> None:
    extra = f"Supported: path, outbound\r\nPath: {EDGE}"
    r = await h.send(
        h.register("dave", [f"<sip:dave@192.168.1.5:5060;ob>;reg-id=1;{INSTANCE}"], 600, extra=extra)
    )
    assert r.status == 200 and r.header("require") == "outbound"
    # the phone comes back with another address (new NAT binding), same instance and reg-id
    r = await h.send(
        h.register("dave", [f"<sip:dave@192.168.1.99:5062;ob>;reg-id=1;{INSTANCE}"], 600, extra=extra)
    )
    assert r.status == 200
    contacts = h.table().records["dave"].contacts
    assert [c.uri for c in contacts] == ["sip:dave@192.168.1.99:5062;ob"]
    assert (
        contacts[0].reg_id == 1 and contacts[0].instance == "<urn:uuid:00000000-0000-1000-8000-000000000001>"
    )
    # a second flow (reg-id 2) is another binding; lookup still targets one flow per instance
    await h.send(h.register("dave", [f"<sip:dave@10.9.9.9;ob>;reg-id=2;{INSTANCE}"], 900, extra=extra))
    assert len(h.table().records["dave"].contacts) == 2
    await h.send(h.invite("dave"))
    rc, ruri, _, branches = h.lookups[-1]
    assert rc == 1 and ruri == "sip:dave@10.9.9.9;ob" and branches == []


async def test_outbound_through_an_edge_without_ob_is_439(h: Harness) -> None:
    extra = "Supported: path, outbound\r\nPath: <sip:edge.example.org;lr>"
    r = await h.send(h.register("erin", [f"<sip:erin@192.168.1.6;ob>;reg-id=1;{INSTANCE}"], 600, extra=extra))
    assert r.status == 439


async def test_outbound_off_ignores_reg_id() -> None:
    hh = Harness()
    await hh.start()
    try:
        r = await hh.send(hh.register("frank", [f"<sip:frank@192.168.1.7;ob>;reg-id=1;{INSTANCE}"], 600))
        assert r.status == 200 and r.header("require") is None
        c = hh.table().records["frank"].contacts[0]
        assert c.reg_id == 0 and c.instance is None and c.path is None
    finally:
        await hh.stop()


def test_flow_tokens_round_trip_and_refuse_forgeries() -> None:
    tokens = FlowTokens(b"k" * 32)
    flow = Flow("tcp", "198.51.100.10", 5060, "203.0.113.7", 40000)
    token = tokens.encode(flow)
    assert token.replace("-", "").replace("_", "").isalnum()  # fits a URI user part
    assert tokens.decode(token) == flow
    assert flow.uri() == "sip:203.0.113.7:40000;transport=tcp"
    assert FlowTokens(b"x" * 32).decode(token) is None  # another key (a restart)
    tampered = token[:-2] + ("AA" if token[-2:] != "AA" else "BB")
    assert tokens.decode(tampered) is None
    for garbage in ("", "!!!", "a", "A" * 500, "AAAA"):
        assert tokens.decode(garbage) is None


@pytest.mark.parametrize(
    ("chunks", "pings", "messages"),
    [
        ([b"\r\n\r\n"], 1, 0),
        ([b"\r\n", b"\r\n"], 1, 0),
        ([b"\r\n"], 0, 0),
        ([b"\r\n\r\n\r\n\r\n"], 2, 0),
        ([b"\r\n\r\nOPTIONS sip:a SIP/2.0\r\nContent-Length: 0\r\n\r\n"], 1, 1),
        ([b"OPTIONS sip:a SIP/2.0\r\nContent-Length: 0\r\n\r\n\r\n"], 0, 1),
    ],
)
def test_stream_framer_counts_crlf_pings(chunks: list[bytes], pings: int, messages: int) -> None:
    f = StreamFramer()
    frames = [m for c in chunks for m in f.feed(c)]
    assert f.pings == pings and len(frames) == messages


def test_plan_pings() -> None:
    now = 1000.0

    def c(
        uri: str,
        flags: int = FL_NAT,
        received: str | None = None,
        socket: str | None = "udp:198.51.100.10:5060",
        expires: int = 2000,
    ) -> Ucontact:
        return Ucontact("a", uri, expires, flags=flags, received=received, socket=socket)

    contacts = [
        c("sip:a@192.168.1.2:5062", received="sip:203.0.113.7:4000"),
        c("sip:b@192.168.1.3", received="sip:203.0.113.7:4000"),  # the same NAT binding: once
        c("sip:c@198.51.100.50", flags=0),  # not behind NAT
        c(
            "sip:d@192.168.1.4",
            received="sip:203.0.113.8:4001;transport=tcp",
            socket="tcp:198.51.100.10:5060",
        ),
        c("sip:e@phone.example.org"),  # a name: not pinged
        c("sip:f@203.0.113.9", expires=999),  # expired
        Ucontact("a", "sip:g@192.168.1.5", 2000, flags=FL_NAT, path="<sip:edge;lr>"),  # the edge's to ping
        c("sip:h@x.invalid;transport=ws", received="sip:203.0.113.9:5555;transport=ws"),  # ws keeps itself
    ]
    assert plan_pings(contacts, now, nated_only=True) == [
        Ping(Proto.UDP, "198.51.100.10", 5060, "203.0.113.7", 4000, "sip:a@192.168.1.2:5062"),
        Ping(Proto.TCP, "198.51.100.10", 5060, "203.0.113.8", 4001, "sip:d@192.168.1.4"),
    ]
    assert len(plan_pings(contacts, now, nated_only=False)) == 3
