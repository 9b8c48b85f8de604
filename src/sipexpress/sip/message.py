"""SIP messages: a lazy parser and a byte-preserving modification API.

Theory of operation
-------------------
:meth:`SipMessage.parse` does the minimum a receiver always needs: it finds
the end of the header block (``bytes.find``) and splits the start line.
Nothing else is looked at until asked.

The first header access builds the *field index*: the header block is split
at its line ends (one C-level ``split``), continuation lines are merged into
their field, and a parallel list of keys is made (lower-case full names,
compact forms expanded) with one cached dict lookup per line.  Lookups are
then ``list.index``/``list.count`` calls.  A value is decoded (UTF-8,
undecodable bytes kept as surrogate escapes) only when asked; typed values
(Via, From, CSeq ...) are parsed on first use and cached.

Modifications edit those two lists (a changed or added field is a new line);
``raw`` itself is never touched.  :meth:`SipMessage.serialize` returns
``raw`` for an unmodified message, else joins the start line, the field
lines (the untouched ones are the bytes as received) and the body once.

Errors: anything malformed raises :class:`SipParseError` -- from ``parse``
(framing, start line), from an accessor (that header's value), or from
:meth:`SipMessage.validate` (everything a proxy relies on, RFC 4475 §3.1.2).
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any, Final

from sipexpress.sip.cache import BoundedCache
from sipexpress.sip.errors import SipError, SipParseError
from sipexpress.sip.headers import (
    _KEY_CACHE,
    CALL_ID_LINE_B,
    COMPACT,
    CSEQ_LINE_B,
    NAME_ADDR_LINE_B,
    TOKEN_CHARS,
    AuthHeader,
    Contact,
    ContactList,
    CSeq,
    NameAddr,
    Via,
    contact_from_line,
    header_key,
    name_addr_from_line,
    parse_date,
    parse_uint,
    split_values,
    via_from_line,
)
from sipexpress.sip.uri import SipUri

__all__ = ["SipMessage", "StreamFramer", "build_reply", "build_request"]

_KNOWN_METHODS: Final[dict[bytes, str]] = {
    m.encode(): m
    for m in (
        "INVITE",
        "ACK",
        "OPTIONS",
        "BYE",
        "CANCEL",
        "REGISTER",
        "INFO",
        "PRACK",
        "SUBSCRIBE",
        "NOTIFY",
        "UPDATE",
        "MESSAGE",
        "REFER",
        "PUBLISH",
    )
}
_TOKEN_B: Final = TOKEN_CHARS.encode()
_DIGITS_B: Final = b"0123456789"

# raw header-name bytes (as they appear before the colon) -> lookup key
_NAME_KEYS: BoundedCache[bytes, str] = BoundedCache(1 << 20, 256)

#: header fields every request and response carries exactly once
_REQUIRED: Final = (("from", "From"), ("to", "To"), ("call-id", "Call-ID"), ("cseq", "CSeq"))
#: header key -> the typed-value cache entries computed from it
_CACHED_FROM: Final = {"via": ("via1", "vias"), "contact": ("contacts",)}
_SCHEME_CHARS: Final = "abcdefghijklmnopqrstuvwxyz0123456789+-."
_key_get: Final = _KEY_CACHE.get  # header_key's cache, without the call
#: Request-URIs that passed ``_check_ruri`` (a pure function of the text):
#: the quick check skips re-parsing the same URI (bounded, cleared when full)
_GOOD_RURIS: BoundedCache[str, None] = BoundedCache(1 << 20, 512)


class _Layout:
    """What one sequence of header keys says, computed once and shared by
    every message whose header names come in that order (a UA sends the
    same ones every time): where the fields a proxy uses are, whether the
    counts ``validate()`` demands hold, and the positions behind
    ``raw_header_groups`` calls."""

    __slots__ = (
        "call_id",
        "content_length",
        "cseq",
        "from_",
        "groups",
        "keys",
        "max_forwards",
        "to",
        "vias",
        "well_formed",
    )

    def __init__(self, keys: tuple[str, ...]) -> None:
        self.keys = keys
        first: dict[str, int] = {}
        for i in range(len(keys) - 1, -1, -1):
            first[keys[i]] = i
        count = keys.count
        #: exactly one From, To, Call-ID and CSeq, at most one Max-Forwards
        #: and Content-Length, at least one Via
        self.well_formed = (
            count("from") == 1
            and count("to") == 1
            and count("call-id") == 1
            and count("cseq") == 1
            and count("max-forwards") <= 1
            and count("content-length") <= 1
            and "via" in first
        )
        self.vias = tuple(i for i, k in enumerate(keys) if k == "via")
        self.from_ = first.get("from", -1)
        self.to = first.get("to", -1)
        self.call_id = first.get("call-id", -1)
        self.cseq = first.get("cseq", -1)
        self.max_forwards = first.get("max-forwards", -1)
        self.content_length = first.get("content-length", -1)
        self.groups: dict[tuple[str, ...], tuple[tuple[int, ...], ...]] = {}

    def positions(self, names: Sequence[str]) -> tuple[tuple[int, ...], ...]:
        """For each of ``names``, the indexes of its fields."""
        names = names if type(names) is tuple else tuple(names)
        pos = self.groups.get(names)
        if pos is None:
            wanted = [_key_get(n) or header_key(n) for n in names]
            pos = tuple(tuple(i for i, k in enumerate(self.keys) if k == w) for w in wanted)
            if len(self.groups) < 16:
                self.groups[names] = pos
        return pos


#: header-key sequence -> its layout (bounded in bytes: a message with
#: hundreds of header names of its own gets a layout nobody else shares)
_LAYOUTS: BoundedCache[tuple[str, ...], _Layout] = BoundedCache(8 << 20, 16 << 10)


def _small_uint(line: bytes, digits: int) -> int | None:
    """The number of a raw field line whose value is just 1..``digits``
    ASCII digits (the everyday spelling), else None."""
    v = line[line.find(b":") + 1 :].strip()
    return int(v) if 0 < len(v) <= digits and v.isdigit() else None


def _cseq_from_line(line: bytes) -> CSeq | None:
    """The CSeq of a raw field line in the everyday spelling, as
    ``CSeq.parse`` gives it, else None."""
    m = CSEQ_LINE_B.fullmatch(line, line.find(b":") + 1)
    if m is None:
        return None
    num = int(m[1])
    return CSeq(num, m[2].decode("ascii")) if num <= 0xFFFFFFFF else None


def _name_key(rn: bytes) -> str:
    """Key of a header name given as the bytes before the colon."""
    k = _NAME_KEYS.get(rn)
    if k is None:
        name = rn.rstrip(b" \t")
        if not name or name.translate(None, _TOKEN_B):
            raise SipParseError(f"invalid header name {name.decode('latin-1')!r}")
        k = name.decode("ascii").lower()
        if len(k) == 1:
            k = COMPACT.get(k, k)
        _NAME_KEYS.put(rn, k, 2 * len(rn))
    return k


def _decode(b: bytes) -> str:
    return b.decode("utf-8", "surrogateescape")


def _encode(s: str) -> bytes:
    return s.encode("utf-8", "surrogateescape")


def _unfold(v: bytes) -> bytes:
    return b" ".join(p for p in (x.strip() for x in v.splitlines()) if p)


def _header_line(name: str, value: str) -> bytes:
    return _encode(f"{name}: {value}\r\n")


#: SipMessage's attributes (its slots; copied by ``copy``)
_MESSAGE_FIELDS: Final = (
    "_body",
    "_body_start",
    "_cache",
    "_eol",
    "_fl_end",
    "_hdr_end",
    "_keys",
    "_lay",
    "_lines",
    "_mod",
    "_ruri_mod",
    "is_request",
    "method",
    "raw",
    "reason",
    "ruri",
    "status",
    "version",
)


class SipMessage:
    """A SIP request or response.  See the module docstring and
    docs/ARCHITECTURE.md ("SIP message layer") for the contract."""

    __slots__ = _MESSAGE_FIELDS

    raw: bytes
    _eol: bytes
    _fl_end: int
    _hdr_end: int
    _body_start: int
    _mod: bool
    _ruri_mod: bool
    _lines: list[bytes] | None
    _keys: list[str] | None
    _lay: _Layout | None
    _cache: dict[str, Any]
    _body: bytes | None
    is_request: bool
    method: str
    ruri: str
    version: str
    status: int
    reason: str

    # -- parsing ---------------------------------------------------------
    @classmethod
    def parse(cls, data: bytes) -> SipMessage:
        """Parse one complete message (a datagram or a stream frame).

        Only framing and the start line are examined here; header values
        are checked when used (or all at once by :meth:`validate`)."""
        if type(data) is not bytes:
            data = bytes(data)
        if data[:1] in (b"\r", b"\n"):
            data = data.lstrip(b"\r\n")  # RFC 3261 §7.5: CRLFs before the start line
        i = data.find(b"\r\n\r\n")
        if i >= 0:
            eol = b"\r\n"
            fl = data.find(b"\r\n")
            hdr_end = i + 2
            body_start = i + 4
        else:
            j = data.find(b"\n\n")
            if j >= 0:  # bare-LF line ends (tolerated, as SER did)
                eol = b"\n"
                fl = data.find(b"\n")
                hdr_end = j + 1
                body_start = j + 2
            elif len(data) > 2 and data.endswith(b"\r\n"):
                # header block not closed by an empty line (datagram): accept
                eol = b"\r\n"
                fl = data.find(b"\r\n")
                hdr_end = body_start = len(data)
            elif not data:
                raise SipParseError("empty message")
            else:
                raise SipParseError("incomplete message: no end of header block")
        self = cls()
        self.raw = data
        self._eol = eol
        self._fl_end = fl + len(eol)
        self._hdr_end = hdr_end
        self._body_start = body_start
        self._keys = None
        self._lay = None
        self._lines = None
        self._cache = {}
        self._mod = False
        self._ruri_mod = False
        self._body = None
        line = data[:fl]
        if eol == b"\n":
            line = line.rstrip(b"\r")
        if line[:4] == b"SIP/":
            self.is_request = False
            self.method = ""
            self.ruri = ""
            parts = line.split(b" ", 2)
            self.version = "SIP/2.0" if parts[0] == b"SIP/2.0" else _decode(parts[0])
            self.reason = _decode(parts[2]) if len(parts) > 2 else ""
            self.status = 0
            code = parts[1] if len(parts) > 1 else b""
            if len(code) != 3 or code.translate(None, _DIGITS_B) or not b"100" <= code <= b"699":
                raise SipParseError(f"invalid status code {_decode(code[:20])!r}", 400, self)
            self.status = int(code)
            if parts[0] != b"SIP/2.0":
                self._check_version(parts[0])
        else:
            self.is_request = True
            self.status = 0
            self.reason = ""
            parts = line.split(b" ")
            m = parts[0]
            method = _KNOWN_METHODS.get(m)
            if method is None:
                method = _decode(m)
                self.method = method
                self.ruri = ""
                self.version = ""
                if not m or m.translate(None, _TOKEN_B):
                    raise SipParseError("malformed Request-Line (method)", 400, self)
            self.method = method
            if len(parts) != 3 or not parts[1]:
                self.ruri = _decode(parts[1]) if len(parts) > 1 else ""
                self.version = ""
                raise SipParseError("malformed Request-Line", 400, self)
            self.ruri = _decode(parts[1])
            self.version = "SIP/2.0"
            if parts[2] != b"SIP/2.0":
                self.version = _decode(parts[2])
                self._check_version(parts[2])
        return self

    def _check_version(self, v: bytes) -> None:
        if v.upper() == b"SIP/2.0":
            self.version = "SIP/2.0"
            return
        major, dot, minor = v[4:].partition(b".")
        if (
            v[:4].upper() == b"SIP/"
            and dot
            and major
            and minor
            and not major.translate(None, _DIGITS_B)
            and not minor.translate(None, _DIGITS_B)
        ):
            raise SipParseError("SIP Version Not Supported", 505, self)
        raise SipParseError("malformed SIP version", 400, self)

    def _index(self) -> list[str]:
        """Locate the header fields (once): ``_lines`` (each field's bytes,
        continuation lines included, without the final line end) and the
        parallel ``_keys``."""
        raw = self.raw
        start = self._fl_end
        eol = self._eol
        end = self._hdr_end - len(eol)
        if end <= start:
            keys: list[str] = []
            self._lines = []
            self._keys = keys
            return keys
        lines = raw[start:end].split(eol)
        kc = _NAME_KEYS
        try:
            # one partition per line; the cache holds only valid names, so
            # a continuation line (leading blank) misses it, and a line
            # without colon is left out (the lengths then differ)
            keys = [kc[n] for ln in lines for n, c, _ in (ln.partition(b":"),) if c]
        except KeyError:
            lines, keys = self._index_slow(lines)
        else:
            if len(keys) != len(lines):
                lines, keys = self._index_slow(lines)
        self._lines = lines
        self._keys = keys
        return keys

    def _index_slow(self, lines: list[bytes]) -> tuple[list[bytes], list[str]]:
        eol = self._eol
        out_lines: list[bytes] = []
        out_keys: list[str] = []
        field: list[bytes] = []  # the current field's physical lines
        for line in lines:
            if not line:
                raise SipParseError("empty line inside header block")
            c = line[0]
            if c == 32 or c == 9:  # folded continuation of the previous field
                if not field:
                    raise SipParseError("continuation line before the first header field")
                field.append(line)
                continue
            colon = line.find(b":")
            if colon < 0:
                raise SipParseError(f"header line without colon: {_decode(line[:40])!r}")
            out_keys.append(_name_key(line[:colon]))
            if field:
                out_lines.append(field[0] if len(field) == 1 else eol.join(field))
            field = [line]
        if field:
            out_lines.append(field[0] if len(field) == 1 else eol.join(field))
        return out_lines, out_keys

    @staticmethod
    def _value(line: bytes) -> str:
        v = line[line.find(b":") + 1 :].strip()
        if b"\n" in v:
            v = _unfold(v)
        return v.decode("utf-8", "surrogateescape")

    # -- generic header access --------------------------------------------
    def _fields(self) -> tuple[list[bytes], list[str]]:
        if self._keys is None:
            self._index()
        return self._lines, self._keys  # type: ignore[return-value]

    def _layout(self) -> _Layout:
        lay = self._lay
        if lay is None:
            keys = self._keys if self._keys is not None else self._index()
            t = tuple(keys)
            lay = _LAYOUTS.get(t)
            if lay is None:
                lay = _Layout(t)
                # the tuple, its keys, the per-field tuples of the layout
                _LAYOUTS.put(t, lay, 3 * 8 * len(t) + sum(map(len, t)))
            self._lay = lay
        return lay

    def header(self, name: str) -> str | None:
        """Value of the first header field called ``name`` (stripped,
        unfolded), or ``None``."""
        keys = self._keys if self._keys is not None else self._index()
        try:
            i = keys.index(header_key(name))
        except ValueError:
            return None
        return self._value(self._lines[i])  # type: ignore[index]

    def header_all(self, name: str) -> list[str]:
        """Values of every header field called ``name``, in order."""
        lines, keys = self._fields()
        key = header_key(name)
        n = keys.count(key)
        if n == 0:
            return []
        if n == 1:
            return [self._value(lines[keys.index(key)])]
        return [self._value(lines[i]) for i, k in enumerate(keys) if k == key]

    def values(self, name: str) -> list[str]:
        """The comma-separated elements of every ``name`` header field."""
        out: list[str] = []
        for v in self.header_all(name):
            out.extend(split_values(v))
        return out

    def has_header(self, name: str) -> bool:
        keys = self._keys if self._keys is not None else self._index()
        return header_key(name) in keys

    def count(self, name: str) -> int:
        """Number of header fields called ``name``."""
        keys = self._keys if self._keys is not None else self._index()
        return keys.count(header_key(name))

    def header_names(self) -> list[str]:
        """Header names as they appear (compact forms not expanded)."""
        lines, _ = self._fields()
        return [_decode(ln[: ln.find(b":")].rstrip()) for ln in lines]

    def iter_headers(self) -> Iterator[tuple[str, str]]:
        """``(name as written, value)`` for every header field, in order."""
        lines, _ = self._fields()
        for ln in list(lines):
            yield _decode(ln[: ln.find(b":")].rstrip()), self._value(ln)

    def first_field_line(self, key: str) -> bytes | None:
        """The first field called ``key`` (a lookup key: lower-case full
        name) as its raw line, continuation lines included, without the
        final line end; ``None`` if there is none."""
        keys = self._keys if self._keys is not None else self._index()
        try:
            return self._lines[keys.index(key)]  # type: ignore[index]
        except ValueError:
            return None

    def raw_header_lines(self, name: str) -> list[bytes]:
        """The complete lines (name, value, continuation lines, line end) of
        every ``name`` header field, as received (or as set)."""
        lines, keys = self._fields()
        key = header_key(name)
        n = keys.count(key)
        if n == 0:
            return []
        eol = self._eol
        if n == 1:
            return [lines[keys.index(key)] + eol]
        return [lines[i] + eol for i, k in enumerate(keys) if k == key]

    def raw_header_groups(self, names: Sequence[str]) -> list[list[bytes]]:
        """:meth:`raw_header_lines` of several names at once (one list per
        name, in the order given): what a reply copies from its request."""
        lay = self._lay if self._lay is not None else self._layout()
        lines: list[bytes] = self._lines  # type: ignore[assignment]
        eol = self._eol
        out: list[list[bytes]] = []
        append = out.append
        for pos in lay.positions(names):
            if len(pos) == 1:
                append([lines[pos[0]] + eol])
            else:
                append([lines[i] + eol for i in pos])
        return out

    @property
    def is_response(self) -> bool:
        return not self.is_request

    @property
    def first_line(self) -> str:
        if self.is_request:
            return f"{self.method} {self.ruri} {self.version}"
        return f"{self.version} {self.status} {self.reason}"

    # -- typed accessors ---------------------------------------------------
    def _first(self, key: str) -> str | None:
        keys = self._keys if self._keys is not None else self._index()
        try:
            i = keys.index(key)
        except ValueError:
            return None
        return self._value(self._lines[i])  # type: ignore[index]

    def _required(self, key: str, label: str) -> str:
        keys = self._keys if self._keys is not None else self._index()
        try:
            i = keys.index(key)
        except ValueError:
            raise SipParseError(f"missing {label} header field") from None
        return self._value(self._lines[i])  # type: ignore[index]

    @property
    def via1(self) -> Via:
        """The topmost Via value."""
        v = self._cache.get("via1")
        if v is not None:
            return v  # type: ignore[no-any-return]
        keys = self._keys if self._keys is not None else self._index()
        try:
            value = self._value(self._lines[keys.index("via")])  # type: ignore[index]
        except ValueError:
            raise SipParseError("missing Via header field") from None
        if "," in value:
            # several values in the top field: check them all while at it
            via = self.vias[0]
        else:
            try:
                via = Via.parse(value)
            except SipParseError as e:
                raise SipParseError(f"invalid Via: {e.reason}") from None
        self._cache["via1"] = via
        return via

    @property
    def vias(self) -> list[Via]:
        """Every Via value, top first (an empty list if there is none)."""
        v = self._cache.get("vias")
        if v is not None:
            return v  # type: ignore[no-any-return]
        out: list[Via] = []
        try:
            for value in self.header_all("via"):
                for item in split_values(value, keep_empty=True):
                    out.append(Via.parse(item))
        except SipParseError as e:
            raise SipParseError(f"invalid Via: {e.reason}") from None
        self._cache["vias"] = out
        return out

    def _name_addr(self, key: str, label: str) -> NameAddr:
        v = self._cache.get(key)
        if v is not None:
            return v  # type: ignore[no-any-return]
        keys = self._keys if self._keys is not None else self._index()
        try:
            value = self._value(self._lines[keys.index(key)])  # type: ignore[index]
        except ValueError:
            raise SipParseError(f"missing {label} header field") from None
        try:
            na = NameAddr.parse(value)
        except SipParseError as e:
            raise SipParseError(f"invalid {label}: {e.reason}") from None
        self._cache[key] = na
        return na

    @property
    def from_(self) -> NameAddr:
        return self._name_addr("from", "From")

    @property
    def to(self) -> NameAddr:
        return self._name_addr("to", "To")

    @property
    def call_id(self) -> str:
        v = self._required("call-id", "Call-ID")
        if not v or " " in v or "\t" in v:
            raise SipParseError(f"invalid Call-ID {v!r}")
        return v

    @property
    def cseq(self) -> CSeq:
        v = self._cache.get("cseq")
        if v is not None:
            return v  # type: ignore[no-any-return]
        line = self.first_field_line("cseq")
        cs = _cseq_from_line(line) if line is not None else None
        if cs is None:
            cs = CSeq.parse(self._required("cseq", "CSeq"))
        self._cache["cseq"] = cs
        return cs

    @property
    def max_forwards(self) -> int | None:
        line = self.first_field_line("max-forwards")
        if line is None:
            return None
        n = _small_uint(line, 3)
        if n is not None and n <= 255:
            return n
        return parse_uint(self._value(line), "Max-Forwards", 255)

    @property
    def content_length(self) -> int | None:
        keys = self._keys if self._keys is not None else self._index()
        n = keys.count("content-length")
        if not n:
            return None
        if n > 1:
            raise SipParseError("multiple Content-Length header fields")
        return parse_uint(self._first("content-length") or "", "Content-Length", 0x7FFFFFFF)

    @property
    def expires(self) -> int | None:
        line = self.first_field_line("expires")
        if line is None:
            return None
        n = _small_uint(line, 9)  # the everyday spelling, from the raw line
        return n if n is not None else parse_uint(self._value(line), "Expires")

    @property
    def date(self) -> datetime | None:
        v = self._first("date")
        return None if v is None else parse_date(v)

    @property
    def content_type(self) -> str | None:
        return self._first("content-type")

    @property
    def contacts(self) -> ContactList:
        """Every Contact value; ``.star`` is True for ``Contact: *``."""
        v = self._cache.get("contacts")
        if v is not None:
            return v  # type: ignore[no-any-return]
        out = ContactList()
        keys = self._keys if self._keys is not None else self._index()
        if keys.count("contact") == 1:  # the usual REGISTER: one field, one value
            line = self._lines[keys.index("contact")]  # type: ignore[index]
            c = contact_from_line(line, line.find(b":") + 1)
            if c is not None:
                out.append(c)
                self._cache["contacts"] = out
                return out
        for value in self.header_all("contact"):
            for item in split_values(value, keep_empty=True):
                if item == "*":
                    out.star = True
                    continue
                try:
                    out.append(Contact.parse(item))  # type: ignore[arg-type]
                except SipParseError as e:
                    raise SipParseError(f"invalid Contact: {e.reason}") from None
        if out.star and len(out):
            raise SipParseError("Contact '*' mixed with addresses")
        self._cache["contacts"] = out
        return out

    @property
    def contact_star(self) -> bool:
        return self.contacts.star

    def _name_addrs(self, key: str, label: str) -> list[NameAddr]:
        v = self._cache.get(key)
        if v is not None:
            return v  # type: ignore[no-any-return]
        keys = self._keys if self._keys is not None else self._index()
        if keys.count(key) == 1:
            # one field, one value in the everyday spelling (a dialog's
            # Route): the fast pattern gives what NameAddr.parse would
            line: bytes = self._lines[keys.index(key)]  # type: ignore[index]
            one = name_addr_from_line(line, line.find(b":") + 1)
            if one is not None:
                self._cache[key] = [one]
                return self._cache[key]  # type: ignore[no-any-return]
        out: list[NameAddr] = []
        try:
            for value in self.header_all(key):
                for item in split_values(value, keep_empty=True):
                    out.append(NameAddr.parse(item))
        except SipParseError as e:
            raise SipParseError(f"invalid {label}: {e.reason}") from None
        self._cache[key] = out
        return out

    @property
    def routes(self) -> list[NameAddr]:
        return self._name_addrs("route", "Route")

    @property
    def record_routes(self) -> list[NameAddr]:
        return self._name_addrs("record-route", "Record-Route")

    def auth_headers(self, name: str) -> list[AuthHeader]:
        """Parsed Authorization / Proxy-Authorization / WWW-Authenticate /
        Proxy-Authenticate fields (one credential or challenge per field)."""
        return [AuthHeader.parse(v) for v in self.header_all(name)]

    @property
    def authorization(self) -> list[AuthHeader]:
        return self.auth_headers("authorization")

    @property
    def proxy_authorization(self) -> list[AuthHeader]:
        return self.auth_headers("proxy-authorization")

    @property
    def www_authenticate(self) -> list[AuthHeader]:
        return self.auth_headers("www-authenticate")

    @property
    def proxy_authenticate(self) -> list[AuthHeader]:
        return self.auth_headers("proxy-authenticate")

    @property
    def parsed_ruri(self) -> SipUri:
        """The (current) request URI parsed; 416 for a scheme other than
        sip/sips/tel.  Cached: do not modify the returned object."""
        v = self._cache.get("ruri")
        if v is not None:
            return v  # type: ignore[no-any-return]
        u = SipUri.parse(self.ruri)
        self._cache["ruri"] = u
        return u

    def _body_end(self) -> int:
        """End of the body in ``raw``: Content-Length bytes when present and
        not larger than what arrived, else everything."""
        try:
            cl = self.content_length
        except SipParseError:
            return len(self.raw)
        if cl is None or cl > len(self.raw) - self._body_start:
            return len(self.raw)
        return self._body_start + cl

    @property
    def body(self) -> bytes:
        """The message body.  In a datagram, bytes beyond Content-Length are
        ignored (RFC 3261 §18.3); fewer bytes than Content-Length announces
        raise :class:`SipParseError`."""
        if self._body is not None:
            return self._body
        bs = self._body_start
        if bs == len(self.raw):
            return b""
        cl = self.content_length
        if cl is None:
            return self.raw[bs:]
        if cl > len(self.raw) - bs:
            raise SipParseError("Content-Length larger than the body")
        return self.raw[bs : bs + cl]

    # -- validation ----------------------------------------------------------
    def validate(self, strict: bool = False) -> None:
        """Check what a proxy relies on; raise :class:`SipParseError` (with
        the reply status, 400 unless stated) on the first problem.

        Always: every header line well formed; exactly one From, To, Call-ID
        and CSeq, each well formed; at least one Via, all well formed; at
        most one Max-Forwards (0-255) and one Content-Length (not more than
        the body that arrived); for requests the CSeq method equals the
        request method and the Request-URI is well formed (no ``<>``, no
        headers in a SIP URI; an unknown scheme passes -- answering 416 is the
        application's job).

        ``strict=True`` also checks Contact, Expires, Date, Route and
        Record-Route (a registrar, or an element that uses them).

        The everyday request is proven valid by :meth:`_quick_check` (one
        regular expression per raw line, no decoding) at half the cost;
        anything it cannot prove takes the full check below, so the outcome
        and the error reported are the same either way
        (tests/unit/sip/test_quick_check.py)."""
        if not strict and self._quick_check():
            return
        self._full_check(strict)

    def _full_check(self, strict: bool) -> None:
        """``validate`` without the quick check (its reference)."""
        keys = self._keys if self._keys is not None else self._index()
        for key, label in _REQUIRED:
            n = keys.count(key)
            if n != 1:
                raise SipParseError(
                    f"missing {label} header field" if n == 0 else f"multiple {label} header fields"
                )
        if keys.count("max-forwards") > 1:
            raise SipParseError("multiple Max-Forwards header fields")
        if "via" not in keys:
            raise SipParseError("missing Via header field")
        if keys.count("via") == 1:
            self.via1  # noqa: B018  (all values of a multi-value field are checked)
        else:
            self.vias  # noqa: B018
        self.from_  # noqa: B018
        self.to  # noqa: B018
        self.call_id  # noqa: B018
        cseq = self.cseq
        if self.is_request:
            if cseq.method != self.method:
                raise SipParseError("CSeq method does not match the request method")
            self._check_ruri()
            self.max_forwards  # noqa: B018
        if "content-length" in keys:
            cl = self.content_length
            if cl is not None and self._body is None and cl > len(self.raw) - self._body_start:
                raise SipParseError("Content-Length larger than the body")
        if strict:
            self.contacts  # noqa: B018
            self.expires  # noqa: B018
            self.date  # noqa: B018
            self.routes  # noqa: B018
            self.record_routes  # noqa: B018

    def _quick_check(self) -> bool:
        """True when cheap checks prove that ``validate()`` passes: one
        regular expression per raw field line for the everyday spelling
        (no folding, no quoted parameters, canonical CSeq), no decoding.
        False means "not proven" -- the full check then runs and reports
        the first problem as before.  The typed values it needs anyway are
        cached (top Via, To, CSeq); the others are parsed when used."""
        lay = self._lay if self._lay is not None else self._layout()
        if not lay.well_formed:
            return False
        lines: list[bytes] = self._lines  # type: ignore[assignment]
        line = lines[lay.from_]
        if NAME_ADDR_LINE_B.fullmatch(line, line.find(b":") + 1) is None:
            return False
        line = lines[lay.call_id]
        if CALL_ID_LINE_B.fullmatch(line, line.find(b":") + 1) is None:
            return False
        cseq = _cseq_from_line(lines[lay.cseq])
        if cseq is None or (self.is_request and cseq.method != self.method):
            return False
        if lay.max_forwards >= 0:
            mf = _small_uint(lines[lay.max_forwards], 3)
            if mf is None or mf > 255:
                return False
        if lay.content_length >= 0:
            cl = _small_uint(lines[lay.content_length], 9)
            if cl is None or (self._body is None and cl > len(self.raw) - self._body_start):
                return False
        if self.is_request:
            ruri = self.ruri
            if ruri not in _GOOD_RURIS:
                try:
                    self._check_ruri()
                except SipParseError:
                    return False
                _GOOD_RURIS.put(ruri, None, len(ruri))
        # the top Via and To are needed by nearly every request's handling
        # (reply routing, the reply's To tag, dialogs): keep them parsed
        cache = self._cache
        vias = lay.vias
        if "via1" not in cache:
            line = lines[vias[0]]
            via = via_from_line(line, line.find(b":") + 1)
            if via is None:
                return False
            cache["via1"] = via
        if "to" not in cache:
            line = lines[lay.to]
            to = name_addr_from_line(line, line.find(b":") + 1)
            if to is None:
                return False
            cache["to"] = to
        if len(vias) > 1 and "vias" not in cache:
            for i in vias[1:]:  # the top field was checked by via1
                line = lines[i]
                if via_from_line(line, line.find(b":") + 1) is None:
                    return False
        if "cseq" not in cache:
            cache["cseq"] = cseq
        return True

    def _check_ruri(self) -> None:
        r = self.ruri
        colon = r.find(":")
        scheme = r[:colon].lower() if colon > 0 else ""
        if scheme in ("sip", "sips", "tel"):
            u = self.parsed_ruri
            if u.headers:
                raise SipParseError("Request-URI must not contain headers")
            return
        # absoluteURI with an unknown scheme: syntax only (416 is the app's call)
        if not scheme or not r[0].isalpha() or scheme.strip(_SCHEME_CHARS) or colon == len(r) - 1:
            raise SipParseError(f"invalid Request-URI {r[:60]!r}")
        if any(ord(ch) <= 32 or ch in '<>"\x7f' for ch in r):
            raise SipParseError(f"invalid Request-URI {r[:60]!r}")

    # -- modification ----------------------------------------------------------
    def _edit(self, *changed: str, same_fields: bool = False) -> tuple[list[bytes], list[str]]:
        """Prepare an edit of the fields called ``changed`` (keys): only
        their cached typed values are dropped, and the field layout only
        when fields come or go (not ``same_fields``)."""
        if self._keys is None:
            self._index()
        self._mod = True
        if not same_fields:
            self._lay = None
        cache = self._cache
        if cache:
            for key in changed:
                for entry in _CACHED_FROM.get(key, (key,)):
                    cache.pop(entry, None)
        return self._lines, self._keys  # type: ignore[return-value]

    def set_ruri(self, uri: str) -> None:
        """Replace the Request-URI."""
        if not self.is_request:
            raise SipError("set_ruri on a response")
        self.ruri = uri
        self._ruri_mod = True
        self._mod = True
        self._cache.pop("ruri", None)

    def insert_header(self, name: str, value: str, first: bool = True) -> None:
        """Add ``name: value`` at the top (``first``) or the bottom of the
        header block."""
        key = header_key(name)
        lines, keys = self._edit(key)
        line = _encode(f"{name}: {value}")
        if first:
            lines.insert(0, line)
            keys.insert(0, key)
        else:
            lines.append(line)
            keys.append(key)

    def append_header_raw(self, text: str | bytes) -> None:
        """Append complete header line(s) (``"Name: value\\r\\n"``, several
        allowed, continuation lines too) at the bottom of the header block,
        as textops' ``append_hf``."""
        b = _encode(text) if isinstance(text, str) else text
        new_lines: list[bytes] = []
        for line in b.splitlines():
            if not line.strip():
                continue
            if line[:1] in (b" ", b"\t") and new_lines:
                new_lines[-1] += b"\r\n" + line
            else:
                new_lines.append(line)
        new_keys = []
        for line in new_lines:
            colon = line.find(b":")
            if colon <= 0:
                raise SipError(f"not a header line: {line!r}")
            new_keys.append(_name_key(line[:colon]))
        lines, keys = self._edit(*new_keys)
        lines.extend(new_lines)
        keys.extend(new_keys)

    def remove_header(self, name: str) -> int:
        """Remove every field called ``name``; return how many."""
        key = header_key(name)
        keys = self._keys if self._keys is not None else self._index()
        n = keys.count(key)
        if n:
            lines, keys = self._edit(key)
            if n == 1:
                i = keys.index(key)
                del lines[i]
                del keys[i]
            else:
                for i in range(len(keys) - 1, -1, -1):  # from the end: indices stay valid
                    if keys[i] == key:
                        del lines[i]
                        del keys[i]
        return n

    def remove_first(self, name: str) -> bool:
        """Remove the first field called ``name``."""
        key = header_key(name)
        keys = self._keys if self._keys is not None else self._index()
        if key not in keys:
            return False
        lines, keys = self._edit(key)
        i = keys.index(key)
        del lines[i]
        del keys[i]
        return True

    def replace_header(self, name: str, value: str) -> None:
        """Set ``name`` to one field with ``value``: the first existing field
        is replaced in place, any others removed; appended if absent."""
        key = header_key(name)
        keys = self._keys if self._keys is not None else self._index()
        line = _encode(f"{name}: {value}")
        if keys.count(key) == 1:  # the everyday case (Max-Forwards): in place
            lines, keys = self._edit(key, same_fields=True)
            lines[keys.index(key)] = line
            return
        lines, keys = self._edit(key)
        try:
            i = keys.index(key)
        except ValueError:
            lines.append(line)
            keys.append(key)
            return
        lines[i] = line
        if keys.count(key) > 1:
            j = len(keys) - 1
            while j > i:
                if keys[j] == key:
                    del keys[j]
                    del lines[j]
                j -= 1

    def add_via(self, value: str) -> None:
        """Insert a Via (the value, e.g. ``SIP/2.0/UDP host;branch=..``)
        above the current topmost one."""
        lines, keys = self._edit("via")
        try:
            i = keys.index("via")
        except ValueError:
            i = 0
        lines.insert(i, _encode("Via: " + value))
        keys.insert(i, "via")

    def _top_via_values(self) -> tuple[int, list[str]]:
        keys = self._keys if self._keys is not None else self._index()
        try:
            i = keys.index("via")
        except ValueError:
            raise SipParseError("missing Via header field") from None
        return i, split_values(self._value(self._lines[i]), keep_empty=True)  # type: ignore[index]

    def remove_top_via(self) -> None:
        """Remove the topmost Via value (only that value when a field holds
        several)."""
        i, vals = self._top_via_values()
        lines, keys = self._edit("via")
        if len(vals) <= 1:
            del lines[i]
            del keys[i]
        else:
            lines[i] = _encode("Via: " + ", ".join(vals[1:]))

    def set_top_via(self, value: str) -> None:
        """Replace the topmost Via value (add one if there is none)."""
        keys = self._keys if self._keys is not None else self._index()
        if "via" not in keys:
            self.add_via(value)
            return
        i, vals = self._top_via_values()
        vals[0] = value
        lines, keys = self._edit("via")
        lines[i] = _encode("Via: " + ", ".join(vals))

    def set_body(self, body: bytes, content_type: str | None = None) -> None:
        """Replace the body; Content-Length is updated, Content-Type set when
        given."""
        self.replace_header("Content-Length", str(len(body)))
        if content_type is not None:
            self.replace_header("Content-Type", content_type)
        self._body = body

    def ensure_content_length(self) -> None:
        """Add a Content-Length when missing (before sending on a stream)."""
        if not self.has_header("content-length"):
            self.set_body(self.body)

    def copy(self) -> SipMessage:
        """An independent copy (same raw bytes, its own modifications)."""
        m = SipMessage()
        for s in _MESSAGE_FIELDS:
            setattr(m, s, getattr(self, s))
        if self._keys is not None:
            m._lines = list(self._lines)  # type: ignore[arg-type]
            m._keys = list(self._keys)
        m._cache = {}
        return m

    # -- output -----------------------------------------------------------------
    def serialize(self) -> bytes:
        """The message as bytes: ``raw`` itself when unmodified, else the
        header lines (untouched ones are slices of ``raw``) joined once."""
        if not self._mod:
            return self.raw
        if self._ruri_mod:
            first = _encode(f"{self.method} {self.ruri} {self.version}") + self._eol
        else:
            first = self.raw[: self._fl_end]
        lines, _ = self._fields()
        return self._join(first, lines)

    def _join(self, first: bytes, lines: list[bytes]) -> bytes:
        raw = self.raw
        eol = self._eol
        if self._body is not None:
            tail = eol + self._body
        elif self._body_start > self._hdr_end:
            tail = raw[self._hdr_end : self._body_end()]
        else:  # the header block was not closed by an empty line
            tail = eol
        if lines:
            return b"".join((first, eol.join(lines), eol, tail))
        return first + tail

    def serialize_with_via(self, value: str, ruri: str | None = None) -> bytes:
        """:meth:`serialize` with ``Via: value`` above the first Via and, if
        given, ``ruri`` as the Request-URI -- what a proxy sends on one
        branch -- in one pass; the message itself is not changed."""
        keys = self._keys if self._keys is not None else self._index()
        lines: list[bytes] = self._lines  # type: ignore[assignment]
        eol = self._eol
        via = _encode("Via: " + value)
        try:
            i = keys.index("via")
        except ValueError:
            i = 0
        if ruri is not None and ruri != self.ruri:
            first = _encode(f"{self.method} {ruri} {self.version}") + eol
        elif self._ruri_mod:
            first = _encode(f"{self.method} {self.ruri} {self.version}") + eol
        elif not self._mod:
            # the field lines are consecutive slices of raw: splice there
            raw = self.raw
            at = self._fl_end
            for line in lines[:i]:
                at += len(line) + len(eol)
            return b"".join((raw[:at], via, eol, raw[at:]))
        else:
            first = self.raw[: self._fl_end]
        return self._join(first, [*lines[:i], via, *lines[i:]])

    def __bytes__(self) -> bytes:
        return self.serialize()

    def __repr__(self) -> str:
        if self.is_request:
            return f"<SipMessage {self.method} {self.ruri}>"
        return f"<SipMessage {self.status} {self.reason}>"


# -- building messages ---------------------------------------------------------


def build_request(
    method: str,
    ruri: str,
    headers: Iterable[tuple[str, str]],
    body: bytes = b"",
    content_type: str | None = None,
) -> SipMessage:
    """A new request from its parts: ``headers`` in order (Via, From, To,
    Call-ID, CSeq, Max-Forwards ... as the caller wants them); Content-Type
    (if given) and Content-Length are appended."""
    parts = [_encode(f"{method} {ruri} SIP/2.0\r\n")]
    parts.extend(_header_line(n, v) for n, v in headers)
    if content_type is not None:
        parts.append(_header_line("Content-Type", content_type))
    parts.append(b"Content-Length: %d\r\n\r\n" % len(body))
    parts.append(body)
    return SipMessage.parse(b"".join(parts))


def _patched_top_via(req: SipMessage, line: bytes, received: str | None, rport: int | None) -> bytes:
    """The first Via line with ``received=`` / ``rport=`` set on its first
    value.  The usual case (one value, no received yet, bare or no rport) is
    patched as text; anything else is rebuilt from the parsed Via."""
    top = req.via1  # parsed and cached already on the usual path
    value = req._value(line)
    if "," not in value and "received" not in top.params and "\n" not in value:
        text = value
        if rport is not None and top.rport == "":
            i = text.find(";rport")
            if i >= 0 and text[i + 6 : i + 7] in ("", ";"):
                text = f"{text[: i + 6]}={rport}{text[i + 6 :]}"
            else:
                text = ""
        if text:
            if received is not None:
                text += ";received=" + received
            return _encode("Via: " + text)
    vals = split_values(value, keep_empty=True)
    v = Via(top.transport, top.host, top.port, dict(top.params), top.protocol)
    if received is not None:
        v.params["received"] = received
    if rport is not None and "rport" in v.params:
        v.params["rport"] = str(rport)
    vals[0] = str(v)
    return _encode("Via: " + ", ".join(vals))


#: the request's header fields a reply copies (RFC 3261 §8.2.6.2)
_REPLY_COPY: Final = ("via", "from", "to", "call-id", "cseq")
#: and Record-Route for 18x/2xx (RFC 3261 §12.1.1)
_REPLY_COPY_RR: Final = ("via", "record-route", "from", "to", "call-id", "cseq")
_status_lines: dict[tuple[int, str], bytes] = {}


def _tag_param(
    prefix: bytes, vias: list[bytes], froms: list[bytes], callids: list[bytes], cseqs: list[bytes]
) -> bytes:
    """``;tag=`` and SER's stateless To-tag: ``prefix`` (constant per
    server, so sl's ACK filter recognises it) and a CRC of what identifies
    the request (top Via, From, Call-ID, CSeq as received), so
    retransmissions get the same tag."""
    crc32 = zlib.crc32
    if len(froms) == 1 and len(callids) == 1 and len(cseqs) == 1:
        crc = crc32(cseqs[0], crc32(callids[0], crc32(froms[0], crc32(vias[0]) if vias else 0)))
    else:
        crc = 0
        for line in vias[:1] + froms + callids + cseqs:
            crc = crc32(line, crc)
    return b";tag=%s-%08x" % (prefix, crc)


def build_reply(
    req: SipMessage,
    status: int,
    reason: str,
    *,
    to_tag: str | None = None,
    tag_prefix: bytes | None = None,
    headers: Sequence[str] = (),
    trailer: Sequence[bytes] = (),
    body: bytes = b"",
    content_type: str | None = None,
    received: str | None = None,
    rport: int | None = None,
) -> bytes:
    """Bytes of a reply to ``req`` (RFC 3261 §8.2.6, SER's
    ``build_res_buf_from_sip_req``), built from the request's raw lines
    without re-parsing them: Via, Record-Route (18x/2xx, RFC 3261 §12.1.1),
    From, To, Call-ID and CSeq as received; then ``headers`` (text lines,
    CRLF optional), ``trailer`` (complete lines as bytes), Content-Type and
    Content-Length.

    From 180 on, a To without a tag gets ``to_tag``, else (with
    ``tag_prefix``) a stateless tag made from the request.  ``received``
    / ``rport`` patch the topmost Via (RFC 3261 §18.2.1, RFC 3581: rport
    is filled in only when the request asked for it)."""
    status_line = _status_lines.get((status, reason))
    if status_line is None:
        status_line = b"SIP/2.0 %d %s\r\n" % (status, reason.encode("utf-8", "surrogateescape"))
        if len(_status_lines) < 256:
            _status_lines[(status, reason)] = status_line
    if 180 <= status < 300:
        vias, rr_lines, from_lines, to_lines, callid_lines, cseq_lines = req.raw_header_groups(_REPLY_COPY_RR)
    else:
        vias, from_lines, to_lines, callid_lines, cseq_lines = req.raw_header_groups(_REPLY_COPY)
        rr_lines = []
    if vias and (received is not None or rport is not None):
        first = vias[0]
        eol = req._eol
        vias = [_patched_top_via(req, first[: len(first) - len(eol)], received, rport) + eol, *vias[1:]]
    out: list[bytes] = [status_line, *vias, *rr_lines, *from_lines]
    if status >= 180 and to_lines and (to_tag or tag_prefix is not None):
        try:
            has_tag = req.to.tag is not None
        except SipParseError:
            has_tag = True  # a broken To: copy it as it is
        if not has_tag:
            param = (
                b";tag=" + to_tag.encode()
                if to_tag
                else _tag_param(tag_prefix or b"", vias, from_lines, callid_lines, cseq_lines)
            )
            to_lines = [to_lines[0].rstrip(b"\r\n") + param + b"\r\n"]
    out += to_lines
    out += callid_lines
    out += cseq_lines
    for line in headers:
        if not line.endswith("\r\n"):
            line = line.rstrip("\r\n") + "\r\n"
        out.append(line.encode("utf-8", "surrogateescape"))
    out += trailer
    if content_type is not None:
        out.append(_encode(f"Content-Type: {content_type}\r\n"))
    if body:
        out.append(b"Content-Length: %d\r\n\r\n" % len(body))
        out.append(body)
    else:
        out.append(b"Content-Length: 0\r\n\r\n")
    return b"".join(out)


# -- stream framing ----------------------------------------------------------------

_CL_RE: Final = re.compile(rb"\n(?:content-length|l)[ \t]*:[ \t]*([^\r\n]*)", re.IGNORECASE)


class StreamFramer:
    """Split a TCP/TLS byte stream into messages (RFC 3261 §18.3): the
    header block ends at the first empty line, the body is Content-Length
    bytes.  CRLFs between messages (keep-alives) are skipped and counted in
    ``keepalives``; each double CRLF among them is an RFC 5626 §3.5.1 ping,
    counted in ``pings`` for the connection to answer with a CRLF pong (it
    resets the count).  A missing or invalid Content-Length, or a message
    larger than ``max_size``, raises :class:`SipParseError` -- the stream
    cannot be resynchronised, close the connection."""

    __slots__ = ("_buf", "_crlf_run", "keepalives", "max_size", "pings")

    def __init__(self, max_size: int = 65536) -> None:
        self._buf = bytearray()
        self.max_size = max_size
        self.keepalives = 0
        self.pings = 0
        self._crlf_run = 0  # line-end bytes seen in a row, maybe across reads

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[bytes]:
        buf = self._buf
        buf += data
        out: list[bytes] = []
        while buf:
            if buf[0] in (13, 10):
                n = len(buf) - len(buf.lstrip(b"\r\n"))
                self.keepalives += 1
                run = self._crlf_run + n
                if run >= 4:  # CRLFCRLF: a ping
                    self.pings += run // 4
                    run %= 4
                del buf[:n]
                if not buf:
                    self._crlf_run = run
                    break
            self._crlf_run = 0
            i = buf.find(b"\r\n\r\n")
            if i < 0:
                if len(buf) > self.max_size:
                    raise SipParseError("message too large", 413)
                if buf[0] == 0x16:  # a TLS handshake record: a TLS client on a plain port
                    raise SipParseError("not SIP: a TLS handshake on a plain stream port")
                break
            head = bytes(buf[: i + 2])
            found = _CL_RE.findall(head)
            if not found:
                raise SipParseError("missing Content-Length on a stream transport")
            vals = {v.strip() for v in found}
            if len(vals) > 1:
                raise SipParseError("multiple Content-Length header fields")
            v = vals.pop()
            if not v or v.translate(None, _DIGITS_B) or len(v) > 10:
                raise SipParseError("invalid Content-Length")
            total = i + 4 + int(v)
            if total > self.max_size:
                raise SipParseError("message too large", 413)
            if len(buf) < total:
                break
            out.append(bytes(buf[:total]))
            del buf[:total]
        return out
