"""SIP, SIPS and TEL URIs (RFC 3261 §19.1, RFC 3966).

``SipUri.parse("sip:alice:pw@[2001:db8::1]:5060;transport=tcp?subject=hi")``
gives ``scheme``, ``user``, ``password``, ``host`` (IPv6 references keep
their brackets), ``port``, ``params`` (names lower-cased, values as
written, ``None`` for a flag like ``lr``) and ``headers``.  User, password
and parameters keep their %-escapes; :attr:`SipUri.user_unescaped` and
:func:`unescape` decode them.  ``str()`` rebuilds the URI.

Any other scheme raises :class:`SipParseError` with status 416 (Unsupported
URI Scheme) when it is syntactically a URI, 400 otherwise.
"""

from __future__ import annotations

import re
from urllib.parse import unquote_to_bytes

from sipexpress.sip.errors import SipParseError
from sipexpress.sip.headers import ALNUM

__all__ = ["SipUri", "unescape"]

_SCHEME_CHARS = ALNUM + "+-."
_UNRESERVED = ALNUM + "-_.!~*'()"
# user = 1*( unreserved / escaped / user-unreserved ); user-unreserved = & = + $ , ; ? /
_USER_CHARS = _UNRESERVED + "%&=+$,;?/"
# password = *( unreserved / escaped / & = + $ , )
_PASSWORD_CHARS = _UNRESERVED + "%&=+$,"
# paramchar = param-unreserved / unreserved / escaped; param-unreserved = [ ] / : & + $
_PARAM_CHARS = _UNRESERVED + "%[]/:&+$"
# hname/hvalue chars: hnv-unreserved = [ ] / ? : + $
_HEADER_CHARS = _UNRESERVED + "%[]/?:+$"
_HOST_CHARS = ALNUM + "-._"
_IPV6_CHARS = "0123456789abcdefABCDEF:."
_HEX = "0123456789abcdefABCDEF"
_TEL_CHARS = ALNUM + "-.()+*#%"


# The everyday spelling (lower-case scheme, no %-escapes, no password, no
# headers) in one C-level match; everything else goes through the general
# parser, which gives the same result for what the fast path accepts.
_P = r"[A-Za-z0-9\-_.!~*'()\[\]/:&+$]+"
_SIP_FAST = re.compile(
    r"(sips?):(?:([A-Za-z0-9\-_.!~*'()&=+$,;?/]+)@)?([A-Za-z0-9\-_.]+|\[[0-9A-Fa-f:.]{2,}\])"
    r"(?::([0-9]{1,5}))?((?:;" + _P + "(?:=" + _P + ")?)*)"
)

# URI text -> the fast path's fields (scheme, user, host, port, params)
_KNOWN: dict[str, tuple[str, str | None, str, int | None, dict[str, str | None] | None]] = {}


def unescape(s: str) -> str:
    """Decode %-escapes (UTF-8; invalid sequences kept as surrogate escapes)."""
    if "%" not in s:
        return s
    return unquote_to_bytes(s).decode("utf-8", "surrogateescape")


def _check(s: str, chars: str, what: str) -> None:
    if s.strip(chars):
        raise SipParseError(f"invalid character in URI {what}: {s!r}")
    if "%" in s:
        i = s.find("%")
        while i >= 0:
            if len(s) < i + 3 or s[i + 1] not in _HEX or s[i + 2] not in _HEX:
                raise SipParseError(f"invalid %-escape in URI {what}: {s!r}")
            i = s.find("%", i + 3)


def _parse_uri_params(s: str) -> dict[str, str | None]:
    params: dict[str, str | None] = {}
    for p in s.split(";"):
        name, eq, value = p.partition("=")
        if not name:
            raise SipParseError("empty URI parameter")
        _check(name, _PARAM_CHARS, "parameter")
        if eq:
            if not value:
                raise SipParseError(f"empty value for URI parameter {name!r}")
            _check(value, _PARAM_CHARS, "parameter")
            params.setdefault(name.lower(), value)
        else:
            params.setdefault(name.lower(), None)
    return params


