"""acc: missed calls and answered calls through a running ser with tm,
SIPp phones as the callees, records in SQLite and MariaDB and in the log."""

from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from sipexpress.db import schema
from sipexpress.db.engine import dispose_engines, run
from sipexpress.db.manage import create_all, drop_database
from sipexpress.sip.message import SipMessage
from tests.support import IN_CI, SippPhone, free_port

CFG = """
listen=udp:127.0.0.1:{port}
loadmodule "sl"
loadmodule "tm"
loadmodule "acc"
modparam("acc", "log_flag", 1)
modparam("acc", "log_missed_flag", 2)
modparam("acc", "db_missed_flag", 3)
modparam("acc", "db_flag", 4)
modparam("acc", "db_url", "{db_url}")
modparam("tm", "fr_inv_timer", 2)
modparam("tm", "fr_timer", 2)
route {{
    if (method == "OPTIONS") {{ sl_send_reply("200", "ok"); break; }};
    if (method == "INVITE") {{ setflag(1); setflag(2); setflag(3); setflag(4); }};
    if (uri =~ "^sip:offline@") {{
        acc_db_request("404 Not Found", "missed_calls");
        acc_log_request("404 Not Found");
        sl_send_reply("404", "Not Found");
        break;
    }};
    if (uri =~ "^sip:busy@") {{ t_relay_to_udp("127.0.0.1", "{busy_port}"); break; }};
    if (uri =~ "^sip:ring@") {{ t_relay_to_udp("127.0.0.1", "{ring_port}"); break; }};
    t_relay_to_udp("127.0.0.1", "{answer_port}");
}}
"""


