"""maxfwd, textops and rr against a running ser, with a UDP socket of the
test as the next hop (what it receives is what ser forwarded)."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator

import pytest

from sipexpress.sip.message import SipMessage
from tests.support import SippPhone, free_port

CFG = """
listen=udp:127.0.0.1:{port}
alias=proxy.example.com
loadmodule "sl"
loadmodule "maxfwd"
loadmodule "textops"
loadmodule "rr"
modparam("rr", "enable_full_lr", 1)
route {{
    if (!mf_process_maxfwd_header("10")) {{ sl_send_reply("483", "Too Many Hops"); break; }};
    if (method == "OPTIONS") {{ sl_send_reply("200", "probe ok"); break; }};
    if (is_present_hf("X-Remove-Me")) {{ remove_hf("X-Remove-Me"); }};
    if (search("^X-Search: yes")) {{ append_hf("P-hint: found\\r\\n"); }};
    if (search("^X-Search-Append: ")) {{ search_append("^X-Search-Append: ", "tail-"); }};
    if (search("^X-Replace: ")) {{ replace("old", "new"); }};
    if (search("^X-Replace-All: ")) {{ replace_all("old", "new"); }};
    if (search("^X-Subst: ")) {{ subst("/^X-Subst: ([^\\r]*)/X-Subst: [\\1]/s"); }};
    if (uri =~ "^sip:urihf@") {{ append_urihf("CC-Diversion: ", "\\r\\n"); }};
    if (uri =~ "^sip:reply@") {{ append_to_reply("X-Reply-Hf: yes\\r\\n"); sl_send_reply("404", "Nope"); break; }};
    if (!method == "REGISTER") {{ record_route(); }};
    if (loose_route()) {{ append_hf("P-hint: rr-enforced\\r\\n"); }};
    forward(127.0.0.1, {next_port});
}}
"""


@pytest.fixture
def hop() -> Iterator[socket.socket]:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", free_port()))
    s.settimeout(3)
    yield s
    s.close()


@pytest.fixture
def proxy(ser_factory, hop):  # type: ignore[no-untyped-def]
    return ser_factory(CFG, next_port=hop.getsockname()[1])


def request(
    via_port: int,
    ruri: str,
    extra: str = "",
    max_forwards: str | None = "70",
    method: str = "MESSAGE",
) -> bytes:
    mf = f"Max-Forwards: {max_forwards}\r\n" if max_forwards is not None else ""
    return (
        f"{method} {ruri} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{via_port};branch=z9hG4bK{uuid.uuid4().hex[:12]}\r\n"
        f"{mf}"
        f"From: <sip:alice@example.com>;tag=a1b2\r\n"
        f"To: <sip:bob@example.com>\r\n"
        f"Call-ID: {uuid.uuid4().hex}\r\n"
        f"CSeq: 1 {method}\r\n"
        f"{extra}"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def exchange(proxy, hop: socket.socket, data: bytes) -> SipMessage:  # type: ignore[no-untyped-def]
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.bind(("127.0.0.1", 0))
    client.sendto(data, (proxy.host, proxy.port))
    got, _ = hop.recvfrom(65535)
    client.close()
    return SipMessage.parse(got)


def reply_to(proxy, data: bytes) -> SipMessage:  # type: ignore[no-untyped-def]
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.settimeout(3)
    client.bind(("127.0.0.1", 0))
    client.sendto(data, (proxy.host, proxy.port))
    got, _ = client.recvfrom(65535)
    client.close()
    return SipMessage.parse(got)


def test_maxfwd_decrements_limits_and_adds(proxy, hop) -> None:  # type: ignore[no-untyped-def]
    fwd = exchange(proxy, hop, request(proxy.port, "sip:bob@example.com", max_forwards="5"))
    assert fwd.max_forwards == 4
    # a phone's 70 leaves as 69 (max_limit 70, as Kamailio's)
    fwd = exchange(proxy, hop, request(proxy.port, "sip:bob@example.com", max_forwards="70"))
    assert fwd.max_forwards == 69
    fwd = exchange(proxy, hop, request(proxy.port, "sip:bob@example.com", max_forwards="200"))
    assert fwd.max_forwards == 70
    fwd = exchange(proxy, hop, request(proxy.port, "sip:bob@example.com", max_forwards=None))
    assert fwd.header_all("max-forwards") == ["10"]


def test_maxfwd_zero_gets_483(proxy) -> None:  # type: ignore[no-untyped-def]
    rep = reply_to(proxy, request(proxy.port, "sip:bob@example.com", max_forwards="0"))
    assert (rep.status, rep.reason) == (483, "Too Many Hops")


def test_append_and_remove_hf_on_forwarded_request(proxy, hop) -> None:  # type: ignore[no-untyped-def]
    fwd = exchange(
        proxy,
        hop,
        request(proxy.port, "sip:bob@example.com", "X-Search: yes\r\nX-Remove-Me: 1\r\nX-Remove-Me: 2\r\n"),
    )
    assert fwd.header("P-hint") == "found"
    assert not fwd.has_header("X-Remove-Me")
    plain = exchange(proxy, hop, request(proxy.port, "sip:bob@example.com"))
    assert not plain.has_header("P-hint")


def test_search_append_replace_and_subst(proxy, hop) -> None:  # type: ignore[no-untyped-def]
    fwd = exchange(proxy, hop, request(proxy.port, "sip:bob@example.com", "X-Search-Append: x\r\n"))
    assert fwd.header("X-Search-Append") == "tail-x"
    fwd = exchange(proxy, hop, request(proxy.port, "sip:bob@example.com", "X-Replace: old old\r\n"))
    assert fwd.header("X-Replace") == "new old"
    fwd = exchange(proxy, hop, request(proxy.port, "sip:bob@example.com", "X-Replace-All: old OLD\r\n"))
    assert fwd.header("X-Replace-All") == "new new"  # case-insensitive, as SER's REG_ICASE
    fwd = exchange(proxy, hop, request(proxy.port, "sip:bob@example.com", "X-Subst: abc\r\n"))
    assert fwd.header("X-Subst") == "[abc]"


def test_append_urihf_carries_original_uri(proxy, hop) -> None:  # type: ignore[no-untyped-def]
    fwd = exchange(proxy, hop, request(proxy.port, "sip:urihf@example.com"))
    assert fwd.header("CC-Diversion") == "sip:urihf@example.com"


def test_append_to_reply(proxy) -> None:  # type: ignore[no-untyped-def]
    rep = reply_to(proxy, request(proxy.port, "sip:reply@example.com"))
    assert rep.status == 404
    assert rep.header("X-Reply-Hf") == "yes"


def test_record_route_added(proxy, hop) -> None:  # type: ignore[no-untyped-def]
    fwd = exchange(proxy, hop, request(proxy.port, "sip:bob@example.com", method="INVITE"))
    rr = fwd.record_routes[0]
    assert rr.uri.startswith(f"sip:127.0.0.1:{proxy.port};")
    assert "ftag=a1b2" in rr.uri and "lr=on" in rr.uri


def test_loose_route_removes_own_route_and_follows_next(proxy, hop) -> None:  # type: ignore[no-untyped-def]
    nxt = hop.getsockname()[1]
    routes = f"Route: <sip:127.0.0.1:{proxy.port};lr>, <sip:127.0.0.1:{nxt};lr>\r\n"
    fwd = exchange(proxy, hop, request(proxy.port, "sip:bob@192.0.2.1", routes, method="BYE"))
    assert fwd.ruri == "sip:bob@192.0.2.1"  # a loose router leaves the request URI alone
    assert [r.uri for r in fwd.routes] == [f"sip:127.0.0.1:{nxt};lr"]
    assert fwd.header("P-hint") == "rr-enforced"


def test_loose_route_after_strict_router(proxy, hop) -> None:  # type: ignore[no-untyped-def]
    """The previous hop was a strict router: our Record-Route value is the
    request URI and the real target is the last Route (RFC 3261 §16.4)."""
    nxt = hop.getsockname()[1]
    data = request(
        proxy.port,
        f"sip:127.0.0.1:{proxy.port};lr",
        f"Route: <sip:bob@127.0.0.1:{nxt}>\r\n",
        method="BYE",
    )
    fwd = exchange(proxy, hop, data)
    assert fwd.ruri == f"sip:bob@127.0.0.1:{nxt}"
    assert not fwd.has_header("Route")


def test_strict_next_hop_swaps_uri(proxy, hop) -> None:  # type: ignore[no-untyped-def]
    """Next hop is a strict router (no ;lr): its URI becomes the request
    URI and the old request URI goes to the end of the route set (§16.6)."""
    nxt = hop.getsockname()[1]
    routes = f"Route: <sip:127.0.0.1:{proxy.port};lr>, <sip:strict@127.0.0.1:{nxt}>\r\n"
    fwd = exchange(proxy, hop, request(proxy.port, "sip:bob@192.0.2.1", routes, method="BYE"))
    assert fwd.ruri == f"sip:strict@127.0.0.1:{nxt}"
    assert [r.uri for r in fwd.routes] == ["sip:bob@192.0.2.1"]


def test_headers_as_seen_by_a_sipp_uas(ser_factory, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """append_hf / remove_hf on a request forwarded to a real SIPp phone."""
    phone = SippPhone("uas_message.xml", tmp_path)
    try:
        proxy = ser_factory(CFG, next_port=phone.port)
        client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        client.settimeout(5)
        client.bind(("127.0.0.1", 0))
        client.sendto(
            request(client.getsockname()[1], "sip:bob@example.com", "X-Search: yes\r\nX-Remove-Me: 1\r\n"),
            (proxy.host, proxy.port),
        )
        assert SipMessage.parse(client.recvfrom(65535)[0]).status == 200  # the phone's answer, relayed back
        client.close()
        assert phone.wait(10) == 0
    finally:
        phone.stop()
    got = phone.received().split("message received", 1)[1].split("-----", 1)[0]
    assert "P-hint: found" in got
    assert "X-Remove-Me" not in got
