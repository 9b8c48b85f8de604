"""rtpengine's ng protocol, sans-I/O: bencode, Kamailio's flags, instance
selection and the retransmission/failover schedule on a virtual clock."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sipexpress.modules.rtpengine.bencode import BencodeError, decode, encode
from sipexpress.modules.rtpengine.ng import (
    Exchange,
    NgError,
    NodeSet,
    Outcome,
    build_command,
    decode_reply,
    parse_flags,
    parse_sockets,
)

# -- bencode -------------------------------------------------------------------


def test_bencode_examples() -> None:
    assert encode({"command": "ping"}) == b"d7:command4:pinge"
    assert encode({"b": [1, -2, b"x"], "a": {}}) == b"d1:ade1:bli1ei-2e1:xee"  # keys sorted
    assert decode(b"d6:result4:ponge") == {b"result": b"pong"}
    assert decode(b"li0ei-7e0:lee") == [0, -7, b"", []]


@pytest.mark.parametrize(
    "bad",
    [
        b"",
        b"i01e",
        b"i-0e",
        b"ie",
        b"i1",
        b"5:abc",
        b"01:a",
        b"l",
        b"d1:a",
        b"di1ei2ee",
        b"x",
        b"i1ei2e",
        b"l" * 200,
    ],
)
def test_bencode_rejects(bad: bytes) -> None:
    with pytest.raises(BencodeError):
        decode(bad)


def test_bencode_refuses_what_it_cannot_encode() -> None:
    with pytest.raises(BencodeError):
        encode(True)
    with pytest.raises(BencodeError):
        encode(1.5)  # type: ignore[arg-type]


values = st.recursive(
    st.integers() | st.binary(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.binary(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=50)
@given(values)
def test_bencode_round_trip(v: object) -> None:
    assert decode(encode(v)) == v  # type: ignore[arg-type]


@given(st.binary(max_size=200))
def test_bencode_decode_raises_only_its_error(data: bytes) -> None:
    """h11's invariant: parse it, or raise the protocol error, nothing else."""
    with contextlib.suppress(BencodeError):
        decode(data)


# -- flags and commands -----------------------------------------------------------


def test_kamailio_flags() -> None:
    f = parse_flags(
        "replace-origin replace-session-connection ICE=remove RTP/AVP trust-address "
        "direction=internal direction=external via-branch=auto codec-strip-PCMA codec-mask-all "
        "rtcp-mux-demux SIP-source-address label=caller"
    )
    assert f.via_branch == "auto" and f.trust_address
    assert f.ng() == {
        "replace": ["origin", "session-connection"],
        "ICE": "remove",
        "transport-protocol": "RTP/AVP",
        "direction": ["internal", "external"],
        "codec": {"strip": ["PCMA"], "mask": ["all"]},
        "rtcp-mux": ["demux"],
        "label": "caller",
        "flags": ["trust-address", "SIP-source-address"],
    }


def test_bad_via_branch_is_a_load_time_error() -> None:
    with pytest.raises(NgError):
        parse_flags("via-branch=3")


def test_command_dictionary() -> None:
    f = parse_flags("replace-origin")
    cmd = build_command(
        "offer",
        f,
        call_id="c1",
        from_tag="ft",
        sdp=b"v=0\r\n",
        via_branch="z9hG4bK1",
        received_from=("IP4", "192.0.2.7"),
    )
    assert cmd == {
        "command": "offer",
        "call-id": "c1",
        "from-tag": "ft",
        "sdp": b"v=0\r\n",
        "via-branch": "z9hG4bK1",
        "replace": ["origin"],
        "received-from": ["IP4", "192.0.2.7"],
    }
    # trust-address: the SDP's address counts, no received-from; overrides win
    f2 = parse_flags("trust-address call-id=other to-tag=tt")
    cmd2 = build_command(
        "answer", f2, call_id="c1", from_tag="ft", to_tag="x", received_from=("IP4", "192.0.2.7")
    )
    assert "received-from" not in cmd2 and cmd2["call-id"] == "other" and cmd2["to-tag"] == "tt"


def test_decode_reply() -> None:
    assert decode_reply(b"abc d6:result2:oke") == ("abc", {b"result": b"ok"})
    for bad in (b"nocookie", b" d6:result2:oke", b"c le", b"c d6:result"):
        with pytest.raises(NgError):
            decode_reply(bad)


# -- instances -----------------------------------------------------------------------


