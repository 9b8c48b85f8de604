"""SER 0.9's default script (etc/ser.cfg) with SIPp phones: calls between
two registered phones whose ACK and BYE come back through the proxy along
the record-routed path, a strict-routing caller, Max-Forwards 0."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest

from sipexpress.sip.message import SipMessage
from tests.support import SippPhone, free_port, shipped_config, udp_exchange

ROOT = Path(__file__).resolve().parents[3]


def default_cfg() -> str:
    """etc/ser.cfg as shipped, as ser_factory text."""
    text = shipped_config("@PORT@", "@FIFO@")
    return text.replace("{", "{{").replace("}", "}}").replace("@PORT@", "{port}").replace("@FIFO@", "{fifo}")


def run_phone(scenario: str, cwd: Path, port: int, *extra: str, proxy_port: int) -> None:
    """Run a SIPp phone that calls out (registers, places a call) to completion."""
    phone = SippPhone(scenario, cwd, port=port, extra=list(extra), remote=f"127.0.0.1:{proxy_port}")
    try:
        assert phone.wait(30) == 0, f"{scenario} failed"
    finally:
        phone.stop()


def register(proxy_port: int, user: str, phone_port: int, cwd: Path) -> None:
    run_phone("register.xml", cwd, phone_port, "-s", user, proxy_port=proxy_port)


def messages(cwd: Path) -> str:
    return "".join(p.read_text(errors="replace") for p in sorted(cwd.glob("*_messages.log")))


def received(log: str, method: str) -> str:
    """The first request of that method a phone received."""
    for block in log.split("-----------------------------------------------"):
        if "message received" in block and f"\n{method} sip:" in block:
            return block
    raise AssertionError(f"{method} never received")


def python_default(port: int, fifo: str) -> str:
    """examples/python/default_routes.py, the same script in Python."""
    text = (ROOT / "examples" / "python" / "default_routes.py").read_text()
    new = f'OPTIONS = {{"listen": "udp:127.0.0.1:{port}", "fifo": "{fifo}"}}'
    return re.sub(r"(?m)^OPTIONS = .*$", lambda _m: new, text)


@pytest.fixture(params=["ser.cfg", "python"])
def default_proxy(request: pytest.FixtureRequest, ser_factory, tmp_path: Path):  # type: ignore[no-untyped-def]
    if request.param == "ser.cfg":
        return ser_factory(default_cfg())
    port = free_port()
    text = python_default(port, str(tmp_path / "py_fifo")).replace("{", "{{").replace("}", "}}")
    return ser_factory(text, port=port, suffix=".py")


@pytest.mark.parametrize("caller", ["uac_rr.xml", "uac_strict.xml"])
def test_call_between_registered_phones(default_proxy, tmp_path: Path, caller: str) -> None:  # type: ignore[no-untyped-def]
    proxy = default_proxy
    callee_port, caller_port = free_port(), free_port()
    register(proxy.port, "bob", callee_port, tmp_path / "reg-bob")
    register(proxy.port, "alice", caller_port, tmp_path / "reg-alice")
    callee = SippPhone("uas_rr.xml", tmp_path / "bob", port=callee_port)
    try:
        run_phone(caller, tmp_path / "alice", caller_port, "-s", "bob", proxy_port=proxy.port)
        assert callee.wait(15) == 0
    finally:
        callee.stop()
    log = messages(tmp_path / "bob")
    invite = received(log, "INVITE")
    assert "P-hint: usrloc applied" in invite
    assert f"Record-Route: <sip:127.0.0.1:{proxy.port};" in invite and "lr=on" in invite
    for method in ("ACK", "BYE"):
        req = received(log, method)
        # it came through the proxy, which loose-routed it ...
        assert f"Via: SIP/2.0/UDP 127.0.0.1:{proxy.port};branch=" in req, req
        assert "P-hint: rr-enforced" in req, req
        # ... to the callee's contact, with no Route of ours left
        assert f"{method} sip:callee@127.0.0.1:{callee_port}" in req, req
        assert not re.search(rf"(?m)^Route: <sip:127\.0\.0\.1:{proxy.port}", req), req


def test_max_forwards_zero_gets_483(default_proxy) -> None:  # type: ignore[no-untyped-def]
    proxy = default_proxy
    data = (
        f"OPTIONS sip:bob@127.0.0.1:{proxy.port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK{uuid.uuid4().hex[:10]}\r\n"
        "Max-Forwards: 0\r\nFrom: <sip:a@example.com>;tag=1\r\nTo: <sip:bob@127.0.0.1>\r\n"
        f"Call-ID: {uuid.uuid4().hex}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    rep = udp_exchange(data, proxy.host, proxy.port)
    assert rep is not None
    msg = SipMessage.parse(rep)
    assert (msg.status, msg.reason) == (483, "Too Many Hops")


def test_unknown_user_gets_404(default_proxy) -> None:  # type: ignore[no-untyped-def]
    proxy = default_proxy
    data = (
        f"INVITE sip:nobody@127.0.0.1:{proxy.port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK{uuid.uuid4().hex[:10]}\r\n"
        "Max-Forwards: 70\r\nFrom: <sip:a@example.com>;tag=1\r\nTo: <sip:nobody@127.0.0.1>\r\n"
        f"Call-ID: {uuid.uuid4().hex}\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    rep = udp_exchange(data, proxy.host, proxy.port)
    assert rep is not None
    msg = SipMessage.parse(rep)
    assert (msg.status, msg.reason) == (404, "Not Found")
    assert msg.to.tag
