"""The README's quick start, run as written (issue 23).

The fenced ``sh`` block under "## Quick start" is read from README.md and
each line run in order against a ser started as ``./dev run`` starts it:
the shipped etc/ser.cfg with ``ser -D -E``, after ``serctl db create
--admin-domain localhost`` in its working directory.  What the test changes,
and why (nothing else; a line it does not know fails the test):

- ports: ser's 5060 (also where a URI or SIPp target names no port) becomes
  a free port P with four digits (sipsak cuts five-digit ports, see
  shared/peers.md); the phone's 5070 a free port Q; SIPp's media port 6100
  a free one, and the uac gets a free ``-mp`` instead of its default 6000 —
  tests run side by side on one machine;
- the FIFO /tmp/ser_fifo becomes a per-test path, handed to serctl as
  ``SER_FIFO`` (the environment variable sc always read); JSON-RPC and the
  web interface listen on free ports (shipped_config), and the log-in of the
  paragraph after the block goes to the web port;
- ``serctl`` runs as ``python -m sipexpress.cli.serctl`` (this tree's code),
  ``examples/…`` becomes an absolute path (the test works in a scratch
  directory so that nothing is written into the repository).

Each step's effect is checked: 404 first, alice registered and shown by the
FIFO, the IM answered 200 by the phone, ten successful calls, the monitor's
screen and its Ctrl-C, then the log-in as admin/heslo with the warning
about that password in ser's log.
"""

from __future__ import annotations

import http.cookiejar
import os
import random
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from tests.support import ROOT, SerProcess, free_port, need_tool, shipped_config

pytestmark = pytest.mark.interop


