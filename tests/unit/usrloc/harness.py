"""An in-process Core with usrloc + registrar on a real UDP socket, and a
UDP client that sends REGISTERs and reads the replies."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from sipexpress.core.context import RequestContext, RouteTable
from sipexpress.core.registry import FixupEnv
from sipexpress.core.runner import Runner
from sipexpress.core.server import Core
from sipexpress.modules.registrar import RegistrarModule
from sipexpress.modules.usrloc import Udomain, UsrlocModule
from sipexpress.sip.message import SipMessage
from tests.support import free_port


class _Client(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.queue.put_nowait(data)


class Harness:
    def __init__(self) -> None:
        self.port = free_port()
        self.core = Core({"listen": f"udp:127.0.0.1:{self.port}", "sip_warning": 0})
        self.runner = Runner(self.core)
        self.ul: UsrlocModule = self.core.load_module("usrloc")  # type: ignore[assignment]
        self.reg: RegistrarModule = self.core.load_module("registrar")  # type: ignore[assignment]
        self.transport: asyncio.DatagramTransport | None = None
        self.client = _Client()
        self.cport = 0
        self.lookups: list[tuple[int, str, str | None, list[tuple[str, int, str | None]]]] = []

    def table(self, name: str = "location") -> Udomain:
        return self.reg._fixup_table((name,), FixupEnv(self.core, self.reg))[0]  # type: ignore[no-any-return]

    async def start(self, ul: dict[str, Any] | None = None, reg: dict[str, Any] | None = None) -> None:
        for k, v in (ul or {}).items():
            self.core.set_modparam("usrloc", k, v)
        for k, v in (reg or {}).items():
            self.core.set_modparam("registrar", k, v)
        loc = self.table("location")

        async def route(ctx: RequestContext) -> int:
            if ctx.msg.method == "REGISTER":
                return await self.reg.save(ctx, loc)
            rc = await self.reg.lookup(ctx, loc)
            self.lookups.append((rc, ctx.ruri, ctx.dst_uri, [(b.uri, b.q, b.dst_uri) for b in ctx.branches]))
            if rc > 0:
                ctx.core.send_reply(ctx, 302, "Moved Temporarily")
            else:
                ctx.core.send_reply(ctx, 404, f"Not Found {rc}")
            return 1

        self.core.set_routes(RouteTable({"0": route}, {}, {}, {}))
        await self.runner.start()
        loop = asyncio.get_running_loop()
        self.transport, _ = await loop.create_datagram_endpoint(
            lambda: self.client, local_addr=("127.0.0.1", 0)
        )
        self.cport = self.transport.get_extra_info("sockname")[1]

    async def stop(self) -> None:
        if self.transport is not None:
            self.transport.close()
        await self.runner.stop()

    async def send(self, data: bytes | str, timeout: float = 3.0) -> SipMessage:
        if isinstance(data, str):
            data = data.encode()
        assert self.transport is not None
        self.transport.sendto(data, ("127.0.0.1", self.port))
        raw = await asyncio.wait_for(self.client.queue.get(), timeout)
        return SipMessage.parse(raw)

    def register(
        self,
        user: str = "jiri",
        contacts: list[str] | None = None,
        expires: int | None = None,
        callid: str | None = None,
        cseq: int = 1,
        extra: str = "",
    ) -> str:
        lines = [
            f"REGISTER sip:127.0.0.1:{self.port} SIP/2.0",
            f"Via: SIP/2.0/UDP 127.0.0.1:{self.cport};branch=z9hG4bK{uuid.uuid4().hex[:12]}",
            "Max-Forwards: 70",
            f"From: <sip:{user}@127.0.0.1>;tag={uuid.uuid4().hex[:6]}",
            f"To: <sip:{user}@127.0.0.1>",
            f"Call-ID: {callid or uuid.uuid4().hex}",
            f"CSeq: {cseq} REGISTER",
        ]
        lines += [f"Contact: {c}" for c in contacts or []]
        if expires is not None:
            lines.append(f"Expires: {expires}")
        if extra:
            lines.append(extra.rstrip("\r\n"))
        lines += ["Content-Length: 0", "", ""]
        return "\r\n".join(lines)

    def invite(self, user: str) -> str:
        return "\r\n".join(
            [
                f"INVITE sip:{user}@127.0.0.1:{self.port} SIP/2.0",
                f"Via: SIP/2.0/UDP 127.0.0.1:{self.cport};branch=z9hG4bK{uuid.uuid4().hex[:12]}",
                "Max-Forwards: 70",
                f"From: <sip:caller@127.0.0.1>;tag={uuid.uuid4().hex[:6]}",
                f"To: <sip:{user}@127.0.0.1>",
                f"Call-ID: {uuid.uuid4().hex}",
                "CSeq: 1 INVITE",
                "Content-Length: 0",
                "",
                "",
            ]
        )
