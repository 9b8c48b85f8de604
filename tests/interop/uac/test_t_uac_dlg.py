"""t_uac_dlg through the real FIFO: instant messages to phones registered
at ser (SIPp as the phones), click-to-dial with REFER through a
record-routing ser, and the seed's shell IM script."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from sipexpress.mgmt.client import fifo_request
from sipexpress.sip.message import SipMessage
from sipexpress.uac.flows import click_to_dial, instant_message, parse_completion
from tests.support import SippPhone, free_port

ROOT = Path(__file__).resolve().parents[3]

CFG = """
listen=udp:127.0.0.1:{port}
fifo="{fifo}"
loadmodule "sl"
loadmodule "tm"
loadmodule "rr"
loadmodule "usrloc"
loadmodule "registrar"
modparam("tm", "fr_timer", 2)
modparam("tm", "fr_inv_timer", 3)
route {{
    if (method == "OPTIONS" && uri == myself) {{ sl_send_reply("200", "ok"); break; }};
    if (loose_route()) {{ t_relay(); break; }};
    if (method == "REGISTER") {{ save("location"); break; }};
    if (method == "INVITE") {{ record_route(); }};
    if (uri == myself) {{
        if (!lookup("location")) {{ sl_send_reply("404", "Not Found"); break; }};
    }};
    t_relay();
}}
"""


def register(ser_port: int, user: str, contact_port: int) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(3)
    s.bind(("127.0.0.1", 0))
    me = s.getsockname()[1]
    s.sendto(
        (
            f"REGISTER sip:127.0.0.1:{ser_port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bK{uuid.uuid4().hex[:10]}\r\n"
            f"From: <sip:{user}@127.0.0.1>;tag=r{uuid.uuid4().hex[:6]}\r\n"
            f"To: <sip:{user}@127.0.0.1>\r\n"
            f"Call-ID: {uuid.uuid4().hex}\r\nCSeq: 1 REGISTER\r\nMax-Forwards: 70\r\n"
            f"Contact: <sip:{user}@127.0.0.1:{contact_port}>\r\nExpires: 600\r\n"
            "Content-Length: 0\r\n\r\n"
        ).encode(),
        ("127.0.0.1", ser_port),
    )
    rep = SipMessage.parse(s.recvfrom(65535)[0])
    s.close()
    assert rep.status == 200, rep.first_line


@pytest.fixture
def ser(ser_factory):  # type: ignore[no-untyped-def]
    return ser_factory(CFG)


def Phone(scenario: str, workdir: Path) -> SippPhone:
    return SippPhone(scenario, workdir)


@pytest.fixture
def phones(tmp_path: Path) -> Iterator[list[SippPhone]]:
    made: list[SippPhone] = []
    yield made
    for p in made:
        p.stop()


def send_via(fifo: str):  # type: ignore[no-untyped-def]
    return lambda lines: fifo_request(fifo, "t_uac_dlg", lines, timeout=20)


def test_im_to_registered_phone(ser, phones, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    phone = Phone("uas_message.xml", tmp_path / "bob")
    phones.append(phone)
    register(ser.port, "bob", phone.port)
    res = instant_message(
        send_via(ser.fifo), f"sip:bob@127.0.0.1:{ser.port}", "Hello Bob, ça va?", "<sip:alice@example.com>"
    )
    assert res.code == 200, res
    assert res.header("To") is not None and ";tag=" in str(res.header("To"))
    assert phone.wait() == 0
    got = phone.received()
    assert "MESSAGE sip:bob@127.0.0.1:" in got
    assert "From: <sip:alice@example.com>;tag=" in got
    assert f"To: <sip:bob@127.0.0.1:{ser.port}>" in got
    assert "Content-Type: text/plain; charset=UTF-8" in got
    assert "Hello Bob, ça va?" in got


def test_im_to_unknown_user_reports_404(ser) -> None:  # type: ignore[no-untyped-def]
    res = instant_message(
        send_via(ser.fifo), f"sip:nobody@127.0.0.1:{ser.port}", "hi", "<sip:alice@example.com>"
    )
    assert (res.code, res.reason) == (404, "Not Found")


def test_im_to_silent_phone_times_out_with_408(ser) -> None:  # type: ignore[no-untyped-def]
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    try:
        register(ser.port, "carol", silent.getsockname()[1])
        started = time.monotonic()
        res = instant_message(
            send_via(ser.fifo), f"sip:carol@127.0.0.1:{ser.port}", "hi", "<sip:a@example.com>"
        )
        assert res.code == 408
        assert time.monotonic() - started >= 1.5  # fr_timer is 2 s
        assert silent.recv(65535).startswith(b"MESSAGE ")  # it did reach the phone
    finally:
        silent.close()


def test_bad_t_uac_dlg_requests_get_ser_errors(ser) -> None:  # type: ignore[no-untyped-def]
    cases = {
        ("MESSAGE", "not a uri", ".", "From: <sip:a@b>", ".", "."): "400 fifo_uac_error: ruri invalid\n",
        ("MESSAGE", "sip:x@127.0.0.1", ".", ".", "."): "400 fifo_uac_error: HFs expected",
        ("MESSAGE", "sip:x@127.0.0.1", ".", "From: <sip:a@b>", ".", "."): "400 fifo_uac_error: To missing",
        ("MESSAGE", "sip:x@127.0.0.1", ".", "To: <sip:a@b>", ".", "."): "400 fifo_uac_error: From missing",
        (
            "MESSAGE",
            "sip:x@127.0.0.1",
            ".",
            "From: <sip:a@b>",
            "To: <sip:x@127.0.0.1>",
            ".",
            "body",
            ".",
        ): "400 fifo_uac_error: Content-Type missing",
        (
            "MESSAGE",
            "sip:x@127.0.0.1",
            ".",
            "From: <sip:a@b>",
            "To: <sip:x@127.0.0.1>",
            "CSeq: 5 OPTIONS",
            ".",
            ".",
        ): "400 fifo_uac_error: CSeq method mismatch",
    }
    for lines, expected in cases.items():
        assert fifo_request(ser.fifo, "t_uac_dlg", list(lines)) == expected
    assert fifo_request(ser.fifo, "uptime").startswith("200 ok\n")


def test_click_to_dial_through_record_routing_proxy(ser, phones, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    caller = Phone("uas_ctd_caller.xml", tmp_path / "caller")
    phones.append(caller)
    register(ser.port, "alice", caller.port)
    result = click_to_dial(send_via(ser.fifo), f"sip:alice@127.0.0.1:{ser.port}", "sip:bob@example.com")
    assert result.report() == ["invitation succeeded", "refer succeeded", "bye succeeded"], result.steps
    assert caller.wait() == 0
    got = caller.received()
    assert "Refer-To: <sip:bob@example.com>" in got
    assert "Referred-By: <sip:controller@foo.bar>" in got
    assert "b=CT:1000" in got and "c=IN IP4 0.0.0.0" in got  # the on-hold SDP
    # the in-dialog requests came through ser (record-routed): their top Via is ser's
    for method in ("ACK", "REFER", "BYE"):
        block = got.split(f"\n{method} sip:", 1)[1]
        via = block.split("Via: ", 1)[1].split("\n", 1)[0]
        assert f"127.0.0.1:{ser.port};" in via, (method, via)


def test_click_to_dial_caller_busy(ser, phones, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    caller = Phone("uas_busy.xml", tmp_path / "busy")
    phones.append(caller)
    register(ser.port, "dave", caller.port)
    result = click_to_dial(send_via(ser.fifo), f"sip:dave@127.0.0.1:{ser.port}", "sip:bob@example.com")
    assert result.report() == ["invitation failed"]
    assert result.steps[0][2].startswith("486")
    assert not result.ok


def test_seed_shell_im_script(ser, phones, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """examples/uac/send_im.sh is the seed's script with the FIFO path and
    the receiver as variables; it writes no final empty line, as the seed."""
    phone = Phone("uas_message.xml", tmp_path / "receiver")
    phones.append(phone)
    register(ser.port, "receiver", phone.port)
    env = dict(os.environ, SER_FIFO=ser.fifo, RECEIVER=f"sip:receiver@127.0.0.1:{ser.port}")
    subprocess.run(
        [
            shutil.which("sh") or "/bin/sh",
            str(ROOT / "examples" / "uac" / "send_im.sh"),
            "greetings",
            "from",
            "sh",
        ],
        env=env,
        check=True,
        timeout=10,
    )
    assert phone.wait() == 0
    got = phone.received()
    assert "Hello world!!!! greetings from sh" in got
    assert "foo: bar_special_header" in got
    assert "p_header: p_value" in got
    # the request lacked its final empty line: the server still serves the next one
    assert fifo_request(ser.fifo, "uptime").startswith("200 ok\n")


def test_completion_reply_shape(ser, phones, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    phone = Phone("uas_message.xml", tmp_path / "shape")
    phones.append(phone)
    register(ser.port, "erin", phone.port)
    lines = [
        "MESSAGE",
        f"sip:erin@127.0.0.1:{ser.port}",
        ".",
        "From: <sip:alice@example.com>",
        f"To: <sip:erin@127.0.0.1:{ser.port}>",
        "Contact: <sip:alice@!!>",
        "Content-Type: text/plain",
        ".",
        "hi",
        ".",
    ]
    text = fifo_request(ser.fifo, "t_uac_dlg", lines, timeout=20)
    first, rest = text.split("\n", 1)
    assert first == "200 OK"
    ruri, hop, route, headers = rest.split("\n", 3)
    assert (ruri, hop, route) == (".", ".", ".")  # the phone's 200 had no Contact
    assert "CSeq: 10 MESSAGE\r" in headers  # SER's default CSeq
    assert parse_completion(text).code == 200
    got = phone.received()
    assert f"Contact: <sip:alice@127.0.0.1:{ser.port}>" in got  # "!!" became our address


@pytest.mark.parametrize(("scenario", "expected", "rc"), [
    ("uas_ctd_caller.xml", ["invitation succeeded", "refer succeeded", "bye succeeded"], 0),
    ("uas_busy.xml", ["invitation failed"], 1),
])  # fmt: skip
def test_ctd_shell_example(ser, phones, tmp_path: Path, scenario: str, expected: list[str], rc: int) -> None:  # type: ignore[no-untyped-def]
    """examples/uac/ctd.sh: the same flow through the FIFO alone."""
    caller = Phone(scenario, tmp_path / "caller")
    phones.append(caller)
    register(ser.port, "frank", caller.port)
    p = subprocess.run(
        [
            "/bin/sh",
            str(ROOT / "examples" / "uac" / "ctd.sh"),
            f"sip:frank@127.0.0.1:{ser.port}",
            "sip:bob@example.com",
        ],
        env=dict(os.environ, SER_FIFO=ser.fifo),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert p.stdout.split("\n")[:-1] == expected, (p.stdout, p.stderr)
    assert p.returncode == rc


def serctl(fifo: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [shutil.which("serctl") or "serctl", *args],
        env=dict(os.environ, SER_FIFO=fifo),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_serctl_im(ser, phones, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    phone = Phone("uas_message.xml", tmp_path / "gina")
    phones.append(phone)
    register(ser.port, "gina", phone.port)
    p = serctl(ser.fifo, "im", f"sip:gina@127.0.0.1:{ser.port}", "hello", "from", "serctl")
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("200 OK\n")
    assert "Hello" not in p.stdout and "hello from serctl" in phone.received()
    p = serctl(ser.fifo, "im", f"sip:nobody@127.0.0.1:{ser.port}", "hi")
    assert p.returncode == 1
    assert p.stdout.startswith("404 Not Found\n")
    p = serctl(ser.fifo, "im", "not-a-uri", "hi")
    assert p.returncode == 1 and "is not a SIP URI" in p.stderr


def test_serctl_ctd(ser, phones, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    caller = Phone("uas_ctd_caller.xml", tmp_path / "hank")
    phones.append(caller)
    register(ser.port, "hank", caller.port)
    p = serctl(ser.fifo, "ctd", f"sip:hank@127.0.0.1:{ser.port}", "sip:bob@example.com")
    assert p.returncode == 0, (p.stdout, p.stderr)
    assert p.stdout == "invitation succeeded\nrefer succeeded\nbye succeeded\n"
    busy = Phone("uas_busy.xml", tmp_path / "ivan")
    phones.append(busy)
    register(ser.port, "ivan", busy.port)
    p = serctl(ser.fifo, "ctd", f"sip:ivan@127.0.0.1:{ser.port}", "sip:bob@example.com")
    assert p.returncode == 1
    assert p.stdout == "invitation failed (486 Busy Here)\n"


def test_t_uac_dlg_over_json_rpc(ser_factory, phones, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from sipexpress.mgmt.client import RpcError, rpc_call

    rpc_port = free_port()
    srv = ser_factory(
        CFG.replace(
            'fifo="{fifo}"', 'fifo="{fifo}"\njsonrpc_http="127.0.0.1:{rpc_port}"\njsonrpc_secret="t0ken"'
        ),
        rpc_port=rpc_port,
    )
    phone = Phone("uas_message.xml", tmp_path / "json")
    phones.append(phone)
    register(srv.port, "judy", phone.port)
    url = f"http://127.0.0.1:{rpc_port}/"
    lines = [
        "MESSAGE",
        f"sip:judy@127.0.0.1:{srv.port}",
        ".",
        "From: <sip:alice@example.com>",
        f"To: <sip:judy@127.0.0.1:{srv.port}>",
        "Content-Type: text/plain",
        ".",
        "over json",
        ".",
    ]
    result = rpc_call("t_uac_dlg", lines, url=url, timeout=20, secret="t0ken")
    assert result["code"] == 200 and result["reason"] == "OK"
    assert ["CSeq", "10 MESSAGE"] in result["headers"]
    assert result["to_tag"]
    assert "over json" in phone.received()
    with pytest.raises(RpcError) as e:
        rpc_call("t_uac_dlg", ["MESSAGE", "garbage", ".", ".", "."], url=url, secret="t0ken")
    assert e.value.code == 400


PROXY_B = """
listen=udp:127.0.0.1:{port}
loadmodule "sl"
loadmodule "tm"
loadmodule "rr"
route {{
    if (method == "OPTIONS" && uri == myself) {{ sl_send_reply("200", "ok"); break; }};
    if (loose_route()) {{ t_relay(); break; }};
    record_route();
    t_relay_to_udp("127.0.0.1", "{phone_port}");
}}
"""


def test_click_to_dial_through_two_record_routing_proxies(ser, ser_factory, phones, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The caller's phone sits behind a second ser that record-routes too:
    the route set has two entries and REFER/BYE follow both (RFC 3261
    §12.2.1.1: the route set is the Record-Route list reversed)."""
    caller = Phone("uas_ctd_caller.xml", tmp_path / "kate")
    phones.append(caller)
    b = ser_factory(PROXY_B, phone_port=caller.port)
    register(ser.port, "kate", b.port)  # kate's contact is proxy B
    result = click_to_dial(send_via(ser.fifo), f"sip:kate@127.0.0.1:{ser.port}", "sip:bob@example.com")
    assert result.ok, result.steps
    assert caller.wait() == 0
    got = caller.received()
    invite = got.split("\nINVITE sip:", 1)[1].split("-----", 1)[0]
    assert invite.count("Record-Route:") == 2
    for method in ("REFER", "BYE"):
        block = got.split(f"\n{method} sip:", 1)[1].split("-----", 1)[0]
        vias = [ln for ln in block.splitlines() if ln.startswith("Via:")]
        # REFER/BYE passed B, then A (their Vias top-down), then left A's UAC
        assert f"127.0.0.1:{b.port};" in vias[0] and f"127.0.0.1:{ser.port};" in vias[1], vias
