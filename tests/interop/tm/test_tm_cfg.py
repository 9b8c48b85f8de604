"""tm driven by a ser.cfg script: t_relay, failure_route with
t_check_status and serial forking, t_newtran/t_reply, t_stats over FIFO."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sipexpress.mgmt.client import fifo_request
from tests.interop.tm.phone import Phone, reply_addr, reply_to
from tests.support import free_port

pytestmark = pytest.mark.interop

CFG = """
debug=3
listen=udp:127.0.0.1:{port}
fifo="{fifo}"
loadmodule "/usr/local/lib/ser/modules/sl.so"
loadmodule "/usr/local/lib/ser/modules/tm.so"
modparam("tm", "fr_inv_timer", 10)

route {
    if (method=="OPTIONS" && uri=~"^sip:127\\.0\\.0\\.1") {
        if (!t_newtran()) { sl_reply_error(); break; };
        t_reply("200", "Alive");
        break;
    };
    rewritehostport("127.0.0.1:UAS1");
    t_on_failure("1");
    t_on_reply("1");
    if (!t_relay()) {
        sl_reply_error();
    };
}

onreply_route[1] {
    if (status=~"18[0-9]") {
        log(1, "tm-test: ringing\\n");
    };
}

failure_route[1] {
    if (t_check_status("486")) {
        rewritehostport("127.0.0.1:UAS2");
        append_branch();
        t_relay();
        break;
    };
    t_reply("480", "Nobody Home");
}
"""


@pytest.fixture
def phones() -> Any:
    ps = [Phone(), Phone(), Phone()]
    yield ps
    for p in ps:
        p.close()


def start(ser_factory: Callable[..., Any], tmp_path: Path, uas1: int, uas2: int) -> tuple[Any, str]:
    fifo = str(tmp_path / "fifo")
    port = free_port()
    text = CFG.replace("UAS1", str(uas1)).replace("UAS2", str(uas2)).replace("{port}", str(port))
    text = text.replace("{fifo}", fifo)
    ser = ser_factory(text.replace("{", "{{").replace("}", "}}"), port=port)
    return ser, fifo


def completions(text: str) -> list[int]:
    m = re.search(r"Completion status 6xx: (\d+), 5xx: (\d+), 4xx: (\d+), 3xx: (\d+),2xx: (\d+) {6}\n", text)
    assert m is not None, text
    return [int(x) for x in m.groups()]


def test_cfg_failure_route_serial_fork(ser_factory: Callable[..., Any], tmp_path: Path, phones: Any) -> None:
    uac, uas1, uas2 = phones
    ser, fifo = start(ser_factory, tmp_path, uas1.port, uas2.port)
    proxy = (ser.host, ser.port)
    before = completions(fifo_request(fifo, "t_stats"))
    uac.send(uac.invite(f"sip:callee@127.0.0.1:{ser.port}"), proxy)
    assert uac.expect(100).reason == "trying -- your call is important to us"
    r1 = uas1.expect("INVITE")
    uas1.send(reply_to(r1, 180, "Ringing"), reply_addr(r1))
    uac.expect(180)
    uas1.send(reply_to(r1, 486, "Busy Here"), reply_addr(r1))
    uas1.expect("ACK")
    r2 = uas2.expect("INVITE")
    assert r2.ruri == f"sip:callee@127.0.0.1:{uas2.port}"
    uas2.send(reply_to(r2, 200, "OK", to_tag="second"), reply_addr(r2))
    assert uac.expect(200).to.params["tag"] == "second"
    assert "tm-test: ringing" in ser.log()
    after = completions(fifo_request(fifo, "t_stats"))
    # one more 2xx (the INVITE), no negative completion: the 486 stayed inside
    assert [a - b for a, b in zip(after, before, strict=True)] == [0, 0, 0, 0, 1]


def test_cfg_failure_route_t_reply(ser_factory: Callable[..., Any], tmp_path: Path, phones: Any) -> None:
    uac, uas1, uas2 = phones
    ser, fifo = start(ser_factory, tmp_path, uas1.port, uas2.port)
    uac.send(uac.invite(f"sip:callee@127.0.0.1:{ser.port}"), (ser.host, ser.port))
    r1 = uas1.expect("INVITE")
    uas1.send(reply_to(r1, 404, "Not Found"), reply_addr(r1))
    r = uac.expect(480)
    assert r.reason == "Nobody Home"
    text = fifo_request(fifo, "t_stats")
    assert "Replied localy: " in text
    n = int(re.search(r"Replied localy: (\d+)", text).group(1))  # type: ignore[union-attr]
    assert n >= 1
    hash_text = fifo_request(fifo, "t_hash")
    assert hash_text.startswith("200 ok\n\tcurrent\ttotal\n0.\t")
    assert len(hash_text.splitlines()) == 65538


CFG_LOOKUP = """
listen=udp:127.0.0.1:{port}
loadmodule "sl"
loadmodule "tm"
loadmodule "usrloc"
loadmodule "registrar"
modparam("usrloc", "db_mode", 0)

route {
    if (method=="OPTIONS" && uri=~"^sip:127\\.0\\.0\\.1") {
        sl_send_reply("200", "Alive");
        break;
    };
    if (method=="REGISTER") {
        save("location");
        break;
    };
    if (!lookup("location")) {
        sl_send_reply("404", "Not Found");
        break;
    };
    t_relay();
}
"""


def test_cfg_lookup_then_t_relay_parallel_fork(ser_factory: Callable[..., Any], phones: Any) -> None:
    """Two registered contacts of one user: lookup() fills the destination
    set, t_relay() forks to both, the first 200 wins, the other is CANCELled."""
    uac, ua1, ua2 = phones
    port = free_port()
    ser = ser_factory(
        CFG_LOOKUP.replace("{port}", str(port)).replace("{", "{{").replace("}", "}}"), port=port
    )
    proxy = (ser.host, ser.port)
    for i, ua in enumerate((ua1, ua2)):
        reg = (
            f"REGISTER sip:127.0.0.1:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{ua.port};branch=z9hG4bKreg{i}\r\n"
            f"From: <sip:bob@127.0.0.1>;tag=r{i}\r\nTo: <sip:bob@127.0.0.1>\r\n"
            f"Call-ID: reg{i}-{port}\r\nCSeq: 1 REGISTER\r\n"
            f"Contact: <sip:bob@127.0.0.1:{ua.port}>\r\nExpires: 60\r\nContent-Length: 0\r\n\r\n"
        )
        ua.send(reg, proxy)
        assert ua.expect(200).cseq.method == "REGISTER"
    uac.send(uac.invite("sip:bob@127.0.0.1"), proxy)
    r1 = ua1.expect("INVITE")
    r2 = ua2.expect("INVITE")
    assert {r1.ruri, r2.ruri} == {f"sip:bob@127.0.0.1:{ua1.port}", f"sip:bob@127.0.0.1:{ua2.port}"}
    ua2.send(reply_to(r2, 180, "Ringing", to_tag="two"), reply_addr(r2))
    uac.expect(180)
    ua1.send(reply_to(r1, 200, "OK", to_tag="one"), reply_addr(r1))
    assert uac.expect(200).to.params["tag"] == "one"
    cancel = ua2.expect("CANCEL")
    assert cancel.via1.branch == r2.via1.branch
