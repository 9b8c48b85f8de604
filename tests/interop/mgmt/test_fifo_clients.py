"""Real clients against a management server process: sc's shell procedure,
serweb's PHP stub (same system calls), and many concurrent clients."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from sipexpress.mgmt.client import ServerNotRunning, fifo_request
from tests.interop.mgmt.conftest import MgmtProc, start_mgmt_proc
from tests.support import fifo_pending, wait_for

pytestmark = pytest.mark.interop

UPTIME_RE = re.compile(r"200 ok\nNow: .+\nUp Since: .+\nUp time: \d+ \[sec\]\n\Z")


def test_shell_heredoc_client(mgmt_proc: MgmtProc) -> None:
    d, fifo = mgmt_proc.reply_dir, mgmt_proc.fifo
    script = (
        "set -e\n"
        "name=ser_receiver_$$\n"
        f"mkfifo {d}$name; chmod a+w {d}$name\n"
        f"cat < {d}$name &\n"
        f"cat > {fifo} <<EOF\n"
        ":uptime:$name\n"
        "\n"
        "EOF\n"
        "wait\n"
        f"rm {d}$name\n"
    )
    r = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=10)
    assert r.returncode == 0, r.stderr
    assert UPTIME_RE.match(r.stdout), r.stdout


def test_shell_heredoc_without_final_empty_line(mgmt_proc: MgmtProc) -> None:
    # like the seed's "Sending IM From Shell Script": no empty line at the end
    d, fifo = mgmt_proc.reply_dir, mgmt_proc.fifo
    script = (
        "name=ser_receiver_$$\n"
        f"mkfifo {d}$name\n"
        f"cat < {d}$name &\n"
        f"cat > {fifo} <<EOF\n"
        ":print:$name\n"
        "Hello world!!!! $@\n"
        "EOF\n"
        f"wait; rm {d}$name\n"
    )
    r = subprocess.run(["bash", "-c", script, "x", "a", "b"], capture_output=True, text=True, timeout=10)
    assert r.stdout == "200 ok\nHello world!!!! a b\n"
    assert UPTIME_RE.match(fifo_request(mgmt_proc.fifo, "uptime", reply_dir=mgmt_proc.reply_dir))


PHP_STYLE = r"""
import os, sys
fifo, reply_dir, name = sys.argv[1:4]
reply = reply_dir + name
fifo_handle = open(fifo, "wb", buffering=0)          # fopen($config->fifo_server, "w")
os.system("mkfifo -m 666 " + reply)                   # @system("mkfifo -m 666 ...")
fifo_cmd = (":print:" + name + "\n" + "ul_table_stub\n\n").encode()
if fifo_handle.write(fifo_cmd) != len(fifo_cmd):     # fwrite($fifo_handle, $fifo_cmd)
    sys.exit("sorry -- fifo writing error")
fp = open(reply, "rb")                                # fopen($config->reply_fifo_path, "r")
status = fp.readline()                                # $status=fgets($fp,256)
rd = fp.read()                                        # while (!feof($fp)) $rd.=fread($fp,8192)
fp.close(); fifo_handle.close(); os.unlink(reply)
sys.stdout.write(status.decode() + rd.decode())
"""


def test_php_style_client(mgmt_proc: MgmtProc) -> None:
    r = subprocess.run(
        [sys.executable, "-c", PHP_STYLE, mgmt_proc.fifo, mgmt_proc.reply_dir, "webfifo_42"],
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout == "200 ok\nul_table_stub\n"


def test_ten_clients_thousand_requests_each(mgmt_proc: MgmtProc) -> None:
    errors: list[str] = []

    def client(n: int) -> None:
        for i in range(1000):
            tag = f"client{n}-req{i}"
            try:
                r = fifo_request(mgmt_proc.fifo, "print", [tag], reply_dir=mgmt_proc.reply_dir, timeout=10)
            except Exception as e:
                errors.append(f"{tag}: {e!r}")
                return
            if r != f"200 ok\n{tag}\n":
                errors.append(f"{tag}: got {r!r}")

    threads = [threading.Thread(target=client, args=(n,)) for n in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    assert mgmt_proc.alive()


def test_all_malformed_requests_then_uptime(mgmt_proc: MgmtProc, tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "never_read")
    bad = [
        b":uptime:never_read\n\n",  # client vanished before reading
        b":uptime:does_not_exist\n\n",  # reply FIFO missing
        b"\x00\x01\x02\xff\xfe binary garbage \x80\n\n",
        b":" + b"x" * 10000 + b"\n\n",  # over-long line
        b":uptime:../../etc/passwd\n\n",  # forbidden reply name
        b"no colon at all\n\n",
        b":print:never_read\nunterminated request",  # never ends
    ]
    for data in bad:
        fd = os.open(mgmt_proc.fifo, os.O_WRONLY)
        os.write(fd, data)
        os.close(fd)
    # The unterminated last line must not meet the next client's request in
    # the pipe buffer before the server reads it: nothing could tell them
    # apart (SER would have swallowed the next request's first line).
    assert wait_for(lambda: fifo_pending(mgmt_proc.fifo) == 0, 5.0)
    r = fifo_request(mgmt_proc.fifo, "uptime", reply_dir=mgmt_proc.reply_dir, timeout=5)
    assert UPTIME_RE.match(r)
    assert mgmt_proc.alive()
    needles = ("no client at", "cannot open reply FIFO", "command must begin with", "forbidden reply")
    # the reply to never_read is given up after SER's 4 x 80 ms retries
    assert wait_for(lambda: all(n in mgmt_proc.log.read_text() for n in needles), 5.0), (
        mgmt_proc.log.read_text()
    )


def test_client_reports_server_not_running(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "dead_fifo")
    with pytest.raises(ServerNotRunning, match="not reading"):
        fifo_request(str(tmp_path / "dead_fifo"), "uptime", reply_dir=f"{tmp_path}/")
    with pytest.raises(ServerNotRunning, match="does not exist"):
        fifo_request(str(tmp_path / "nothing"), "uptime", reply_dir=f"{tmp_path}/")


def test_kill_when_allowed(tmp_path: Path) -> None:
    mp = start_mgmt_proc(tmp_path, "mgmt_allow_kill=yes")
    try:
        r = fifo_request(mp.fifo, "kill", reply_dir=mp.reply_dir)
        assert r == "200 killing now..."
        assert mp.proc.wait(5) is not None
    finally:
        if mp.alive():
            mp.proc.kill()
            mp.proc.wait()
