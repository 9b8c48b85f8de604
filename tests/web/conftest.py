"""Fixtures for the web interface's browser tests: one real ``ser`` (with
the web app running in-process, talking to ser over JSON-RPC), a SQLite
database, Debian's chromium driven by Playwright, SIPp phones."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sipexpress.db import create_all, dispose_engines
from sipexpress.mgmt.token import read_token
from tests.support import IN_CI, SerProcess, free_port, need_tool

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
# SIPEXPRESS_SCREENSHOTS=docs/screenshots (relative to the repository)
# refreshes the README's pictures; otherwise they go to a temporary directory
SCREENSHOTS_ENV = "SIPEXPRESS_SCREENSHOTS"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DOMAIN = "127.0.0.1"

CFG = """
listen=udp:127.0.0.1:{port}
alias=udp:127.0.0.1:5060
fifo="{fifo}"
fifo_dir="{workdir}/"
jsonrpc_http="127.0.0.1:{rpc_port}"
jsonrpc_secret_file="{workdir}/jsonrpc.secret"
web_listen="127.0.0.1:{web_port}"
web_domain="127.0.0.1"
web_db_url="{db_url}"
web_secret_file="{workdir}/serweb.secret"
web_outbound="sip:127.0.0.1:{port}"
web_sample_interval=1
web_signup=yes
loadmodule "sl"
loadmodule "tm"
loadmodule "rr"
loadmodule "maxfwd"
loadmodule "usrloc"
loadmodule "registrar"
loadmodule "auth"
loadmodule "auth_db"
loadmodule "acc"
loadmodule "domain"
modparam("auth_db", "db_url", "{db_url}")
modparam("auth_db", "calculate_ha1", 0)
modparam("auth_db", "password_column", "ha1")
modparam("acc", "db_url", "{db_url}")
modparam("acc", "db_flag", 1)
modparam("acc", "db_missed_flag", 2)
modparam("usrloc", "db_mode", 0)
modparam("domain", "db_url", "{db_url}")
modparam("domain", "db_mode", 1)
modparam("tm", "fr_timer", 2)
modparam("tm", "fr_inv_timer", 4)
route {{
    if (method == "OPTIONS" && uri == myself) {{ sl_send_reply("200", "ok"); break; }};
    if (!mf_process_maxfwd_header("10")) {{ sl_send_reply("483", "Too Many Hops"); break; }};
    if (loose_route()) {{ t_relay(); break; }};
    if (method == "REGISTER") {{
        if (!www_authorize("", "subscriber")) {{ www_challenge("", "1"); break; }};
        save("location");
        break;
    }};
    if (method == "INVITE") {{ record_route(); setflag(1); setflag(2); }};
    if (uri == myself) {{
        lookup("aliases");
        if (!lookup("location")) {{
            if (method == "INVITE") {{ acc_db_request("404 Not Found", "missed_calls"); }};
            sl_send_reply("404", "Not Found");
            break;
        }};
    }};
    t_relay();
}}
"""


@dataclass
class WebServer:
    ser: SerProcess
    base: str
    db_url: str
    rpc_url: str
    workdir: Path

    @property
    def rpc_secret(self) -> str:
        """The token ser created for its JSON-RPC (jsonrpc_secret_file)."""
        return read_token(str(self.workdir / "jsonrpc.secret"))

    def mail_link(self, email: str, path: str = "/confirm?nr=", timeout: float = 5.0) -> str:
        """The link in the last mail to ``email`` (from ser's log)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.findall(
                rf"serweb mail \(no web_smtp set\) to <{re.escape(email)}>:.*?(http://\S+{re.escape(path)}\S+)",
                self.ser.log(),
                re.S,
            )
            if found:
                return str(found[-1])
            time.sleep(0.1)
        raise AssertionError(f"no mail to {email} in the log:\n{self.ser.log()[-3000:]}")