class SipUri:
    """A parsed SIP/SIPS/TEL URI.  Mutable: change fields, then ``str()``."""

    __slots__ = ("headers", "host", "params", "password", "port", "scheme", "user")

    def __init__(
        self,
        scheme: str = "sip",
        user: str | None = None,
        host: str = "",
        port: int | None = None,
        params: dict[str, str | None] | None = None,
        headers: dict[str, str] | None = None,
        password: str | None = None,
    ) -> None:
        self.scheme = scheme
        self.user = user
        self.password = password
        self.host = host
        self.port = port
        self.params: dict[str, str | None] = params if params is not None else {}
        self.headers: dict[str, str] = headers if headers is not None else {}

    @classmethod
    def parse(cls, text: str) -> SipUri:
        # the same few URIs come again and again (our own address, the
        # registered contacts, the Route of a dialog): their fields are
        # remembered, each call still returns a new (mutable) object
        known = _KNOWN.get(text)
        if known is not None:
            scheme, user, host, nport, known_params = known
            return cls(scheme, user, host, nport, known_params.copy() if known_params else {})
        m = _SIP_FAST.fullmatch(text)
        if m is not None:
            scheme, user, host, port, ptext = m.groups()
            params: dict[str, str | None] = {}
            if ptext:
                for part in ptext[1:].split(";"):
                    name, eq, value = part.partition("=")
                    params.setdefault(name.lower(), value if eq else None)
            nport = None if port is None else int(port)
            if nport is None or nport <= 65535:
                if len(text) <= 256:  # bounded: at most 1024 short URIs
                    if len(_KNOWN) >= 1024:
                        _KNOWN.clear()
                    _KNOWN[text] = (scheme, user, host, nport, params.copy() if params else None)
                return cls(scheme, user, host, nport, params)
        return cls._parse(text)

    @classmethod
    def _parse(cls, text: str) -> SipUri:
        colon = text.find(":")
        if colon <= 0:
            raise SipParseError(f"invalid URI {text!r}")
        scheme = text[:colon].lower()
        rest = text[colon + 1 :]
        if scheme == "sip" or scheme == "sips":
            return cls._parse_sip(scheme, rest, text)
        if scheme == "tel":
            return cls._parse_tel(rest, text)
        if not text[0].isalpha() or scheme.strip(_SCHEME_CHARS):
            raise SipParseError(f"invalid URI {text!r}")
        for ch in ' \t\r\n<>"':
            if ch in rest:
                raise SipParseError(f"invalid URI {text!r}")
        raise SipParseError(f"unsupported URI scheme {scheme!r}", 416)

    @classmethod
    def _parse_sip(cls, scheme: str, rest: str, text: str) -> SipUri:
        user: str | None = None
        password: str | None = None
        at = rest.find("@")
        if at >= 0:
            userinfo = rest[:at]
            rest = rest[at + 1 :]
            u, c, pw = userinfo.partition(":")
            if not u:
                raise SipParseError(f"empty user in URI {text!r}")
            _check(u, _USER_CHARS, "user")
            user = u
            if c:
                _check(pw, _PASSWORD_CHARS, "password")
                password = pw
        headers: dict[str, str] = {}
        q = rest.find("?")
        if q >= 0:
            hs = rest[q + 1 :]
            rest = rest[:q]
            for h in hs.split("&"):
                hn, eq, hv = h.partition("=")
                if not hn or not eq:
                    raise SipParseError(f"invalid header in URI {text!r}")
                _check(hn, _HEADER_CHARS, "header")
                _check(hv, _HEADER_CHARS, "header")
                headers[hn] = hv
        semi = rest.find(";")
        if semi >= 0:
            params = _parse_uri_params(rest[semi + 1 :])
            hostport = rest[:semi]
        else:
            params = {}
            hostport = rest
        port: int | None = None
        if hostport[:1] == "[":
            close = hostport.find("]")
            if close < 3 or hostport[1:close].strip(_IPV6_CHARS):
                raise SipParseError(f"invalid IPv6 reference in URI {text!r}")
            host = hostport[: close + 1]
            after = hostport[close + 1 :]
            if after:
                if after[0] != ":":
                    raise SipParseError(f"invalid host in URI {text!r}")
                port = cls._port(after[1:], text)
        else:
            host, c, p = hostport.partition(":")
            if not host or host.strip(_HOST_CHARS):
                raise SipParseError(f"invalid host in URI {text!r}")
            if c:
                port = cls._port(p, text)
        return cls(scheme, user, host, port, params, headers, password)

    @staticmethod
    def _port(p: str, text: str) -> int:
        if not p or len(p) > 5 or p.strip("0123456789"):
            raise SipParseError(f"invalid port in URI {text!r}")
        port = int(p)
        if port > 65535:
            raise SipParseError(f"invalid port in URI {text!r}")
        return port

    @classmethod
    def _parse_tel(cls, rest: str, text: str) -> SipUri:
        semi = rest.find(";")
        number = rest if semi < 0 else rest[:semi]
        if not number or number.strip(_TEL_CHARS):
            raise SipParseError(f"invalid tel URI {text!r}")
        params = _parse_uri_params(rest[semi + 1 :]) if semi >= 0 else {}
        return cls("tel", number, "", None, params)

    # -- accessors -------------------------------------------------------
    @property
    def transport(self) -> str | None:
        t = self.params.get("transport")
        return t.lower() if t else None

    @property
    def user_unescaped(self) -> str | None:
        return None if self.user is None else unescape(self.user)

    @property
    def maddr(self) -> str | None:
        return self.params.get("maddr")

    @property
    def lr(self) -> bool:
        return "lr" in self.params

    @property
    def hostport(self) -> str:
        return self.host if self.port is None else f"{self.host}:{self.port}"

    @property
    def secure(self) -> bool:
        return self.scheme == "sips"

    def __str__(self) -> str:
        if self.scheme == "tel":
            out = f"tel:{self.user or ''}"
        else:
            ui = ""
            if self.user is not None:
                ui = self.user if self.password is None else f"{self.user}:{self.password}"
                ui += "@"
            out = f"{self.scheme}:{ui}{self.hostport}"
        if self.params:
            out += "".join(f";{k}" if v is None else f";{k}={v}" for k, v in self.params.items())
        if self.headers:
            out += "?" + "&".join(f"{k}={v}" for k, v in self.headers.items())
        return out

    def __repr__(self) -> str:
        return f"SipUri({str(self)!r})"

    def copy(self) -> SipUri:
        return SipUri(
            self.scheme,
            self.user,
            self.host,
            self.port,
            dict(self.params),
            dict(self.headers),
            self.password,
        )

    def rfc_equal(self, other: SipUri) -> bool:
        """URI equality of RFC 3261 §19.1.4: user and password compared
        case-sensitively after unescaping, host case-insensitively, a port
        present in one only differs, ``user``/``ttl``/``method``/``maddr``/
        ``transport`` must agree when present in either, other parameters
        only when present in both, headers must agree."""
        if self.scheme != other.scheme:
            return False
        if self.user_unescaped != other.user_unescaped:
            return False
        if (None if self.password is None else unescape(self.password)) != (
            None if other.password is None else unescape(other.password)
        ):
            return False
        if self.host.lower() != other.host.lower() or self.port != other.port:
            return False
        a = {k: None if v is None else unescape(v).lower() for k, v in self.params.items()}
        b = {k: None if v is None else unescape(v).lower() for k, v in other.params.items()}
        for k in ("user", "ttl", "method", "maddr", "transport"):
            if a.get(k, "\0") != b.get(k, "\0"):
                return False
        for k in a.keys() & b.keys():
            if a[k] != b[k]:
                return False
        ha = {k.lower(): unescape(v) for k, v in self.headers.items()}
        hb = {k.lower(): unescape(v) for k, v in other.headers.items()}
        return ha == hb
