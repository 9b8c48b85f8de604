"""SER's core actions (cfg-language.md §8): ``forward``, ``rewritehost``,
``setflag``, ``log`` ...

Each action is a :class:`CoreAction`: its spellings, the handler
``handler(ctx, *args) -> int`` (SER's action contract: > 0 true, < 0 false,
0 stops the current block) and a ``convert`` step run once at compile time
that checks the script's arguments and turns them into the handler's
arguments.  ``route(n)``, ``if``, ``return``/``exit`` are compiled by
:mod:`sipexpress.script.compiler` itself.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sipexpress.core.context import Proto, RequestContext
from sipexpress.core.registry import RouteType
from sipexpress.script import ast

log = logging.getLogger("sipexpress.script")

#: SER's BUF_SIZE, the value of ``max_len``
MAX_LEN = 65535
MAX_FLAG = 31


class ArgError(Exception):
    """A bad argument, located at ``node``."""

    def __init__(self, message: str, node: ast.Node | None = None) -> None:
        super().__init__(message)
        self.node = node


Converter = Callable[[list[ast.Value], ast.Call], tuple[Any, ...]]


@dataclass(frozen=True, slots=True)
class CoreAction:
    names: tuple[str, ...]
    handler: Callable[..., Any]
    convert: Converter
    is_async: bool = False
    bare_ok: bool = False  # may be written without "()" (drop, break ...)
    can_stop: bool = False  # may return 0 (only drop/break among core actions)


# ---------------------------------------------------------------------------
# argument helpers (compile time)
def _describe(v: ast.Value) -> str:
    if isinstance(v, ast.Str):
        return f'string "{v.value}"'
    if isinstance(v, ast.Num):
        return f"number {v.value}"
    if isinstance(v, ast.Name):
        return f"'{v.value}'"
    if isinstance(v, ast.Keyword):
        return f"'{v.value}'"
    return "address"


def _count(call: ast.Call, args: list[ast.Value], *allowed: int) -> None:
    if len(args) not in allowed:
        want = " or ".join(str(a) for a in allowed)
        s = "" if allowed == (1,) else "s"
        raise ArgError(f"{call.name}() takes {want} argument{s}, {len(args)} given", call)


def _int(v: ast.Value, what: str, call: ast.Call, lo: int | None = None, hi: int | None = None) -> int:
    if isinstance(v, ast.Num):
        n = v.value
    elif isinstance(v, ast.Str):
        try:
            n = int(v.value.strip(), 0)
        except ValueError:
            raise ArgError(f"{call.name}(): {what} must be a number, got {_describe(v)}", v) from None
    else:
        raise ArgError(f"{call.name}(): {what} must be a number, got {_describe(v)}", v)
    if (lo is not None and n < lo) or (hi is not None and n > hi):
        raise ArgError(f"{call.name}(): {what} {n} out of range {lo}..{hi}", v)
    return n


def _str(v: ast.Value, what: str, call: ast.Call) -> str:
    if isinstance(v, ast.Str):
        return v.value
    if isinstance(v, ast.Num):
        return v.text or str(v.value)
    if isinstance(v, (ast.Name, ast.Ip)):
        return v.value
    raise ArgError(f"{call.name}(): {what} must be a string, got {_describe(v)}", v)


def _host(v: ast.Value, call: ast.Call) -> str:
    if isinstance(v, ast.Str) and v.value:
        return v.value
    if isinstance(v, (ast.Name, ast.Ip)):
        return v.value
    raise ArgError(f"{call.name}(): host name or IP address expected, got {_describe(v)}", v)


def _port(v: ast.Value, call: ast.Call) -> int:
    return _int(v, "port", call, 0, 65535)


# ---------------------------------------------------------------------------
# forwarding
def _conv_forward(args: list[ast.Value], call: ast.Call) -> tuple[Any, ...]:
    _count(call, args, 1, 2)
    host: str | None
    port: int | None = None
    if isinstance(args[0], ast.Keyword) and args[0].value == "uri:host":
        host = None
    elif isinstance(args[0], ast.Keyword):
        raise ArgError(f"{call.name}(): '{args[0].value}' cannot be used as host", args[0])
    else:
        host = _host(args[0], call)
    if len(args) == 2:
        p = args[1]
        if isinstance(p, ast.Keyword) and p.value == "uri:port":
            if host is not None:
                raise ArgError(f"{call.name}(): uri:port needs uri:host", p)
        else:
            port = _port(p, call)
    return (host, port)


def _make_forward(proto: Proto | None) -> Callable[..., Any]:
    async def forward(ctx: RequestContext, host: str | None = None, port: int | None = None) -> int:
        return await ctx.core.forward(ctx, host, port, proto)

    return forward


_resolved: dict[str, str] = {}


def _resolve(host: str) -> str:
    """A literal host of send()/forward() resolved once (SER did it at
    start-up)."""
    ip = _resolved.get(host)
    if ip is None:
        try:
            ip = str(socket.getaddrinfo(host, None, proto=socket.IPPROTO_UDP)[0][4][0])
        except OSError:
            return ""
        _resolved[host] = ip
    return ip


def _conv_send(args: list[ast.Value], call: ast.Call) -> tuple[Any, ...]:
    _count(call, args, 1, 2)
    host = _host(args[0], call)
    port = _port(args[1], call) if len(args) == 2 else 5060
    return (host, port)


def _make_send(proto: Proto | None) -> Callable[..., Any]:
    def send(ctx: RequestContext, host: str, port: int = 5060) -> int:
        ip = _resolve(host)
        if not ip:
            log.error("send(): cannot resolve %s", host)
            return -1
        p = proto if proto is not None else ctx.rcv.proto
        return 1 if ctx.core.send(p, ip, port, ctx.msg.raw) else -1

    return send


# ---------------------------------------------------------------------------
# control, logging
def _conv_none(args: list[ast.Value], call: ast.Call) -> tuple[Any, ...]:
    _count(call, args, 0)
    return ()


def drop(ctx: RequestContext) -> int:
    if ctx.route_type is RouteType.REQUEST:
        ctx.core.stats.dropped_requests += 1
    return 0


def _conv_log(args: list[ast.Value], call: ast.Call) -> tuple[Any, ...]:
    from sipexpress.core.logging import std_level

    _count(call, args, 1, 2)
    level = 4  # L_DBG when omitted
    if len(args) == 2:
        level = _int(args[0], "log level", call)
    text = _str(args[-1], "text", call)
    if text.endswith("\n"):
        text = text[:-1]
    return (std_level(level), text)


def log_action(ctx: RequestContext, level: int, text: str) -> int:
    log.log(level, "%s", text)
    return 1


def _conv_error(args: list[ast.Value], call: ast.Call) -> tuple[Any, ...]:
    _count(call, args, 2)
    return (_str(args[0], "first argument", call), _str(args[1], "second argument", call))


def error_action(ctx: RequestContext, a: str, b: str) -> int:
    log.info("error(%r, %r) is not implemented (as in SER)", a, b)
    return 1


def _conv_exec(args: list[ast.Value], call: ast.Call) -> tuple[Any, ...]:
    _count(call, args, 1)
    return (_str(args[0], "command", call),)


async def exec_action(ctx: RequestContext, cmd: str) -> int:
    """SER's ``exec("cmd")``: system(cmd), result ignored.  The shell runs
    without blocking other requests; this script waits for it."""
    try:
        proc = await asyncio.create_subprocess_shell(cmd)
        await proc.wait()
    except OSError as e:
        log.error("exec(%r) failed: %s", cmd, e)
    return 1


# ---------------------------------------------------------------------------
# flags
def _conv_flag(args: list[ast.Value], call: ast.Call) -> tuple[Any, ...]:
    _count(call, args, 1)
    return (_int(args[0], "flag", call, 0, MAX_FLAG),)


def setflag(ctx: RequestContext, n: int) -> int:
    ctx.flags |= 1 << n
    return 1


def resetflag(ctx: RequestContext, n: int) -> int:
    ctx.flags &= ~(1 << n)
    return 1


def isflagset(ctx: RequestContext, n: int) -> int:
    return 1 if ctx.flags & (1 << n) else -1


# ---------------------------------------------------------------------------
# request URI rewriting (action.c SET_*_T: the URI is rebuilt, scheme sip:)
def _conv_str1(args: list[ast.Value], call: ast.Call) -> tuple[Any, ...]:
    _count(call, args, 1)
    return (_str(args[0], "argument", call),)


def rewriteuri(ctx: RequestContext, uri: str) -> int:
    ctx.set_ruri(uri)
    return 1


def _rebuild(ctx: RequestContext, what: str, value: str) -> int:
    try:
        u = ctx.parsed_ruri.copy()
    except Exception as e:
        log.error("%s: cannot parse request URI %r: %s", what, ctx.ruri, e)
        return -1
    if u.scheme == "tel":
        u.host = ""
    u.scheme = "sip"
    if what == "host":
        u.host = value
    elif what == "hostport":
        host, _, port = value.partition(":")
        u.host = host
        u.port = int(port) if port.isdigit() else None
    elif what == "port":
        u.port = int(value) if value.isdigit() else None
    elif what == "user":
        u.user = value or None
        if u.user is None:
            u.password = None
    elif what == "userpass":
        u.user, u.password = (value or None), None
    elif what == "prefix":
        u.user = value + (u.user or "")
    _set_parsed(ctx, u)
    return 1


def _set_parsed(ctx: RequestContext, u: Any) -> None:
    """Set the request URI to ``str(u)`` and keep ``u`` as its parsed form
    (it is exactly what parsing that text gives), so the next rewrite or
    ``uri==myself`` does not parse it again."""
    ctx.set_ruri(str(u))
    ctx._parsed_ruri = u


def _make_rewrite(what: str) -> Callable[[RequestContext, str], int]:
    def rewrite(ctx: RequestContext, value: str) -> int:
        return _rebuild(ctx, what, value)

    rewrite.__name__ = f"rewrite{what}"
    return rewrite


def _conv_port(args: list[ast.Value], call: ast.Call) -> tuple[Any, ...]:
    _count(call, args, 1)
    text = _str(args[0], "port", call)
    if text and not text.isdigit():
        raise ArgError(f"{call.name}(): port must be a number, got {_describe(args[0])}", args[0])
    return (text,)


def _conv_strip(args: list[ast.Value], call: ast.Call) -> tuple[Any, ...]:
    _count(call, args, 1)
    return (_int(args[0], "length", call, 0),)


def _strip(ctx: RequestContext, n: int, tail: bool) -> int:
    try:
        u = ctx.parsed_ruri.copy()
    except Exception as e:
        log.error("strip: cannot parse request URI %r: %s", ctx.ruri, e)
        return -1
    user = u.user or ""
    if n >= len(user):
        if n > len(user):
            log.warning("strip%s(%d): user part %r is shorter", "_tail" if tail else "", n, user)
        user = ""
    else:
        user = user[: len(user) - n] if tail else user[n:]
    u.scheme = "sip" if u.scheme == "tel" else u.scheme
    u.user = user or None
    if u.user is None:
        u.password = None
    _set_parsed(ctx, u)
    return 1


def strip(ctx: RequestContext, n: int) -> int:
    return _strip(ctx, n, False)


def strip_tail(ctx: RequestContext, n: int) -> int:
    return _strip(ctx, n, True)


def revert_uri(ctx: RequestContext) -> int:
    ctx.revert_uri()
    return 1


# ---------------------------------------------------------------------------
# destination set
def _conv_append_branch(args: list[ast.Value], call: ast.Call) -> tuple[Any, ...]:
    _count(call, args, 0, 1, 2)
    uri = _str(args[0], "URI", call) if args else None
    q = -1
    if len(args) == 2:
        text = _str(args[1], "q", call)
        try:
            qf = float(text)
        except ValueError:
            raise ArgError(f"append_branch(): bad q value {text!r}", args[1]) from None
        if not 0 <= qf <= 1:
            raise ArgError(f"append_branch(): q {text} out of range 0..1", args[1])
        q = round(qf * 1000)
    return (uri, q)


def append_branch(ctx: RequestContext, uri: str | None = None, q: int = -1) -> int:
    if not ctx.append_branch(uri or None, q):
        log.error("append_branch: too many branches")
        return -1
    return 1


def _conv_len_gt(args: list[ast.Value], call: ast.Call) -> tuple[Any, ...]:
    _count(call, args, 1)
    v = args[0]
    if isinstance(v, ast.Name) and v.value == "max_len":
        return (MAX_LEN,)
    return (_int(v, "length", call, 0),)


def len_gt(ctx: RequestContext, n: int) -> int:
    return 1 if len(ctx.msg.raw) >= n else -1


# ---------------------------------------------------------------------------
# transport tweaks
def force_rport(ctx: RequestContext) -> int:
    ctx.force_rport = True
    return 1


def _conv_tcp_alias(args: list[ast.Value], call: ast.Call) -> tuple[Any, ...]:
    _count(call, args, 0, 1)
    return (_port(args[0], call) if args else 0,)


def force_tcp_alias(ctx: RequestContext, port: int = 0) -> int:
    """Remember that the TCP connection also serves the source address
    with the Via's port (the core consults ``ctx.data["tcp_alias"]`` when
    it sends)."""
    if ctx.rcv.proto not in (Proto.TCP, Proto.TLS):
        return 1
    if not port:  # SER: the port of the top Via (5060 when absent)
        try:
            port = ctx.msg.via1.port or 5060
        except Exception:
            port = 5060
    ctx.data["tcp_alias"] = port
    return 1


def set_advertised_address(ctx: RequestContext, addr: str) -> int:
    ctx.data["advertised_address"] = addr
    return 1


def _conv_adv_port(args: list[ast.Value], call: ast.Call) -> tuple[Any, ...]:
    _count(call, args, 1)
    return (_port(args[0], call),)


def set_advertised_port(ctx: RequestContext, port: int) -> int:
    ctx.data["advertised_port"] = port
    return 1


def _addr_text(v: ast.Value, call: ast.Call) -> str:
    if isinstance(v, ast.Addr):
        parts = []
        for p in v.parts:
            if isinstance(p, ast.Ip) and p.v6:
                parts.append(f"[{p.value}]")
            elif isinstance(p, ast.Star):
                parts.append("*")
            else:
                parts.append(_str(p, "address", call))
        return ":".join(parts)
    if isinstance(v, ast.Ip) and v.v6:
        return f"[{v.value}]"
    return _str(v, "address", call)


def _conv_send_socket(args: list[ast.Value], call: ast.Call) -> tuple[Any, ...]:
    from sipexpress.core.options import OptionError, parse_socket_spec

    _count(call, args, 1)
    text = _addr_text(args[0], call)
    try:
        spec = parse_socket_spec(text)
    except OptionError as e:
        raise ArgError(f"force_send_socket(): {e}", args[0]) from None
    return (spec,)


def force_send_socket(ctx: RequestContext, spec: Any) -> int:
    ctx.send_socket = spec
    return 1


# ---------------------------------------------------------------------------
_ACTIONS: list[CoreAction] = [
    CoreAction(("forward",), _make_forward(None), _conv_forward, is_async=True),
    CoreAction(("forward_udp",), _make_forward(Proto.UDP), _conv_forward, is_async=True),
    CoreAction(("forward_tcp",), _make_forward(Proto.TCP), _conv_forward, is_async=True),
    CoreAction(("forward_tls",), _make_forward(Proto.TLS), _conv_forward, is_async=True),
    CoreAction(("send",), _make_send(None), _conv_send),
    CoreAction(("send_tcp",), _make_send(Proto.TCP), _conv_send),
    CoreAction(("drop", "break"), drop, _conv_none, bare_ok=True, can_stop=True),
    CoreAction(("log",), log_action, _conv_log),
    CoreAction(("error",), error_action, _conv_error),
    CoreAction(("exec",), exec_action, _conv_exec, is_async=True),
    CoreAction(("setflag",), setflag, _conv_flag),
    CoreAction(("resetflag",), resetflag, _conv_flag),
    CoreAction(("isflagset",), isflagset, _conv_flag),
    CoreAction(("rewriteuri", "seturi"), rewriteuri, _conv_str1),
    CoreAction(("rewritehost", "sethost", "seth"), _make_rewrite("host"), _conv_str1),
    CoreAction(("rewritehostport", "sethostport", "sethp"), _make_rewrite("hostport"), _conv_str1),
    CoreAction(("rewriteuser", "setuser", "setu"), _make_rewrite("user"), _conv_str1),
    CoreAction(("rewriteuserpass", "setuserpass", "setup"), _make_rewrite("userpass"), _conv_str1),
    CoreAction(("rewriteport", "setport", "setp"), _make_rewrite("port"), _conv_port),
    CoreAction(("prefix",), _make_rewrite("prefix"), _conv_str1),
    CoreAction(("strip",), strip, _conv_strip),
    CoreAction(("strip_tail",), strip_tail, _conv_strip),
    CoreAction(("revert_uri",), revert_uri, _conv_none, bare_ok=True),
    CoreAction(("append_branch",), append_branch, _conv_append_branch, bare_ok=True),
    CoreAction(("len_gt",), len_gt, _conv_len_gt),
    CoreAction(("force_rport", "add_rport"), force_rport, _conv_none, bare_ok=True),
    CoreAction(("force_tcp_alias", "add_tcp_alias"), force_tcp_alias, _conv_tcp_alias, bare_ok=True),
    CoreAction(("set_advertised_address",), set_advertised_address, _conv_str1),
    CoreAction(("set_advertised_port",), set_advertised_port, _conv_adv_port),
    CoreAction(("force_send_socket",), force_send_socket, _conv_send_socket),
]

#: every core action by each of its spellings
CORE_ACTIONS: dict[str, CoreAction] = {n: a for a in _ACTIONS for n in a.names}


def core_action_names() -> Sequence[str]:
    return sorted(CORE_ACTIONS)
