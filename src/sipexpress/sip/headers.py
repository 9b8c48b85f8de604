"""Header names and typed header-field parsers (RFC 3261 §20, §25).

Names: :data:`COMPACT` maps the one-letter compact forms to full names;
:func:`header_key` turns any spelling into the lower-case full name used as
the lookup key; :func:`canonical_name` gives the conventional spelling for
printing (``call-id`` -> ``Call-ID``).

Parsers take the *value* text of one header field (already unfolded) and
raise only :class:`~sipexpress.sip.errors.SipParseError`.  They are written
with ``str.find``/``split``/``strip`` rather than regular expressions because
Via, From, To and CSeq are parsed for most messages a proxy handles.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Final, TypeVar

from mypy_extensions import mypyc_attr

from sipexpress.sip.cache import BoundedCache
from sipexpress.sip.errors import SipParseError

__all__ = [
    "CANONICAL",
    "COMPACT",
    "AuthHeader",
    "CSeq",
    "Contact",
    "ContactList",
    "NameAddr",
    "Via",
    "canonical_name",
    "check_token",
    "format_params",
    "header_key",
    "parse_date",
    "parse_params",
    "split_values",
    "unquote",
]

# -- names ------------------------------------------------------------------

#: compact form -> full name (lower case).  RFC 3261 §7.3.3 and the
#: registry of later RFCs (3265 o/u, 3515 r, 3892 b, 4028 x, 4474 y/n,
#: 3841 a/j/d).
COMPACT: Final[dict[str, str]] = {
    "i": "call-id",
    "m": "contact",
    "f": "from",
    "t": "to",
    "v": "via",
    "l": "content-length",
    "c": "content-type",
    "k": "supported",
    "s": "subject",
    "e": "content-encoding",
    "o": "event",
    "u": "allow-events",
    "r": "refer-to",
    "b": "referred-by",
    "x": "session-expires",
    "y": "identity",
    "n": "identity-info",
    "a": "accept-contact",
    "j": "reject-contact",
    "d": "request-disposition",
}

#: full name -> compact form
COMPACT_OF: Final[dict[str, str]] = {v: k for k, v in COMPACT.items()}

#: lower-case name -> conventional spelling, where plain title-casing of the
#: dash-separated words would be wrong.
CANONICAL: Final[dict[str, str]] = {
    "call-id": "Call-ID",
    "cseq": "CSeq",
    "www-authenticate": "WWW-Authenticate",
    "mime-version": "MIME-Version",
    "rack": "RAck",
    "rseq": "RSeq",
    "sip-etag": "SIP-ETag",
    "sip-if-match": "SIP-If-Match",
    "p-asserted-identity": "P-Asserted-Identity",
    "identity-info": "Identity-Info",
}


def canonical_name(name: str) -> str:
    """Conventional spelling of a header name (compact forms expanded):
    ``call-id``/``i`` -> ``Call-ID``, ``via`` -> ``Via``, ``x-foo-bar`` ->
    ``X-Foo-Bar``."""
    key = header_key(name)
    c = CANONICAL.get(key)
    if c is not None:
        return c
    return "-".join(w[:1].upper() + w[1:] for w in key.split("-"))


_KEY_CACHE: BoundedCache[str, str] = BoundedCache(1 << 20, 256)


def header_key(name: str) -> str:
    """Lookup key of a header name: lower case, compact form expanded,
    surrounding whitespace removed."""
    k = _KEY_CACHE.get(name)
    if k is not None:
        return k
    k = name.strip().lower()
    if len(k) == 1:
        k = COMPACT.get(k, k)
    _KEY_CACHE.put(name, k, 2 * len(name))
    return k


# -- lexical helpers ---------------------------------------------------------

ALNUM: Final = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
#: token = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~")
TOKEN_CHARS: Final = ALNUM + "-.!%*_+`'~"
#: what a generic-param value may hold besides a quoted-string: token / host
#: (IPv6 references, and unbracketed IPv6 in ``received``)
_PVALUE_CHARS: Final = TOKEN_CHARS + ":[]"
_HOST_CHARS: Final = ALNUM + "-._"
_DISPLAY_CHARS: Final = TOKEN_CHARS + " \t"
_IPV6_CHARS: Final = "0123456789abcdefABCDEF:."
_DIGITS: Final = "0123456789"
_SCHEME_CHARS: Final = ALNUM + "+-."
_WS: Final = " \t\r\n"


def check_token(s: str, what: str) -> str:
    """Return ``s`` if it is a non-empty RFC 3261 token, else raise."""
    if not s or s.strip(TOKEN_CHARS):
        raise SipParseError(f"invalid {what}: {s!r}")
    return s


def _quoted_end(s: str, i: int) -> int:
    """``s[i]`` is a double quote: the index just after its closing quote."""
    j = i + 1
    while True:
        q = s.find('"', j)
        if q < 0:
            raise SipParseError("unterminated quoted string")
        b = q - 1
        n = 0
        while b > i and s[b] == "\\":
            n += 1
            b -= 1
        if not n & 1:
            return q + 1
        j = q + 1


def unquote(s: str) -> str:
    """The content of a quoted-string (``"a\\"b"`` -> ``a"b``); other text is
    returned unchanged."""
    if len(s) >= 2 and s[0] == '"' and s[-1] == '"':
        s = s[1:-1]
        if "\\" in s:
            out: list[str] = []
            it = iter(s)
            for ch in it:
                out.append(next(it, "") if ch == "\\" else ch)
            s = "".join(out)
    return s


def quote(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def split_values(s: str, keep_empty: bool = False) -> list[str]:
    """Split a header field value at the commas separating list elements,
    ignoring commas inside quoted strings and ``<...>``.  Elements are
    stripped; empty ones are dropped unless ``keep_empty``."""
    if "," not in s:
        v = s.strip()
        return [v] if v or keep_empty else []
    if '"' not in s and "<" not in s:
        parts = [p.strip() for p in s.split(",")]
    else:
        parts = []
        start = 0
        i = 0
        n = len(s)
        angle = False
        while i < n:
            ch = s[i]
            if ch == '"':
                i = _quoted_end(s, i)
                continue
            if ch == "<":
                angle = True
            elif ch == ">":
                angle = False
            elif ch == "," and not angle:
                parts.append(s[start:i].strip())
                start = i + 1
            i += 1
        parts.append(s[start:].strip())
    if keep_empty:
        return parts
    return [p for p in parts if p]


def _split_semis(s: str) -> list[str]:
    if '"' not in s:
        return s.split(";")
    parts = []
    start = 0
    i = 0
    n = len(s)
    while i < n:
        ch = s[i]
        if ch == '"':
            i = _quoted_end(s, i)
            continue
        if ch == ";":
            parts.append(s[start:i])
            start = i + 1
        i += 1
    parts.append(s[start:])
    return parts


def parse_params(s: str) -> dict[str, str | None]:
    """Parse ``name[=value] *(; name[=value])`` (the text after the first
    ``;``) into a dict: names lower-cased, values as written (quoted strings
    keep their quotes), ``None`` for a name without value.  Whitespace around
    ``;`` and ``=`` is allowed (RFC 3261 SEMI / EQUAL)."""
    params: dict[str, str | None] = {}
    for part in _split_semis(s):
        name, eq, value = part.partition("=")
        name = name.strip()
        if not name or name.strip(TOKEN_CHARS):
            raise SipParseError(f"invalid parameter name {name!r}")
        name = name.lower()
        if eq:
            value = value.strip()
            if not value:
                raise SipParseError(f"empty value for parameter {name!r}")
            if value[0] == '"':
                if _quoted_end(value, 0) != len(value):
                    raise SipParseError(f"invalid quoted value for parameter {name!r}")
            elif value.strip(_PVALUE_CHARS):
                raise SipParseError(f"invalid value for parameter {name!r}")
            params.setdefault(name, value)
        else:
            params.setdefault(name, None)
    return params


def format_params(params: dict[str, str | None]) -> str:
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params.items())


def _check_host(host: str) -> str:
    if not host:
        raise SipParseError("empty host")
    if host[0] == "[":
        if len(host) < 4 or host[-1] != "]" or host[1:-1].strip(_IPV6_CHARS):
            raise SipParseError(f"invalid IPv6 reference {host!r}")
    elif host.strip(_HOST_CHARS):
        raise SipParseError(f"invalid host {host!r}")
    return host


def _parse_port(p: str) -> int:
    p = p.strip()
    if not p or len(p) > 5 or p.strip(_DIGITS):
        raise SipParseError(f"invalid port {p!r}")
    port = int(p)
    if port > 65535:
        raise SipParseError(f"invalid port {p!r}")
    return port


def parse_uint(s: str, what: str, limit: int = 0xFFFFFFFF) -> int:
    """A decimal number (1*DIGIT, leading zeros allowed) not above ``limit``."""
    if len(s) < 10 and s.isdigit() and s.isascii():
        n = int(s)
        if n <= limit:
            return n
    s = s.strip()
    if not s or s.strip(_DIGITS):
        raise SipParseError(f"invalid {what}: {s!r}")
    s = s.lstrip("0") or "0"
    if len(s) > 20:
        raise SipParseError(f"{what} out of range")
    n = int(s)
    if n > limit:
        raise SipParseError(f"{what} out of range")
    return n


_BAD_URI_CHAR = re.compile(r'[\x00-\x20<>"\x7f]')


def check_uri_text(uri: str) -> str:
    """Minimal check of a URI inside a name-addr / addr-spec: a scheme and
    no whitespace, control characters, quotes or angle brackets."""
    colon = uri.find(":")
    if colon <= 0 or not uri[0].isalpha() or uri[:colon].strip(_SCHEME_CHARS) or colon == len(uri) - 1:
        raise SipParseError(f"invalid URI {uri!r}")
    if _BAD_URI_CHAR.search(uri):
        raise SipParseError(f"invalid URI {uri!r}")
    return uri


# -- fast paths ----------------------------------------------------------------
# One C-level match recognises the everyday, canonical spelling of the hot
# headers (no optional whitespace, no quoted parameter values); anything
# else takes the general parser below.  A fast match never accepts what the
# general parser would reject, and both give the same result (property-
# tested in tests/unit/sip/test_headers.py).
_T = r"[A-Za-z0-9\-.!%*_+`'~]+"  # token
# *( SEMI generic-param ), generic-param = token [ EQUAL token ]  (no LWS)
_FAST_PARAMS = rf"((?:;{_T}(?:={_T})?)*)"
# via-parm = sent-protocol LWS sent-by *( SEMI via-params )
# sent-protocol = "SIP" SLASH "2.0" SLASH transport; sent-by = host [ COLON port ]
_VIA_FAST = re.compile(
    r"SIP/2\.0/([A-Za-z0-9]+) ([A-Za-z0-9.\-_]+|\[[0-9A-Fa-f:.]{2,}\])(?::([0-9]{1,5}))?" + _FAST_PARAMS
)
# name-addr = [ display-name ] LAQUOT addr-spec RAQUOT, display-name =
# *(token LWS) / quoted-string; or addr-spec alone -- each *( SEMI param )
_NA_FAST = re.compile(
    r'(?:"([^"\\\x00-\x1f\x7f]*)" ?|((?:[A-Za-z0-9\-.!%*_+`\'~]+ )*[A-Za-z0-9\-.!%*_+`\'~]+) ?)?'
    r'<([A-Za-z][A-Za-z0-9+\-.]*:[^\x00-\x20<>"\x7f]+)>'
    + _FAST_PARAMS
    + r'|([A-Za-z][A-Za-z0-9+\-.]*:[^\x00-\x20<>"\x7f,;?]+)'
    + _FAST_PARAMS
)
# CSeq = 1*DIGIT LWS Method
_CSEQ_FAST = re.compile(r"([0-9]{1,10}) (" + _T + ")")


def _line_pattern(p: re.Pattern[str]) -> re.Pattern[bytes]:
    """The bytes twin of a fast pattern, for a raw header line from just
    after its colon: the same value with optional SP/HTAB around it.  The
    patterns' character classes are ASCII ranges or negated sets, so a
    byte >= 0x80 matches exactly where its decoded (or surrogate-escaped)
    character does: a match here implies a match of ``p`` on the stripped,
    decoded value (used by ``SipMessage.validate``'s quick check)."""
    return re.compile(rb"[ \t]*(?:" + p.pattern.encode("ascii") + rb")[ \t]*")


VIA_LINE_B: Final = _line_pattern(_VIA_FAST)
NAME_ADDR_LINE_B: Final = _line_pattern(_NA_FAST)
CSEQ_LINE_B: Final = _line_pattern(_CSEQ_FAST)
#: a Call-ID value: non-empty, no SP/HTAB inside
CALL_ID_LINE_B: Final = re.compile(rb"[ \t]*[^\x00-\x20]+[ \t]*")


def _fast_params(s: str) -> dict[str, str | None]:
    params: dict[str, str | None] = {}
    for part in s[1:].split(";"):
        name, eq, value = part.partition("=")
        params.setdefault(name.lower(), value if eq else None)
    return params


def _dec(b: bytes) -> str:
    return b.decode("utf-8", "surrogateescape")


_TRANSPORTS: Final = {t.encode(): t for t in ("UDP", "TCP", "TLS", "SCTP", "WS", "WSS")}


def via_from_line(line: bytes, start: int) -> Via | None:
    """The Via of a raw header line whose value (from ``start``, just after
    the colon) has the everyday spelling, as ``Via.parse`` of the stripped,
    decoded value gives it; ``None`` for anything else (parse the value)."""
    m = VIA_LINE_B.fullmatch(line, start)
    if m is None:
        return None
    transport, host, port, ptext = m.groups()
    p: int | None = None
    if port is not None:
        p = int(port)
        if p > 65535:
            return None
    t = _TRANSPORTS.get(transport)
    if t is None:
        t = transport.decode("ascii").upper()
    # the parameters are split when first asked for (most are never read)
    return Via(t, host.decode("ascii"), p, None, "SIP/2.0", ptext.decode("ascii") if ptext else "")


_NA = TypeVar("_NA", bound="NameAddr")


def _addr_from_line(line: bytes, start: int, cls: type[_NA]) -> _NA | None:
    m = NAME_ADDR_LINE_B.fullmatch(line, start)
    if m is None:
        return None
    qd, td, uri, ptext, spec, sptext = m.groups()
    # parameters are split when first asked for (a To tag is looked up
    # without it: see NameAddr.tag)
    if uri is not None:
        disp = qd if qd is not None else td
        return cls(
            _dec(uri), None if disp is None else _dec(disp), None, ptext.decode("ascii") if ptext else ""
        )
    return cls(_dec(spec), None, None, sptext.decode("ascii") if sptext else "")


def name_addr_from_line(line: bytes, start: int) -> NameAddr | None:
    """Likewise for a name-addr / addr-spec field (From, To): the
    ``NameAddr`` that ``NameAddr.parse`` gives, or ``None``."""
    return _addr_from_line(line, start, NameAddr)


def contact_from_line(line: bytes, start: int) -> Contact | None:
    """Likewise for a Contact field holding one value (a list or ``*``
    gives ``None``)."""
    return _addr_from_line(line, start, Contact)


# -- parameters split on demand --------------------------------------------------


class _Params:
    """``params`` of a Via or name-addr, split on first access: the fast
    paths (``via_from_line`` ...) keep the parameter text (";name=value..."
    in the everyday spelling) and most requests never read a parameter."""

    __slots__ = ("_params", "_ptext")

    #: the split parameters, None until ``_ptext`` is split
    _params: dict[str, str | None] | None
    _ptext: str

    @property
    def params(self) -> dict[str, str | None]:
        p = self._params
        if p is None:
            p = self._params = _fast_params(self._ptext)
        return p

    @params.setter
    def params(self, value: dict[str, str | None]) -> None:
        self._params = value

    def _may_have(self, name: str) -> bool:
        """False when parameter ``name`` (lower case) is surely absent, told
        from the text alone without splitting it."""
        return self._params is not None or name in self._ptext.lower()


# -- Via -----------------------------------------------------------------------


class Via(_Params):
    """One via-parm (RFC 3261 §20.42): ``SIP/2.0/UDP host:port;params``.

    ``params`` keeps the parameters in order (names lower-cased); ``rport``
    and the other accessors are ``None`` when absent, ``""`` when present
    without value."""

    __slots__ = ("host", "port", "protocol", "transport")

    def __init__(
        self,
        transport: str,
        host: str,
        port: int | None = None,
        params: dict[str, str | None] | None = None,
        protocol: str = "SIP/2.0",
        ptext: str = "",
    ) -> None:
        self.protocol = protocol
        self.transport = transport
        self.host = host
        self.port = port
        self._params = params if params is not None or ptext else {}
        self._ptext = ptext

    @classmethod
    def parse(cls, text: str) -> Via:
        m = _VIA_FAST.fullmatch(text)
        if m is not None:
            transport, host, port, ptext = m.groups()
            if port is None:
                return cls(transport.upper(), host, None, _fast_params(ptext) if ptext else {})
            if int(port) <= 65535:
                return cls(transport.upper(), host, int(port), _fast_params(ptext) if ptext else {})
        return cls._parse(text)

    @classmethod
    def _parse(cls, text: str) -> Via:
        t = text.strip()
        if t.startswith("SIP/2.0/"):
            protocol = "SIP/2.0"
            rest = t[8:].lstrip()
        else:
            i1 = t.find("/")
            i2 = t.find("/", i1 + 1) if i1 >= 0 else -1
            if i2 < 0:
                raise SipParseError(f"invalid Via {text!r}")
            name = t[:i1].strip()
            version = t[i1 + 1 : i2].strip()
            if name.upper() != "SIP":
                raise SipParseError(f"invalid Via protocol {name!r}")
            check_token(version, "Via protocol version")
            protocol = "SIP/" + version
            rest = t[i2 + 1 :].lstrip()
        sp = rest.find(" ")
        tab = rest.find("\t")
        if sp < 0 or 0 <= tab < sp:
            sp = tab
        if sp <= 0:
            raise SipParseError(f"invalid Via {text!r}")
        transport = rest[:sp].upper()
        check_token(transport, "Via transport")
        rest = rest[sp + 1 :]
        semi = rest.find(";")
        if semi >= 0:
            sent_by = rest[:semi].strip()
            params = parse_params(rest[semi + 1 :])
        else:
            sent_by = rest.strip()
            params = {}
        port: int | None = None
        if sent_by[:1] == "[":
            close = sent_by.find("]")
            host = sent_by[: close + 1] if close > 0 else sent_by
            after = sent_by[len(host) :].strip()
            if after:
                if after[0] != ":":
                    raise SipParseError(f"invalid Via sent-by {sent_by!r}")
                port = _parse_port(after[1:])
        else:
            host, colon, p = sent_by.partition(":")
            host = host.rstrip()
            if colon:
                port = _parse_port(p)
        _check_host(host)
        return cls(transport, host, port, params, protocol)

    # RFC 3261 §20.42 / RFC 3581 parameters
    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    @property
    def received(self) -> str | None:
        return self.params.get("received")

    @property
    def rport(self) -> str | None:
        """``None`` when absent, ``""`` for a bare ``;rport``, else the value."""
        if not self._may_have("rport"):
            return None
        params = self.params
        return (params["rport"] or "") if "rport" in params else None

    @property
    def maddr(self) -> str | None:
        return self.params.get("maddr")

    @property
    def ttl(self) -> str | None:
        return self.params.get("ttl")

    @property
    def sent_by(self) -> str:
        return self.host if self.port is None else f"{self.host}:{self.port}"

    def __str__(self) -> str:
        return f"{self.protocol}/{self.transport} {self.sent_by}{format_params(self.params)}"

    def __repr__(self) -> str:
        return f"Via({str(self)!r})"


# -- name-addr / addr-spec -----------------------------------------------------


class NameAddr(_Params):
    """``[display-name] <URI> *(;param)`` or ``addr-spec *(;param)``
    (From, To, Contact, Route, Record-Route, Reply-To ...).

    ``display`` is the display name without quotes and escapes (``None`` if
    absent), ``uri`` the URI text as written, ``params`` the header
    parameters (names lower-cased)."""

    __slots__ = ("display", "uri")

    def __init__(
        self,
        uri: str,
        display: str | None = None,
        params: dict[str, str | None] | None = None,
        ptext: str = "",
    ) -> None:
        self.uri = uri
        self.display = display
        self._params = params if params is not None or ptext else {}
        self._ptext = ptext

    @classmethod
    def parse(cls, text: str) -> NameAddr:
        m = _NA_FAST.fullmatch(text)
        if m is not None:
            qd, td, uri, ptext, spec, sptext = m.groups()
            if uri is not None:
                return cls(uri, qd if qd is not None else td, _fast_params(ptext) if ptext else {})
            return cls(spec, None, _fast_params(sptext) if sptext else {})
        return cls._parse(text)

    @classmethod
    def _parse(cls, text: str) -> NameAddr:
        t = text.strip()
        if not t:
            raise SipParseError("empty address")
        display: str | None = None
        c0 = t[0]
        if c0 == '"':
            end = _quoted_end(t, 0)
            display = unquote(t[:end])
            rest = t[end:].lstrip()
            if rest[:1] != "<":
                raise SipParseError("quoted display name not followed by <URI>")
        elif c0 == "<":
            rest = t
        else:
            lt = t.find("<")
            if lt > 0:
                disp = t[:lt].strip()
                # *(token LWS): ASCII separators (',', ';', '"' ...) are errors
                # (RFC 4475 baddn); unquoted non-ASCII text is tolerated as
                # many UAs send UTF-8 display names without quotes
                if disp.strip(_DISPLAY_CHARS) and any(
                    ch not in _DISPLAY_CHARS and ord(ch) < 128 for ch in disp
                ):
                    raise SipParseError(f"invalid display name {disp!r}")
                display = disp
                rest = t[lt:]
            else:
                # addr-spec: the URI ends at the first ';', the rest are
                # header parameters; ',', '?' and ';' in the URI need <>
                semi = t.find(";")
                uri = t if semi < 0 else t[:semi].rstrip()
                if "?" in uri or "," in uri:
                    raise SipParseError(f"URI with ',' or '?' must be enclosed in <>: {uri!r}")
                check_uri_text(uri)
                return cls(uri, None, parse_params(t[semi + 1 :]) if semi >= 0 else {})
        gt = rest.find(">")
        if gt < 0:
            raise SipParseError("missing '>' in address")
        uri = rest[1:gt]
        check_uri_text(uri)
        after = rest[gt + 1 :].strip()
        if not after:
            return cls(uri, display, {})
        if after[0] != ";":
            raise SipParseError(f"unexpected text after address: {after!r}")
        return cls(uri, display, parse_params(after[1:]))

    @property
    def tag(self) -> str | None:
        return self.params.get("tag") if self._may_have("tag") else None

    def __str__(self) -> str:
        d = "" if self.display is None else (quote(self.display) + " ")
        return f"{d}<{self.uri}>{format_params(self.params)}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r})"


class Contact(NameAddr):
    """A Contact header value; adds ``expires`` and ``q``."""

    __slots__ = ()

    @property
    def expires(self) -> int | None:
        v = self.params.get("expires")
        if v is None:
            return None
        return parse_uint(unquote(v), "Contact expires")

    @property
    def q(self) -> float | None:
        v = self.params.get("q")
        if v is None:
            return None
        try:
            q = float(v)
        except ValueError:
            raise SipParseError(f"invalid q value {v!r}") from None
        if not 0.0 <= q <= 1.0:
            raise SipParseError(f"invalid q value {v!r}")
        return q


@mypyc_attr(native_class=False)
class ContactList(list[Contact]):
    """``msg.contacts``: the Contact values; ``star`` is True for ``Contact: *``."""

    star: bool = False


# -- CSeq --------------------------------------------------------------------


class CSeq:
    """``CSeq: 1*DIGIT LWS Method`` (RFC 3261 §20.16)."""

    __slots__ = ("method", "num")

    def __init__(self, num: int, method: str) -> None:
        self.num = num
        self.method = method

    @classmethod
    def parse(cls, text: str) -> CSeq:
        m = _CSEQ_FAST.fullmatch(text)
        if m is not None:
            num = int(m[1])
            if num <= 0xFFFFFFFF:
                return cls(num, m[2])
        parts = text.split()
        if len(parts) != 2:
            raise SipParseError(f"invalid CSeq {text.strip()!r}")
        num = parse_uint(parts[0], "CSeq number")
        return cls(num, check_token(parts[1], "CSeq method"))

    def __str__(self) -> str:
        return f"{self.num} {self.method}"

    def __repr__(self) -> str:
        return f"CSeq({self.num}, {self.method!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CSeq) and other.num == self.num and other.method == self.method

    def __hash__(self) -> int:
        return hash((self.num, self.method))


# -- Authorization / WWW-Authenticate ---------------------------------------


class AuthHeader:
    """Credentials or a challenge (RFC 3261 §20.7, §20.27, §20.28, §20.44;
    RFC 2617): ``scheme`` (as written) and ``params`` with lower-cased names
    and unquoted values.  ``Digest username="a", realm="b"`` ->
    ``scheme="Digest"``, ``params={"username": "a", "realm": "b"}``."""

    __slots__ = ("params", "scheme")

    def __init__(self, scheme: str, params: dict[str, str] | None = None) -> None:
        self.scheme = scheme
        self.params: dict[str, str] = params if params is not None else {}

    @classmethod
    def parse(cls, text: str) -> AuthHeader:
        t = text.strip()
        parts = t.split(None, 1)
        if not parts:
            raise SipParseError("empty credentials")
        scheme = check_token(parts[0], "auth scheme")
        params: dict[str, str] = {}
        if len(parts) > 1:
            for item in split_values(parts[1]):
                name, eq, value = item.partition("=")
                name = name.strip()
                if not eq or not name or name.strip(TOKEN_CHARS):
                    raise SipParseError(f"invalid auth parameter {item!r}")
                value = value.strip()
                if value[:1] == '"':
                    if len(value) < 2 or _quoted_end(value, 0) != len(value):
                        raise SipParseError(f"invalid auth parameter {item!r}")
                    value = unquote(value)
                params[name.lower()] = value
        return cls(scheme, params)

    @property
    def is_digest(self) -> bool:
        return self.scheme.lower() == "digest"

    def get(self, name: str, default: str | None = None) -> str | None:
        return self.params.get(name, default)

    def __str__(self) -> str:
        def fmt(k: str, v: str) -> str:
            if k in ("algorithm", "stale", "nc", "qop") and v and not v.strip(TOKEN_CHARS):
                # RFC 2617: these are tokens in credentials (qop="auth" in challenges is OK quoted)
                return f"{k}={v}"
            return f"{k}={quote(v)}"

        return f"{self.scheme} " + ", ".join(fmt(k, v) for k, v in self.params.items())

    def __repr__(self) -> str:
        return f"AuthHeader({self.scheme!r}, {self.params!r})"


# -- Date (RFC 3261 §20.17: rfc1123-date, GMT only) ------------------------

# rfc1123-date = wkday "," SP date1 SP time SP "GMT"
_DATE_RE = re.compile(
    r"(Mon|Tue|Wed|Thu|Fri|Sat|Sun), (\d\d) (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) "
    r"(\d{4}) (\d\d):(\d\d):(\d\d) GMT"
)
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def parse_date(text: str) -> datetime:
    """Parse a SIP Date value (``Sat, 13 Nov 2010 23:29:00 GMT``) to an
    aware UTC datetime."""
    m = _DATE_RE.fullmatch(text.strip())
    if m is None:
        raise SipParseError(f"invalid Date {text.strip()!r}")
    try:
        return datetime(
            int(m[4]),
            _MONTHS.index(m[3]) + 1,
            int(m[2]),
            int(m[5]),
            int(m[6]),
            int(m[7]),
            tzinfo=UTC,
        )
    except ValueError:
        raise SipParseError(f"invalid Date {text.strip()!r}") from None
