"""exec never freezes the server; time_to_kill leaves no zombie or orphan."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from tests.interop.exec.conftest import StartSer
from tests.interop.exec.helpers import (
    SCENARIOS,
    SDP,
    Phone,
    ack_for,
    children_of,
    group_dead,
    group_members,
    proc_stat,
    status,
)
from tests.support import free_port, run_sipp, wait_for

pytestmark = pytest.mark.interop

CFG = """
loadmodule "sl"
loadmodule "exec"
{params}
route {{
    if (method=="OPTIONS") {{
        sl_send_reply("200", "ok");
        break;
    }};
    if (method=="MESSAGE") {{
        if (exec_msg("cat > /dev/null")) {{ sl_send_reply("200", "exec ok"); }}
        else {{ sl_send_reply("500", "exec failed"); }};
        break;
    }};
    if (method=="INVITE") {{
        if (exec_msg("echo $$ > {out}/sh.pid; {cmd}")) {{ sl_send_reply("600", "done"); }}
        else {{ sl_send_reply("500", "killed"); }};
        break;
    }};
}}
"""


def pid_from(path: Path) -> int:
    assert wait_for(lambda: path.exists() and path.read_text().strip() != "", 5.0)
    return int(path.read_text())


def test_sleep5_does_not_block_1000_options(start_ser: StartSer, tmp_path: Path) -> None:
    ser = start_ser(text=CFG.format(params="", out=tmp_path, cmd="sleep 5"))
    caller = Phone(ser.port)
    try:
        inv = caller.request("INVITE", f"sip:jiri@127.0.0.1:{ser.port}", body=SDP)
        t0 = time.monotonic()
        caller.send(inv)
        sh = pid_from(tmp_path / "sh.pid")
        # other execs run meanwhile
        other = Phone(ser.port, "bob")
        try:
            for i in range(10):
                other.send(other.request("MESSAGE", f"sip:x@127.0.0.1:{ser.port}", cseq=i + 1, body=b"hi"))
            got = [other.recv_final(3.0) for _ in range(10)]
        finally:
            other.close()
        assert [status(r) for r in got if r is not None] == [200] * 10
        # 1000 OPTIONS from SIPp, all answered while `sleep 5` still runs
        res = run_sipp(
            [
                f"127.0.0.1:{ser.port}",
                "-sf",
                str(SCENARIOS / "options.xml"),
                "-i",
                "127.0.0.1",
                "-p",
                str(free_port()),
                "-m",
                "1000",
                "-r",
                "500",
                "-l",
                "200",
                "-timeout",
                "20s",
            ],
            timeout=60,
        )
        assert res.ok, res.stdout[-2000:] + res.stderr
        m = re.search(r"Successful call\s*\|\s*\d+\s*\|\s*(\d+)", res.stdout)
        assert m and int(m.group(1)) == 1000
        assert proc_stat(sh) is not None, "sleep 5 ended before the OPTIONS load was served"
        assert time.monotonic() - t0 < 5.0
        # and the INVITE gets its answer when the command ends
        r = caller.recv_final(8.0)
        assert r is not None and status(r) == 600
        assert time.monotonic() - t0 >= 4.9
        caller.send(ack_for(inv, r))
    finally:
        caller.close()


def test_time_to_kill_leaves_no_zombie_or_orphan(start_ser: StartSer, tmp_path: Path) -> None:
    cmd = f"sleep 30 & echo $! > {tmp_path}/bg.pid; sleep 30"
    ser = start_ser(text=CFG.format(params='modparam("exec", "time_to_kill", 1)', out=tmp_path, cmd=cmd))
    assert ser.proc is not None
    ser_pid = ser.proc.pid
    phone = Phone(ser.port)
    try:
        inv = phone.request("INVITE", f"sip:jiri@127.0.0.1:{ser.port}", body=SDP)
        t0 = time.monotonic()
        phone.send(inv)
        sh = pid_from(tmp_path / "sh.pid")
        bg = pid_from(tmp_path / "bg.pid")
        r = phone.recv_final(5.0)
        assert r is not None and r.split(b"\r\n", 1)[0] == b"SIP/2.0 500 killed", ser.log()
        assert 0.9 <= time.monotonic() - t0 < 3.0
        phone.send(ack_for(inv, r))
    finally:
        phone.close()
    # the shell, its background child and its foreground child are gone,
    # and ser has no zombie child
    assert wait_for(lambda: proc_stat(sh) is None, 3.0)  # reaped by ser

    def bg_dead() -> bool:  # dead, and not ser's zombie
        st = proc_stat(bg)
        return st is None or (st[0] == "Z" and st[1] != ser_pid)

    assert wait_for(bg_dead, 3.0), proc_stat(bg)
    assert wait_for(lambda: group_dead(sh, ser_pid), 3.0), group_members(sh)
    assert [c for c in children_of(ser.proc.pid) if c[1] == "Z"] == []
    assert "time_to_kill=1" in ser.log()


def test_stopping_ser_leaves_no_orphan(start_ser: StartSer, tmp_path: Path) -> None:
    ser = start_ser(text=CFG.format(params="", out=tmp_path, cmd="sleep 30"))
    assert ser.proc is not None
    ser_pid = ser.proc.pid
    phone = Phone(ser.port)
    try:
        phone.send(phone.request("INVITE", f"sip:jiri@127.0.0.1:{ser.port}", body=SDP))
        sh = pid_from(tmp_path / "sh.pid")
        assert proc_stat(sh) is not None
        ser.stop()
        assert wait_for(lambda: group_dead(sh, ser_pid), 5.0), group_members(sh)
    finally:
        phone.close()