def quickstart_lines() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Quick start", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block, "README.md: no ```sh block under ## Quick start"
    return [ln.split("  #", 1)[0].strip() for ln in block.group(1).splitlines() if ln.strip()]


def four_digit_port() -> int:
    for _ in range(200):
        port = random.randint(2000, 9999)
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u, socket.socket() as t:
                u.bind(("127.0.0.1", port))
                t.bind(("127.0.0.1", port))
        except OSError:
            continue
        return port
    raise RuntimeError("no free four-digit port")


def localize(line: str, ser_port: int, phone_port: int) -> list[str]:
    """One README line -> the command the test runs (see the module doc)."""
    argv = shlex.split(line)
    tool = argv[0]
    out: list[str] = []
    for i, a in enumerate(argv):
        prev = argv[i - 1] if i else ""
        if a.endswith("@127.0.0.1") or a == "sip:127.0.0.1":
            a += f":{ser_port}"  # the implicit 5060
        elif a == "sip:alice@127.0.0.1:5070" or (prev == "-p" and a == "5070"):
            a = a.replace("5070", str(phone_port))
        elif prev == "-mp":
            a = str(free_port())
        elif tool == "sipp" and a == "127.0.0.1":
            a = f"127.0.0.1:{ser_port}"
        elif a.startswith("examples/"):
            a = str(ROOT / a)
        assert "5060" not in a and "/tmp/ser_fifo" not in a, f"the test does not know {a!r} in {line!r}"
        out.append(a)
    if tool == "serctl":
        return [sys.executable, "-m", "sipexpress.cli.serctl", *out[1:]]
    if tool == "sipp":
        if "-mp" not in out:
            out += ["-mp", str(free_port())]
        return [need_tool("sipp"), *out[1:]]
    if tool == "sipsak":
        return [need_tool("sipsak"), *out[1:]]
    raise AssertionError(f"README quick start: the test does not know how to run {line!r}")


def log_in(base: str, username: str, domain: str, password: str) -> bool:
    """Log in through serweb's form; True when the account page follows."""
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
    deadline = time.monotonic() + 15
    while True:  # the web interface starts a moment after SIP
        try:
            page = opener.open(f"{base}/login", timeout=5).read().decode()
            break
        except OSError:
            assert time.monotonic() < deadline
            time.sleep(0.1)
    csrf = re.search(r'name="csrf" value="([^"]+)"', page)
    assert csrf, page
    form = {"csrf": csrf[1], "username": username, "domain": domain, "password": password}
    with opener.open(f"{base}/login", urllib.parse.urlencode(form).encode(), timeout=10) as r:
        return bool(r.url.endswith("/account") and username in r.read().decode())


def test_dev_run_starts_ser_as_the_test_does() -> None:
    dev = (ROOT / "dev").read_text()
    assert "serctl --db-url sqlite:///ser.sqlite db create --admin-domain localhost" in dev
    assert 'exec python3 -m sipexpress.cli.ser -D -E "$@"' in dev


def test_readme_quick_start_as_written(tmp_path: Path) -> None:
    lines = quickstart_lines()
    assert len(lines) == 8, lines
    port, phone_port = four_digit_port(), four_digit_port()
    workdir = tmp_path / "run"
    workdir.mkdir()
    serctl = [sys.executable, "-m", "sipexpress.cli.serctl", "--db-url", "sqlite:///ser.sqlite"]
    made = subprocess.run(
        [*serctl, "db", "create", "--admin-domain", "localhost"],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert made.returncode == 0, made.stderr
    cfg = workdir / "ser.cfg"
    web = free_port()
    cfg.write_text(
        shipped_config(
            port, str(workdir / "ser_fifo"), jsonrpc=f"127.0.0.1:{free_port()}", web=f"127.0.0.1:{web}"
        )
    )
    ser = SerProcess(cfg, "127.0.0.1", port, workdir)
    env = {**os.environ, "SER_FIFO": ser.fifo}
    for k in ("SIP_DOMAIN", "SER_DB_URL", "SER_RPC_URL"):
        env.pop(k, None)
    phone_pid = 0
    try:
        ser.start()

        def run(i: int, timeout: float = 60) -> subprocess.CompletedProcess[str]:
            cmd = localize(lines[i], port, phone_port)
            return subprocess.run(
                cmd,
                cwd=tmp_path,
                env=env,
                capture_output=True,
                text=True,
                timeout=timeout,
                stdin=subprocess.DEVNULL,
            )

        r = run(0)  # sipsak -v -s sip:127.0.0.1
        assert "SIP/2.0 404" in r.stdout, r.stdout + r.stderr
        r = run(1)  # register alice
        assert r.returncode == 0 and "usrloc tests completed successful" in r.stdout, (
            r.stdout + ser.log()[-2000:]
        )
        r = run(2)  # serctl fifo uptime
        assert r.returncode == 0 and "Up time:" in r.stdout, r.stderr
        r = run(3)  # serctl fifo ul_show_contact location alice
        assert r.returncode == 0 and r.stdout.startswith(f"<sip:alice@127.0.0.1:{phone_port}>;q="), r.stdout
        r = run(4)  # the phone, in the background
        m = re.search(r"PID=\[(\d+)\]", r.stdout + r.stderr)
        assert m, r.stdout + r.stderr  # (the parent exits 99 once the phone runs on its own)
        phone_pid = int(m.group(1))
        r = run(5)  # serctl im
        assert r.returncode == 0 and r.stdout.startswith("200 "), r.stdout + r.stderr + ser.log()[-2000:]
        r = run(6, timeout=120)  # ten calls through the proxy
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr + ser.log()[-2000:]
        assert re.search(r"Successful call\s*\|\s*\d+\s*\|\s*10\b", r.stdout), r.stdout[-3000:]

        monitor = subprocess.Popen(
            localize(lines[7], port, phone_port), cwd=tmp_path, env=env, stdout=subprocess.PIPE, text=True
        )
        assert monitor.stdout is not None
        screen = ""
        deadline = time.monotonic() + 30
        while "UsrLoc Stats" not in screen and time.monotonic() < deadline:
            screen += monitor.stdout.readline()
        assert "Transaction Statistics" in screen and "UsrLoc Stats" in screen, screen
        monitor.send_signal(signal.SIGINT)  # Ctrl-C
        rest, _ = monitor.communicate(timeout=30)
        assert monitor.returncode == 0 and "^C-ed" in rest

        text = (ROOT / "README.md").read_text().split("## Quick start", 1)[1]
        login = re.search(
            r"Open http://127\.0\.0\.1:8080 and log in as `(\w+)`, domain `(\w+)`,\s+password `(\w+)`", text
        )
        assert login, "README.md: the log-in sentence changed"
        assert log_in(f"http://127.0.0.1:{web}", *login.groups()), ser.log()[-2000:]
        assert "administrator admin@localhost still has SER's default password" in ser.log()
    finally:
        if phone_pid:
            os.kill(phone_pid, signal.SIGTERM)
        ser.stop()
