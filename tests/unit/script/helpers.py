"""A minimal in-process core and a scripted test module for running
compiled ser.cfg routes against real SIP messages."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from sipexpress.core.api import CoreAPI
from sipexpress.core.context import Proto, ReceiveInfo, RequestContext, RouteTable
from sipexpress.core.options import normalize_options
from sipexpress.core.registry import FixupEnv, Module, Param, RouteType, ScriptFunction
from sipexpress.script.compiler import LoadedConfig, compile_config
from sipexpress.script.parser import parse_config
from sipexpress.sip.message import SipMessage


class MiniCore:
    """Implements CoreAPI in memory: forwards, sends and replies are
    recorded; ``myself`` is 127.0.0.1/localhost:5060 plus ``aliases``."""

    def __init__(
        self, myself: Sequence[tuple[str, int]] = (("127.0.0.1", 5060), ("localhost", 5060))
    ) -> None:
        self.options: dict[str, Any] = normalize_options({})
        self.routes = RouteTable({}, {}, {}, {})
        self.modules: dict[str, Module] = {}
        self.myself = {(h.lower(), p) for h, p in myself}
        self.forwarded: list[tuple[str | None, int | None, Proto | None, str]] = []
        self.sent: list[tuple[Proto, str, int, bytes]] = []
        self.replies: list[tuple[int, str]] = []
        self.tasks: list[asyncio.Future[Any]] = []

    def update_options(self, values: dict[str, Any]) -> None:
        self.options = normalize_options(values, self.options)

    def add_module(self, m: Module) -> None:
        self.modules[m.name] = m

    def module(self, name: str) -> Module | None:
        return self.modules.get(name)

    def now(self) -> float:
        return 0.0

    def call_later(self, delay: float, callback: Callable[[], Any]) -> Any:
        return None

    def spawn(self, coro: Awaitable[Any]) -> None:
        self.tasks.append(asyncio.ensure_future(coro))

    def is_myself(self, host: str, port: int | None = None, proto: Proto | None = None) -> bool:
        return (host.lower(), port or 5060) in self.myself

    def send(
        self,
        proto: Proto,
        ip: str,
        port: int,
        data: bytes,
        rcv: ReceiveInfo | None = None,
        on_error: Any = None,
    ) -> bool:
        self.sent.append((proto, ip, port, data))
        return True

    def build_reply(self, ctx: RequestContext, code: int, reason: str, *a: Any, **k: Any) -> bytes:
        return f"SIP/2.0 {code} {reason}\r\n\r\n".encode()

    def send_reply(self, ctx: RequestContext, code: int, reason: str, *a: Any, **k: Any) -> int:
        self.replies.append((code, reason))
        return 1

    async def forward(
        self,
        ctx: RequestContext,
        host: str | None = None,
        port: int | None = None,
        proto: Proto | None = None,
    ) -> int:
        self.forwarded.append((host, port, proto, ctx.ruri))
        return 1

    async def run_route(self, kind: RouteType, name: str, ctx: RequestContext) -> int:
        return -1


class ProbeModule(Module):
    """``probe(v)`` returns int(v) and counts calls; ``probe_async(v)`` the
    same, awaited; ``probe_failure()`` is allowed in failure routes only;
    ``t_relay()`` records a relay (for reply_route auto-relay)."""

    name = "probe"
    params = (Param("level", int, 0), Param("label", str, "x"))

    def __init__(self, core: CoreAPI) -> None:
        super().__init__(core)
        self.calls: list[str] = []
        self.relayed = 0

    def functions(self) -> Sequence[ScriptFunction]:
        return (
            ScriptFunction("probe", self.probe, (1,), _fix_int, RouteType.ANY),
            ScriptFunction("probe", self.probe2, (2,), None, RouteType.ANY),
            ScriptFunction("probe_async", self.probe_async, (1,), _fix_int, RouteType.ANY, is_async=True),
            ScriptFunction("probe_failure", self.probe_failure, (0,), None, RouteType.FAILURE),
            ScriptFunction("t_relay", self.t_relay, (0,), None, RouteType.ANY),
            ScriptFunction("boom", self.boom, (0,), None, RouteType.ANY),
            ScriptFunction("t_on_failure", self.t_on_failure, (1,), None, RouteType.ANY),
        )

    def probe(self, ctx: RequestContext, v: int) -> int:
        self.calls.append(str(v))
        return v

    def probe2(self, ctx: RequestContext, a: str, b: str) -> int:
        self.calls.append(f"{a}+{b}")
        return 1

    async def probe_async(self, ctx: RequestContext, v: int) -> int:
        await asyncio.sleep(0)
        self.calls.append(f"async{v}")
        return v

    def probe_failure(self, ctx: RequestContext) -> int:
        return 1

    def t_relay(self, ctx: RequestContext) -> int:
        self.relayed += 1
        return 1

    def t_on_failure(self, ctx: RequestContext, name: str) -> int:
        ctx.data["failure_route"] = name
        return 1

    def boom(self, ctx: RequestContext) -> int:
        raise RuntimeError("kaboom")


def _fix_int(args: Sequence[Any], env: FixupEnv) -> Sequence[Any]:
    from sipexpress.core.registry import ConfigError

    try:
        return (int(args[0]),)
    except ValueError:
        raise ConfigError(f"'{args[0]}' is not a number") from None


def request(
    ruri: str = "sip:alice@127.0.0.1",
    method: str = "INVITE",
    extra: str = "",
    body: str = "",
    from_uri: str = "sip:bob@example.com",
    to_uri: str | None = None,
) -> bytes:
    to_uri = to_uri or ruri
    b = body.encode()
    return (
        f"{method} {ruri} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 10.1.2.3:5060;branch=z9hG4bK{uuid.uuid4().hex[:10]}\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <{from_uri}>;tag=abc\r\n"
        f"To: <{to_uri}>\r\n"
        f"Call-ID: {uuid.uuid4().hex}@test\r\n"
        f"CSeq: 1 {method}\r\n"
        f"{extra}"
        f"Content-Length: {len(b)}\r\n\r\n"
    ).encode() + b


def make_ctx(
    core: CoreAPI,
    data: bytes,
    src: tuple[str, int] = ("10.1.2.3", 5060),
    dst: tuple[str, int] = ("127.0.0.1", 5060),
    proto: Proto = Proto.UDP,
    route_type: RouteType = RouteType.REQUEST,
) -> RequestContext:
    af = 10 if ":" in src[0] else 2
    rcv = ReceiveInfo(proto, src[0], src[1], dst[0], dst[1], af)
    return RequestContext(core, SipMessage.parse(data), rcv, route_type)


class Script:
    """A compiled config plus its core, ready to run routes."""

    def __init__(self, text: str, core: MiniCore | None = None) -> None:
        self.core = core or MiniCore()
        self.loaded: LoadedConfig = compile_config(parse_config(text, "test.cfg"), self.core)

    @property
    def probe(self) -> ProbeModule:
        m = self.loaded.module("probe")
        assert isinstance(m, ProbeModule)
        return m

    async def run(
        self, data: bytes | None = None, route: str = "0", kind: str = "request", **kw: Any
    ) -> tuple[int, RequestContext]:
        ctx = make_ctx(self.core, data or request(), **kw)
        fn = getattr(self.loaded.routes, kind)[route]
        return await fn(ctx), ctx
