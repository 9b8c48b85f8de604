"""Helpers the compiled route code calls (bound as globals of the generated
module): condition operands that may fail, IP/host matching, POSIX regex
translation, route-call depth guard.

An operand that cannot be evaluated (missing From, unparsable URI) makes
its comparison false, as SER's ``eval_elem`` returning −1 did.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import socket
from typing import TYPE_CHECKING, Any

from sipexpress.core.context import RequestContext
from sipexpress.script.errors import ScriptExit

if TYPE_CHECKING:
    from sipexpress.sip.uri import SipUri

log = logging.getLogger("sipexpress.script")

MAX_ROUTE_DEPTH = 100


class StopScript(Exception):
    """A function used as a condition returned 0 (SER's EXPR_DROP): the
    enclosing action list, and so the route block, ends with 0."""


def cond(v: int) -> bool:
    """An action's value used as a condition: > 0 true, < 0 false, 0 stops."""
    if v > 0:
        return True
    if v < 0:
        return False
    raise StopScript


# ---- operands ---------------------------------------------------------------
def method(ctx: RequestContext) -> str:
    msg = ctx.msg
    if msg.is_request:
        return msg.method
    return msg.cseq.method  # a reply: the method it answers


def uri_or_status(ctx: RequestContext) -> str:
    """``uri``/``status``: the request URI, or the status code of a reply."""
    if ctx.msg.is_request:
        return ctx.ruri
    return str(ctx.msg.status)


def from_uri(ctx: RequestContext) -> str | None:
    try:
        return ctx.msg.from_.uri
    except Exception:
        return None


def to_uri(ctx: RequestContext) -> str | None:
    try:
        return ctx.msg.to.uri
    except Exception:
        return None


def str_eq(value: str | None, const_lower: str) -> bool | None:
    """Comparisons return None when the operand is missing (SER's -1)."""
    return None if value is None else value.lower() == const_lower


def str_ne(value: str | None, const_lower: str) -> bool | None:
    return None if value is None else value.lower() != const_lower


def re_match(value: str | None, search: Any) -> bool | None:
    return None if value is None else search(value) is not None


def re_nomatch(value: str | None, search: Any) -> bool | None:
    return None if value is None else search(value) is None


def neg(value: bool | None) -> bool | None:
    """``!``: an error stays an error."""
    return None if value is None else not value


# ---- myself -------------------------------------------------------------------
def uri_is_myself(ctx: RequestContext, uri: str | None) -> bool | None:
    """True/False, or None when the URI cannot be parsed (comparison false)."""
    if uri is None:
        return None
    try:
        if uri is ctx.ruri or uri == ctx.ruri:
            u = ctx.parsed_ruri
        else:
            from sipexpress.sip.uri import SipUri

            u = SipUri.parse(uri)
    except Exception:
        return None
    return _parsed_is_myself(ctx, u)


def _parsed_is_myself(ctx: RequestContext, u: SipUri) -> bool:
    host = u.host
    if not host:
        return False
    port = u.port
    if port is None:
        port = 5061 if u.scheme == "sips" else 5060
    return ctx.core.is_myself(host, port)


def ruri_myself(ctx: RequestContext, want: bool) -> bool | None:
    """``uri == myself`` (``want``) or ``!=``: the request URI as parsed
    for the message (ctx.parsed_ruri), no second look at its text."""
    try:
        u = ctx.parsed_ruri
    except Exception:
        return None
    return _parsed_is_myself(ctx, u) is want


def value_myself(ctx: RequestContext, uri: str | None, want: bool) -> bool | None:
    r = uri_is_myself(ctx, uri)
    return None if r is None else r is want


def ip_myself(ctx: RequestContext, ip: str, want: bool) -> bool:
    """``src_ip == myself``: SER checked the address with any port; our
    sockets' port is the receiving one (or the default)."""
    core = ctx.core
    mine = core.is_myself(ip, ctx.rcv.dst_port) or core.is_myself(ip, None)
    return bool(mine) is want


# ---- IP addresses -----------------------------------------------------------
class IpNet:
    """``a.b.c.d/m`` matched against a text address (inet_pton and integer
    masking: no ipaddress objects per message)."""

    __slots__ = ("family", "mask", "net")

    def __init__(self, net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> None:
        self.family = socket.AF_INET if net.version == 4 else socket.AF_INET6
        self.net = int(net.network_address)
        self.mask = int(net.netmask)

    def __contains__(self, ip: str) -> bool:
        family = socket.AF_INET6 if ":" in ip else socket.AF_INET
        if family != self.family:
            return False
        try:
            value = int.from_bytes(socket.inet_pton(family, ip.strip("[]")), "big")
        except OSError:
            return False
        return value & self.mask == self.net


def norm_ip(text: str) -> str:
    """Canonical text of an IP address (IPv6 compressed, lower case)."""
    try:
        return str(ipaddress.ip_address(text.strip("[]")))
    except ValueError:
        return text.lower()


class HostMatch:
    """``src_ip == name``: the address text equals the name, or the name
    resolves (once, on first use) to the address."""

    __slots__ = ("addrs", "name")

    def __init__(self, name: str) -> None:
        self.name = name.lower()
        self.addrs: frozenset[str] | None = None

    def __contains__(self, ip: str) -> bool:
        if ip.lower() == self.name:
            return True
        if self.addrs is None:
            try:
                infos = socket.getaddrinfo(self.name, None)
                self.addrs = frozenset(norm_ip(str(i[4][0])) for i in infos)
            except OSError:
                self.addrs = frozenset()
        return norm_ip(ip) in self.addrs


# ---- POSIX extended regular expressions -> Python ------------------------------
_POSIX_CLASSES = {
    "alpha": "a-zA-Z",
    "digit": "0-9",
    "alnum": "a-zA-Z0-9",
    "upper": "A-Z",
    "lower": "a-z",
    "space": r" \t\n\r\f\v",
    "blank": r" \t",
    "punct": r"!-/:-@\[-`{-~",
    "xdigit": "0-9A-Fa-f",
    "cntrl": r"\x00-\x1f\x7f",
    "print": r"\x20-\x7e",
    "graph": r"\x21-\x7e",
    "word": r"\w",
}
_CLASS_RE = re.compile(r"\[:([a-z]+):\]")


def posix_to_python(pattern: str) -> str:
    """Translate a POSIX ERE (SER compiles with REG_EXTENDED|REG_ICASE) to
    Python syntax: bracket classes ``[[:digit:]]``, GNU word boundaries
    ``\\<``/``\\>``; a backslash inside a bracket expression is literal in
    POSIX."""
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "\\" and i + 1 < n:
            nxt = pattern[i + 1]
            out.append(r"\b" if nxt in "<>" else c + nxt)
            i += 2
        elif c == "[":
            # bracket expression: find its end ("]" first is literal)
            j = i + 1
            if j < n and pattern[j] == "^":
                j += 1
            if j < n and pattern[j] == "]":
                j += 1
            while j < n and pattern[j] != "]":
                if pattern.startswith("[:", j) or pattern.startswith("[=", j) or pattern.startswith("[.", j):
                    end = pattern.find(pattern[j + 1] + "]", j + 2)
                    j = end + 2 if end >= 0 else j + 1
                else:
                    j += 1
            if j >= n:
                out.append(pattern[i:])  # unterminated: let re report it
                break
            body = pattern[i + 1 : j]
            neg = body.startswith("^")
            if neg:
                body = body[1:]
            items: list[str] = []
            k = 0
            while k < len(body):
                m = _CLASS_RE.match(body, k)
                if m:
                    cls = _POSIX_CLASSES.get(m.group(1))
                    if cls is None:
                        raise re.error(f"unknown character class [:{m.group(1)}:]")
                    items.append(cls)
                    k = m.end()
                    continue
                ch = body[k]
                items.append("\\" + ch if ch in "\\[]^" and not (ch == "^" and k > 0) else ch)
                k += 1
            out.append("[" + ("^" if neg else "") + "".join(items) + "]")
            i = j + 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def compile_regex(pattern: str) -> re.Pattern[str]:
    return re.compile(posix_to_python(pattern), re.IGNORECASE)


# ---- route calls ---------------------------------------------------------------
async def guarded_call(fn: Any, ctx: RequestContext) -> int:
    """``route(n)`` inside a cycle of route calls: SER stopped at depth 100."""
    depth = ctx.data.get("_route_depth", 0)
    if depth >= MAX_ROUTE_DEPTH:
        log.error("route() nesting deeper than %d: giving up", MAX_ROUTE_DEPTH)
        raise ScriptExit(-1)
    ctx.data["_route_depth"] = depth + 1
    try:
        r: int = await fn(ctx)
    finally:
        ctx.data["_route_depth"] = depth
    return r
