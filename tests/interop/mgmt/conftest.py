"""Management test fixtures: an in-process Manager and a stand-alone
management server subprocess (``python -m sipexpress.mgmt``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass
class MgmtProc:
    proc: subprocess.Popen[str]
    dir: Path
    fifo: str
    reply_dir: str
    http_port: int
    log: Path

    def alive(self) -> bool:
        return self.proc.poll() is None


def start_mgmt_proc(tmp: Path, *extra: str) -> MgmtProc:
    fifo = str(tmp / "ser_fifo")
    log = tmp / "mgmt.log"
    args = [sys.executable, "-m", "sipexpress.mgmt", f"fifo={fifo}", f"fifo_dir={tmp}/", "fifo_timeout=0.3"]
    args += [*extra]
    with open(log, "w") as lf:
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=lf, text=True, start_new_session=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("ready"):
        proc.wait(5)
        raise RuntimeError(f"mgmt server did not start: {line!r} {log.read_text()}")
    port = int(line.split("http=")[1])
    return MgmtProc(proc, tmp, fifo, f"{tmp}/", port, log)


@pytest.fixture
def mgmt_proc(tmp_path: Path) -> Iterator[MgmtProc]:
    mp = start_mgmt_proc(tmp_path, "jsonrpc_http=127.0.0.1:0")
    yield mp
    if mp.alive():
        mp.proc.send_signal(signal.SIGTERM)
        try:
            mp.proc.wait(5)
        except subprocess.TimeoutExpired:
            os.killpg(mp.proc.pid, signal.SIGKILL)
            mp.proc.wait(5)
