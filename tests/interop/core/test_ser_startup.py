"""``ser`` tells a new user what it does: ``--help``, what listens where,
how to stop it (and why it stopped), a default administrator password, and
no open sign-up unless configured (issue 23)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support import SerProcess, free_port

pytestmark = pytest.mark.interop

SerFactory = Callable[..., SerProcess]

ROUTE = """\
loadmodule "sl"
route {{
    if (method=="OPTIONS") {{ sl_send_reply("200", "OK"); break; }};
    sl_send_reply("404", "Not Here");
}}
"""

FULL = (
    """\
listen=udp:{host}:{port} tcp:{host}:{port}
fifo="{fifo}"
jsonrpc_http="127.0.0.1:{rpc}"
web_listen="127.0.0.1:{web}"
web_db_url="sqlite:///{workdir}/ser.sqlite"
web_secret_file="{workdir}/serweb.secret"
mgmt_allow_kill=yes
"""
    + ROUTE
)

SMALL = 'listen=udp:{host}:{port}\nfifo="{fifo}"\n' + ROUTE


def ser(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "sipexpress.cli.ser", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30, cwd=cwd)


def wait_log(sp: SerProcess, needle: str, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = sp.log()
        if needle in text:
            return text
        time.sleep(0.05)
    raise AssertionError(f"{needle!r} not logged:\n{sp.log()}")


def test_help_long_and_short() -> None:
    for flag in ("--help", "-h"):
        p = ser(flag)
        assert p.returncode == 0, p.stderr
        assert p.stdout.startswith("Usage: ser ") and "-h, --help" in p.stdout
        assert "Ctrl-C" in p.stdout and "SIGTERM" in p.stdout
    p = ser("--version")
    assert p.returncode == 0 and "sipexpress" in p.stdout


def test_startup_summary_default_password_signup_and_kill(ser_factory: SerFactory) -> None:
    rpc, web = free_port(), free_port()
    sp = ser_factory(FULL, start=False, rpc=rpc, web=web)
    db = sp.workdir / "ser.sqlite"
    serctl = [sys.executable, "-m", "sipexpress.cli.serctl", "--db-url", f"sqlite:///{db}"]
    made = subprocess.run(
        [*serctl, "db", "create", "--admin-domain", "localhost"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert made.returncode == 0, made.stdout + made.stderr
    sp.start()
    text = wait_log(sp, "default password")
    assert f"SIP       udp:{sp.host}:{sp.port}  tcp:{sp.host}:{sp.port}" in text
    assert f"FIFO      {sp.fifo}" in text
    assert f"JSON-RPC  http://127.0.0.1:{rpc}/" in text
    assert f"web       http://127.0.0.1:{web}/" in text
    assert f"kill {sp.proc.pid if sp.proc else 0} (SIGTERM)" in text and "serctl kill" in text
    assert "administrator admin@localhost still has SER's default password 'heslo'" in text

    deadline = time.monotonic() + 10
    while True:  # the web interface starts in the same loop, a moment later
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{web}/login", timeout=2) as r:
                login = r.read().decode()
            break
        except (urllib.error.URLError, ConnectionError):
            assert time.monotonic() < deadline, sp.log()
            time.sleep(0.1)
    assert 'href="/signup"' not in login
    with pytest.raises(urllib.error.HTTPError) as ei:
        urllib.request.urlopen(f"http://127.0.0.1:{web}/signup", timeout=5)
    assert ei.value.code == 404

    k = subprocess.run(
        [sys.executable, "-m", "sipexpress.cli.serctl", "--fifo", sp.fifo, "fifo", "kill"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert k.returncode == 0, k.stdout + k.stderr
    assert sp.proc is not None and sp.proc.wait(10) == 0
    text = sp.log()
    assert "management command kill" in text and "stopping: SIGTERM received" in text
    assert text.rstrip().endswith("stopped")


@pytest.mark.parametrize(
    ("sig", "line"),
    [(signal.SIGINT, "stopping: SIGINT received (Ctrl-C)"), (signal.SIGTERM, "stopping: SIGTERM")],
)
def test_every_way_of_stopping_says_so(ser_factory: SerFactory, sig: int, line: str) -> None:
    sp = ser_factory(SMALL)
    text = wait_log(sp, "stop      Ctrl-C (SIGINT)")
    assert "JSON-RPC  off" in text and "web       off" in text
    assert sp.stop(sig) == 0
    text = sp.log()
    assert line in text and text.rstrip().endswith("stopped"), text
    assert "default password" not in text
    # no database was configured: none is created in the working directory
    assert not (sp.workdir / "ser.sqlite").exists()
