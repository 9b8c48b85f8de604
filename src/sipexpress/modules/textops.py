"""textops — regular-expression operations on the message (SER's ``modules_s/textops``).

``search``/``replace*``/``search_append`` use POSIX extended regexes,
case-insensitive and newline-sensitive (``REG_EXTENDED|REG_ICASE|
REG_NEWLINE``); ``subst*`` take sed-like ``/re/repl/flags`` expressions with
SER's flags (``i`` case-insensitive, ``g`` all matches, ``s`` newline-
sensitive) and replacement escapes (``\\0``–``\\9``, ``\\u`` the request URI,
``\\n \\r \\t \\\\``).  ``search`` looks at the message as received, as SER's
did; edits apply to the message as it will be sent and re-parse it, so the
header accessors see them.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sipexpress.core.context import RequestContext
from sipexpress.core.registry import ConfigError, FixupEnv, Module, RouteType, ScriptFunction
from sipexpress.script.runtime import posix_to_python
from sipexpress.sip.errors import SipError, SipParseError
from sipexpress.sip.message import SipMessage

log = logging.getLogger("sipexpress.textops")

_ALL = RouteType.REQUEST | RouteType.FAILURE | RouteType.ONREPLY
_RF = RouteType.REQUEST | RouteType.FAILURE


def _regex(pattern: str, flags: int = re.IGNORECASE | re.MULTILINE) -> re.Pattern[str]:
    try:
        return re.compile(posix_to_python(pattern), flags)
    except re.error as e:
        raise ConfigError(f"bad regular expression {pattern!r}: {e}") from None


def _fix_re(args: Sequence[Any], env: FixupEnv) -> Sequence[Any]:
    return (_regex(str(args[0])), *args[1:])


def _fix_crlf(text: str) -> str:
    """Header text as written in scripts: ``"P-hint: x\\r\\n"``; a missing
    line end is added so the message stays well formed."""
    return text if text.endswith("\n") else text + "\r\n"


@dataclass(frozen=True, slots=True)
class Subst:
    """A parsed ``/re/repl/flags`` expression."""

    regex: re.Pattern[str]
    replacement: str
    global_: bool

    def expand(self, m: re.Match[str], ruri: str) -> str:
        out: list[str] = []
        rep = self.replacement
        i = 0
        while i < len(rep):
            c = rep[i]
            if c == "\\" and i + 1 < len(rep):
                n = rep[i + 1]
                if n.isdigit():
                    out.append(m.group(int(n)) or "")
                elif n == "u":
                    out.append(ruri)
                else:
                    out.append({"n": "\n", "r": "\r", "t": "\t"}.get(n, n))
                i += 2
            else:
                out.append(c)
                i += 1
        return "".join(out)

    def apply(self, text: str, ruri: str) -> str | None:
        """The substituted text, or None when nothing matched."""
        count = 0 if self.global_ else 1
        result, n = self.regex.subn(lambda m: self.expand(m, ruri), text, count=count)
        return result if n else None


def parse_subst(expr: str) -> Subst:
    if len(expr) < 4:
        raise ConfigError(f"subst expression too short: {expr!r}")
    sep = expr[0]
    parts: list[str] = []
    cur: list[str] = []
    i = 1
    while i < len(expr):
        c = expr[i]
        if c == "\\" and i + 1 < len(expr) and expr[i + 1] == sep:
            cur.append(sep)
            i += 2
            continue
        if c == sep:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(c)
        i += 1
    if len(parts) != 2:
        raise ConfigError(f"subst expression must look like /re/replacement/flags: {expr!r}")
    flags_text = "".join(cur)
    bad = set(flags_text) - set("igs")
    if bad:
        raise ConfigError(f"unknown subst flag(s) {''.join(sorted(bad))!r} in {expr!r}")
    flags = re.IGNORECASE if "i" in flags_text else 0
    flags |= re.MULTILINE if "s" in flags_text else re.DOTALL
    regex = _regex(parts[0], flags)
    for ref in re.findall(r"\\(\d)", parts[1]):
        if int(ref) > regex.groups:
            raise ConfigError(f"subst: \\{ref} refers to a group the regex does not have: {expr!r}")
    return Subst(regex, parts[1], "g" in flags_text)


def _fix_subst(args: Sequence[Any], env: FixupEnv) -> Sequence[Any]:
    return (parse_subst(str(args[0])),)


class TextopsModule(Module):
    name = "textops"

    def functions(self) -> Sequence[ScriptFunction]:
        f = ScriptFunction
        return (
            f("search", self.search, (1,), _fix_re, _ALL, doc="True if the regex matches the message."),
            f(
                "search_append",
                self.search_append,
                (2,),
                _fix_re,
                _ALL,
                doc="Insert text after the first match.",
            ),
            f("replace", self.replace, (2,), _fix_re, _ALL, doc="Replace the first match."),
            f("replace_all", self.replace_all, (2,), _fix_re, _ALL, doc="Replace every match."),
            f("subst", self.subst, (1,), _fix_subst, _ALL, doc="sed-like /re/repl/flags on the message."),
            f(
                "subst_uri",
                self.subst_uri,
                (1,),
                _fix_subst,
                _RF,
                doc="sed-like substitution on the request URI.",
            ),
            f(
                "subst_user",
                self.subst_user,
                (1,),
                _fix_subst,
                _RF,
                doc="sed-like substitution on the URI's user.",
            ),
            f("append_hf", self.append_hf, (1,), None, _ALL, doc="Append a header field (text with CRLF)."),
            f(
                "append_urihf",
                self.append_urihf,
                (2,),
                None,
                _RF,
                doc="Append prefix + original URI + suffix.",
            ),
            f(
                "append_to_reply",
                self.append_to_reply,
                (1,),
                None,
                RouteType.REQUEST,
                doc="Header for local replies.",
            ),
            f(
                "append_time",
                self.append_time,
                (0,),
                None,
                RouteType.REQUEST,
                doc="Date header for local replies.",
            ),
            f("remove_hf", self.remove_hf, (1,), None, _ALL, doc="Remove every header field of that name."),
            f(
                "is_present_hf",
                self.is_present_hf,
                (1,),
                None,
                _ALL,
                doc="True if such a header field exists.",
            ),
        )

    # -- searching and editing the whole message ---------------------------
    @staticmethod
    def _text(msg: SipMessage) -> str:
        return msg.serialize().decode("latin-1")

    @staticmethod
    def _commit(ctx: RequestContext, text: str) -> int:
        """Swap in the edited message.  An edit that breaks the message is
        refused (SER would have sent the broken bytes)."""
        try:
            new = SipMessage.parse(text.encode("latin-1"))
            new.validate()
        except (SipParseError, SipError) as e:
            log.error("textops: the edit would make the message malformed (%s); not applied", e)
            return -1
        ctx.msg = new
        return 1

    def search(self, ctx: RequestContext, regex: re.Pattern[str]) -> int:
        return 1 if regex.search(ctx.msg.raw.decode("latin-1")) else -1

    def _edit(self, ctx: RequestContext, fn: Callable[[str], str | None]) -> int:
        result = fn(self._text(ctx.msg))
        if result is None:
            return -1
        return self._commit(ctx, result)

    def search_append(self, ctx: RequestContext, regex: re.Pattern[str], txt: str) -> int:
        def edit(text: str) -> str | None:
            m = regex.search(text)
            return None if m is None else text[: m.end()] + txt + text[m.end() :]

        return self._edit(ctx, edit)

    def replace(self, ctx: RequestContext, regex: re.Pattern[str], txt: str) -> int:
        def edit(text: str) -> str | None:
            new, n = regex.subn(lambda _m: txt, text, count=1)
            return new if n else None

        return self._edit(ctx, edit)

    def replace_all(self, ctx: RequestContext, regex: re.Pattern[str], txt: str) -> int:
        def edit(text: str) -> str | None:
            new, n = regex.subn(lambda _m: txt, text)
            return new if n else None

        return self._edit(ctx, edit)

    def subst(self, ctx: RequestContext, expr: Subst) -> int:
        return self._edit(ctx, lambda text: expr.apply(text, ctx.ruri))

    def subst_uri(self, ctx: RequestContext, expr: Subst) -> int:
        new = expr.apply(ctx.ruri, ctx.ruri)
        if new is None:
            return -1
        ctx.set_ruri(new)
        return 1

    def subst_user(self, ctx: RequestContext, expr: Subst) -> int:
        try:
            uri = ctx.parsed_ruri
        except SipParseError:
            return -1
        user = uri.user or ""
        new_user = expr.apply(user, ctx.ruri)
        if new_user is None:
            return -1
        scheme, _, rest = ctx.ruri.partition(":")
        host_part = rest.split("@", 1)[1] if "@" in rest else rest
        ctx.set_ruri(f"{scheme}:{new_user}@{host_part}" if new_user else f"{scheme}:{host_part}")
        return 1

    # -- header fields ------------------------------------------------------
    def append_hf(self, ctx: RequestContext, txt: str) -> int:
        try:
            ctx.msg.append_header_raw(_fix_crlf(txt))
        except SipError as e:
            log.error("append_hf: %s", e)
            return -1
        return 1

    def append_urihf(self, ctx: RequestContext, prefix: str, suffix: str) -> int:
        return self.append_hf(ctx, prefix + ctx.msg.ruri + suffix)

    def append_to_reply(self, ctx: RequestContext, txt: str) -> int:
        ctx.reply_headers.append(_fix_crlf(txt))
        return 1

    def append_time(self, ctx: RequestContext) -> int:
        ctx.reply_headers.append(time.strftime("Date: %a, %d %b %Y %H:%M:%S GMT\r\n", time.gmtime()))
        return 1

    def remove_hf(self, ctx: RequestContext, name: str) -> int:
        return 1 if ctx.msg.remove_header(name) else -1

    def is_present_hf(self, ctx: RequestContext, name: str) -> int:
        return 1 if ctx.msg.has_header(name) else -1
