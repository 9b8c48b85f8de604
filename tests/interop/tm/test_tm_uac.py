"""The UAC API (``core.module("tm").request``) on a real in-process Core."""

from __future__ import annotations

import asyncio
import threading

import pytest

from sipexpress.core.runner import Runner
from sipexpress.core.server import Core
from sipexpress.modules.tm import TmModule
from tests.interop.tm.phone import Phone, reply_addr, reply_to
from tests.support import free_port

pytestmark = pytest.mark.interop


async def make_core() -> tuple[Runner, TmModule]:
    port = free_port()
    core = Core({"listen": [f"udp:127.0.0.1:{port}"], "sip_warning": False})
    tm = core.load_module("tm")
    assert isinstance(tm, TmModule)
    tm.set_param("fr_timer", 2)
    runner = Runner(core)
    await runner.start()
    return runner, tm


def uas_thread(phone: Phone, script: list[tuple[str, int]], seen: list[str]) -> threading.Thread:
    """Answer each expected request with a status (0 = stay silent)."""

    def run() -> None:
        for method, status in script:
            req = phone.expect(method, timeout=5)
            seen.append(f"{req.method} {req.via1.branch}")
            if status:
                phone.send(reply_to(req, status, "Reason"), reply_addr(req))

    th = threading.Thread(target=run, daemon=True)
    th.start()
    return th


async def test_uac_request_non_invite_and_invite_negative() -> None:
    runner, tm = await make_core()
    uas = Phone()
    seen: list[str] = []
    th = uas_thread(uas, [("OPTIONS", 200), ("INVITE", 486), ("ACK", 0)], seen)
    try:
        target = f"sip:uas@127.0.0.1:{uas.port}"
        r = await tm.request("OPTIONS", target)
        assert r.status == 200 and r.reply is not None and r.reply.status == 200
        r2 = await tm.request("INVITE", target, [("Contact", "<sip:me@127.0.0.1>")])
        assert r2.status == 486
        await asyncio.get_running_loop().run_in_executor(None, th.join, 5)
        # the ACK for the 486 used the INVITE's branch (RFC 3261 §17.1.1.3)
        assert seen[1].split()[1] == seen[2].split()[1]
        assert tm.layer.stats.local == 2
    finally:
        uas.close()
        await runner.stop()


async def test_uac_request_timeout_408() -> None:
    runner, tm = await make_core()
    uas = Phone()
    try:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        r = await tm.request(
            "MESSAGE", f"sip:uas@127.0.0.1:{uas.port}", body=b"hi", content_type="text/plain"
        )
        assert r.status == 408 and r.reply is None
        assert 1.9 <= loop.time() - t0 < 3.5
        got = uas.drain(0.1)
        assert sum(1 for m in got if m.is_request and m.method == "MESSAGE") >= 2  # retransmitted
    finally:
        uas.close()
        await runner.stop()