def run_async(fn: Callable[[], Awaitable[Any]]) -> Any:
    """Run a coroutine function to completion in a fresh thread (Playwright's
    sync API keeps an event loop running in the test's thread)."""
    out: list[Any] = []

    def target() -> None:
        async def go() -> Any:
            try:
                return await fn()
            finally:
                await dispose_engines()

        out.append(asyncio.run(go()))

    t = threading.Thread(target=target)
    t.start()
    t.join(30)
    return out[0] if out else None


def _create_db(url: str) -> None:
    run_async(lambda: create_all(url, admin_domain=DOMAIN))  # admin / heslo, is_admin


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebServer]:
    workdir = tmp_path_factory.mktemp("web")
    db_url = f"sqlite:///{workdir}/ser.sqlite"
    _create_db(db_url)
    port, rpc_port, web_port = free_port(), free_port(), free_port()
    cfg = workdir / "ser.cfg"
    cfg.write_text(
        CFG.format(
            port=port,
            rpc_port=rpc_port,
            web_port=web_port,
            db_url=db_url,
            fifo=workdir / "ser_fifo",
            workdir=workdir,
        )
    )
    sp = SerProcess(cfg, "127.0.0.1", port, workdir)
    sp.start()
    base = f"http://127.0.0.1:{web_port}"
    import httpx

    deadline = time.monotonic() + 10
    while True:
        try:
            if httpx.get(base + "/login", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            sp.stop()
            raise RuntimeError(f"web interface did not come up:\n{sp.log()}")
        time.sleep(0.1)
    yield WebServer(sp, base, db_url, f"http://127.0.0.1:{rpc_port}/", workdir)
    sp.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not os.path.exists(CHROMIUM):
        if IN_CI:
            pytest.fail("chromium is required in CI")
        pytest.skip("chromium not installed (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if IN_CI:
            raise
        pytest.skip("playwright not installed")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser: Any, web: WebServer) -> Iterator[Any]:
    ctx = browser.new_context(base_url=web.base, viewport={"width": 1200, "height": 800})
    ctx.set_default_timeout(10000)
    pg = ctx.new_page()
    yield pg
    ctx.close()


class Sipp:
    """A SIPp process (phone) with its own ports, killed at the end."""

    def __init__(self, args: list[str], cwd: Path) -> None:
        sipp = need_tool("sipp")
        self.port = free_port()
        cwd.mkdir(parents=True, exist_ok=True)
        self.cwd = cwd
        cmd = [sipp, "-i", "127.0.0.1", "-p", str(self.port), "-mp", str(free_port()), "-nostdin"]
        self.proc = subprocess.Popen(
            cmd + args, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )

    def wait(self, timeout: float = 20) -> int:
        return self.proc.wait(timeout)

    def output(self) -> str:
        if self.proc.poll() is None:
            return ""
        return self.proc.stdout.read() if self.proc.stdout else ""

    def messages(self) -> str:
        logs = list(self.cwd.glob("*_messages.log"))
        return logs[0].read_text(errors="replace") if logs else ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(5)
        if self.proc.stdout:
            self.proc.stdout.close()


@pytest.fixture
def phones(tmp_path: Path) -> Iterator[Any]:
    made: list[Sipp] = []

    def make(args: list[str], name: str = "phone") -> Sipp:
        s = Sipp(args, tmp_path / f"{name}{len(made)}")
        made.append(s)
        return s

    yield make
    for s in made:
        s.stop()


_screenshot_dir: list[Path] = []  # set once per session by screenshot_dir


@pytest.fixture(scope="session", autouse=True)
def screenshot_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    env = os.environ.get(SCREENSHOTS_ENV)
    path = ROOT / env if env else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    _screenshot_dir[:] = [path]
    return path


def shot(page: Any, name: str) -> None:
    """Save a screenshot NAME.png for the README (see SCREENSHOTS_ENV)."""
    page.screenshot(path=str(_screenshot_dir[0] / f"{name}.png"), full_page=True)


__all__ = ["DOMAIN", "HERE", "Sipp", "WebServer", "run_async", "shot"]
