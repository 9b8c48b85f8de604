"""Seed step 5: missed-call notification with the default script, and the
failure_route variant, with SIPp as the phones (tm + usrloc + registrar)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.interop.exec.conftest import StartSer
from tests.interop.exec.helpers import (
    SCENARIOS,
    SDP,
    ExecSer,
    Phone,
    ack_for,
    cancel_for,
    header,
    mails,
    need,
    sqlite_subscribers,
    status,
    wait_mails,
)
from tests.support import free_port, run_sipp, udp_bound, wait_for

pytestmark = pytest.mark.interop

FAILURE_CFG = "step5-missed-calls/ser-failure-route.cfg"
SHORT_FR = {r'modparam\("tm", "fr_inv_timer", 30\)': 'modparam("tm", "fr_inv_timer", 2)'}


@pytest.fixture
def subscribers(tmp_path: Path) -> Path:
    db = tmp_path / "ser.sqlite"
    sqlite_subscribers(db, {"jiri": "jiri@example.com", "noemail": ""})
    return db


class Callee:
    """A SIPp UAS playing a registered phone for one call."""

    def __init__(self, scenario: str, workdir: Path) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [
                need("sipp"),
                "-sf",
                str(SCENARIOS / scenario),
                "-i",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-m",
                "1",
                "-nostdin",
                "-timeout",
                "30s",
                "-trace_err",
                "-error_file",
                str(workdir / "callee.err"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=workdir,
        )
        assert wait_for(lambda: udp_bound(self.port), 5.0), "SIPp callee did not start"

    def wait(self, timeout: float = 15.0) -> int:
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


@pytest.fixture
def callees(tmp_path: Path) -> Iterator[list[Callee]]:
    made: list[Callee] = []
    yield made
    for c in made:
        c.stop()


def register(ser: ExecSer, user: str, contact_port: int) -> None:
    phone = Phone(ser.port, user)
    try:
        req = phone.request(
            "REGISTER",
            f"sip:127.0.0.1:{ser.port}",
            to=f"<sip:{user}@127.0.0.1:{ser.port}>",
            extra=["Expires: 600"],
        ).replace(
            f"Contact: <sip:{user}@127.0.0.1:{phone.port}>".encode(),
            f"Contact: <sip:{user}@127.0.0.1:{contact_port}>".encode(),
        )
        phone.send(req)
        r = phone.recv_final(3.0)
        assert r is not None and status(r) == 200, (r, ser.log())
    finally:
        phone.close()


def sipp_call(ser: ExecSer, user: str) -> str:
    """One call by a SIPp caller; returns the final status it ACKed."""
    res = run_sipp(
        [
            f"127.0.0.1:{ser.port}",
            "-sf",
            str(SCENARIOS / "caller.xml"),
            "-s",
            user,
            "-i",
            "127.0.0.1",
            "-p",
            str(free_port()),
            "-m",
            "1",
            "-timeout",
            "20s",
            "-timeout_error",
        ],
        timeout=40,
        cwd=ser.workdir,
    )
    assert res.ok, res.stdout[-3000:] + res.stderr + ser.log()
    return res.stdout


def assert_one_missed_call_mail(ser: ExecSer, caller: str = "sipp") -> None:
    got = wait_mails(ser.workdir, 1)
    time.sleep(0.5)  # a second one would come now: a window, not a wait
    got = mails(ser.workdir)
    assert len(got) == 1, (got, ser.log())
    assert got[0]["to"] == ["jiri@example.com"]
    assert f"<sip:{caller}@127.0.0.1" in str(got[0]["stdin"])
    assert str(got[0]["stdin"]).endswith(" for jiri\n")


# -- the off-line subscriber (both configs) --------------------------------------
@pytest.mark.parametrize("cfg", ["step5-missed-calls/ser.cfg", FAILURE_CFG])
def test_offline_subscriber_gets_one_mail(start_ser: StartSer, subscribers: Path, cfg: str) -> None:
    ser = start_ser(cfg, env={"SER_SQLITE_DB": str(subscribers)})
    phone = Phone(ser.port)
    try:
        inv = phone.request("INVITE", f"sip:jiri@127.0.0.1:{ser.port}", body=SDP)
        phone.send(inv)
        phone.send(inv)  # a retransmission while the program runs
        r = phone.recv_final(5.0)
        assert r is not None and r.split(b"\r\n", 1)[0] == b"SIP/2.0 600 No messages for this user", ser.log()
        phone.send(inv)  # and one after the reply: the same reply again
        r2 = phone.recv_final(3.0)
        assert r2 == r
        phone.send(ack_for(inv, r))
        got = wait_mails(ser.workdir, 1)
        time.sleep(0.5)  # no second mail may come: a window, not a wait
        assert len(mails(ser.workdir)) == 1
        assert got[0]["to"] == ["jiri@example.com"] and got[0]["subject"] == "request for you"
        # a subscriber without an e-mail address: 404, no mail
        inv = phone.request("INVITE", f"sip:noemail@127.0.0.1:{ser.port}", body=SDP)
        phone.send(inv)
        r = phone.recv_final(5.0)
        assert r is not None and r.split(b"\r\n", 1)[0] == b"SIP/2.0 404 User does not exist"
        phone.send(ack_for(inv, r))
        # not an INVITE: plain 404, no mail
        phone.send(phone.request("MESSAGE", f"sip:jiri@127.0.0.1:{ser.port}", body=b"hi"))
        r = phone.recv_final(3.0)
        assert r is not None and r.split(b"\r\n", 1)[0] == b"SIP/2.0 404 Not Found"
        time.sleep(0.3)  # the MESSAGE sends no mail: a window, not a wait
        assert len(mails(ser.workdir)) == 1
    finally:
        phone.close()


def test_offline_subscriber_with_sipp_caller(start_ser: StartSer, subscribers: Path) -> None:
    ser = start_ser(FAILURE_CFG, env={"SER_SQLITE_DB": str(subscribers)})
    out = sipp_call(ser, "jiri")
    assert "600" in out
    assert_one_missed_call_mail(ser)


# -- on-line subscriber, failure_route ---------------------------------------------
def test_busy_callee(start_ser: StartSer, subscribers: Path, callees: list[Callee]) -> None:
    ser = start_ser(FAILURE_CFG, env={"SER_SQLITE_DB": str(subscribers)})
    callee = Callee("callee-busy.xml", ser.workdir)
    callees.append(callee)
    register(ser, "jiri", callee.port)
    sipp_call(ser, "jiri")
    assert callee.wait() == 0
    assert_one_missed_call_mail(ser)
    assert mails(ser.workdir)[0]["subject"] == "missed call"


def test_unanswered_call_times_out(start_ser: StartSer, subscribers: Path, callees: list[Callee]) -> None:
    ser = start_ser(FAILURE_CFG, subst=SHORT_FR, env={"SER_SQLITE_DB": str(subscribers)})
    callee = Callee("callee-ring.xml", ser.workdir)
    callees.append(callee)
    register(ser, "jiri", callee.port)
    phone = Phone(ser.port)
    try:
        inv = phone.request("INVITE", f"sip:jiri@127.0.0.1:{ser.port}", body=SDP)
        t0 = time.monotonic()
        phone.send(inv)
        r = phone.recv_final(10.0)
        assert r is not None and status(r) == 408, (r, ser.log())
        assert time.monotonic() - t0 >= 1.5  # fr_inv_timer = 2
        phone.send(ack_for(inv, r))
    finally:
        phone.close()
    assert callee.wait() == 0  # the proxy CANCELled the ringing phone
    assert_one_missed_call_mail(ser, "alice")


def test_cancelled_call(start_ser: StartSer, subscribers: Path, callees: list[Callee]) -> None:
    ser = start_ser(FAILURE_CFG, env={"SER_SQLITE_DB": str(subscribers)})
    callee = Callee("callee-ring.xml", ser.workdir)
    callees.append(callee)
    register(ser, "jiri", callee.port)
    phone = Phone(ser.port)
    try:
        inv = phone.request("INVITE", f"sip:jiri@127.0.0.1:{ser.port}", body=SDP)
        phone.send(inv)
        ringing = None
        deadline = time.monotonic() + 5
        while ringing is None and time.monotonic() < deadline:
            m = phone.recv(1.0)
            if m is not None and status(m) == 180:
                ringing = m
        assert ringing is not None, ser.log()
        phone.send(cancel_for(inv))
        finals = {}
        deadline = time.monotonic() + 5
        while len(finals) < 2 and time.monotonic() < deadline:
            m = phone.recv(1.0)
            if m is not None and status(m) >= 200:
                finals[(header(m, "CSeq") or "").split()[-1]] = m
        assert status(finals["CANCEL"]) == 200
        assert status(finals["INVITE"]) == 487, ser.log()
        phone.send(ack_for(inv, finals["INVITE"]))
    finally:
        phone.close()
    assert callee.wait() == 0
    assert_one_missed_call_mail(ser, "alice")


def test_answered_call_sends_no_mail(start_ser: StartSer, subscribers: Path, callees: list[Callee]) -> None:
    ser = start_ser(FAILURE_CFG, env={"SER_SQLITE_DB": str(subscribers)})
    callee = Callee("callee-answer.xml", ser.workdir)
    callees.append(callee)
    register(ser, "jiri", callee.port)
    phone = Phone(ser.port)
    try:
        inv = phone.request("INVITE", f"sip:jiri@127.0.0.1:{ser.port}", body=SDP)
        phone.send(inv)
        ok = phone.recv_final(5.0)
        assert ok is not None and status(ok) == 200, ser.log()
        to = header(ok, "To")
        contact = (header(ok, "Contact") or "").strip("<>")
        rr = [v.strip() for v in (header(ok, "Record-Route") or "").split(",") if v.strip()]
        call_id = header(inv, "Call-ID")
        # ACK and BYE along the record-routed path (through the proxy)
        route = ["Route: " + ", ".join(rr)] if rr else []
        for method, cseq in (("ACK", 1), ("BYE", 2)):
            req = phone.request(method, contact, call_id=call_id, cseq=cseq, to=to, extra=route)
            if not rr:
                phone.sock.sendto(req, ("127.0.0.1", callee.port))
            else:
                phone.send(req)
        bye_ok = phone.recv_final(5.0)
        assert bye_ok is not None and status(bye_ok) == 200
    finally:
        phone.close()
    assert callee.wait() == 0
    time.sleep(0.5)  # an answered call sends no mail: a window, not a wait
    assert mails(ser.workdir) == []
