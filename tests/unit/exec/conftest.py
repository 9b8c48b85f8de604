"""Fixtures for the exec unit tests: a real parsed request in a real
RequestContext, and a started ExecModule.

The exec module never calls into the core (it only reads the context), so
the context gets a core object that refuses every use: a test fails if
that ever changes.

Every async test runs three times: on the asyncio loop, on uvloop (the
server's loop, whose subprocess pipes behave differently) and with the
spawner used where ``os.pidfd_open`` is missing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import uvloop

from sipexpress.core.context import Proto, ReceiveInfo, RequestContext
from sipexpress.core.registry import RouteType
from sipexpress.modules.exec import ExecModule, process
from sipexpress.sip.message import SipMessage
from tests.unit.exec.seed import SEED_REQUEST, SEED_SRC_IP, SEED_SRC_PORT


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    return {
        "asyncio": asyncio.new_event_loop,
        "uvloop": uvloop.new_event_loop,
        "asyncio-nopidfd": asyncio.new_event_loop,
    }


@pytest.fixture(autouse=True)
def spawner(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Which spawner the test uses (see sipexpress.modules.exec.process)."""
    if "nopidfd" in request.node.name:
        monkeypatch.setattr(process, "USE_PIDFD", False)
        return "asyncio"
    if not process.USE_PIDFD:
        pytest.skip("no os.pidfd_open here")
    return "pidfd"


class UnusedCore:
    """Stands where the core would be; exec must not need it."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"exec used core.{name}")


MakeCtx = Callable[..., RequestContext]


@pytest.fixture
def make_ctx() -> MakeCtx:
    def make(
        raw: bytes = SEED_REQUEST,
        src_ip: str = SEED_SRC_IP,
        src_port: int = SEED_SRC_PORT,
        route_type: RouteType = RouteType.REQUEST,
    ) -> RequestContext:
        msg = SipMessage.parse(raw)
        rcv = ReceiveInfo(Proto.UDP, src_ip, src_port, "127.0.0.1", 5060)
        return RequestContext(UnusedCore(), msg, rcv, route_type)  # type: ignore[arg-type]

    return make


@pytest.fixture
async def exec_mod() -> AsyncIterator[ExecModule]:
    mod = ExecModule(UnusedCore())  # type: ignore[arg-type]
    await mod.start()
    yield mod
    await mod.stop()


def request(
    ruri: str = "sip:jiri@iptel.org",
    headers: list[str] | None = None,
    body: bytes = b"",
    method: str = "INVITE",
) -> bytes:
    """A small valid request; ``headers`` replace the default set."""
    hs = headers or [
        "Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK776asdhds",
        "Max-Forwards: 70",
        "From: <sip:alice@iptel.org>;tag=1928301774",
        "To: <sip:jiri@iptel.org>",
        "Call-ID: a84b4c76e66710@10.0.0.1",
        f"CSeq: 314159 {method}",
    ]
    head = f"{method} {ruri} SIP/2.0\r\n" + "".join(h + "\r\n" for h in hs)
    if not any(h.lower().startswith(("content-length:", "l:")) for h in hs):
        head += f"Content-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body
