"""Several ``ser`` nodes sharing one location (usrloc ``db_mode`` 3) in
Redis, MariaDB or PostgreSQL: a phone (SIPp) registers through node A, a
call through node B reaches it, also after A is killed with -9; ``ul_rm``
on one node is seen by the other; ``ul_show_contact``/``ul_dump`` on
either show the same bindings.  And Redis that is down at start, or goes
away while ser runs: REGISTER is a 500 with a clear log line, a look-up
fails at once, and both work again when Redis is back."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sipexpress.mgmt.client import fifo_request
from sipexpress.sip.message import SipMessage
from tests.support import (
    SIPP_SCENARIOS,
    SerProcess,
    SippPhone,
    free_port,
    need_tool,
    run_sipp,
    tcp_listening,
    udp_register,
    udp_request,
    wait_for,
)
from tests.unit.db.dbfixtures import prepared_url

pytestmark = pytest.mark.interop

StartSer = Callable[..., SerProcess]

CFG = """\
debug=3
fork=no
listen=udp:{host}:{port}
fifo="{fifo}"
fifo_dir="{workdir}/"
loadmodule "sl"
loadmodule "tm"
loadmodule "usrloc"
loadmodule "registrar"
modparam("usrloc", "db_url", "{db_url}")
modparam("usrloc", "db_mode", 3)
modparam("usrloc", "db_timeout", 1)
route {{
    if (method=="REGISTER") {{ save("location"); break; }};
    if (!lookup("location")) {{ sl_send_reply("404", "Not Found"); break; }};
    t_relay();
}}
"""


@pytest.fixture(params=["redis", "mysql", "postgres"])
def shared_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """One location for every node of a test, on each backend."""
    yield from prepared_url(request.param, tmp_path)


def fifo(sp: SerProcess, command: str, *params: str) -> str:
    return fifo_request(sp.fifo, command, list(params), reply_dir=f"{sp.workdir}/", timeout=30)


def call(sp: SerProcess, workdir: Path, user: str) -> int:
    """A SIPp caller's INVITE .. BYE to ``user`` through ``sp``: its exit code."""
    caller = SippPhone("uac", workdir, extra=["-s", user], remote=f"{sp.host}:{sp.port}")
    return caller.wait(30)


def test_two_nodes_share_the_location(ser_factory: StartSer, shared_url: str, tmp_path: Path) -> None:
    node_a = ser_factory(CFG, db_url=shared_url)
    node_b = ser_factory(CFG, db_url=shared_url)
    phone_port = free_port()
    # the phone registers through A (SIPp), then answers calls on the same port
    args = ["-sf", str(SIPP_SCENARIOS / "register.xml"), "-s", "bob", "-i", "127.0.0.1"]
    args += ["-p", str(phone_port), "-m", "1", "-timeout", "10", "-timeout_error"]
    reg = run_sipp([*args, f"{node_a.host}:{node_a.port}"], timeout=30)
    assert reg.ok, reg.stdout + node_a.log()
    phone = SippPhone("uas", tmp_path / "phone", port=phone_port, calls=2)
    try:
        # both nodes show the binding made through A
        contact = f"sip:bob@127.0.0.1:{phone_port};transport=UDP"
        for node in (node_a, node_b):
            assert re.search(
                rf"<{re.escape(contact)}>;q=;expires=(5\d\d|600)",
                fifo(node, "ul_show_contact", "location", "bob"),
            )
            assert f"Contact   : '{contact}'" in fifo(node, "ul_dump")
        # a binding added on B, removed on A: B no longer finds it
        fifo(node_b, "ul_add", "location", "carol", "sip:carol@127.0.0.1:9", "600", "1.00")
        assert "aor   : 'carol'" in fifo(node_a, "ul_dump")
        assert fifo(node_a, "ul_rm", "location", "carol").startswith("200 ")
        assert fifo(node_b, "ul_show_contact", "location", "carol").startswith("404 ")
        assert "carol" not in fifo(node_b, "ul_dump")

        assert call(node_b, tmp_path / "call1", "bob") == 0, node_b.log()
        assert node_a.proc is not None
        os.kill(node_a.proc.pid, signal.SIGKILL)
        node_a.proc.wait(5)
        assert call(node_b, tmp_path / "call2", "bob") == 0, node_b.log()
        # (not phone.wait(): SIPp's uas lingers 4 s after the last BYE)
        assert wait_for(lambda: phone.received().count("INVITE sip:bob@127.0.0.1") == 2, 10.0)
    finally:
        phone.stop()
    assert fifo(node_b, "ul_rm", "location", "bob").startswith("200 ")
    r = invite_bob(node_b)
    assert r is not None and r.status == 404


def invite_bob(sp: SerProcess) -> SipMessage | None:
    """An INVITE to bob through ``sp``: its final reply (404 when bob is
    unknown or the look-up failed) within 5 s, or None."""
    return udp_request(sp, "INVITE", "bob", "Contact: <sip:alice@127.0.0.1:9>\r\n")


class RedisServer:
    """A private redis-server on a port of its own (stopped and started
    again by the test: the machine's Redis stays untouched)."""

    def __init__(self, port: int, workdir: Path) -> None:
        self.port = port
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        exe = need_tool("redis-server")
        args = [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.proc = subprocess.Popen(
            [*args, "--dir", str(self.workdir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        assert wait_for(lambda: tcp_listening(self.port), 10.0)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


def lookup_errors_after_invite(sp: SerProcess) -> int:
    """INVITE bob (404 whether unknown or the look-up failed, at once);
    how many failed look-ups the log has then."""
    r = invite_bob(sp)
    assert r is not None and r.status == 404
    return sp.log().count("ERROR: sipexpress.registrar: lookup: redis 127.0.0.1:")


def test_redis_down_at_start_and_while_running(ser_factory: StartSer, tmp_path: Path) -> None:
    redis_port = free_port(socket.SOCK_STREAM)
    server = RedisServer(redis_port, tmp_path)
    sp = ser_factory(CFG, db_url=f"redis://127.0.0.1:{redis_port}/0")
    try:
        assert re.search(r"usrloc: database not available at start \(redis 127\.0\.0\.1:\d+/0: ", sp.log())
        r = udp_register(sp, "dave", "sip:dave@127.0.0.1:9")
        assert r is not None and r.status == 500
        assert "registrar: redis 127.0.0.1:" in sp.log()  # the look-up before the write failed
        assert lookup_errors_after_invite(sp) == 1

        server.start()  # Redis comes: no restart of ser needed
        r = udp_register(sp, "dave", "sip:dave@127.0.0.1:9")
        assert r is not None and r.status == 200, sp.log()
        assert "sip:dave@127.0.0.1:9" in fifo(sp, "ul_show_contact", "location", "dave")
        assert lookup_errors_after_invite(sp) == 1  # bob is not there: no error

        server.stop()  # Redis goes away while ser runs
        r = udp_register(sp, "erin", "sip:erin@127.0.0.1:9")
        assert r is not None and r.status == 500
        assert fifo(sp, "ul_show_contact", "location", "dave").startswith("500 ")
        assert lookup_errors_after_invite(sp) == 2

        server.start()  # back, empty (it keeps nothing on disk)
        r = udp_register(sp, "erin", "sip:erin@127.0.0.1:9")
        assert r is not None and r.status == 200, sp.log()
        assert "sip:erin@127.0.0.1:9" in fifo(sp, "ul_show_contact", "location", "erin")
    finally:
        server.stop()
