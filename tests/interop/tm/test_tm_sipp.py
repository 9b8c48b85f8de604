"""Calls through tm with SIPp as the phones: UAC -> ser (t_relay) -> UAS."""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sipexpress.mgmt.client import fifo_request
from tests.support import free_port, need_tool, run_sipp, tcp_listening, udp_bound, wait_for

pytestmark = pytest.mark.interop

SCENARIOS = Path(__file__).parent / "scenarios"

ROUTES = """
from sipexpress.script.pyroute import t_relay, t_relay_to_tcp, t_newtran, t_reply, t_on_failure
OPTIONS = {{"listen": ["udp:{host}:{port}", "tcp:{host}:{port}"], "fifo": "{fifo}"}}
MODULES = ["tm"]
MODPARAMS = [("tm", "wt_timer", 2)]

async def request_route(ctx):
    if ctx.msg.method == "OPTIONS" and "@" not in ctx.ruri:
        t_newtran(ctx)
        return t_reply(ctx, 200, "OK")
    {body}

async def failure_route_1(ctx):
    if ctx.msg.method == "INVITE":
        ctx.append_branch("sip:second@127.0.0.1:{uas2}")
        return await t_relay(ctx)
    return 1
"""


def start_uas(
    port: int, calls: int, transport: str = "u1", scenario: str | None = None
) -> subprocess.Popen[str]:
    sipp = need_tool("sipp")
    scen = ["-sf", str(SCENARIOS / scenario)] if scenario else ["-sn", "uas"]
    proc = subprocess.Popen(
        [
            sipp,
            *scen,
            "-i",
            "127.0.0.1",
            "-p",
            str(port),
            "-t",
            transport,
            "-m",
            str(calls),
            "-nostdin",
            "-timeout",
            "60",
            "-timeout_error",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    bound = tcp_listening if transport == "t1" else udp_bound
    assert wait_for(lambda: proc.poll() is not None or bound(port), 10.0), "SIPp UAS did not start"
    return proc


def stop(p: subprocess.Popen[str]) -> int | None:
    try:
        return p.wait(10)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait(5)
        return None


def make_ser(ser_factory: Callable[..., Any], body: str, uas2: int = 0, fifo: str = "") -> Any:
    port = free_port()
    cfg = ROUTES.format(host="127.0.0.1", port=port, body=body, uas2=uas2, fifo=fifo)
    return ser_factory(cfg.replace("{", "{{").replace("}", "}}"), port=port, suffix=".py")


def counter(stdout: str, name: str) -> int | None:
    """The cumulative value of a SIPp statistics line (last screen)."""
    value = None
    for line in stdout.splitlines():
        parts = [x.strip() for x in line.split("|")]
        if len(parts) >= 3 and parts[0] == name:
            value = int(parts[-1].split()[0])
    return value


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_1000_calls(ser_factory: Callable[..., Any], transport: str, tmp_path: Path) -> None:
    uas_port = free_port()
    relay = "t_relay_to_tcp" if transport == "tcp" else "t_relay_to_udp"
    body = (
        f"from sipexpress.script.pyroute import {relay}\n"
        f"    return await {relay}(ctx, '127.0.0.1', '{uas_port}')"
    )
    fifo = str(tmp_path / "ser_fifo")
    ser = make_ser(ser_factory, body, fifo=fifo)
    t = "t1" if transport == "tcp" else "u1"
    uas = start_uas(uas_port, 1000, t)
    t0 = time.monotonic()
    res = run_sipp(
        [
            "-sn",
            "uac",
            f"{ser.host}:{ser.port}",
            "-i",
            "127.0.0.1",
            "-p",
            str(free_port()),
            "-t",
            t,
            "-m",
            "1000",
            "-r",
            "100",
            "-l",
            "200",
            "-d",
            "0",
            "-timeout",
            "60",
            "-timeout_error",
        ],
        timeout=90,
    )
    elapsed = time.monotonic() - t0
    assert stop(uas) == 0, ser.log()[-2000:]
    assert res.ok, res.stdout[-3000:]
    assert "Successful call" in res.stdout
    assert counter(res.stdout, "Successful call") == 1000, res.stdout[-2000:]
    assert counter(res.stdout, "Failed call") == 0
    assert elapsed < 40
    assert ser.alive()
    # completed transactions are reclaimed after wt_timer (2 s here)
    idle = re.compile(r"^Current: 0 \(0 waiting\)", re.MULTILINE)
    assert wait_for(lambda: idle.search(fifo_request(fifo, "t_stats")) is not None, 15.0, 0.2)
    text = fifo_request(fifo, "t_stats")
    lines = text.splitlines()
    assert lines[0] == "200 ok"
    m = re.match(r"Current: (\d+) \((\d+) waiting\) Total: (\d+) \(0 local\) {6}$", lines[1])
    assert m is not None, text
    assert int(m.group(1)) == 0 and int(m.group(2)) == 0
    assert int(m.group(3)) >= 2000  # INVITE + BYE of every call
    m2 = re.search(r"4xx: (\d+), 3xx: (\d+),2xx: (\d+)", text)
    assert m2 is not None and int(m2.group(3)) >= 2000 and int(m2.group(1)) == 0


def test_486_failure_route_to_second_uas(ser_factory: Callable[..., Any]) -> None:
    busy, ok = free_port(), free_port()
    body = (
        "t_on_failure(ctx, '1')\n"
        f"    ctx.set_ruri('sip:first@127.0.0.1:{busy}')\n"
        "    if ctx.msg.method != 'INVITE':  # the dialog is with the second UAS\n"
        f"        ctx.set_ruri('sip:second@127.0.0.1:{ok}')\n"
        "    return await t_relay(ctx)"
    )
    ser = make_ser(ser_factory, body, uas2=ok)
    uas_busy = start_uas(busy, 20, scenario="tm_uas_486.xml")
    uas_ok = start_uas(ok, 20)
    res = run_sipp(
        [
            "-sn",
            "uac",
            f"{ser.host}:{ser.port}",
            "-i",
            "127.0.0.1",
            "-p",
            str(free_port()),
            "-m",
            "20",
            "-r",
            "20",
            "-d",
            "0",
            "-timeout",
            "30",
            "-timeout_error",
        ],
        timeout=60,
    )
    assert counter(res.stdout, "Successful call") == 20, res.stdout[-3000:]
    assert stop(uas_busy) == 0
    assert stop(uas_ok) == 0


def test_uac_cancel_while_ringing(ser_factory: Callable[..., Any]) -> None:
    uas_port = free_port()
    body = f"return await t_relay_to_udp(ctx, '127.0.0.1', '{uas_port}')"
    body = "from sipexpress.script.pyroute import t_relay_to_udp\n    " + body
    ser = make_ser(ser_factory, body)
    uas = start_uas(uas_port, 10, scenario="tm_uas_ring_cancel.xml")
    res = run_sipp(
        [
            "-sf",
            str(SCENARIOS / "tm_uac_cancel.xml"),
            f"{ser.host}:{ser.port}",
            "-i",
            "127.0.0.1",
            "-p",
            str(free_port()),
            "-m",
            "10",
            "-r",
            "10",
            "-timeout",
            "30",
            "-timeout_error",
        ],
        timeout=60,
    )
    assert counter(res.stdout, "Successful call") == 10, res.stdout[-3000:]
    assert stop(uas) == 0  # the UAS saw the CANCEL of every call