class Phone:
    """The caller: a UDP socket speaking just enough SIP for the test."""

    def __init__(self, proxy_port: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(8)
        self.port = self.sock.getsockname()[1]
        self.proxy = ("127.0.0.1", proxy_port)
        self.call_id = uuid.uuid4().hex
        self.branch = "z9hG4bK" + uuid.uuid4().hex[:12]

    def _headers(self, method: str, ruri: str, cseq_method: str, to_tag: str = "") -> str:
        return (
            f"{method} {ruri} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch={self.branch}\r\n"
            "Max-Forwards: 70\r\n"
            'From: "Alice" <sip:alice@example.com>;tag=caller1\r\n'
            f"To: <{ruri}>{to_tag}\r\n"
            f"Call-ID: {self.call_id}\r\n"
            f"CSeq: 1 {cseq_method}\r\n"
            f"Contact: <sip:alice@127.0.0.1:{self.port}>\r\n"
            "Content-Length: 0\r\n\r\n"
        )

    def send(self, text_: str) -> None:
        self.sock.sendto(text_.encode(), self.proxy)

    def recv(self) -> SipMessage:
        return SipMessage.parse(self.sock.recvfrom(65535)[0])

    def invite(self, ruri: str) -> None:
        self.ruri = ruri
        self.send(self._headers("INVITE", ruri, "INVITE"))

    def final(self, cancel_on_ringing: bool = False) -> SipMessage:
        while True:
            m = self.recv()
            if m.is_request:
                continue
            if m.status == 180 and cancel_on_ringing:
                self.send(self._headers("CANCEL", self.ruri, "CANCEL"))
                cancel_on_ringing = False
                continue
            if m.status >= 200 and m.cseq.method == "INVITE":
                to_tag = f";tag={m.to.tag}" if m.to.tag else ""
                if m.status >= 300:  # hop-by-hop ACK, same branch
                    self.send(self._headers("ACK", self.ruri, "ACK", to_tag))
                return m

    def close(self) -> None:
        self.sock.close()


def sipp_uas(port: int, scenario: str | None, workdir: Path) -> SippPhone:
    return SippPhone(scenario or "uas", workdir / f"{port}", port=port)


def mariadb_url() -> str | None:
    try:
        with socket.create_connection(("127.0.0.1", 3306), timeout=1):
            pass
    except OSError:
        return None
    return f"mysql://root@127.0.0.1/ser_acc_{os.getpid()}_{uuid.uuid4().hex[:6]}"


@pytest.fixture(params=["sqlite", "mariadb"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/acc.sqlite"
    else:
        maybe = mariadb_url()
        if maybe is None:
            if IN_CI:
                pytest.fail("MariaDB is required in CI")
            pytest.skip("MariaDB not running")
        url = maybe
    asyncio.run(_create(url))
    yield url
    if request.param != "sqlite":
        asyncio.run(_drop(url))


async def _create(url: str) -> None:
    await create_all(url)
    await dispose_engines()


async def _drop(url: str) -> None:
    await drop_database(url)
    await dispose_engines()


def rows(url: str, table: str) -> list[dict[str, Any]]:
    async def q() -> list[dict[str, Any]]:
        tbl = schema.metadata.tables[table]
        res = await run(url, lambda c: c.execute(select(tbl)), write=False)
        out = [dict(r._mapping) for r in res]
        await dispose_engines()
        return out

    return asyncio.run(q())


def wait_rows(url: str, table: str, n: int, timeout: float = 5.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        got = rows(url, table)
        if len(got) >= n or time.monotonic() > deadline:
            return got
        time.sleep(0.2)


def test_missed_calls_recorded_once_each(ser_factory, db_url: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    busy_port, ring_port, answer_port = free_port(), free_port(), free_port()
    proxy = ser_factory(CFG, db_url=db_url, busy_port=busy_port, ring_port=ring_port, answer_port=answer_port)
    uas = [sipp_uas(busy_port, "uas_busy.xml", tmp_path), sipp_uas(answer_port, None, tmp_path)]
    try:
        results = {}
        # offline: the script accounts it itself
        p = Phone(proxy.port)
        p.invite("sip:offline@example.com")
        results["offline"] = p.final().status
        p.close()
        # busy
        p = Phone(proxy.port)
        p.invite("sip:busy@example.com")
        results["busy"] = p.final().status
        p.close()
        # no answer: fr_inv_timer (2 s) ends it with 408
        ring = sipp_uas(ring_port, "uas_ring_forever.xml", tmp_path / "1")
        uas.append(ring)
        p = Phone(proxy.port)
        p.invite("sip:ring@example.com")
        results["noanswer"] = p.final().status
        p.close()
        # cancelled while ringing: a second phone on the ring port, once the
        # first has taken our CANCEL and left (it holds the port until then)
        ring.wait(15)
        ring2 = sipp_uas(ring_port, "uas_ring_forever.xml", tmp_path / "2")
        uas.append(ring2)
        p = Phone(proxy.port)
        p.invite("sip:ring@example.com")
        results["cancelled"] = p.final(cancel_on_ringing=True).status
        p.close()
        # answered
        p = Phone(proxy.port)
        p.invite("sip:bob@example.com")
        results["answered"] = p.final().status
        p.close()

        assert results == {"offline": 404, "busy": 486, "noanswer": 408, "cancelled": 487, "answered": 200}

        missed = wait_rows(db_url, "missed_calls", 4)
        statuses = sorted(r["sip_status"][:3] for r in missed)
        assert statuses == ["404", "408", "486", "487"], missed
        for r in missed:
            assert r["sip_method"] == "INVITE"
            assert r["from_uri"] == "sip:alice@example.com"
            assert r["fromtag"] == "caller1"
            assert r["username"] in ("offline", "busy", "ring")  # the callee
            assert r["domain"] == "example.com"
            assert r["time"] is not None
        answered = wait_rows(db_url, "acc", 1)
        assert [r["sip_status"][:3] for r in answered] == ["200"]
        assert answered[0]["username"] == "alice"  # acc rows carry the caller
        time.sleep(0.5)  # no late or doubled row may come: a window, not a wait
        assert len(rows(db_url, "missed_calls")) == 4

        log = proxy.log()
        assert log.count("ACC: call missed:") == 3  # busy, no answer, cancelled
        assert log.count("ACC: request accounted:") == 1  # offline
        assert log.count("ACC: transaction answered:") == 1
    finally:
        for u in uas:
            u.stop()
