"""The web interface inside ``ser`` (option ``web_listen``): it starts with
the server, stops with it, and a taken port costs the web page only, not
the SIP service."""

from __future__ import annotations

import socket
import time
from typing import Any

import httpx
import pytest

from tests.support import free_port, options_request, udp_exchange, wait_for

pytestmark = pytest.mark.interop

CFG = """
listen=udp:127.0.0.1:{port}
jsonrpc_http="127.0.0.1:{rpc_port}"
web_listen="127.0.0.1:{web_port}"
web_secret="test-secret"
web_db_url="sqlite:///{workdir}/web.sqlite"
loadmodule "sl"
route {{ sl_send_reply("200", "ok"); }}
"""


def wait_http(url: str, timeout: float = 10) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return httpx.get(url, timeout=1)
        except httpx.HTTPError:
            assert time.monotonic() < deadline, f"{url} did not answer"
            time.sleep(0.1)


def test_web_starts_and_stops_with_ser(ser_factory: Any) -> None:
    web_port = free_port()
    sp = ser_factory(CFG, rpc_port=free_port(), web_port=web_port)
    r = wait_http(f"http://127.0.0.1:{web_port}/login")
    assert r.status_code == 200 and "Log in" in r.text
    assert r.headers["x-frame-options"] == "DENY"
    assert sp.stop() == 0
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{web_port}/login", timeout=1)


def test_taken_web_port_leaves_sip_running(ser_factory: Any) -> None:
    blocker = socket.socket()
    blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    blocker.bind(("127.0.0.1", 0))
    blocker.listen(1)
    try:
        sp = ser_factory(CFG, rpc_port=free_port(), web_port=blocker.getsockname()[1])
        assert wait_for(lambda: "web interface stopped" in sp.log(), 10.0), sp.log()
        assert sp.alive()
        assert udp_exchange(options_request("127.0.0.1", sp.port), "127.0.0.1", sp.port) is not None
    finally:
        blocker.close()
