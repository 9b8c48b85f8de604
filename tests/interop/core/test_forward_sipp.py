"""Stateless forwarding under load: SIPp uac -> ser -> SIPp uas, 500 calls."""

from __future__ import annotations

import subprocess
from collections.abc import Callable

import pytest

from tests.support import SerProcess, free_port, need_tool, run_sipp

pytestmark = pytest.mark.interop

ROUTES = """\
from sipexpress.script.pyroute import forward, sl_send_reply

OPTIONS = {{"listen": "udp:{host}:{port} tcp:{host}:{port}", "sip_warning": 0}}
MODULES = ["sl"]


async def request_route(ctx):
    u = ctx.parsed_ruri
    if ctx.msg.method == "OPTIONS" and ctx.core.is_myself(u.host, u.port):
        return sl_send_reply(ctx, 200, "OK")
    return await forward(ctx, "{host}", {uas_port})
"""

CALLS = 500
RATE = 60  # ~8.5 s per run


@pytest.mark.parametrize("transport", ["u1", "t1"])
def test_sipp_calls_through_stateless_proxy(ser_factory: Callable[..., SerProcess], transport: str) -> None:
    sipp = need_tool("sipp")
    uas_port = free_port()
    ser = ser_factory(ROUTES, suffix=".py", uas_port=uas_port)
    uas = subprocess.Popen(
        [
            sipp,
            "-sn",
            "uas",
            "-t",
            transport,
            "-i",
            "127.0.0.1",
            "-p",
            str(uas_port),
            "-m",
            str(CALLS),
            "-nostdin",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        res = run_sipp(
            [
                "-sn",
                "uac",
                "-t",
                transport,
                "-i",
                "127.0.0.1",
                "-p",
                str(free_port()),
                f"127.0.0.1:{ser.port}",
                "-m",
                str(CALLS),
                "-r",
                str(RATE),
                "-timeout",
                "60s",
                "-timeout_error",
            ],
            timeout=90,
        )
    finally:
        if uas.poll() is None:
            uas.terminate()
        uas.wait(10)
    assert res.stats.get("Successful call") == str(CALLS), res.stdout[-3000:] + ser.log()[-3000:]
    assert res.stats.get("Failed call") == "0"
    assert res.ok
    assert ser.alive()
