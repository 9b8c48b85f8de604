"""SER 0.9's examples/msilo.cfg, unchanged but for its listen address, FIFO
and database, with SIPp phones: a MESSAGE to an offline user is stored
(202), delivered through tm when the user's phone registers, and deleted
once delivered; expired messages are dropped; ``serctl im`` to an offline
user goes the same way.  On SQLite, MariaDB and PostgreSQL.  The seed's
shell IM script sends a NOTIFY, which msilo.cfg answers 404 as SER did
(it stores MESSAGEs only)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from sipexpress.db import create_all, dispose_engines
from sipexpress.db.engine import run
from sipexpress.sip.message import SipMessage
from tests.interop.tm.phone import reply_addr, reply_to
from tests.support import ROOT, SerProcess, SippPhone, free_port, run_sipp, wait_for
from tests.unit.db.dbfixtures import BACKENDS, cleanup, new_db_url

pytestmark = pytest.mark.interop

MSILO_CFG = ROOT / "examples" / "cfg" / "msilo.cfg"


def msilo_cfg(db_url: str, extra: str = "") -> str:
    """msilo.cfg on a free port with a private FIFO (and reply FIFOs in the
    test's directory) and the test's database."""
    cfg = MSILO_CFG.read_text()
    cfg, n = re.subn(r'(?m)^modparam\("msilo","db_url",.*$', f'modparam("msilo","db_url","{db_url}")', cfg)
    assert n == 1, "msilo.cfg changed"
    head = 'listen=udp:{host}:{port}\nfifo="{fifo}"\nfifo_dir="{workdir}/"\n'
    return head + cfg.replace("{", "{{").replace("}", "}}") + extra


@pytest.fixture(params=BACKENDS)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    u = new_db_url(request.param, tmp_path)
    asyncio.run(create_all(u))
    asyncio.run(dispose_engines())
    yield u
    asyncio.run(cleanup(u))


def silo_rows(url: str) -> list[tuple[Any, ...]]:
    async def query() -> list[tuple[Any, ...]]:
        async def op(conn: AsyncConnection) -> list[tuple[Any, ...]]:
            res = await conn.execute(
                text(
                    "SELECT username, domain, src_addr, dst_addr, ctype, body, exp_time - inc_time FROM silo"
                )
            )
            return [tuple(r) for r in res.fetchall()]

        try:
            return await run(url, op, write=False)
        finally:
            await dispose_engines()

    return asyncio.run(query())


def wait_rows(url: str, cond: Callable[[list[tuple[Any, ...]]], bool], timeout: float = 10.0) -> list[Any]:
    """The silo's rows once ``cond`` holds for them (or after ``timeout``)."""
    wait_for(lambda: cond(silo_rows(url)), timeout, interval=0.1)
    return silo_rows(url)


class NoticeSocket:
    """Alice's Contact: reads msilo's "user is offline" MESSAGE and answers 200."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", free_port()))
        self.sock.settimeout(5)
        self.port = self.sock.getsockname()[1]

    def answer(self) -> SipMessage:
        data, _ = self.sock.recvfrom(65535)
        msg = SipMessage.parse(data)
        self.sock.sendto(reply_to(msg, 200, "OK"), reply_addr(msg))
        return msg


def send_message(sp: SerProcess, to: str, body: str, contact_port: int, expires: int = 3600) -> None:
    """alice's SIPp phone sends ``to`` a MESSAGE and expects 202."""
    keys = ["-key", "text", body, "-key", "contact_port", str(contact_port)]
    keys += ["-key", "expires", str(expires)]
    scenario = str(ROOT / "tests/data/sipp/uac_message_202.xml")
    args = ["-sf", scenario, "-s", to, "-i", "127.0.0.1", "-p", str(free_port()), "-m", "1", "-timeout", "15"]
    res = run_sipp(
        [*args, "-timeout_error", *keys, f"{sp.host}:{sp.port}"],
        timeout=30,
    )
    assert res.ok, res.stdout + res.stderr + sp.log()


def register_and_receive(sp: SerProcess, user: str, workdir: Path, url: str, pending: int) -> str:
    """``user``'s SIPp phone registers and answers what comes; returns its
    trace once the silo has no message for it left (or after 10 s)."""
    phone = SippPhone(
        "register_and_wait.xml",
        workdir,
        extra=["-s", user, "-oocsf", str(ROOT / "tests/data/sipp/uas_message.xml")],
        remote=f"{sp.host}:{sp.port}",
    )
    try:
        rows = wait_rows(url, lambda rows: sum(r[0] == user for r in rows) < pending)
        assert not [r for r in rows if r[0] == user], sp.log()
        wait_for(lambda: phone.received().count("MESSAGE sip:") >= pending)
        return phone.received()
    finally:
        phone.stop()


def test_msilo_store_deliver_delete(ser_factory: Callable[..., SerProcess], url: str, tmp_path: Path) -> None:
    sp = ser_factory(msilo_cfg(url))
    notice = NoticeSocket()
    send_message(sp, "bob", "hello bob, from SIPp", notice.port)
    # msilo.cfg sets "registrar": alice learns that bob is offline
    info = notice.answer()
    assert info.method == "MESSAGE" and info.from_.uri == "sip:registrar@mydomain.com"
    assert (
        info.body
        == f"User [sip:bob@127.0.0.1:{sp.port}] is offline. The message will be delivered when user goes online.".encode()
    )
    rows = silo_rows(url)
    assert len(rows) == 1
    user, domain, src, dst, ctype, body, lifetime = rows[0]
    assert (user, domain, src, dst, ctype) == (
        "bob",
        "127.0.0.1",
        "sip:alice@127.0.0.1",
        f"sip:bob@127.0.0.1:{sp.port}",
        "text/plain",
    )
    assert (
        bytes(body) == b"hello bob, from SIPp\r\n" and lifetime == 3600
    )  # the MESSAGE's Expires, below expire_time

    trace = register_and_receive(sp, "bob", tmp_path / "bob", url, 1)
    delivered = trace[trace.index("MESSAGE sip:bob@") :]
    assert "From: <sip:alice@127.0.0.1>" in delivered
    assert re.search(
        r"\[Offline message - \w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4}\] hello bob, from SIPp", delivered
    )
    assert "Contact: <sip:alice@127.0.0.1>;msilo=yes" in delivered
    assert silo_rows(url) == []
    notice.sock.close()


def test_msilo_expired_message_dropped(ser_factory: Callable[..., SerProcess], url: str) -> None:
    sp = ser_factory(
        msilo_cfg(url, 'modparam("msilo", "check_time", 1)\nmodparam("msilo", "clean_period", 1)\n')
    )
    notice = NoticeSocket()
    send_message(sp, "carol", "soon gone", notice.port, expires=1)
    notice.answer()
    assert [r[6] for r in silo_rows(url)] == [1]
    assert wait_rows(url, lambda rows: not rows, timeout=5) == []
    notice.sock.close()


def test_serctl_im_to_offline_user(ser_factory: Callable[..., SerProcess], tmp_path: Path) -> None:
    url = new_db_url("sqlite", tmp_path)
    asyncio.run(create_all(url))
    sp = ser_factory(msilo_cfg(url))
    env = {**os.environ, "SER_FIFO": sp.fifo, "SER_FIFO_DIR": f"{sp.workdir}/", "SIP_DOMAIN": "127.0.0.1"}
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "sipexpress.cli.serctl",
            "im",
            f"sip:dave@127.0.0.1:{sp.port}",
            "are",
            "you",
            "there?",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert r.returncode == 0 and r.stdout.startswith("202 Accepted"), r.stdout + r.stderr + sp.log()
    assert [(row[0], bytes(row[5])) for row in silo_rows(url)] == [("dave", b"are you there?\r\n")]
    trace = register_and_receive(sp, "dave", tmp_path / "dave", url, 1)
    assert "] are you there?" in trace


def test_seed_shell_im_script_to_offline_user(ser_factory: Callable[..., SerProcess], tmp_path: Path) -> None:
    url = new_db_url("sqlite", tmp_path)
    asyncio.run(create_all(url))
    sp = ser_factory(msilo_cfg(url))
    reply_fifo = sp.workdir / "hh"  # the script's reply FIFO name
    os.mkfifo(reply_fifo)
    env = {**os.environ, "SER_FIFO": sp.fifo, "RECEIVER": f"sip:erin@127.0.0.1:{sp.port}"}
    script = ROOT / "examples" / "uac" / "send_im.sh"
    subprocess.run(["/bin/sh", str(script), "are", "you", "there?"], env=env, check=True, timeout=10)
    fd = os.open(reply_fifo, os.O_RDONLY | os.O_NONBLOCK)
    got = bytearray()

    def reply_line() -> bool:
        # no writer yet reads as EOF, so select() cannot wait for it
        with contextlib.suppress(BlockingIOError):
            got.extend(os.read(fd, 4096))
        return b"\n" in got

    try:
        wait_for(reply_line, 10.0)
    finally:
        os.close(fd)
    assert got.startswith(b"404 Not found\n"), got + sp.log().encode()
    assert silo_rows(url) == []
