"""Seed step 4: t_newtran() + exec_msg() + t_reply() -- the program runs
once per transaction and the reply is retransmitted statefully."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.interop.exec.conftest import StartSer
from tests.interop.exec.helpers import (
    SDP,
    Phone,
    ack_for,
    header,
    mails,
    sqlite_subscribers,
    status,
    wait_mails,
)

pytestmark = pytest.mark.interop


@pytest.mark.parametrize(
    ("cfg", "user", "code", "reason", "n_mails"),
    [
        ("step4-stateful/ser.cfg", "jiri", 600, b"No messages for this user", 1),
        ("step4-stateful/ser.cfg", "nobody", 404, b"User does not exist", 0),
        ("step4-stateful/routes.py", "jiri", 600, b"No messages for this user", 1),
    ],
)
def test_step4_retransmissions_run_the_command_once(
    start_ser: StartSer, tmp_path: Path, cfg: str, user: str, code: int, reason: bytes, n_mails: int
) -> None:
    db = tmp_path / "ser.sqlite"
    sqlite_subscribers(db, {"jiri": "jiri@example.com"})
    ser = start_ser(cfg, env={"SER_SQLITE_DB": str(db)})
    phone = Phone(ser.port)
    try:
        inv = phone.request("INVITE", f"sip:{user}@127.0.0.1:{ser.port}", body=SDP)
        phone.send(inv)
        first = phone.recv_final(5.0)
        assert first is not None, ser.log()
        assert status(first) == code and first.split(b"\r\n", 1)[0] == b"SIP/2.0 %d " % code + reason
        assert header(first, "To") and ";tag=" in header(first, "To")  # type: ignore[operator]
        # the INVITE retransmitted three times: each gets the same reply again
        replies = []
        for _ in range(3):
            phone.send(inv)
            r = phone.recv_final(2.0)
            assert r is not None, ser.log()
            replies.append(r)
        assert all(r == first for r in replies)
        phone.send(ack_for(inv, first))
        wait_mails(ser.workdir, n_mails)
        time.sleep(0.5)  # no (further) mail may come: a window, not a wait
        assert len(mails(ser.workdir)) == n_mails
        if n_mails:
            assert mails(ser.workdir)[0]["to"] == ["jiri@example.com"]
    finally:
        phone.close()


def test_step4_retransmission_during_the_command_is_absorbed(start_ser: StartSer, tmp_path: Path) -> None:
    """Retransmissions arriving while the program still runs (here: a slow
    mail) neither start it again nor get an early reply."""
    db = tmp_path / "ser.sqlite"
    sqlite_subscribers(db, {"jiri": "jiri@example.com"})
    ser = start_ser(
        "step4-stateful/ser.cfg",
        subst={r'mail -s \\"request for you\\"': r'sleep 1; mail -s \\"request for you\\"'},
        env={"SER_SQLITE_DB": str(db)},
    )
    phone = Phone(ser.port)
    try:
        inv = phone.request("INVITE", f"sip:jiri@127.0.0.1:{ser.port}", body=SDP)
        t0 = time.monotonic()
        phone.send(inv)
        for _ in range(3):
            time.sleep(0.1)  # retransmissions spread over the time the program runs
            phone.send(inv)
        got = phone.recv_final(5.0)
        assert got is not None and status(got) == 600, ser.log()
        assert time.monotonic() - t0 >= 0.9  # nothing was answered before the program ended
        phone.send(ack_for(inv, got))
        assert len(wait_mails(ser.workdir, 1)) == 1
        time.sleep(0.5)  # no second mail may come: a window, not a wait
        assert len(mails(ser.workdir)) == 1
    finally:
        phone.close()
