"""Fixtures for the auth/auth_db/uri/uri_db/group/domain module tests.

Everything is real: a :class:`~sipexpress.core.server.Core` bound to a free
UDP port on 127.0.0.1 with the modules loaded and a Python request route,
a database made by ``create_all`` (SQLite always; MariaDB and PostgreSQL
when their servers run, required in CI), and a UDP client socket that sends
requests and reads the replies the core sends back.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from sipexpress.core.context import RequestContext, RouteTable
from sipexpress.core.runner import Runner
from sipexpress.core.server import Core
from sipexpress.db import add_user, create_all
from sipexpress.sip.digest import calc_ha1, calc_response
from sipexpress.sip.message import SipMessage
from tests.support import free_port
from tests.unit.db.dbfixtures import cleanup, new_db_url

Route = Callable[[RequestContext], Awaitable[int]]

DOMAIN = "iptel.org"
USERS = [("jiri", DOMAIN, "secret"), ("alice", DOMAIN, "wonder"), ("bob", "example.com", "builder")]


class UdpClient(asyncio.DatagramProtocol):
    """A UDP socket on 127.0.0.1 that queues every datagram it receives."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None
        self.port = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.port = transport.get_extra_info("sockname")[1]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.queue.put_nowait(data)

    async def request(self, data: bytes, port: int, timeout: float = 3.0) -> SipMessage | None:
        assert self.transport is not None
        while not self.queue.empty():
            self.queue.get_nowait()
        self.transport.sendto(data, ("127.0.0.1", port))
        try:
            raw = await asyncio.wait_for(self.queue.get(), timeout)
        except TimeoutError:
            return None
        return SipMessage.parse(raw)


@dataclass
class Server:
    runner: Runner
    port: int
    client: UdpClient
    db_url: str
    route: Route | None = None
    results: list[Any] = field(default_factory=list)

    @property
    def core(self) -> Core:
        return self.runner.core

    async def send(self, data: bytes, timeout: float = 3.0) -> SipMessage | None:
        return await self.client.request(data, self.port, timeout)


def request(
    method: str = "REGISTER",
    ruri: str = f"sip:{DOMAIN}",
    from_uri: str = f"sip:jiri@{DOMAIN}",
    to_uri: str | None = None,
    extra: list[str] | None = None,
    call_id: str | None = None,
    cseq: int = 1,
    body: bytes = b"",
    to_tag: str | None = None,
) -> bytes:
    to_uri = to_uri or (from_uri if method == "REGISTER" else ruri)
    lines = [
        f"{method} {ruri} SIP/2.0",
        f"Via: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK{uuid.uuid4().hex[:16]};rport",
        "Max-Forwards: 70",
        f"From: <{from_uri}>;tag={uuid.uuid4().hex[:8]}",
        f"To: <{to_uri}>" + (f";tag={to_tag}" if to_tag else ""),
        f"Call-ID: {call_id or uuid.uuid4().hex}@test",
        f"CSeq: {cseq} {method}",
        *(extra or []),
        f"Content-Length: {len(body)}",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def authorization(
    challenge: SipMessage,
    username: str,
    password: str,
    method: str = "REGISTER",
    uri: str = f"sip:{DOMAIN}",
    nc: int = 1,
    realm: str | None = None,
    hf: str = "Authorization",
    qop: bool | None = None,
    cnonce: str = "0a4f113b",
) -> str:
    """An Authorization header line answering the challenge in a 401/407."""
    ch = (challenge.www_authenticate or challenge.proxy_authenticate)[0]
    realm = realm if realm is not None else ch.get("realm") or ""
    nonce = ch.get("nonce") or ""
    use_qop = ("auth" in (ch.get("qop") or "")) if qop is None else qop
    ha1 = calc_ha1(username, realm, password)
    ncs = f"{nc:08x}"
    if use_qop:
        resp = calc_response(ha1, nonce, method, uri, "auth", ncs, cnonce)
        extra = f', qop=auth, nc={ncs}, cnonce="{cnonce}"'
    else:
        resp = calc_response(ha1, nonce, method, uri)
        extra = ""
    return (
        f'{hf}: Digest username="{username}", realm="{realm}", nonce="{nonce}", uri="{uri}", '
        f'response="{resp}", algorithm=MD5{extra}'
    )


async def start_server(
    db_url: str,
    modules: list[str],
    modparams: list[tuple[str, str, Any]] | None = None,
    route: Route | None = None,
    options: dict[str, Any] | None = None,
) -> Server:
    port = free_port()
    core = Core({"listen": f"udp:127.0.0.1:{port}", "dns": False, "rev_dns": False, **(options or {})})
    for m in modules:
        core.load_module(m)
    for m in modules:
        if m in ("auth_db", "uri_db", "group", "domain"):
            core.set_modparam(m, "db_url", db_url)
    for mod, name, value in modparams or []:
        core.set_modparam(mod, name, value)
    loop = asyncio.get_running_loop()
    client = UdpClient()
    await loop.create_datagram_endpoint(lambda: client, local_addr=("127.0.0.1", 0))
    srv = Server(Runner(core), port, client, db_url, route)

    async def main(ctx: RequestContext) -> int:
        assert srv.route is not None
        return await srv.route(ctx)

    core.set_routes(RouteTable({"0": main}, {}, {}, {}))
    await srv.runner.start()
    return srv


async def make_db(url: str, users: list[tuple[str, str, str]] = USERS) -> None:
    await create_all(url)
    for u, d, p in users:
        await add_user(url, u, d, p, f"{u}@{d}")


@pytest.fixture
async def sqlite_url(tmp_path: Path) -> AsyncIterator[str]:
    url = new_db_url("sqlite", tmp_path)
    await make_db(url)
    yield url
    await cleanup(url)


@pytest.fixture(params=["sqlite", "mysql", "postgres"])
async def any_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    url = new_db_url(request.param, tmp_path)
    try:
        await make_db(url)
        yield url
    finally:
        await cleanup(url)


@pytest.fixture
async def servers() -> AsyncIterator[list[Server]]:
    """Started servers are stopped at the end of the test."""
    started: list[Server] = []
    yield started
    for s in started:
        await s.runner.stop()
        if s.client.transport is not None:
            s.client.transport.close()
