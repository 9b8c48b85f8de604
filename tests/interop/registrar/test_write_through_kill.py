"""usrloc db_mode 1 is write-through: a 200 OK leaves only after the
binding is committed.  A SIPp flood of REGISTERs, ``kill -9`` of ser in
the middle of it, a restart: every AOR SIPp saw acknowledged is back (on
SQLite, MariaDB and PostgreSQL).  A write that cannot be done (the table
locked by someone else past db_timeout) is a 500, logged, not a 200."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sipexpress.db import create_all
from sipexpress.mgmt.client import ServerNotRunning, fifo_request
from tests.support import SerProcess, free_port, need_tool, udp_register
from tests.unit.db.dbfixtures import new_db_url, prepared_url

pytestmark = pytest.mark.interop

StartSer = Callable[..., SerProcess]

CFG = """\
debug=3
fork=no
listen=udp:{host}:{port}
fifo="{fifo}"
fifo_dir="{workdir}/"
loadmodule "sl"
loadmodule "usrloc"
loadmodule "registrar"
modparam("usrloc", "db_mode", 1)
modparam("usrloc", "db_url", "{db_url}")
modparam("usrloc", "db_timeout", 1)
route {{
    if (method=="REGISTER") {{ save("location"); break; }};
    sl_send_reply("404", "Not Found");
}}
"""

SCENARIO = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="register users of the injection file">
  <send retrans="500">
    <![CDATA[
REGISTER sip:[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:[field0]@[remote_ip]>;tag=[pid]reg[call_number]
To: <sip:[field0]@[remote_ip]>
Call-ID: [call_id]
CSeq: 1 REGISTER
Contact: <sip:[field0]@[local_ip]:[local_port]>
Expires: 3600
Max-Forwards: 70
Content-Length: 0

    ]]>
  </send>
  <recv response="200"/>
</scenario>
"""

FLOOD = 4000  # more than the few seconds of the run can acknowledge


@pytest.fixture(params=["sqlite", "mysql", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from prepared_url(request.param, tmp_path)


def acknowledged(message_log: Path) -> set[str]:
    """The AORs of every 200 OK SIPp received."""
    text = message_log.read_text(errors="replace") if message_log.exists() else ""
    out = set()
    for block in text.split("-----------------------------------------------"):
        if "message received" in block and "SIP/2.0 200 " in block:
            m = re.search(r"(?m)^To: <sip:([^@>]+)@", block)
            if m:
                out.add(m.group(1))
    return out


def registered(sp: SerProcess) -> set[str]:
    """The AORs ser holds once its FIFO is up (after the stored bindings are loaded)."""
    deadline = time.monotonic() + 15
    while True:
        try:
            reply = fifo_request(sp.fifo, "ul_dump", reply_dir=f"{sp.workdir}/", timeout=30)
        except ServerNotRunning:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
            continue
        return set(re.findall(r"(?m)^aor   : '([^']+)'", reply))


def test_kill_9_during_a_flood_loses_no_acknowledged_contact(
    ser_factory: StartSer, db_url: str, tmp_path: Path
) -> None:
    sipp = need_tool("sipp")
    sp = ser_factory(CFG, db_url=db_url)
    (tmp_path / "reg.xml").write_text(SCENARIO)
    users = tmp_path / "users.csv"
    users.write_text("SEQUENTIAL\n" + "".join(f"wt{i:05d}\n" for i in range(FLOOD)))
    log = tmp_path / "sipp_messages.log"
    cmd = [sipp, f"{sp.host}:{sp.port}", "-sf", "reg.xml", "-inf", str(users), "-m", str(FLOOD)]
    cmd += ["-r", "400", "-l", "200", "-i", "127.0.0.1", "-p", str(free_port()), "-nostdin"]
    cmd += ["-trace_msg", "-message_file", str(log), "-timeout", "20s"]
    flood = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 15
        while len(acknowledged(log)) < 150 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sp.proc is not None
        os.kill(sp.proc.pid, signal.SIGKILL)  # in the middle of the flood
        sp.proc.wait(5)
    finally:
        flood.terminate()
        try:
            flood.wait(5)
        except subprocess.TimeoutExpired:
            flood.kill()
            flood.wait(5)
    acked = acknowledged(log)
    assert len(acked) >= 150, len(acked)
    sp.start()
    missing = acked - registered(sp)
    assert not missing, f"{len(missing)} of {len(acked)} acknowledged AORs lost: {sorted(missing)[:10]}"


def test_a_write_that_cannot_commit_is_a_500(ser_factory: StartSer, tmp_path: Path) -> None:
    url = new_db_url("sqlite", tmp_path)
    asyncio.run(create_all(url))
    sp = ser_factory(CFG, db_url=url)
    reply = udp_register(sp, "before")
    assert reply is not None and reply.status == 200
    lock = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")  # another writer holds the database past db_timeout
    try:
        reply = udp_register(sp, "locked")
        assert reply is not None and reply.status == 500
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    assert "writing locked failed, nothing changed" in sp.log()
    assert sp.stop(signal.SIGKILL) is not None
    sp.start()
    assert registered(sp) == {"before"}  # nothing acknowledged, nothing pretended