def test_parse_sockets() -> None:
    nodes = parse_sockets("udp:127.0.0.1:2223 udp:127.0.0.1:2224=3; udp6:[::1]:2225 10.0.0.1:22")
    assert [(n.host, n.port, n.weight) for n in nodes] == [
        ("127.0.0.1", 2223, 1),
        ("127.0.0.1", 2224, 3),
        ("::1", 2225, 1),
        ("10.0.0.1", 22, 1),
    ]
    kamailio_set = parse_sockets("1 == udp:127.0.0.1:2223=2 udp:127.0.0.1:2224")
    assert [(n.port, n.weight) for n in kamailio_set] == [(2223, 2), (2224, 1)]
    for bad in (
        "udp:127.0.0.1",
        "udp:127.0.0.1:x",
        "udp:127.0.0.1:70000",
        "unix:/var/run/x:1",
        "udp:h:1=w",
        "1 == udp:a:1; 2 == udp:b:2",
    ):
        with pytest.raises(NgError):
            parse_sockets(bad)


def test_selection_follows_weights_and_sticks_to_the_call() -> None:
    ns = NodeSet(parse_sockets("udp:a:1=1 udp:b:2=3"), 60)
    picks = [ns.select(f"call{i}", 0.0) for i in range(4000)]
    share_b = sum(1 for p in picks if p is not None and p.host == "b") / len(picks)
    assert 0.7 < share_b < 0.8
    a, b = ns.nodes
    # a call answered by a stays with it while a is up, even if b is preferred
    cid = next(f"call{i}" for i in range(100) if ns.select(f"call{i}", 0.0) is b)
    ns.remember(cid, a)
    assert ns.select(cid, 0.0) is a
    ns.failed(a, 10.0)
    assert ns.select(cid, 11.0) is b and ns.select(cid, 70.0) is a  # a is back after 60 s
    ns.forget(cid)
    assert ns.select(cid, 70.0) is b


# -- the exchange on a virtual clock -------------------------------------------------


def test_retransmissions_then_failover_then_answer() -> None:
    ns = NodeSet(parse_sockets("udp:10.0.0.1:1=1000 udp:10.0.0.2:2=1"), 60)
    ex = Exchange(ns, "c1", "ck", {"command": "ping"}, 100.0, timeout=0.2, retries=3)
    sent = ex.datagrams()
    assert [s.node.port for s in sent] == [1] and sent[0].data == b"ck d7:command4:pinge"
    assert ex.timer() == pytest.approx(100.2)
    ex.handle_timer(100.1)  # early: nothing
    assert ex.datagrams() == []
    for expected in (100.2, 100.4):
        t = ex.timer()
        assert t == pytest.approx(expected)
        ex.handle_timer(t)  # type: ignore[arg-type]
    assert [s.node.port for s in ex.datagrams()] == [1, 1]  # sent 3 times in all
    t = ex.timer()
    assert t == pytest.approx(100.6)
    ex.handle_timer(t)  # type: ignore[arg-type]  # third timeout: the next instance, at once
    assert [n.port for n in ex.tried] == [1]
    assert ns.nodes[0].disabled_until == pytest.approx(160.6)
    assert [s.node.port for s in ex.datagrams()] == [2]
    assert not ex.receive(("10.0.0.1", 1), b"ck d6:result4:ponge")  # not from the one asked
    assert not ex.receive(("10.0.0.2", 2), b"other d6:result4:ponge")
    assert ex.receive(("10.0.0.2", 2), b"ck d6:result4:ponge")
    assert ex.outcome is Outcome.ANSWERED and ex.reply == {b"result": b"pong"}
    assert ex.timer() is None
    assert ns.select("c1", 200.0) is ns.nodes[1]  # remembered, though the first is back


def test_no_instance_answers_gives_up_after_tout_times_retr_each() -> None:
    ns = NodeSet(parse_sockets("udp:10.0.0.1:1 udp:10.0.0.2:2"), 60)
    ex = Exchange(ns, "c1", "ck", {"command": "offer"}, 0.0, timeout=0.2, retries=2)
    now = 0.0
    while not ex.done:
        t = ex.timer()
        assert t is not None
        now = t
        ex.handle_timer(now)
    assert ex.outcome is Outcome.NO_INSTANCE
    assert now == pytest.approx(0.8)  # 2 instances x 2 tries x 200 ms
    assert len(ex.tried) == 2
    # both disabled: the next command gives up at once
    ex2 = Exchange(ns, "c2", "ck2", {"command": "offer"}, 1.0, timeout=0.2, retries=2)
    assert ex2.done and ex2.outcome is Outcome.NO_INSTANCE and ex2.datagrams() == []


def test_protocol_code_is_sans_io() -> None:
    """bencode and ng import no networking or event loop (the module's
    asyncio adapter does the I/O)."""
    import ast
    from pathlib import Path

    import sipexpress.modules.rtpengine as pkg

    for name in ("bencode.py", "ng.py"):
        tree = ast.parse((Path(pkg.__file__).parent / name).read_text())
        imported = {
            a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names
        }
        imported |= {(n.module or "").split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert not imported & {"asyncio", "socket", "selectors"}, (name, imported)
