"""tm's proxy layer without sockets: a real Core whose clock is virtual and
whose UDP socket is a list of what was sent."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from sipexpress.core.context import Proto, ReceiveInfo, RequestContext, RouteTable
from sipexpress.core.registry import FixupEnv
from sipexpress.core.server import Core
from sipexpress.modules.tm import TmModule
from sipexpress.sip.message import SipMessage

PROXY = ("127.0.0.1", 5060)
UAC = ("192.0.2.1", 5070)


class VirtualClock:
    """``now`` and ``call_later`` of an event loop, moved by hand."""

    def __init__(self) -> None:
        self.now = 0.0
        self._queue: list[tuple[float, int, Handle]] = []
        self._seq = itertools.count()

    def call_later(self, delay: float, callback: Callable[[], Any]) -> Handle:
        handle = Handle(callback)
        heapq.heappush(self._queue, (self.now + delay, next(self._seq), handle))
        return handle

    def advance(self, seconds: float) -> None:
        """Move the clock, running what falls due on the way at its time."""
        end = self.now + seconds
        while self._queue and self._queue[0][0] <= end:
            when, _, handle = heapq.heappop(self._queue)
            self.now = max(self.now, when)
            if not handle.cancelled:
                handle.callback()
        self.now = end


class Handle:
    def __init__(self, callback: Callable[[], Any]) -> None:
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class Wire:
    """The proxy's UDP socket: what it sends, with the virtual time."""

    proto = Proto.UDP
    af = 2
    ip, port = PROXY
    via_port = PROXY[1]
    via_host = PROXY[0]

    def __init__(self, clock: VirtualClock) -> None:
        self.clock = clock
        self.sent: list[tuple[float, tuple[str, int], SipMessage]] = []

    def sendto(self, data: bytes, ip: str, port: int) -> bool:
        self.sent.append((self.clock.now, (ip, port), SipMessage.parse(data)))
        return True

    def take(self) -> list[tuple[tuple[str, int], SipMessage]]:
        """What was sent since the last call."""
        out = [(dst, msg) for _, dst, msg in self.sent]
        self.sent.clear()
        return out


class VirtualCore(Core):
    def __init__(self, clock: VirtualClock) -> None:
        super().__init__({"listen": [f"udp:{PROXY[0]}:{PROXY[1]}"], "sip_warning": 0, "dns": False})
        self.clock = clock

    def now(self) -> float:
        return self.clock.now

    def call_later(self, delay: float, callback: Callable[[], Any]) -> Any:
        return self.clock.call_later(delay, callback)


Route = Callable[[RequestContext], Awaitable[int]]


class Proxy:
    """A Core with tm, routes given by the test, a virtual clock."""

    def __init__(self) -> None:
        self.clock = VirtualClock()
        self.core = VirtualCore(self.clock)
        self.wire = Wire(self.clock)
        self.core.udp_listeners.append(self.wire)  # type: ignore[arg-type]
        tm = self.core.load_module("tm")
        assert isinstance(tm, TmModule)
        self.tm = tm

    async def start(self, request: Route, failure: dict[str, Route] | None = None) -> None:
        self.core.set_routes(RouteTable({"0": request}, failure or {}, {}, {}))
        await self.tm.start()

    def script(self, ctx: RequestContext, name: str, *args: str) -> Any:
        """tm's script function ``name`` called as a route would (its
        fix-up applied to ``args``)."""
        fn = next(f for f in self.tm.functions() if f.name == name and len(args) in f.arities)
        fixed = fn.fixup(args, FixupEnv(self.core, self.tm)) if fn.fixup is not None else args
        return fn.handler(ctx, *fixed)

    def receive(self, data: bytes, src: tuple[str, int]) -> None:
        self.core.receive(data, ReceiveInfo(Proto.UDP, src[0], src[1], PROXY[0], PROXY[1], 2, self.wire))


def invite(ruri: str = "sip:bob@192.0.2.10:5080", branch: str = "z9hG4bKuac1") -> bytes:
    return (
        f"INVITE {ruri} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {UAC[0]}:{UAC[1]};branch={branch}\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:alice@example.com>;tag=a1\r\nTo: <{ruri}>\r\n"
        "Call-ID: call-1@example.com\r\nCSeq: 1 INVITE\r\n"
        f"Contact: <sip:alice@{UAC[0]}:{UAC[1]}>\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def answer(request: SipMessage, status: int, reason: str, to_tag: str = "b1") -> bytes:
    """A downstream reply to a request the proxy sent: its Vias, From,
    To (with ``to_tag``), Call-ID and CSeq."""
    vias = "".join(f"Via: {v}\r\n" for v in request.header_all("via"))
    to = request.header("to") or ""
    return (
        f"SIP/2.0 {status} {reason}\r\n{vias}From: {request.header('from')}\r\n"
        f"To: {to};tag={to_tag}\r\nCall-ID: {request.call_id}\r\nCSeq: {request.header('cseq')}\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


@pytest.fixture
def proxy() -> Proxy:
    return Proxy()
